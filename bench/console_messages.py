"""The console's message browser over 100,000 stored messages: server time per page.

Run by hand: ``.venv/bin/python bench/console_messages.py [--messages 100000] [--dir DIR] [--runs 20]``.

The SQLite store is filled as bench/store_size.py fills it (the daemon's own records of four
message files, each saved with a new control id and accession, all received now). Then each page
function of listener/console/messages.py runs ``--runs`` times, rendered with the console's
templates as the daemon renders them (no HTTP), and its median and p95 wall time are printed in
ms: the search with no filter (the last 24 hours: every stored message), by accession, by control
id, by bucket, by sender and state with no match (the window scanned), newest first (the default) and oldest
first, pages deep in the store (the ``before=`` and ``after=`` cursors),
and one message's page for a phi and a non-phi caller (docs/console.md, "Message browser").
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.console_queries import timed  # noqa: E402
from bench.store_size import fill, templates  # noqa: E402
from listener.console.messages import messages_page  # noqa: E402
from listener.console.web import Caller, Console, ConsoleDeps, Ctx  # noqa: E402
from listener.store.sqlite import SQLiteStore  # noqa: E402
from tests.unit.console.test_messages_order import browsing_services  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--dir", default=tempfile.gettempdir())
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    records = templates()
    work = Path(tempfile.mkdtemp(prefix="bench-console-", dir=args.dir))
    try:
        store = SQLiteStore(work / "overread.db", synchronous="NORMAL")
        _, seconds = fill(store, records, args.messages, 256)
        print(f"filled {args.messages} messages in {seconds:.1f} s")
        services = browsing_services(store)
        console = Console(ConsoleDeps(lambda: {}, lambda *a: ("", frozenset()), lambda *a: None, None, time.time))  # type: ignore[arg-type]
        phi = Caller("analyst", frozenset({"console", "phi", "operator"}), "bearer")
        plain = Caller("manager", frozenset({"console"}), "bearer")
        middle = store.newest_message_pk() // 2
        one = next(iter(store.messages(after=middle, limit=1)))
        accession = store.message_detail(one.message_pk).reports[0].accession  # type: ignore[union-attr]

        def page(caller: Caller, rest: tuple[str, ...], **params: str) -> Callable[[], object]:
            def call() -> object:
                ctx = Ctx(caller, "GET", rest, params, {}, datetime.now(UTC))
                reply = messages_page(ctx, services)
                assert reply.status == 200, reply.context
                return console.render(reply, caller, "messages")

            return call

        cases = {
            "search, no filter (24h: every message), newest first": page(phi, ()),
            "search, no filter, oldest first": page(phi, (), order="oldest"),
            "search by accession": page(phi, (), accession=accession),
            "search by control id": page(phi, (), control_id=one.control_id),
            "search by bucket (selective_overread)": page(phi, (), bucket="selective_overread"),
            "search by sender + state, no match": page(phi, (), sender=one.sender_application, state="rejected"),
            "search, older page in the middle (before=)": page(phi, (), before=str(middle), since="7d"),
            "search, newer page in the middle (after=)": page(phi, (), after=str(middle), since="7d"),
            "search, oldest first, middle (after=)": page(phi, (), after=str(middle), since="7d", order="oldest"),
            "message page, phi": page(phi, (str(one.message_pk),)),
            "message page, no phi": page(plain, (str(one.message_pk),)),
        }
        for name, call in cases.items():
            median, p95 = timed(args.runs, call)
            print(f"{name:<56} median {median:7.1f} ms   p95 {p95:7.1f} ms")
        store.close()
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
