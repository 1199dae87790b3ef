"""Run by test_kill9 as a subprocess: save records forever, print each control id once saved.

Usage: python crash_writer.py STATE_DIR PREFIX THREADS
A line is printed (and flushed) only after save() has returned, i.e. after the
commit: exactly the moment the daemon would write its ACK.
"""

from __future__ import annotations

import sys
import threading

from listener.store import SQLiteStore
from tests.unit.store.records import item, record, report


def main() -> None:
    state_dir, prefix, threads_n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    store = SQLiteStore.in_state_dir(state_dir)
    out = threading.Lock()

    def work(t: int) -> None:
        i = 0
        while True:
            cid = f"{prefix}-{t}-{i}"
            rec = record(
                cid,
                raw=b"MSH|" + cid.encode() * 50,
                reports=(report(f"A{t}"), report(f"B{t}")),
                outbox=(item(f"A{t}", f"O{cid}"),),
            )
            result = store.save(rec)
            assert not result.duplicate
            with out:
                sys.stdout.write(cid + "\n")
                sys.stdout.flush()
            i += 1

    for t in range(threads_n):
        threading.Thread(target=work, args=(t,), daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
