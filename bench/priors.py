"""CPU of one prior look-up (``prior_studies``) by how many priors each patient has.

Run by hand: ``.venv/bin/python bench/priors.py [--priors 1,5,20,100] [--lookups 2000]``
and, for PostgreSQL (each store in a new schema of the database the DSN names,
dropped afterwards): ``.venv/bin/python bench/priors.py --postgresql "$OVERREAD_TEST_PG_DSN"``.

For each count N of ``--priors``, a fresh store holds ``--patients`` patients
(at most ``--rows`` report rows in all) with N accessions each; every accession
has a preliminary and a final (two report rows), each report the stored JSON
of the bench/mllp.py corpus ORU (about 2.5 KB) with its own accession, patient
and observation time. Then ``--lookups`` look-ups, each of a random patient
for a new accession (as a worker asks for a new study's priors: all N are
returned), limit ``PRIOR_LIMIT`` (listener/server/priors.py, 100):

* SQLite: through a :class:`~listener.store.sqlite.PriorReader` (a worker
  process's own connection); CPU is this thread's (``time.thread_time``): the
  look-up runs in the calling thread, SQLite included.
* PostgreSQL: through ``PostgresStore.prior_studies``; CPU is this process's
  plus the server's (user + system of every child of the postmaster the
  ``--pg-dir`` names, from ``/proc``), the server's shown apart. The tables
  are vacuumed and analyzed after filling, as autovacuum leaves them.

Prints microseconds of CPU per look-up (median of ``--rounds`` rounds) and
the priors each look-up returned on average. The tree whose ``listener`` runs
is this file's, unless ``OVERREAD_BENCH_TREE`` names another (a checkout or
``git archive`` of an older commit): the way
to measure an older version side by side (docs/benchmarks.md, "Prior look-ups
from columns").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TREE = Path(os.environ.get("OVERREAD_BENCH_TREE", str(REPO)))
if str(TREE) not in sys.path:
    sys.path.insert(0, str(TREE))
if str(REPO) not in sys.path:
    sys.path.append(str(REPO))

from bench.mllp import CORPUS_FILE  # noqa: E402
from listener.assemble import build_pipeline  # noqa: E402
from listener.config import load_config  # noqa: E402
from listener.intake import report_records  # noqa: E402
from listener.pipeline import process  # noqa: E402
from listener.server.priors import PRIOR_LIMIT  # noqa: E402
from listener.store import MessageRecord, ReportRecord, SQLiteStore, Store  # noqa: E402
from listener.store.sqlite import PriorReader  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
T0 = datetime(2026, 1, 1, tzinfo=UTC)
LIMIT = PRIOR_LIMIT
#: Every look-up's ``before``: after every stored message.
BEFORE = T0 + timedelta(days=3650)


def template() -> ReportRecord:
    """The corpus ORU's stored report record."""
    outcome = process(CORPUS_FILE.read_bytes(), build_pipeline(load_config(None)), received_at=T0)
    (found,) = report_records(outcome)
    return found


def fill(store: Store, base: ReportRecord, patients: int, priors: int) -> None:
    """``patients`` x ``priors`` accessions, each a preliminary then a final, saved in time order."""
    doc = json.loads(base.report_json)
    n = 0
    for k in range(priors):
        for p in range(patients):
            for status in ("preliminary", "final"):
                n += 1
                accession = f"P{p}A{k}"
                doc.update(accession=accession, status=status)
                doc["patient"] = {**(doc.get("patient") or {}), "id": f"MRN{p}", "id_authority": "HOSP"}
                doc["times"] = {**(doc.get("times") or {}), "observation": (T0 + timedelta(days=k)).isoformat()}
                report = ReportRecord(
                    accession=accession,
                    report_json=json.dumps(doc),
                    findings_json=base.findings_json,
                    route_json=base.route_json,
                    bucket=base.bucket,
                    patient_id=f"MRN{p}",
                    patient_authority="HOSP",
                )
                store.save(
                    MessageRecord(
                        control_id=f"C{n}",
                        sender_application="RIS",
                        sender_facility="HOSP",
                        feed="default",
                        received=T0 + timedelta(seconds=n),
                        raw=None,
                        transport="mllp",
                        state="processed",
                        ack_code="AA",
                        ack=b"MSA|AA",
                        reports=(report,),
                        outbox=(),
                    )
                )


def vacuum(dsn: str) -> None:
    """``VACUUM ANALYZE`` the reports, as autovacuum leaves a store that has been written for a while
    (index-only scans read the heap for pages not yet marked all-visible)."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE reports")
        conn.execute("VACUUM ANALYZE messages")


def server_cpu_ticks(pg_dir: Path | None) -> int:
    """User + system ticks of every child of the PostgreSQL postmaster in ``pg_dir`` (0 without one)."""
    if pg_dir is None:
        return 0
    postmaster = (pg_dir / "data" / "postmaster.pid").read_text().split()[0]
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == postmaster:
            total += int(fields[11]) + int(fields[12])
    return total


def measure(
    ask: Callable[[str, str], int], patients: int, priors: int, lookups: int, pg_dir: Path | None
) -> tuple[float, float, float]:
    """(client us, server us, mean priors returned) per look-up over ``lookups`` random look-ups."""
    rng = random.Random(1)
    questions = [(f"MRN{p}", f"P{p}NEW") for p in (rng.randrange(patients) for _ in range(lookups))]
    for patient, own in questions[:50]:
        ask(patient, own)  # warm caches and statements
    server = server_cpu_ticks(pg_dir)
    started = time.thread_time()
    returned = sum(ask(patient, own) for patient, own in questions)
    client = time.thread_time() - started
    server_s = (server_cpu_ticks(pg_dir) - server) / TICKS
    return client / lookups * 1e6, server_s / lookups * 1e6, returned / lookups


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--priors", default="1,5,20,100", help="comma-separated priors per patient")
    parser.add_argument("--patients", type=int, default=200, help="patients per store (fewer when --rows says)")
    parser.add_argument("--rows", type=int, default=8000, help="at most this many report rows per store")
    parser.add_argument("--lookups", type=int, default=2000, help="look-ups measured per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--postgresql", metavar="DSN", help="bench the PostgreSQL backend on this server")
    parser.add_argument("--pg-dir", type=Path, help="the test server's directory (.ci/postgres.sh): its CPU too")
    args = parser.parse_args()
    base = template()
    import listener

    print(f"listener from {Path(listener.__file__).resolve().parent.parent}")
    print(f"report JSON {len(base.report_json)} bytes; limit {LIMIT}; CPU us per look-up, median of {args.rounds}")
    for priors in (int(v) for v in args.priors.split(",")):
        patients = max(1, min(args.patients, args.rows // (2 * priors)))
        client: list[float] = []
        server: list[float] = []
        returned = 0.0
        if args.postgresql:
            from listener.store.postgresql import PostgresStore
            from tests.postgres import fresh_schema

            with fresh_schema(args.postgresql) as dsn:
                pg = PostgresStore(dsn)
                try:
                    fill(pg, base, patients, priors)
                    vacuum(dsn)

                    def ask_pg(patient: str, own: str, store: Any = pg) -> int:
                        return len(
                            store.prior_studies(patient, "HOSP", before=BEFORE, exclude_accession=own, limit=LIMIT)
                        )

                    for _ in range(args.rounds):
                        c, s, returned = measure(ask_pg, patients, priors, args.lookups, args.pg_dir)
                        client.append(c)
                        server.append(s)
                finally:
                    pg.close()
        else:
            tmp = Path(tempfile.mkdtemp(prefix="priors-", dir=REPO / "var" if (REPO / "var").is_dir() else None))
            try:
                store = SQLiteStore.in_state_dir(tmp)
                try:
                    fill(store, base, patients, priors)
                finally:
                    store.close()
                reader = PriorReader(tmp / "overread.db")

                def ask_sqlite(patient: str, own: str, r: PriorReader = reader) -> int:
                    return len(r.prior_studies(patient, "HOSP", before=BEFORE, exclude_accession=own, limit=LIMIT))

                try:
                    for _ in range(args.rounds):
                        c, s, returned = measure(ask_sqlite, patients, priors, args.lookups, None)
                        client.append(c)
                        server.append(s)
                finally:
                    reader.close()
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        line = f"{priors:>4} priors x {patients:>4} patients: {statistics.median(client):8.1f} us client"
        if args.postgresql:
            line += f" + {statistics.median(server):8.1f} us server"
        print(f"{line}   ({returned:.1f} priors returned)", flush=True)


if __name__ == "__main__":
    main()
