"""Benchmark ``overread store copy``: N messages from SQLite to PostgreSQL.

Run by hand, with a PostgreSQL server (``eval "$(bash .ci/postgres.sh start)"``):
``.venv/bin/python bench/store_copy.py --postgresql "$OVERREAD_TEST_PG_DSN" [--messages 50000]``

A child process first fills a SQLite store in ``--dir`` (default: a temporary
directory under ./var) with N messages of bench/store.py's realistic size (2.4
KB raw ORU, one report with findings and route, one outbox row), written in
transactions of 1,000. This process then copies it into a new schema of the
database the DSN names (dropped afterwards), exactly as ``overread store copy``
does (:func:`listener.store.copy.copy_store`: one target transaction, read back
and verified before the commit), and prints the seconds, messages per second,
rows per second and this process's peak RSS (the copy alone: the filling ran
in the child).
"""

from __future__ import annotations

import argparse
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from listener.store.copy import COPY_BATCH, StoreSpec, copy_store
from listener.store.schema import migrate
from listener.store.sqlite import DB_FILENAME, _connect, _insert_record, create_private_file

_FILL_TRANSACTION = 1000


def fill(state_dir: Path, messages: int) -> None:
    """Write ``messages`` records of realistic size into ``<state_dir>/overread.db``."""
    from store import make_record  # bench/store.py: the same record as the store benchmark

    state_dir.mkdir(parents=True, exist_ok=True)
    path = state_dir / DB_FILENAME
    create_private_file(path)
    conn = _connect(path, "NORMAL", 5000, reader=False)
    migrate(conn)
    for start in range(0, messages, _FILL_TRANSACTION):
        conn.execute("BEGIN IMMEDIATE")
        for n in range(start, min(messages, start + _FILL_TRANSACTION)):
            _insert_record(conn, make_record(f"C{n}"))
        conn.execute("COMMIT")
    conn.close()


def peak_rss_mb() -> float:
    """This process's peak resident set (MB; Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--postgresql", metavar="DSN", help="the server to copy into (a new schema, dropped after)")
    parser.add_argument("--messages", type=int, default=50_000, metavar="N")
    parser.add_argument("--batch", type=int, default=COPY_BATCH, metavar="N", help="rows per read and write")
    parser.add_argument("--dir", type=Path, help="where the SQLite source goes (default: a temporary dir under ./var)")
    parser.add_argument("--fill-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.fill_only is not None:
        fill(args.fill_only, args.messages)
        return 0
    if not args.postgresql:
        parser.error("--postgresql DSN is required (the server to copy into)")

    import psycopg
    from psycopg import sql

    from tests.postgres import as_url, schema_dsn

    workdir = args.dir or Path(tempfile.mkdtemp(prefix="bench-copy-", dir=Path("var").resolve()))
    state = workdir / "source"
    started = time.perf_counter()
    subprocess.run([sys.executable, __file__, "--fill-only", str(state), "--messages", str(args.messages)], check=True)
    size = (state / DB_FILENAME).stat().st_size
    print(f"filled {args.messages} messages in {time.perf_counter() - started:.1f} s; SQLite file {size / 1e6:.0f} MB")

    schema = f"bench_copy_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(args.postgresql, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        rss_before = peak_rss_mb()
        result = copy_store(
            StoreSpec(sqlite=state / DB_FILENAME),
            StoreSpec(url=as_url(schema_dsn(args.postgresql, schema))),
            batch=args.batch,
        )
        seconds = result.seconds
        print(f"copied {result.rows} rows in {len(result.tables)} tables to PostgreSQL, verified")
        print(
            f"seconds {seconds:.1f}  messages/s {args.messages / seconds:.0f}  rows/s {result.rows / seconds:.0f}"
            f"  peak RSS {peak_rss_mb():.0f} MB (before the copy {rss_before:.0f} MB)  batch {args.batch}"
        )
    finally:
        with psycopg.connect(args.postgresql, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        if args.dir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
