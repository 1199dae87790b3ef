"""Worker processes (``workers: 2``) against the real daemon: a worker killed mid-message, a reload.

The tests of what happens on a worker process set ``workers_inline: false``, so that a message sent
alone runs on a process too (with the default, it runs in the daemon: docs/configuration.md).

docs/hardening.md, "Worker processes": a worker that dies counts a crash in the
message's journal entry and the message is tried once more on a new process;
at two crashes it is quarantined (AE 207), and the daemon keeps serving.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from pathlib import Path

from listener.config import usable_cores
from listener.server.mllp import QUARANTINE_TEXT
from listener.server.runner import CALM_ARRIVALS
from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, default_workers, msa, running, workers_of
from tests.integration.test_hardening import accepted, events, run_on, sample, start, wait_for
from tests.integration.test_priors import NEW, PRIOR, _rules, _send, _variant


def cpu_ticks(pid: int) -> int:
    """User + system clock ticks ``pid`` has used (0 when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0
    return int(fields[11]) + int(fields[12])


def checking_worker(daemon: RunningDaemon, timeout: float = 120) -> int:
    """The worker process checking the slow message: past 3 s of CPU (starting takes about 1 s of CPU)."""
    found: list[int] = []

    def past_startup() -> bool:
        found[:] = [p for p in workers_of(daemon) if cpu_ticks(p) >= 300]
        return bool(found)

    assert wait_for(past_startup, timeout=timeout, step=0.1), "no worker process is checking the message"
    return found[0]


def test_killed_worker_retries_then_quarantines_and_the_daemon_keeps_serving(tmp_path: Path) -> None:
    """SIGKILL the worker checking a message: retried once; killed again: quarantined AE 207; others still AA."""
    daemon = start(tmp_path, "workers: 2\nworkers_inline: false\npipeline_budget: 600\n")
    try:
        assert wait_for(lambda: len(workers_of(daemon)) == 2, timeout=60)
        poison = run_on("KILLED-1", 140_000)
        conn = MllpConnection(daemon.address, timeout=120)
        conn.send(poison)
        first = checking_worker(daemon)
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: len(events(daemon, "pipeline_worker_died")) == 1, timeout=60)
        assert events(daemon, "pipeline_worker_died")[0]["count"] == 1
        # Retried on a new process (the journal kept the message and its count).
        second = checking_worker(daemon)
        assert second != first
        os.kill(second, signal.SIGKILL)
        ack = conn.receive()
        assert msa(ack) in (("AE", "KILLED-1"), ("CE", "KILLED-1"))
        assert b"|207" in ack and QUARANTINE_TEXT.encode() in ack
        assert events(daemon, "pipeline_worker_died")[-1]["count"] == 2
        assert not list((daemon.state_dir / "journal").glob("*.msg"))
        # The daemon keeps serving, on new worker processes.
        assert accepted(conn.request(sample("AFTER-KILL")), "AFTER-KILL")
        # A resend of the quarantined message gets the stored AE 207, unprocessed.
        again = conn.request(poison)
        assert msa(again)[1] == "KILLED-1" and QUARANTINE_TEXT.encode() in again
        conn.close()
        stored = {m["message_id"]: m for m in daemon.messages()}
        assert stored["KILLED-1"]["state"] == "quarantined"
        assert stored["AFTER-KILL"]["state"] == "processed"
    finally:
        assert daemon.stop() == 0


def idle_workers(daemon: RunningDaemon) -> list[int]:
    """Wait until both worker processes have started and use no CPU (waiting for a message); their pids."""
    pids: list[int] = []

    def settled() -> bool:
        pids[:] = workers_of(daemon)
        before = {p: cpu_ticks(p) for p in pids}
        time.sleep(0.5)
        return len(pids) == 2 and all(0 < before[p] == cpu_ticks(p) for p in pids)

    assert wait_for(settled, timeout=120), "the worker processes did not start"
    return pids


def resume(pids: list[int]) -> None:
    """SIGCONT to each of ``pids`` still alive (worker processes a test stopped)."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass


def test_stuck_worker_process_is_killed_and_replaced(tmp_path: Path) -> None:
    """Past budget + grace the worker process is killed (not waited for) and replaced; the message is stored unchecked."""
    daemon = start(tmp_path, "workers: 2\nworkers_inline: false\npipeline_budget: 0.5\n")
    stopped = idle_workers(daemon)
    try:
        # Stuck for good: a stopped process never answers (a rule that never returns looks the same).
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        conn = MllpConnection(daemon.address, timeout=60)
        ack = conn.request(sample("STUCK-1"))
        assert accepted(ack, "STUCK-1")
        line = next(e for e in events(daemon, "message_processed") if e.get("control_id") == "STUCK-1")
        assert line["qa"] == "timeout" and line["state"] == "processed"
        assert line["bucket"] == "selective_overread"  # the routing policy's unchecked block
        assert events(daemon, "pipeline_overrun")
        # The stuck process was killed and a new one took its place.
        assert wait_for(lambda: len(set(stopped) - set(workers_of(daemon))) == 1, timeout=30)
        assert wait_for(lambda: len(workers_of(daemon)) == 2, timeout=60)
        for pid in set(stopped) & set(workers_of(daemon)):
            os.kill(pid, signal.SIGCONT)  # the idle one, so the next message is not stuck too
        assert not events(daemon, "pipeline_worker_died")
        assert accepted(conn.request(sample("AFTER-STUCK")), "AFTER-STUCK")
        conn.close()
    finally:
        resume(stopped)
        assert daemon.stop() == 0


def test_a_message_alone_runs_in_the_daemon_with_workers_inline(tmp_path: Path) -> None:
    """``workers_inline`` (the default): once CALM_ARRIVALS messages in a row arrived while no other was being
    checked, such a message runs on the daemon's own thread, so it is checked and answered even with both
    worker processes stopped, which stay untouched."""
    daemon = start(tmp_path, "workers: 2\npipeline_budget: 0.5\n")
    stopped = idle_workers(daemon)
    conn = MllpConnection(daemon.address, timeout=60)
    try:
        # The first ones of a calm spell still go to the processes.
        for i in range(CALM_ARRIVALS - 1):
            assert accepted(conn.request(sample(f"CALM-{i}")), f"CALM-{i}")
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        for i in range(3):
            assert accepted(conn.request(sample(f"ALONE-{i}")), f"ALONE-{i}")
        conn.close()
        lines = {e["control_id"]: e for e in events(daemon, "message_processed")}
        for i in range(3):
            # Checked (the unchecked answer of a stuck process would say qa: timeout, selective_overread).
            assert "qa" not in lines[f"ALONE-{i}"] and lines[f"ALONE-{i}"]["bucket"] == "release"
        assert not events(daemon, "pipeline_overrun")
        assert sorted(workers_of(daemon)) == sorted(stopped)
    finally:
        resume(stopped)
        assert daemon.stop() == 0


def test_a_reload_reaches_the_worker_processes(tmp_path: Path) -> None:
    """SIGHUP with a changed routing policy: the next message is routed by it (built again in each worker)."""
    policies = tmp_path / "policies"
    shutil.copytree(REPO / "policies", policies)
    routing = policies / "routing.yaml"
    daemon = start(tmp_path, f"workers: 2\nworkers_inline: false\npolicies: {policies}\n")
    try:
        conn = MllpConnection(daemon.address, timeout=60)
        assert accepted(conn.request(sample("BEFORE-HUP")), "BEFORE-HUP")
        # Every XR report to selective overread, by a rule placed first.
        text = routing.read_text()
        rule = (
            "rules:\n  reload_probe:\n    bucket: selective_overread\n    description: every XR report\n"
            "    when:\n      modality: [XR]\n    pool: general_overread\n\n"
        )
        routing.write_text(
            text.replace('version: "default-2026.11"', 'version: "reloaded-1"').replace("rules:\n", rule, 1)
        )
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)
        assert wait_for(lambda: bool(events(daemon, "policy_reloaded")), timeout=60)
        # Both workers in turn (one message each, and one more), all by the new policy.
        for i in range(3):
            assert accepted(conn.request(sample(f"AFTER-HUP-{i}")), f"AFTER-HUP-{i}")
        conn.close()
        lines = {e["control_id"]: e for e in events(daemon, "message_processed")}
        assert lines["BEFORE-HUP"]["bucket"] == "release"
        assert lines["BEFORE-HUP"]["routing_version"].startswith("default-2026.11")  # type: ignore[union-attr]
        for i in range(3):
            assert lines[f"AFTER-HUP-{i}"]["bucket"] == "selective_overread"
            assert lines[f"AFTER-HUP-{i}"]["routing_version"].startswith("reloaded-1")  # type: ignore[union-attr]
    finally:
        assert daemon.stop() == 0


def test_worker_processes_get_prior_studies_from_the_store(tmp_path: Path) -> None:
    """A worker's prior look-up reads the daemon's store: the comparison rule that needs priors fires.

    With the SQLite store the worker reads the store's file itself, read-only
    (docs/hardening.md, "Worker processes"); the same patient's earlier study,
    committed by the daemon, is found, another patient's is not.
    """
    daemon = start(tmp_path, "workers: 2\nworkers_inline: false\n")
    try:
        _send(daemon, _variant(PRIOR, "W-PRIOR-1", (b"ZZ9000103^^^LEMC", b"ZZ9000104^^^LEMC")))
        _send(daemon, _variant(NEW, "W-NEW-SAME"))
        _send(
            daemon,
            _variant(NEW, "W-NEW-OTHER", (b"ZZ9000104^^^LEMC", b"ZZ9000199^^^LEMC"), (b"A2611190301", b"A2611190399")),
        )
        assert "comparison.none_with_priors" in _rules(daemon, "W-NEW-SAME")
        assert "comparison.none_with_priors" not in _rules(daemon, "W-NEW-OTHER")
        assert not events(daemon, "prior_lookup_failed")
        assert not events(daemon, "pipeline_worker_failed")
    finally:
        assert daemon.stop() == 0


def test_the_default_runs_one_worker_process_per_usable_core(tmp_path: Path) -> None:
    """No ``workers`` key: one worker process per core the daemon may run on, named in ``daemon_started``
    (docs/configuration.md, "workers"); on a host of one core, none (the next test)."""
    daemon = start(tmp_path, workers=None)
    try:
        workers = default_workers(daemon)
        assert [line.get("workers") for line in events(daemon, "daemon_started")] == [len(workers)]
        assert len(workers) == (usable_cores() if usable_cores() > 1 else 0)
        conn = MllpConnection(daemon.address, timeout=60)
        assert accepted(conn.request(sample("DEFAULT-1")), "DEFAULT-1")
        conn.close()
    finally:
        assert daemon.stop() == 0


def test_the_default_on_one_core_runs_on_threads_and_starts_no_process(tmp_path: Path) -> None:
    """The daemon started on one core (its CPU affinity, as ``taskset -c`` sets it): ``auto`` gives 1, so
    the pipeline runs on threads, no worker process is started, and messages are answered as usual."""
    mine = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {min(mine)})
    try:
        daemon = start(tmp_path, workers=None)  # the daemon inherits the affinity of this process
    finally:
        os.sched_setaffinity(0, mine)
    try:
        assert [line.get("workers") for line in events(daemon, "daemon_started")] == [0]
        conn = MllpConnection(daemon.address, timeout=60)
        for i in range(CALM_ARRIVALS + 2):
            assert accepted(conn.request(sample(f"ONE-CORE-{i}")), f"ONE-CORE-{i}")
        conn.close()
        assert workers_of(daemon) == []
        assert not events(daemon, "pipeline_worker_failed")
    finally:
        assert daemon.stop() == 0


def test_sigterm_to_the_whole_group_as_systemctl_stop_sends_it_counts_no_crash(tmp_path: Path) -> None:
    """``systemctl stop`` sends SIGTERM to every process of the unit's control group at once, so the
    worker processes get it too, during a burst: they ignore it and the daemon drains and ends them
    itself (no ``pipeline_worker_died``, no crash counted against a message), exits 0, leaves no worker."""
    daemon = start(tmp_path, "workers: 2\nworkers_inline: false\n")
    assert wait_for(lambda: len(workers_of(daemon)) == 2, timeout=60)
    workers = workers_of(daemon)
    conns = [MllpConnection(daemon.address, timeout=60) for _ in range(4)]
    for k, conn in enumerate(conns):
        conn.send_raw(b"".join(b"\x0b" + sample(f"GROUP{k}-{i}") + b"\x1c\r" for i in range(100)))
    answered = [msa(conn.receive()) for conn in conns]  # every connection has a message in the daemon
    assert daemon.proc is not None
    for pid in (daemon.proc.pid, *workers):
        os.kill(pid, signal.SIGTERM)
    for conn in conns:
        answered += [msa(ack) for ack in conn.receive_until_closed()]
        conn.close()
    assert daemon.wait(60) == 0
    assert not [pid for pid in workers if running(pid)]
    assert {code for code, _ in answered} <= {"AA", "CA"}
    assert not events(daemon, "pipeline_worker_died")
    stored = {m["message_id"] for m in daemon.messages()}
    assert {control for _, control in answered} <= stored
