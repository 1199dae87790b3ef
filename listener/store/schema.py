"""The SQLite schema, versioned with ``PRAGMA user_version``, and its migrations.

Layer: storage, no logging. ``migrate()`` runs on the writer connection before
the first write (and from ``overread store migrate``); a file from a newer
program, or a SQLite file that is not ours, is refused. Every step of
:data:`MIGRATIONS` carries a one-line description, printed by
``overread store migrate`` and logged by the daemon as ``store_migrated``
(docs/operations.md, "Backup, restore, upgrade").
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from listener.errors import StoreError
from listener.store.compact import pack_json, pack_raw, register_functions, split_route, unpack_json
from listener.store.operations import version_texts
from listener.store.rows import VERSION_BATCH, VERSION_COLUMNS

# Times are TEXT "YYYY-MM-DDTHH:MM:SS.ffffffZ" in UTC: fixed width, so text order
# is time order and the file stays readable with the sqlite3 shell.
# JSON columns are not checked with json_valid(): it cost a third of a save's
# CPU, and a NaN from json.dumps would turn one odd value into refusing every
# message; the JSON comes from our own serializer.
# AUTOINCREMENT: ids are never reused after a purge, so an id an operator saw in
# `overread outbox list` or a log line always means the same row; outbox ids
# also order an accession's rows (one writer thread: id order = commit order;
# PostgreSQL gets the same with a lock per accession, docs/store.md).
_V1 = (
    """CREATE TABLE messages (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sender_application TEXT NOT NULL,
        sender_facility TEXT NOT NULL,
        control_id TEXT NOT NULL,
        feed TEXT NOT NULL,
        received TEXT NOT NULL,
        transport TEXT NOT NULL CHECK (transport IN ('mllp', 'http')),
        state TEXT NOT NULL CHECK (state IN ('processed', 'rejected', 'ignored')),
        ack_code TEXT NOT NULL,
        error_code TEXT NOT NULL DEFAULT '',
        ack BLOB NOT NULL,
        raw BLOB,
        UNIQUE (sender_application, sender_facility, control_id)
    )""",
    "CREATE INDEX messages_received ON messages (received)",
    # Only rows still holding raw bytes: purge_raw() never rescans purged rows.
    "CREATE INDEX messages_raw_received ON messages (received) WHERE raw IS NOT NULL",
    """CREATE TABLE reports (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        seq INTEGER NOT NULL,
        accession TEXT NOT NULL,
        bucket TEXT NOT NULL,
        report_json TEXT NOT NULL,
        findings_json TEXT NOT NULL,
        route_json TEXT NOT NULL,
        UNIQUE (message_id, seq)
    )""",
    "CREATE INDEX reports_accession ON reports (accession)",
    """CREATE TABLE outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        destination TEXT NOT NULL,
        accession TEXT NOT NULL,
        control_id TEXT NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending'
            CHECK (state IN ('pending', 'delivered', 'dead')),
        attempts INTEGER NOT NULL DEFAULT 0,
        next_attempt_at TEXT NOT NULL,
        last_error TEXT NOT NULL DEFAULT '',
        created TEXT NOT NULL,
        updated TEXT NOT NULL,
        delivered_at TEXT,
        payload BLOB NOT NULL
    )""",
    # Head-of-line lookups: the oldest pending row of a (destination, accession).
    "CREATE INDEX outbox_pending ON outbox (destination, accession, id) WHERE state = 'pending'",
    # Due scans walk a destination's pending rows in id order and stop at LIMIT.
    "CREATE INDEX outbox_state ON outbox (destination, state, id)",
    "CREATE INDEX outbox_message ON outbox (message_id)",
)


def _migrate_v1(conn: sqlite3.Connection) -> None:
    for statement in _V1:
        conn.execute(statement)


_STATE_V1 = "CHECK (state IN ('processed', 'rejected', 'ignored'))"
_STATE_V2 = "CHECK (state IN ('processed', 'rejected', 'ignored', 'quarantined'))"


def _migrate_v2(conn: sqlite3.Connection) -> None:
    """v2: the ``quarantined`` message state and the health probe's table.

    Widening a CHECK constraint changes no stored row, so the table's
    definition is edited in place (SQLite's documented procedure for changes
    that leave the file format alone: writable_schema plus a schema_version
    bump) instead of copying every message into a new table.
    """
    (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'messages'").fetchone()
    if _STATE_V1 not in sql:
        raise StoreError("the messages table is not the expected version 1 table")
    (schema_version,) = conn.execute("PRAGMA schema_version").fetchone()
    conn.execute("PRAGMA writable_schema = ON")
    try:
        conn.execute(
            "UPDATE sqlite_master SET sql = ? WHERE type = 'table' AND name = 'messages'",
            (sql.replace(_STATE_V1, _STATE_V2),),
        )
        conn.execute(f"PRAGMA schema_version = {int(schema_version) + 1}")
    finally:
        conn.execute("PRAGMA writable_schema = OFF")
    # The health probe's one row: a periodic real write (docs/hardening.md).
    conn.execute("CREATE TABLE health_probe (id INTEGER PRIMARY KEY CHECK (id = 1), at TEXT NOT NULL)")


_V3 = (
    # Lookups by business keys (docs/operations.md, "Finding one message").
    "CREATE INDEX messages_control_id ON messages (control_id)",
    "ALTER TABLE reports ADD COLUMN patient_id TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE reports ADD COLUMN patient_authority TEXT NOT NULL DEFAULT ''",
    "UPDATE reports SET patient_id = coalesce(json_extract(report_json, '$.patient.id'), ''),"
    " patient_authority = coalesce(json_extract(report_json, '$.patient.id_authority'), '')",
    "CREATE INDEX reports_patient ON reports (patient_id, patient_authority)",
    # The message row holds its current processing; earlier ones move to
    # processings (number 1 is the first), written in the same transaction.
    "ALTER TABLE messages ADD COLUMN processing INTEGER NOT NULL DEFAULT 1",
    "ALTER TABLE messages ADD COLUMN processed TEXT NOT NULL DEFAULT ''",
    """CREATE TABLE processings (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        message_id INTEGER NOT NULL REFERENCES messages (id) ON DELETE CASCADE,
        number INTEGER NOT NULL,
        processed TEXT NOT NULL,
        superseded TEXT NOT NULL,
        superseded_by TEXT NOT NULL,
        feed TEXT NOT NULL,
        state TEXT NOT NULL,
        ack_code TEXT NOT NULL,
        error_code TEXT NOT NULL,
        ack BLOB NOT NULL,
        raw BLOB,
        reports_json TEXT NOT NULL,
        UNIQUE (message_id, number)
    )""",
    # Each delivery attempt and operator action on an outbox row, oldest first.
    "ALTER TABLE outbox ADD COLUMN resent_from INTEGER",
    """CREATE TABLE outbox_events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        outbox_id INTEGER NOT NULL REFERENCES outbox (id) ON DELETE CASCADE,
        at TEXT NOT NULL,
        event TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX outbox_events_row ON outbox_events (outbox_id, id)",
    # A destination's connection state (kept by the outbound worker) and an
    # operator's request to try now (`overread outbox kick`).
    """CREATE TABLE destination_state (
        destination TEXT PRIMARY KEY,
        connect_failures INTEGER NOT NULL DEFAULT 0,
        last_connect_error TEXT NOT NULL DEFAULT '',
        last_connect_error_at TEXT,
        next_connect_at TEXT,
        kick_requested_at TEXT,
        updated TEXT NOT NULL
    )""",
    # Operator actions: who, when, what, how many rows; ids only, no patient data.
    """CREATE TABLE audit (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        via TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        rows INTEGER NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    )""",
    "CREATE INDEX audit_at ON audit (at)",
)


def _migrate_v3(conn: sqlite3.Connection) -> None:
    for statement in _V3:
        conn.execute(statement)


_V4 = (
    # Explicit peer-review scores (docs/outcomes.md, "Explicit scores"): one row
    # per score; the unique key makes recording the same score again a no-op.
    # A score outlives the message that carried it (a purge keeps the grade).
    """CREATE TABLE scores (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        accession TEXT NOT NULL CHECK (accession != ''),
        grade TEXT NOT NULL CHECK (grade IN ('1', '2a', '2b', '3a', '3b')),
        source TEXT NOT NULL CHECK (source IN ('obx', 'fhir', 'csv', 'cli')),
        scorer TEXT NOT NULL DEFAULT '',
        note TEXT NOT NULL DEFAULT '',
        scored_at TEXT NOT NULL,
        message_id INTEGER REFERENCES messages (id) ON DELETE SET NULL,
        UNIQUE (accession, source, scorer, grade, scored_at)
    )""",
    "CREATE INDEX scores_message ON scores (message_id) WHERE message_id IS NOT NULL",
)


def _migrate_v4(conn: sqlite3.Connection) -> None:
    for statement in _V4:
        conn.execute(statement)


_V5 = (
    # Derived data: each compared pair's result, keyed by a digest of both
    # versions' stored JSON and the versions of everything the comparison read
    # (docs/outcomes.md, "Scorecards: where the figures come from"). Any row may
    # be deleted at any time; the next read computes it again.
    """CREATE TABLE comparisons (
        key TEXT PRIMARY KEY,
        accession TEXT NOT NULL,
        computed_at TEXT NOT NULL,
        result_json TEXT NOT NULL
    )""",
)


def _migrate_v5(conn: sqlite3.Connection) -> None:
    for statement in _V5:
        conn.execute(statement)


#: Rows converted per statement batch by the compaction step: bounds the migration's memory.
COMPACT_BATCH = 500


def _compact_rows(
    conn: sqlite3.Connection, table: str, columns: str, convert: Callable[[tuple[object, ...]], tuple[object, ...]]
) -> None:
    """Rewrite every row of ``table`` in id order, COMPACT_BATCH rows at a time.

    ``convert`` takes the selected ``columns`` and returns their new values
    (the same order); the UPDATE sets them on the row's id.
    """
    names = [c.strip() for c in columns.split(",")]
    update = f"UPDATE {table} SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?"
    last = 0
    while True:
        rows = conn.execute(
            f"SELECT id, {columns} FROM {table} WHERE id > ? ORDER BY id LIMIT ?", (last, COMPACT_BATCH)
        ).fetchall()
        if not rows:
            return
        conn.executemany(update, [(*convert(tuple(row[1:])), row[0]) for row in rows])
        last = int(rows[-1][0])


def _compact_report(row: tuple[object, ...]) -> tuple[object, ...]:
    """(report, findings, route, explanation) as written before -> their compact forms."""
    report_json, findings_json, route_json = (str(v) for v in row[:3])
    route, explanation = split_route(route_json)
    return pack_json(report_json), pack_json(findings_json), route, explanation


def _compact_raw(row: tuple[Any, ...]) -> tuple[Any, ...]:
    (raw,) = row
    return (None if raw is None else pack_raw(bytes(raw)),)


def _migrate_v6(conn: sqlite3.Connection) -> None:
    """v6: compact storage (docs/store.md, "Compact storage").

    Adds ``reports.explanation`` and converts every stored row in this one
    transaction: raw bytes compressed, report and findings JSON compressed
    when long, each route's explanation moved out of ``route_json``
    (listener/store/compact.py). Rows are read and rewritten in id order,
    a batch at a time.
    """
    conn.execute("ALTER TABLE reports ADD COLUMN explanation BLOB")
    _compact_rows(conn, "reports", "report_json, findings_json, route_json, explanation", _compact_report)
    _compact_rows(conn, "messages", "raw", _compact_raw)
    _compact_rows(conn, "processings", "raw", _compact_raw)


_V7 = (
    # Outbox leases (docs/outbound.md, "Leases"): the instance whose worker
    # claimed the row and when its claim lapses; both NULL when nobody holds it.
    "ALTER TABLE outbox ADD COLUMN lease_holder TEXT",
    "ALTER TABLE outbox ADD COLUMN lease_expires TEXT",
)


def _migrate_v7(conn: sqlite3.Connection) -> None:
    for statement in _V7:
        conn.execute(statement)


_V8 = (
    # The console's reads (docs/store.md, "Console reads"). traffic reads a
    # window from this index alone, already in (hour, kind) order, so SQLite
    # counts each group as it passes instead of sorting the window's rows;
    # bucket_mix and messages(bucket=) read a message's buckets without its
    # reports' rows.
    "CREATE INDEX messages_traffic ON messages (substr(received, 1, 13),"
    " sender_application, sender_facility, transport, ack_code, state, received)",
    "CREATE INDEX reports_message_bucket ON reports (message_id, bucket)",
)


def _migrate_v8(conn: sqlite3.Connection) -> None:
    for statement in _V8:
        conn.execute(statement)


_V9 = (
    # Version summaries (docs/store.md, "Version summaries"): what scorecards
    # read of each report, written with it, so a window's reads are counted
    # from an index instead of decoding every report's JSON. stage is NULL on
    # a report of a message that is not processed (no version of its accession).
    "ALTER TABLE reports ADD COLUMN received TEXT",
    "ALTER TABLE reports ADD COLUMN stage INTEGER",
    "ALTER TABLE reports ADD COLUMN clinical_at TEXT",
    "ALTER TABLE reports ADD COLUMN prelim_minutes REAL",
    "ALTER TABLE reports ADD COLUMN summary TEXT",
)
_V9_INDEXES = (
    # A window's versions and everything counted of them, from the index alone.
    "CREATE INDEX reports_versions ON reports (received, accession, stage, clinical_at, prelim_minutes, summary)"
    " WHERE stage IS NOT NULL AND accession != ''",
)


def _summarize_reports(conn: sqlite3.Connection) -> None:
    """Fill the version summary of every report row, VERSION_BATCH rows at a time in id order."""
    update = f"UPDATE reports SET {', '.join(f'{c} = ?' for c in VERSION_COLUMNS)} WHERE id = ?"
    last = 0
    while True:
        rows = conn.execute(
            "SELECT r.id, r.report_json, r.findings_json, m.received, m.state FROM reports r"
            " JOIN messages m ON m.id = r.message_id WHERE r.id > ? ORDER BY r.id LIMIT ?",
            (last, VERSION_BATCH),
        ).fetchall()
        if not rows:
            return
        conn.executemany(
            update,
            [
                (*version_texts(unpack_json(report), unpack_json(findings), str(received), state == "processed"), pk)
                for pk, report, findings, received, state in rows
            ],
        )
        last = int(rows[-1][0])


def _migrate_v9(conn: sqlite3.Connection) -> None:
    """v9: version summaries on reports (docs/store.md, "Version summaries"), back-filled from each row's JSON."""
    for statement in _V9:
        conn.execute(statement)
    _summarize_reports(conn)
    for statement in _V9_INDEXES:
        conn.execute(statement)


#: Step 10's line (PostgreSQL's step says the same, listener/store/pg_schema.py).
V10_DESCRIPTION = (
    "overread page indexes: versions and accessions with the row id, reports by receive time and bucket, open tasks"
)


def _migrate_v10(conn: sqlite3.Connection) -> None:
    """v10: PostgreSQL's indexes for the overread page (docs/store.md, "The overread page on
    PostgreSQL"). SQLite's already answer those reads: every SQLite index holds the rowid (the
    report id), and its bucket_mix and Task searches are fast as they are. Nothing changes here."""
    del conn


#: Step 11's line (PostgreSQL's step says the same, listener/store/pg_schema.py).
V11_DESCRIPTION = (
    "prior look-up columns on reports (study date, modality, body region, procedure code, cancelled),"
    " back-filled; the patient index holds them"
)

_V11 = (
    # What a prior look-up reads of a report (docs/store.md, "Prior look-up columns"), written with
    # the row (listener/store/rows.py, prior_values), so a look-up reads no report JSON.
    "ALTER TABLE reports ADD COLUMN study_date TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE reports ADD COLUMN modality TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE reports ADD COLUMN body_region TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE reports ADD COLUMN procedure_code TEXT NOT NULL DEFAULT ''",
    "ALTER TABLE reports ADD COLUMN cancelled INTEGER NOT NULL DEFAULT 0",
)
_V11_INDEXES = (
    # A patient's look-up reads its rows from this index alone, in accession order (one group per
    # accession); the message search by patient reads its first two columns.
    "DROP INDEX reports_patient",
    "CREATE INDEX reports_patient ON reports (patient_id, patient_authority, accession, received, stage,"
    " cancelled, study_date, modality, body_region, procedure_code)",
)
#: The back-fill of one batch of rows (ids in (?, ?]): the expressions the look-up read the JSON
#: with before step 11, so a migrated store answers as it did.
_V11_FILL = (
    "UPDATE reports SET study_date = x.day, modality = x.modality, body_region = x.region,"
    " procedure_code = x.code, cancelled = x.cancelled FROM (SELECT id,"
    " substr(coalesce(json_extract(j, '$.times.observation'), json_extract(j, '$.times.report'), received), 1, 10)"
    " AS day, coalesce(json_extract(j, '$.modality'), '') AS modality,"
    " coalesce(json_extract(j, '$.body_region'), '') AS region, coalesce(json_extract(j, '$.procedure.code'), '')"
    " AS code, coalesce(json_extract(j, '$.status'), '') = 'cancelled' AS cancelled"
    " FROM (SELECT r.id, overread_json(r.report_json) AS j, m.received FROM reports r"
    " JOIN messages m ON m.id = r.message_id WHERE r.id > ? AND r.id <= ?)) x WHERE reports.id = x.id"
)


def _migrate_v11(conn: sqlite3.Connection) -> None:
    """v11: the prior look-up columns, back-filled VERSION_BATCH rows at a time in id order."""
    register_functions(conn)  # `overread store migrate` opens the file without the store's functions
    for statement in _V11:
        conn.execute(statement)
    (top,) = conn.execute("SELECT coalesce(max(id), 0) FROM reports").fetchone()
    for start in range(0, int(top), VERSION_BATCH):
        conn.execute(_V11_FILL, (start, start + VERSION_BATCH))
    for statement in _V11_INDEXES:
        conn.execute(statement)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step: it takes a database from ``version - 1`` to ``version``.

    Attributes:
        version: the schema version the step produces (``MIGRATIONS[n].version == n + 1``).
        description: one line saying what the step changes, for people.
        apply: the step itself; runs inside the caller's transaction.
    """

    version: int
    description: str
    apply: Callable[[sqlite3.Connection], None]

    @property
    def label(self) -> str:
        """``"v1 -> v2: <description>"``."""
        return f"v{self.version - 1} -> v{self.version}: {self.description}"


#: MIGRATIONS[n] upgrades a database from version n to n + 1 inside the caller's
#: transaction. Append a step (SCHEMA_VERSION follows) to change the schema;
#: never edit a released step. Use conn.execute, not executescript (it commits).
MIGRATIONS: list[Migration] = [
    Migration(1, "messages, reports and outbox tables", _migrate_v1),
    Migration(2, "'quarantined' message state and the health_probe table", _migrate_v2),
    Migration(
        3, "patient and control id indexes, processings, outbox events, destination state and audit", _migrate_v3
    ),
    Migration(4, "explicit peer-review scores table", _migrate_v4),
    Migration(5, "comparisons cache table (derived, may be dropped)", _migrate_v5),
    Migration(6, "compact storage: raw bytes and long JSON compressed, route explanations apart", _migrate_v6),
    Migration(7, "outbox lease holder and expiry", _migrate_v7),
    Migration(8, "console indexes: messages by receive time and kind, reports by message and bucket", _migrate_v8),
    Migration(9, "version summaries on reports (what scorecards count), back-filled", _migrate_v9),
    Migration(10, V10_DESCRIPTION, _migrate_v10),
    Migration(11, V11_DESCRIPTION, _migrate_v11),
]

#: The schema version this code writes (``PRAGMA user_version``).
SCHEMA_VERSION = len(MIGRATIONS)

#: The version from which raw bytes, long JSON and explanations are stored compact (listener/store/compact.py).
COMPACT_VERSION = next(m.version for m in MIGRATIONS if m.apply is _migrate_v6)


def schema_version(conn: sqlite3.Connection) -> int:
    """Return the schema version recorded in the file (0: new or not ours)."""
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def pending_migrations(version: int, target: int | None = None) -> Sequence[Migration]:
    """Return the steps that take a database at ``version`` to ``target`` (default: latest)."""
    target = len(MIGRATIONS) if target is None else target
    return tuple(MIGRATIONS[version:target])


def newer_schema_text(version: int, known: int) -> str:
    """The refusal for a file written by a newer program: both versions, and what to do."""
    return f"store schema version {version} is newer than this program's {known}; upgrade overread to open this store"


def migrate(conn: sqlite3.Connection, target: int | None = None) -> int:
    """Bring the schema of an autocommit connection up to ``target`` (default: latest).

    All steps run in one IMMEDIATE transaction, so a crash leaves either the old
    or the new version, and two processes opening a new file do not both migrate.
    The steps run are ``pending_migrations(<the returned version>, target)``.

    Returns:
        The version before migrating.

    Raises:
        StoreError: the file is newer than ``target``, or is not an overread store.
    """
    target = len(MIGRATIONS) if target is None else target
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = schema_version(conn)
        if version > target:
            raise StoreError(newer_schema_text(version, target))
        if version == 0 and conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise StoreError("the database file is not an overread store")
        for step in pending_migrations(version, target):
            step.apply(conn)
        if version != target:
            conn.execute(f"PRAGMA user_version = {int(target)}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    return version
