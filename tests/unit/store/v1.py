"""A store as the previous release (schema version 1) wrote it, built by code.

The tables come from the released v1 migration step; the rows are written with
plain SQL the way the v1 store wrote them (no code of today's store involved),
so an upgrade test compares against data the new code never touched.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from listener.store import schema
from listener.store.compact import join_route, unpack_json, unpack_raw
from listener.store.sqlite import DB_FILENAME

# Messages: (control_id, state, ack_code, error_code, raw); two reports for M1,
# one for M2, none for the rejected M3.
_MESSAGES = (
    ("M1", "processed", "AA", "", b"MSH|^~\\&|RIS|HOSP|||20240501120000||ORU^R01|M1|P|2.5.1\r"),
    ("M2", "processed", "AA", "", None),  # raw purged
    ("M3", "rejected", "AE", "101", b"MSH|^~\\&|RIS|HOSP|||20240501120200||ORU^R01|M3|P|2.5.1\r"),
    ("M4", "ignored", "AA", "", b"MSH|^~\\&|RIS|HOSP|||20240501120300||ADT^A01|M4|P|2.5.1\r"),
)
_REPORTS = (
    ("M1", 0, "ACC1", "release"),
    ("M1", 1, "ACC2", "selective_overread"),
    ("M2", 0, "ACC3", "mandatory_overread"),
)
# (message, accession, control_id, state, attempts, delivered_at, last_error)
_OUTBOX = (
    ("M1", "ACC1", "O1", "delivered", 1, "2024-05-01T12:00:05.000000Z", ""),
    ("M1", "ACC2", "O2", "dead", 5, None, "connection refused"),
    ("M2", "ACC3", "O3", "pending", 2, None, "timeout"),
)


def make_v1_store(state_dir: Path) -> Path:
    """Create ``<state_dir>/overread.db`` at schema version 1 holding a few rows of every kind.

    Returns:
        The database file.
    """
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    db = state_dir / DB_FILENAME
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        assert schema.migrate(conn, target=1) == 0
        ids: dict[str, int] = {}
        for n, (control_id, state, ack_code, error_code, raw) in enumerate(_MESSAGES):
            received = f"2024-05-01T12:0{n}:00.000000Z"
            cur = conn.execute(
                "INSERT INTO messages (sender_application, sender_facility, control_id, feed, received,"
                " transport, state, ack_code, error_code, ack, raw) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (
                    "RIS",
                    "HOSP",
                    control_id,
                    "default",
                    received,
                    "mllp",
                    state,
                    ack_code,
                    error_code,
                    f"MSH|^~\\&|OVR|HOSP|RIS|HOSP\rMSA|{ack_code}|{control_id}\r".encode(),
                    raw,
                ),
            )
            assert cur.lastrowid is not None
            ids[control_id] = cur.lastrowid
        for control_id, seq, accession, bucket in _REPORTS:
            conn.execute(
                "INSERT INTO reports (message_id, seq, accession, bucket, report_json, findings_json,"
                " route_json) VALUES (?,?,?,?,?,?,?)",
                (
                    ids[control_id],
                    seq,
                    accession,
                    bucket,
                    f'{{"accession": "{accession}"}}',
                    "[]",
                    f'{{"bucket": "{bucket}"}}',
                ),
            )
        for control_id, accession, out_id, state, attempts, delivered_at, error in _OUTBOX:
            conn.execute(
                "INSERT INTO outbox (message_id, destination, accession, control_id, state, attempts,"
                " next_attempt_at, last_error, created, updated, delivered_at, payload)"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    ids[control_id],
                    "ris",
                    accession,
                    out_id,
                    state,
                    attempts,
                    "2024-05-01T12:10:00.000000Z",
                    error,
                    "2024-05-01T12:00:00.000000Z",
                    "2024-05-01T12:05:00.000000Z",
                    delivered_at,
                    f"ORM|{out_id}".encode(),
                ),
            )
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        conn.close()
    return db


#: The version 1 columns of each table (later versions add columns after them).
V1_COLUMNS = {
    "messages": 12,
    "reports": 8,
    "outbox": 13,
}


def table_rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of messages, reports and outbox (their version 1 columns, by id), read with plain SQL.

    From the compact schema on, the compacted columns are given as written
    (raw bytes decompressed, JSON as text, each route with its explanation),
    so rows of either version compare (listener/store/compact.py).
    """
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        compact = int(conn.execute("PRAGMA user_version").fetchone()[0]) >= schema.COMPACT_VERSION
        out: dict[str, list[tuple[Any, ...]]] = {}
        for table in ("messages", "reports", "outbox"):
            extra = ", explanation" if compact and table == "reports" else ""
            rows = [list(row) for row in conn.execute(f"SELECT *{extra} FROM {table} ORDER BY id")]
            if compact and table == "messages":
                for row in rows:
                    row[11] = unpack_raw(row[11])
            if compact and table == "reports":
                for row in rows:
                    row[5], row[6], row[7] = unpack_json(row[5]), unpack_json(row[6]), join_route(row[7], row[-1])
            out[table] = [tuple(row[: V1_COLUMNS[table]]) for row in rows]
        return out
    finally:
        conn.close()


def user_version(db: Path) -> int:
    """The schema version recorded in ``db``."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()
