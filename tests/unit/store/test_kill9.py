"""A real kill -9: nothing that save() confirmed is lost, nothing is stored twice or half.

The writer runs in a subprocess (crash_writer.py) with 8 threads saving through
the group-commit writer and printing each control id once save() has returned:
that print stands for the ACK. The test SIGKILLs it at a random moment, reopens
the file and checks it. (A process kill leaves the OS page cache intact; power
loss is what synchronous=FULL's fsync is for and cannot be tested here.)
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from listener.store import SQLiteStore

REPO = Path(__file__).resolve().parents[3]
SCRIPT = Path(__file__).with_name("crash_writer.py")


def _run_and_kill(state_dir: Path, prefix: str, rnd: random.Random) -> list[str]:
    """Start the writer, let it confirm some saves, SIGKILL it; return the ids it printed."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, str(SCRIPT), str(state_dir), prefix, "8"],
        stdout=subprocess.PIPE,
        env=env,
        cwd=REPO,
    )
    assert proc.stdout is not None
    printed: list[str] = []
    want = rnd.randint(20, 400)
    deadline = time.monotonic() + 30
    while len(printed) < want and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        printed.append(line.decode().strip())
    assert len(printed) >= want, f"writer stopped early (exit {proc.poll()})"
    time.sleep(rnd.uniform(0, 0.05))
    os.kill(proc.pid, signal.SIGKILL)
    rest = proc.stdout.read()
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    # Only complete lines were printed after a save returned.
    printed += [line.decode() for line in rest.split(b"\n")[:-1]]
    return printed


def test_kill9_loses_nothing_acknowledged(tmp_path: Path) -> None:
    """Five kill -9 rounds on one file: every printed id is stored once, with all its rows."""
    seed = random.randrange(2**32)
    rnd = random.Random(seed)
    state_dir = tmp_path / "var"
    printed: list[str] = []
    for round_ in range(5):
        printed += _run_and_kill(state_dir, f"R{round_}", rnd)

    conn = sqlite3.connect(state_dir / "overread.db")
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    finally:
        conn.close()
    store = SQLiteStore.in_state_dir(state_dir)
    try:
        messages = list(store.messages())
        counts = Counter(m.control_id for m in messages)
        missing = [cid for cid in printed if cid not in counts]
        assert missing == [], f"seed {seed}: acknowledged but lost: {missing[:5]}"
        assert [cid for cid, n in counts.items() if n > 1] == []
        assert len(printed) == len(set(printed))
        # Atomic: each stored message has both reports and its outbox row, never part of them.
        assert {m.report_count for m in messages} == {2}
        outbox = Counter(r.control_id for r in store.outbox_list())
        assert outbox == Counter(f"O{m.control_id}" for m in messages)
    finally:
        store.close()
