"""Worker processes (``workers: 2``) against the real daemon: a worker killed mid-message, a reload.

The tests of what happens on a worker process set ``workers_inline: false``, so that a message sent
alone runs on a process too (with the default, it runs in the daemon: docs/configuration.md).

docs/hardening.md, "Worker processes": a worker that dies counts a crash in the
message's journal entry and the message is tried once more on a new process;
at two crashes it is quarantined (AE 207), and the daemon keeps serving.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Any

from listener.config import usable_cores
from listener.server.journal import Journal
from listener.server.mllp import QUARANTINE_TEXT
from listener.server.runner import CALM_ARRIVALS
from tests.conftest import run_cli
from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, default_workers, msa, running, workers_of
from tests.integration.test_hardening import RUN_ON, accepted, events, run_on, sample, start, wait_for
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


def kill_twice(daemon: RunningDaemon) -> None:
    """SIGKILL the worker checking the slow message; once it is retried on a new process, that one too."""
    first = checking_worker(daemon)
    os.kill(first, signal.SIGKILL)
    assert wait_for(lambda: len(events(daemon, "pipeline_worker_died")) == 1, timeout=60)
    assert events(daemon, "pipeline_worker_died")[0]["count"] == 1
    # Retried on a new process (the journal kept the message and its count).
    second = checking_worker(daemon)
    assert second != first
    os.kill(second, signal.SIGKILL)


def test_killed_worker_retries_then_quarantines_and_the_daemon_keeps_serving(tmp_path: Path) -> None:
    """SIGKILL the worker checking a message: retried once; killed again: quarantined AE 207; others still AA."""
    daemon = start(tmp_path, "workers: 2\nworkers_inline: false\npipeline_budget: 600\n")
    try:
        assert wait_for(lambda: len(workers_of(daemon)) == 2, timeout=60)
        poison = run_on("KILLED-1", 140_000)
        conn = MllpConnection(daemon.address, timeout=120)
        conn.send(poison)
        kill_twice(daemon)
        ack = conn.receive()
        assert msa(ack) in (("AE", "KILLED-1"), ("CE", "KILLED-1"))
        assert b"|207" in ack and QUARANTINE_TEXT.encode() in ack
        assert events(daemon, "pipeline_worker_died")[-1]["count"] == 2
        assert Journal(daemon.state_dir / "journal").pending() == 0
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


def test_each_worker_process_is_bound_to_one_cpu_in_turn(tmp_path: Path) -> None:
    """``worker_affinity`` (the default): each worker process is bound to one of the daemon's CPUs, in turn,
    and the process started after a crash to the CPU of the one it replaces; ``false``: bound to none
    (docs/configuration.md, "worker_affinity")."""
    cpus = sorted(os.sched_getaffinity(0))
    daemon = start(tmp_path, "workers: 2\nworkers_inline: false\npipeline_budget: 600\n")
    try:
        bound = {pid: os.sched_getaffinity(pid) for pid in idle_workers(daemon)}
        assert sorted(bound.values(), key=min) == [{cpus[i % len(cpus)]} for i in range(2)]
        conn = MllpConnection(daemon.address, timeout=120)
        conn.send(run_on("BOUND-1", 140_000))
        first = checking_worker(daemon)
        os.kill(first, signal.SIGKILL)
        assert wait_for(lambda: len(events(daemon, "pipeline_worker_died")) == 1, timeout=60)
        # The process started in place of the dead one.
        assert wait_for(lambda: len(set(workers_of(daemon)) - set(bound)) == 1, timeout=60)
        (new,) = set(workers_of(daemon)) - set(bound)
        # Bound right after it was started (the pid shows a moment before).
        assert wait_for(lambda: os.sched_getaffinity(new) == bound[first], timeout=30), os.sched_getaffinity(new)
        second = checking_worker(daemon)  # the retry, on whichever process took it first
        assert second != first
        os.kill(second, signal.SIGKILL)
        assert msa(conn.receive())[1] == "BOUND-1"
        conn.close()
    finally:
        assert daemon.stop() == 0
    daemon = start(tmp_path, "workers: 2\nworker_affinity: false\n", name="free")
    try:
        assert daemon.proc is not None
        mine = os.sched_getaffinity(daemon.proc.pid)
        assert [os.sched_getaffinity(pid) for pid in idle_workers(daemon)] == [mine, mine]
    finally:
        assert daemon.stop() == 0


def test_a_message_alone_runs_in_the_daemon_with_workers_inline(tmp_path: Path) -> None:
    """``workers_inline`` (the default): once CALM_ARRIVALS messages in a row arrived while no other was being
    checked, such a message runs on the daemon's own thread, so it is checked and answered even with both
    worker processes stopped, which stay untouched."""
    # A budget that a loaded machine's first check on the daemon's thread stays well inside; a message
    # sent to a stopped process would still come back unchecked (qa: timeout) after it and its grace.
    daemon = start(tmp_path, "workers: 2\npipeline_budget: 2\n")
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


# ---------------------------------------------------------------- FHIR bodies on the worker processes

FHIR_SAMPLES = REPO / "samples" / "fhir"


def post_fhir(daemon: RunningDaemon, path: str, body: bytes, timeout: float = 120) -> tuple[int, bytes, str]:
    """Status, body and Location of one FHIR POST (no token: the test daemons have no ``http_clients``)."""
    conn = http.client.HTTPConnection("127.0.0.1", daemon.http_port or 0, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/fhir+json"})
        response = conn.getresponse()
        return response.status, response.read(), response.getheader("Location") or ""
    finally:
        conn.close()


def normal_fhir(rid: str) -> dict[str, Any]:
    """The normal chest X-ray DiagnosticReport as its own message (id ``rid``, version 1)."""
    doc: dict[str, Any] = json.loads((FHIR_SAMPLES / "xr-chest-2v-normal.json").read_text())
    doc["id"] = rid
    doc.setdefault("meta", {})["versionId"] = "1"
    return doc


def slow_fhir(rid: str, repeats: int) -> bytes:
    """A DiagnosticReport whose presentedForm is ``repeats`` run-on phrases long (slow to check)."""
    doc = normal_fhir(rid)
    text = "FINDINGS: The lungs are clear. " + RUN_ON * repeats + "\nIMPRESSION: No acute abnormality.\n"
    doc["presentedForm"] = [{"contentType": "text/plain", "data": base64.b64encode(text.encode()).decode()}]
    return json.dumps(doc).encode()


def _without_server_ids(value: Any, ids: list[str]) -> Any:
    """``value`` with each server-assigned id (random per run) replaced by its position in ``ids``, and
    the minutes quoted in texts by a placeholder."""
    if isinstance(value, dict):
        return {k: _without_server_ids(v, ids) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_server_ids(v, ids) for v in value]
    if isinstance(value, str):
        for n, sid in enumerate(ids):
            value = value.replace(sid, f"<server-id-{n}>")
        # The live figures' window ends at the receive minute (a route's explanation quotes it).
        value = re.sub(r"\d{4}-\d\d-\d\dT\d\d:\d\dZ", "<minute>", value)
    return value


#: What differs between two daemons for the same body whatever runs the pipeline: times (a route's
#: deadline counts from the receive time) and row keys.
_VOLATILE = {"id", "pk", "message_pk", "received", "processed", "created", "updated", "duration_ms", "deadline"}


def _stable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in _VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def _differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Where ``a`` and ``b`` differ, as paths (for the failure message)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return [d for k in sorted(set(a) | set(b)) for d in _differences(a.get(k), b.get(k), f"{path}/{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return [d for n, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{n}]")]
    return [] if a == b else [f"{path}: {str(a)[:300]} != {str(b)[:300]}"]


def _fhir_run(daemon: RunningDaemon) -> list[tuple[int, Any, Any]]:
    """POST the DiagnosticReport and the transaction Bundle samples; each answer and stored message, server
    ids replaced by placeholders."""
    out = []
    ids: list[str] = []
    for path, name in (
        ("/fhir/DiagnosticReport", "xr-chest-pneumothorax-no-communication.json"),
        ("/fhir", "bundle-transaction-mr-knee-left.json"),
    ):
        status, body, location = post_fhir(daemon, path, (FHIR_SAMPLES / name).read_bytes())
        answer = json.loads(body)
        new_ids = re.findall(r"DiagnosticReport/([0-9a-f]{32})", body.decode() + location)
        assert new_ids, "no server id in the answer"
        ids += new_ids
        out.append((status, _without_server_ids(answer, ids), None))
        shown = [
            json.loads(
                run_cli("show", str(m["message_id"]), "--format", "json", "--state-dir", str(daemon.state_dir)).stdout
            )
            for m in daemon.messages()
            if m.get("transport") == "http"
        ]
        out[-1] = (status, out[-1][1], _stable(_without_server_ids(shown, ids)))
    return out


def test_fhir_bodies_on_worker_processes_answer_and_store_as_threads_do(tmp_path: Path) -> None:
    """A DiagnosticReport and a transaction Bundle POSTed to ``workers: 2`` (every body on a process) get the
    answers and the stored rows ``workers: 0`` gives (server ids aside: random in both)."""
    results = []
    # A budget no loaded test machine reaches: an overrun would answer unchecked on one side only.
    budget = "pipeline_budget: 60\n"
    for name, config in (
        ("threads", "workers: 0\n" + budget),
        ("processes", "workers: 2\nworkers_inline: false\n" + budget),
    ):
        if name == "processes":
            # The first daemon's installation key: the same message keys (docs/deployment.md, hash.key).
            (tmp_path / "state-processes").mkdir()
            shutil.copy(tmp_path / "state-threads" / "hash.key", tmp_path / "state-processes" / "hash.key")
        daemon = start(tmp_path, config, name=name, workers=None)
        try:
            if name == "processes":
                assert wait_for(lambda: len(workers_of(daemon)) == 2, timeout=60)  # noqa: B023
            # The routing policy's live figures come from the store a moment after the start: a body
            # checked before them says "no live figures" in its explanation, one after "no graded reads".
            assert wait_for(lambda: events(daemon, "live_figures_refreshed"), timeout=60)  # noqa: B023
            results.append(_fhir_run(daemon))
            assert not events(daemon, "pipeline_worker_failed")
        finally:
            assert daemon.stop() == 0
    threads, processes = results
    assert [status for status, _, _ in threads] == [201, 200]
    assert processes == threads, _differences(threads, processes)


def test_a_fhir_body_runs_on_a_worker_process(tmp_path: Path) -> None:
    """With both worker processes stopped, a FHIR body is answered from the daemon's own decode, unchecked,
    past budget + grace, and one stopped process is killed and replaced: the body was sent to it. On a
    daemon thread (before this change) the body was checked (bucket ``release``) and no process was killed."""
    daemon = start(tmp_path, "workers: 2\nworkers_inline: false\npipeline_budget: 0.5\n", workers=None)
    stopped = idle_workers(daemon)
    try:
        for pid in stopped:
            os.kill(pid, signal.SIGSTOP)
        status, _, _ = post_fhir(daemon, "/fhir/DiagnosticReport", json.dumps(normal_fhir("stuck-1")).encode())
        assert status == 201
        line = next(e for e in events(daemon, "message_processed") if e.get("status") == 201)
        assert line["bucket"] == "selective_overread"  # the routing policy's unchecked block
        assert events(daemon, "pipeline_overrun")
        assert wait_for(lambda: len(set(stopped) - set(workers_of(daemon))) == 1, timeout=30)
        assert wait_for(lambda: len(workers_of(daemon)) == 2, timeout=60)
        resume(stopped)
        assert not events(daemon, "pipeline_worker_died")
        # The daemon keeps answering FHIR on its new process (its bucket depends on the machine's load:
        # a 0.5 s budget).
        assert post_fhir(daemon, "/fhir/DiagnosticReport", json.dumps(normal_fhir("after-stuck")).encode())[0] == 201
    finally:
        resume(stopped)
        assert daemon.stop() == 0


def test_killed_worker_during_a_fhir_body_retries_then_quarantines(tmp_path: Path) -> None:
    """SIGKILL the worker checking a FHIR body: retried once on a new process; killed again: stored
    quarantined, answered 500; a resend gets the stored answer; the daemon keeps answering."""
    daemon = start(tmp_path, "workers: 2\nworkers_inline: false\npipeline_budget: 600\n", workers=None)
    try:
        assert wait_for(lambda: len(workers_of(daemon)) == 2, timeout=60)
        poison = slow_fhir("killed-fhir-1", 100_000)
        result: dict[str, Any] = {}

        def post() -> None:
            result["answer"] = post_fhir(daemon, "/fhir/DiagnosticReport", poison, timeout=300)

        poster = threading.Thread(target=post)
        poster.start()
        kill_twice(daemon)
        poster.join(300)
        status, body, _ = result["answer"]
        assert status == 500 and QUARANTINE_TEXT.encode() in body
        assert events(daemon, "pipeline_worker_died")[-1]["count"] == 2
        assert events(daemon, "message_quarantined")[-1]["count"] == 2
        assert Journal(daemon.state_dir / "journal").pending() == 0
        again = post_fhir(daemon, "/fhir/DiagnosticReport", poison)
        assert again[0] == 500 and QUARANTINE_TEXT.encode() in again[1]
        after = post_fhir(daemon, "/fhir/DiagnosticReport", json.dumps(normal_fhir("after-kill")).encode())
        assert after[0] == 201
        states = sorted(str(m["state"]) for m in daemon.messages())
        assert states == ["processed", "quarantined"]
    finally:
        assert daemon.stop() == 0
