"""The worker-process runner (``ProcessRunner``) with real worker processes and a real reactor.

docs/hardening.md, "Worker processes": a worker process that dies counts a crash in the message's
journal entry and the message is tried once more on a new process; at QUARANTINE_AFTER crashes it
fails with WorkerCrashed (the intake quarantines it). Past the hard limit the reactor answers from
the decoded reports and the job is abandoned.

The reactor here is a real one (epoll), of the test's own, running on a thread of its own; the test
calls the runner on it (``Scene.call``), as the daemon's intake does. The budget and grace are far
beyond any run, so a job's hard limit passes only when the test fires its timer's call itself
(``Job._overrun``, on the reactor). The worker processes are real
(``python -m listener.server.procworker``); a worker "dies by itself" when the test SIGKILLs it from
the prior look-up, the one call a worker process makes back to the daemon while it runs a message
(``prior_lookup``, on a thread of the reactor's pool, while the job holds that process).
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.epollreactor import EPollReactor
from twisted.internet.threads import blockingCallFromThread

from listener.config import load_config
from listener.destinations import DestinationSettings
from listener.intake import Recording
from listener.pipeline import Interrupt, Pipeline, versions_of
from listener.qa.engine import Prior
from listener.server.journal import QUARANTINE_AFTER, Journal, journal_key
from listener.server.priors import PriorKey
from listener.server.runner import (
    CALM_ARRIVALS,
    STARTING_THREAD_MAX,
    Job,
    PipelineTask,
    ProcessRunner,
    WorkerCrashed,
)

REPO = Path(__file__).resolve().parents[3]
NOW = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)
NORMAL = (REPO / "samples" / "hl7" / "xr-chest-2v-normal.hl7").read_bytes().replace(b"\n", b"\r")
KEY = journal_key("mllp", "RIS", "HOSP", "RUNNER-1")
ENTRY = (KEY, "mllp", NORMAL, "")
# Budget and grace far beyond any run: the worker's own Interrupt (real monotonic clock) never
# stops QA, and the hard limit passes only when the test fires it (Scene.overrun).
BUDGET, GRACE = 600.0, 300.0
#: What the reactor answers with once the hard limit passed (the daemon: the decoded reports, unchecked).
UNCHECKED = "answered unchecked"


class Scene:
    """One ProcessRunner (workers=1) on a real reactor of its own, with a real journal; what it reported.

    Attributes:
        kills: how many of the worker processes that ask for priors are SIGKILLed at that moment.
        asked: prior look-ups so far: the times a worker process ran the message.
        died: the ``count`` of each ``pipeline_worker_died`` event.
        on_died: called (on the reactor) right after each ``pipeline_worker_died`` event.
        end_entry: end the journal entry before each kill (the reactor ended it meanwhile).
    """

    def __init__(self, tmp_path: Path, inline: bool = False, workers: int = 1) -> None:
        self.reactor = EPollReactor()
        self.thread = threading.Thread(
            target=self.reactor.run, kwargs={"installSignalHandlers": False}, name="test-reactor", daemon=True
        )
        self.thread.start()
        self.journal = Journal(tmp_path / "journal")
        self.kills = 0
        self.asked = 0
        self.died: list[int] = []
        self.on_died: Callable[[], object] = lambda: None
        self.end_entry = False
        self.ran_on_thread = False
        #: Called (on the look-up's thread) at each prior look-up, before any kill.
        self.on_asked: Callable[[], object] = lambda: None
        self.runner: ProcessRunner = self.call(
            ProcessRunner,
            self.reactor,
            config=load_config(None),
            recording=Recording(b"k" * 32),
            workers=workers,
            budget=BUDGET,
            grace=GRACE,
            journal=self.journal,
            prior_lookup=self._prior_lookup,
            on_event=self._on_event,
            inline=inline,
        )

    def call(self, f: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """``f(*args, **kwargs)`` on the reactor thread; its value."""
        return blockingCallFromThread(self.reactor, f, *args, **kwargs)

    def _prior_lookup(self, _key: PriorKey) -> tuple[Prior, ...] | None:
        self.asked += 1
        self.on_asked()
        if self.asked <= self.kills:
            if self.end_entry:
                self.journal.end(KEY)
            # The one job running; its worker process is blocked waiting for this answer.
            (job,) = self.runner.active
            os.kill(job.worker.proc.pid, signal.SIGKILL)
        return None

    def _on_event(self, event: str, **fields: Any) -> None:
        if event == "pipeline_worker_died":
            self.died.append(fields["count"])
            self.on_died()

    def task(self, pipeline: Pipeline, entry: tuple[str, str, bytes, str] = ENTRY) -> PipelineTask:
        return PipelineTask(entry[2], NOW, None, versions_of(pipeline), entry)

    def _on_thread(self, _interrupt: Interrupt) -> Any:
        # The runner runs a task on a thread only when no process takes it.
        self.ran_on_thread = True
        return None

    def run(self, pipeline: Pipeline, entry: tuple[str, str, bytes, str] = ENTRY) -> Job[Any]:
        """Queue the entry's message (the sample by default) as the MLLP intake does (a PipelineTask with its journal entry)."""
        job: Job[Any] = self.call(
            self.runner.run, self._on_thread, lambda _interrupt: UNCHECKED, self.task(pipeline, entry)
        )
        return job

    def run_all(self, pipeline: Pipeline, entries: list[tuple[str, str, bytes, str]]) -> list[Job[Any]]:
        """Queue every entry's message in one reactor call (all queued before the first is answered)."""

        def queue() -> list[Job[Any]]:
            return [self.runner.run(self._on_thread, lambda _i: UNCHECKED, self.task(pipeline, e)) for e in entries]

        jobs: list[Job[Any]] = self.call(queue)
        return jobs

    def hold_first_lookup(self) -> tuple[threading.Event, threading.Event]:
        """(held, release): the first prior look-up sets ``held`` and waits for ``release``, its worker
        process held in the middle of the message (it waits for the answer) meanwhile."""
        held, release = threading.Event(), threading.Event()

        def hold() -> None:
            if not held.is_set():
                held.set()
                assert release.wait(120)

        self.on_asked = hold
        return held, release

    def overrun(self, job: Job[Any]) -> None:
        """The job's hard limit passes: its timer's call, on the reactor."""
        self.call(job._overrun)

    def outcome(self, job: Job[Any], timeout: float = 300) -> tuple[bool, Any]:
        """Wait until nothing runs ``job`` any more; (True, its value) or (False, its exception)."""
        got: list[tuple[bool, Any]] = []
        done = threading.Event()

        def watch() -> None:
            job.result.addCallbacks(lambda value: got.append((True, value)), lambda f: got.append((False, f.value)))
            job.finished.addBoth(lambda _: done.set())

        self.call(watch)
        assert done.wait(timeout), "the runner never finished the job"
        return got[0]

    def stop(self) -> None:
        if self.thread.is_alive():
            self.call(self.runner.stop)
            self.runner.join(60)
            self.reactor.callFromThread(self.reactor.stop)
            self.thread.join(60)


@pytest.fixture(name="scene")
def fixture_scene(tmp_path: Path) -> Iterator[Scene]:
    scene = Scene(tmp_path)
    try:
        yield scene
    finally:
        scene.stop()


def test_an_overrun_between_a_crash_and_its_retry_abandons_the_message(scene: Scene, pipeline: Pipeline) -> None:
    """The hard limit passes after the worker died and before a new process took the retry: no retry.

    The reactor has answered (unchecked) by then, so running the message again would only risk
    another worker process for an answer nobody waits for: the job ends with WorkerAbandoned.
    """
    scene.kills = 1
    running: list[Job[Any]] = []

    def limit_passes() -> None:
        running[0]._overrun()  # on the reactor: the death's event is given there

    scene.on_died = limit_passes
    running.append(scene.run(pipeline))
    ok, value = scene.outcome(running[0])
    assert (ok, value) == (True, UNCHECKED)
    assert scene.died == [1]
    # Sent to one worker process only: the retry never ran (nor did a thread run it).
    assert scene.asked == 1
    assert not scene.ran_on_thread
    assert running[0].abandoned


def test_a_crash_retries_once_on_a_new_process(scene: Scene, pipeline: Pipeline) -> None:
    """One death: counted in the journal entry, retried on a new process, which answers."""
    scene.kills = 1
    ok, value = scene.outcome(scene.run(pipeline))
    assert ok, value
    record, _fields, _counted = value
    assert record.state == "processed" and record.reports and record.packed_raw
    assert scene.died == [1] and scene.asked == 2
    assert not scene.ran_on_thread


@pytest.mark.parametrize("entry", ["ended", "unreadable"])
def test_crash_counts_never_restart_when_the_journal_lost_its_count(
    scene: Scene, pipeline: Pipeline, entry: str
) -> None:
    """The journal entry is gone (ended meanwhile) or unreadable, so its count says 1 every time:
    the job's own attempts still count, and the second death quarantines instead of a third run."""
    if entry == "ended":
        scene.end_entry = True
    else:
        # begin() keeps an existing entry, and count_crash() cannot read this one.
        (scene.journal.directory / f"{KEY}.msg").write_bytes(b"not a journal entry\n")
    # One more kill than quarantine needs: a runner that kept retrying would fail the third run too
    # (then answer on the fourth), never loop for good.
    scene.kills = QUARANTINE_AFTER + 1
    ok, crashed = scene.outcome(scene.run(pipeline))
    assert not ok and isinstance(crashed, WorkerCrashed), crashed
    assert crashed.crashes == QUARANTINE_AFTER
    assert scene.died == list(range(1, QUARANTINE_AFTER + 1))
    assert scene.asked == QUARANTINE_AFTER


def test_a_crash_before_a_daemon_restart_counts_after_it(scene: Scene, pipeline: Pipeline) -> None:
    """The daemon died running the message (its journal entry counts 1 at start-up); the resend kills a
    worker process once: two crashes, quarantined without a retry."""
    scene.journal.begin(*ENTRY)
    (left,) = scene.journal.recover()
    assert left.crashes == QUARANTINE_AFTER - 1
    scene.kills = QUARANTINE_AFTER
    ok, crashed = scene.outcome(scene.run(pipeline))
    assert not ok and isinstance(crashed, WorkerCrashed), crashed
    assert crashed.crashes == QUARANTINE_AFTER
    assert scene.died == [QUARANTINE_AFTER] and scene.asked == 1


def test_jobs_queued_together_each_answer_and_leave_no_timer(scene: Scene, pipeline: Pipeline) -> None:
    """Three jobs queued at once: every one answers, each one's hard-limit timer was armed while it
    ran and cancelled with its answer, and none is left active."""
    jobs = scene.run_all(pipeline, _entries(3))
    for job in jobs:
        ok, value = scene.outcome(job)
        assert ok, value
        assert value[0].state == "processed"
    assert scene.call(lambda: (set(scene.runner.active), [job._timer for job in jobs])) == (set(), [None] * 3)
    assert scene.asked == 3 and not scene.ran_on_thread


def test_join_after_stop_returns_once_every_worker_process_is_reaped(scene: Scene, pipeline: Pipeline) -> None:
    """Shutdown: after ``stop``, ``join`` returns True only when each runner thread has closed its worker
    process, which is then reaped (gone from /proc), so no worker outlives the daemon's exit."""
    ok, value = scene.outcome(scene.run(pipeline))
    assert ok, value
    pids = [int(p) for task in Path("/proc/self/task").glob("*") for p in (task / "children").read_text().split()]
    procworkers = [p for p in pids if b"listener.server.procworker" in Path(f"/proc/{p}/cmdline").read_bytes()]
    assert len(procworkers) == 1
    scene.call(scene.runner.stop)
    assert scene.runner.join(60)
    assert not Path(f"/proc/{procworkers[0]}").exists()


def test_a_reload_gives_the_worker_processes_its_destinations(scene: Scene, pipeline: Pipeline) -> None:
    """A worker process builds the message's routing messages (listener.intake.mllp_checked) for the
    destinations the daemon has: none at first, then the ones a reload gives ``configure``, whose
    recording goes to the process with its new config before its next message."""
    ok, value = scene.outcome(scene.run(pipeline))
    assert ok, value
    assert value[0].state == "processed" and value[0].outbox == ()
    ris = DestinationSettings("ris", "tcp:host=ris.test:port=6661")
    scene.call(scene.runner.configure, load_config(None), replace(scene.runner.recording, destinations=(ris,)))
    ok, value = scene.outcome(scene.run(pipeline))
    assert ok, value
    assert value[0].outbox and {item.destination for item in value[0].outbox} == {"ris"}
    assert not scene.ran_on_thread


@pytest.fixture(name="inline_scene")
def fixture_inline_scene(tmp_path: Path) -> Iterator[Scene]:
    scene = Scene(tmp_path, inline=True)
    try:
        yield scene
    finally:
        scene.stop()


def test_a_task_alone_runs_on_the_daemons_thread_after_a_calm_spell(inline_scene: Scene, pipeline: Pipeline) -> None:
    """``workers_inline``: once CALM_ARRIVALS messages in a row arrived with nothing in flight, such a
    message runs in the daemon, never crossing to a process; the ones before run on a process."""
    for i in range(CALM_ARRIVALS + 1):
        inline_scene.ran_on_thread = False
        ok, value = inline_scene.outcome(inline_scene.run(pipeline))
        assert ok, value
        assert inline_scene.ran_on_thread is (i + 1 >= CALM_ARRIVALS)
        assert inline_scene.asked == min(i + 1, CALM_ARRIVALS - 1)
    assert inline_scene.runner.in_flight == 0


def test_a_task_arriving_while_another_is_in_flight_goes_to_a_process(inline_scene: Scene, pipeline: Pipeline) -> None:
    """While one message runs on the daemon's thread, the next one runs on a worker process, and so do
    the next ones that arrive alone until a calm spell of CALM_ARRIVALS in a row has passed again."""
    for _ in range(CALM_ARRIVALS - 1):
        inline_scene.outcome(inline_scene.run(pipeline))
    asked = inline_scene.asked
    started, release = threading.Event(), threading.Event()

    def held(_interrupt: Interrupt) -> str:
        started.set()
        assert release.wait(120)
        return "held"

    task = PipelineTask(NORMAL, NOW, None, versions_of(pipeline), ENTRY)
    first = inline_scene.call(inline_scene.runner.run, held, lambda _interrupt: UNCHECKED, task)
    assert started.wait(60), "the calm spell's message did not run on the daemon's thread"
    try:
        ok, value = inline_scene.outcome(inline_scene.run(pipeline), timeout=120)
    finally:
        release.set()
    assert ok, value
    record, _fields, _counted = value
    assert record.state == "processed" and record.reports
    assert inline_scene.asked == asked + 1 and not inline_scene.ran_on_thread
    assert inline_scene.outcome(first) == (True, "held")
    for i in range(CALM_ARRIVALS):
        ok, value = inline_scene.outcome(inline_scene.run(pipeline))
        assert ok, value
        assert inline_scene.ran_on_thread is (i + 1 >= CALM_ARRIVALS)
    assert inline_scene.asked == asked + CALM_ARRIVALS


def _entries(count: int) -> list[tuple[str, str, bytes, str]]:
    """``count`` journal entries of the sample message, each under its own control id."""
    return [(journal_key("mllp", "RIS", "HOSP", f"STAGED-{i}"), "mllp", NORMAL, "") for i in range(count)]


def test_the_next_job_is_staged_while_the_worker_runs_one(scene: Scene, pipeline: Pipeline) -> None:
    """While the worker process runs a message, the reactor journals the next queued one and
    sends it at once, behind the one running, so the worker starts it the moment it has answered
    (docs/hardening.md, "Worker processes"); here it arrives while the worker waits for a prior
    look-up's answer, which the worker reads after it. One job at a time: of three queued, the
    first runs, the second is staged, the third waits in the queue until the second runs."""
    entries = _entries(3)
    journaled: list[list[int | None]] = []
    scene.on_asked = lambda: journaled.append([scene.journal.crashes(e[0]) for e in entries])
    held: list[object] = []

    def queue() -> list[Job[Any]]:
        queued = [scene.runner.run(scene._on_thread, lambda _i: UNCHECKED, scene.task(pipeline, e)) for e in entries]
        # When the first job's answer is given, the worker holds the second already.
        queued[0].result.addCallback(lambda value: held.append(queued[1].worker) or value)
        return queued

    jobs = scene.call(queue)
    for job in jobs:
        ok, value = scene.outcome(job)
        assert ok, value
        assert value[0].state == "processed"
    assert journaled[0] == [0, 0, None], journaled  # running, staged, queued
    assert journaled[1] == [0, 0, 0], journaled  # the third staged while the second ran
    assert held and held[0] is not None
    assert scene.asked == 3 and not scene.ran_on_thread


def test_a_worker_death_counts_against_the_running_job_not_the_staged_one(scene: Scene, pipeline: Pipeline) -> None:
    """The worker process dies running the first message while the second is staged: the first
    counts one crash and is retried on a new process; the second, never sent to the dead process,
    counts none and runs after it."""
    entries = _entries(3)
    scene.kills = 1
    jobs = scene.run_all(pipeline, entries)
    for job in jobs:
        ok, value = scene.outcome(job)
        assert ok, value
        assert value[0].state == "processed"
    assert scene.died == [1]
    assert [scene.journal.crashes(e[0]) for e in entries] == [1, 0, 0]
    assert scene.asked == 4 and not scene.ran_on_thread


def test_a_staged_job_is_answered_when_the_runner_stops(scene: Scene, pipeline: Pipeline) -> None:
    """Shutdown while the worker runs one message and the next is staged: the running one is
    abandoned with its killed process, and the staged one is still answered (run on the thread,
    as any job queued at a stop), and so is the one queued behind it: none is left waiting."""
    entries = _entries(3)
    stopped: list[bool] = []

    def stop_once() -> None:
        if not stopped:
            stopped.append(True)
            scene.call(scene.runner.stop)

    scene.on_asked = stop_once
    jobs = scene.run_all(pipeline, entries)
    outcomes = [scene.outcome(job) for job in jobs]
    assert not outcomes[0][0]  # abandoned: its process was killed by the stop
    assert outcomes[1] == (True, None) and scene.ran_on_thread  # answered on the thread
    assert outcomes[2] == (True, None)


@pytest.mark.parametrize("size", ["small", "large", "died_on"])
def test_a_job_queued_while_a_killed_process_restarts(scene: Scene, pipeline: Pipeline, size: str) -> None:
    """The running message overruns its hard limit (its process is killed) while the next one is queued.

    A new process takes about a second of CPU to build its pipeline, several on a loaded host, and a
    sender flooding slow messages keeps the other processes busy meanwhile (``bench/hostile.py``:
    the good sender's ACK waited 4-6 s). So a small message runs on the thread, in the daemon,
    without waiting for it; a message over STARTING_THREAD_MAX bytes, or one a worker process died
    on before (its journal entry counts a crash), waits and runs on the new process
    (docs/hardening.md, "Worker processes").
    """
    entry = _entries(1)[0]
    if size == "large":
        # The sample with a long impression: over the limit, the same message otherwise.
        raw = NORMAL.replace(b"IMPRESSION:", b"IMPRESSION: " + b"No acute findings. " * 2000, 1)
        assert len(raw) > STARTING_THREAD_MAX
        entry = (entry[0], "mllp", raw, "")
    elif size == "died_on":
        scene.journal.begin(*entry)
        scene.journal.count_crash(entry[0])
    queued: list[Job[Any]] = []
    running: list[Job[Any]] = []

    def overrun_with_one_queued() -> None:
        if not queued:
            queued.append(scene.run(pipeline, entry))
            scene.overrun(running[0])  # the hard limit: the reactor kills the process
            deadline = time.monotonic() + 60
            while not running[0].abandoned and time.monotonic() < deadline:
                time.sleep(0.01)  # the unchecked answer is built on a thread; then the kill

    scene.on_asked = overrun_with_one_queued
    running.append(scene.run(pipeline))
    assert scene.outcome(running[0]) == (True, UNCHECKED)
    ok, value = scene.outcome(queued[0])
    assert ok, value
    if size == "small":
        assert value is None and scene.ran_on_thread  # the Scene's thread work answers None
        assert scene.asked == 1
    else:
        assert value[0].state == "processed" and not scene.ran_on_thread
        assert scene.asked == 2


def test_the_unchecked_answer_after_an_overrun_is_built_off_the_reactor_thread(
    scene: Scene, pipeline: Pipeline
) -> None:
    """Past the hard limit the daemon decodes the message again for its unchecked answer (the worker
    process decoded it out of reach). For a 4 MB FHIR Bundle that takes seconds: on the reactor
    thread it froze every connection and /healthz (bench/hostile.py --fhir-shape same_result
    --fhir-n 60000: /healthz p99 3.3 s). It runs on a thread of its own; the answer is handed to the
    reactor, which answers and kills the worker process."""
    threads: list[threading.Thread] = []
    jobs: list[Job[Any]] = []

    def limit_passes() -> None:
        scene.overrun(jobs[0])  # the hard limit's timer fires on the reactor

    def unchecked(_interrupt: Interrupt) -> str:
        threads.append(threading.current_thread())
        return UNCHECKED

    scene.on_asked = limit_passes
    task = PipelineTask(NORMAL, NOW, None, versions_of(pipeline), ENTRY)
    jobs.append(scene.call(scene.runner.run, lambda _interrupt: None, unchecked, task))
    assert scene.outcome(jobs[0]) == (True, UNCHECKED)
    assert len(threads) == 1 and threads[0] is not scene.thread
    assert jobs[0].abandoned  # the worker process was killed once the answer was in


def test_a_large_message_for_a_worker_that_reads_nothing_never_blocks_the_reactor(
    scene: Scene, pipeline: Pipeline
) -> None:
    """The reactor writes a message into a worker process's socket while the process reads nothing
    (here: stopped, SIGSTOP, in the middle of a message): a 4 MB one does not fit the socket's
    buffer, and the rest waits in the reactor's connection, not on the reactor (docs/hardening.md,
    "Worker processes"). The reactor answers other calls meanwhile; once the process runs again it
    reads the whole message and answers it."""
    held, release = scene.hold_first_lookup()
    first = scene.run(pipeline)
    assert held.wait(60), "the worker process never asked for priors"
    (running,) = scene.call(lambda: list(scene.runner.active))
    pid = running.worker.proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        release.set()
        raw = NORMAL.replace(b"IMPRESSION:", b"IMPRESSION: " + b"No acute findings. " * 220_000, 1)
        assert len(raw) > 4_000_000
        large = scene.run(pipeline, (journal_key("mllp", "RIS", "HOSP", "LARGE-1"), "mllp", raw, ""))

        def staged() -> tuple[int, int]:
            transport = large.worker.protocol.transport
            return len(large.worker.jobs), len(transport.dataBuffer) - transport.offset + transport._tempDataLen

        jobs, buffered = scene.call(staged)  # the reactor answers: it is not stuck in a write
        assert jobs == 2 and buffered > 0
    finally:
        os.kill(pid, signal.SIGCONT)
    ok, value = scene.outcome(first)
    assert ok and value[0].state == "processed", value
    ok, value = scene.outcome(large)
    assert ok, value
    assert value[0].state == "processed" and not scene.ran_on_thread


def test_frames_are_read_across_reads_and_several_in_one(tmp_path: Path) -> None:
    """The reactor's reading of a worker process's socket: multiprocessing's frames (a 4-byte length,
    the larger ones' header written apart) whole however the bytes arrive."""
    import socket as socket_module
    from multiprocessing.connection import Connection

    from listener.server.runner import _Worker, _WorkerProtocol

    frames = [b"a" * 10, b"b" * 70_000, b"", b"c" * 3]
    left, right = socket_module.socketpair()
    writer = Connection(left.detach())
    for data in frames:
        writer.send_bytes(data)
    writer.close()
    wire = b""
    while chunk := right.recv(1 << 20):
        wire += chunk
    right.close()

    class Runner:
        def __init__(self) -> None:
            self.got: list[bytes] = []

        def _frame(self, _worker: object, frame: bytes) -> None:
            self.got.append(frame)

    for step in (1, 7, 4096, len(wire)):
        runner = Runner()
        worker = _Worker()
        protocol = _WorkerProtocol(runner, worker)  # type: ignore[arg-type]
        worker.protocol = protocol
        for at in range(0, len(wire), step):
            protocol.dataReceived(wire[at : at + step])
        assert runner.got == frames, step


def test_a_small_message_never_waits_behind_a_large_one_while_a_process_restarts(
    tmp_path: Path, pipeline: Pipeline
) -> None:
    """Two processes: one runs a large message (which may run to its budget), the other is being
    started again. A small message then runs on a thread in the daemon at once; staged behind the
    large one, it would wait for it (``bench/hostile.py``: the good sender's ACK p99 went from 25 ms
    to 3 s under the adversarial flood when it was)."""
    scene = Scene(tmp_path, workers=2)
    try:
        assert scene.runner.wait_started(120)
        held, release = scene.hold_first_lookup()
        raw = NORMAL.replace(b"IMPRESSION:", b"IMPRESSION: " + b"No acute findings. " * 2000, 1)
        assert len(raw) > STARTING_THREAD_MAX
        large = scene.run(pipeline, (journal_key("mllp", "RIS", "HOSP", "LARGE-2"), "mllp", raw, ""))
        assert held.wait(60), "the large message's process never asked for priors"
        try:
            idle = scene.call(lambda: next(w for w in scene.runner._processes if not w.jobs))
            os.kill(idle.proc.pid, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while not scene.call(idle.starting) and time.monotonic() < deadline:
                time.sleep(0.01)
            assert scene.call(idle.starting), "the killed idle process was not started again"
            small = scene.run(pipeline, _entries(1)[0])
            assert scene.outcome(small, timeout=60) == (True, None)  # on a thread, the large one still held
            assert scene.ran_on_thread
        finally:
            release.set()
        ok, value = scene.outcome(large)
        assert ok and value[0].state == "processed", value
    finally:
        scene.stop()
