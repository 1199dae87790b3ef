"""A store error that quotes patient data, on the real daemon, on SQLite and on PostgreSQL.

The database's own text can quote a row: PostgreSQL's DETAIL ``Failing row contains (...)`` holds the
whole report row (its JSON with the patient's id and name), and an SQLite trigger's message holds
whatever it was written to say. The daemon logs, answers and reports on ``/healthz`` the error's class
and code only (docs/monitoring.md, "Logs"). Here a made-up patient's report is refused by the database
(over MLLP and over FHIR) with such a text, and the health probe's write too; the made-up values
appear in no log line, no ACK, no OperationOutcome and no health answer, and the lines name the class
and the code instead.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, MllpConnection, RunningDaemon, http_client, msa, with_control_id
from tests.integration.test_hardening import events, http_get, wait_for
from tests.integration.test_http import post
from tests.postgres import as_url, fresh_schema, server_dsn

#: The made-up patient: an MRN and a name no sample holds.
MRN = "MRN-LEAK-90210"
NAME = "LEAKYNAME"
#: The client that posts the FHIR report.
SENDER = "sender-token-leak-1"
#: A FHIR sample whose contained Patient's MRN and family name are replaced by the made-up ones.
FHIR_SAMPLE = REPO / "samples" / "fhir" / "xr-chest-2v-normal.json"
#: What each backend says of the refused writes: (class, code).
REFUSED = {
    "sqlite": ("IntegrityError", "SQLITE_CONSTRAINT_TRIGGER"),
    "postgresql": ("CheckViolation", "23514"),
}


def _made_up_patient(oru: bytes) -> bytes:
    """``oru`` with its PID segment replaced by the made-up patient's."""
    pid = f"PID|1||{MRN}^^^ABC^MR||{NAME}^JANE||19700101|F".encode()
    return b"\r".join(pid if s.startswith(b"PID|") else s for s in oru.split(b"\r"))


def _made_up_fhir_patient() -> bytes:
    """The FHIR sample for the made-up patient (a new accession, so it is no copy of a stored one)."""
    body = FHIR_SAMPLE.read_bytes()
    for old, new in ((b"ZZ9000103", MRN.encode()), (b"ZZTEST", NAME.encode()), (b"A2611170088", b"A2611179999")):
        assert old in body
        body = body.replace(old, new)
    return body


def _refuse_on_sqlite(db: Path) -> None:
    """Triggers (from another connection, as a DBA would) whose messages quote the patient."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute(
            f"CREATE TRIGGER refuse_patient BEFORE INSERT ON reports WHEN NEW.patient_id = '{MRN}'"
            f" BEGIN SELECT RAISE(ABORT, 'report of {MRN} {NAME} refused'); END"
        )
        for when in ("INSERT", "UPDATE"):
            conn.execute(
                f"CREATE TRIGGER refuse_probe_{when.lower()} BEFORE {when} ON health_probe"
                f" BEGIN SELECT RAISE(ABORT, 'Failing row contains ({MRN}, {NAME})'); END"
            )
    finally:
        conn.close()


def _refuse_on_postgresql(dsn: str) -> None:
    """A CHECK constraint on reports (its DETAIL quotes the whole row) and a probe trigger whose DETAIL quotes the patient."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"ALTER TABLE reports ADD CONSTRAINT no_leak CHECK (patient_id <> '{MRN}') NOT VALID")
        conn.execute(
            "CREATE FUNCTION refuse_probe() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'new row for relation \"health_probe\" violates check constraint'"
            f" USING ERRCODE = 'check_violation', DETAIL = 'Failing row contains ({MRN}, {NAME})'; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse_probe BEFORE INSERT OR UPDATE ON health_probe EXECUTE FUNCTION refuse_probe()"
        )


@pytest.fixture(name="backend", params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)])
def fixture_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """The backend's name and the ``store:`` line of the daemon's configuration ("" for SQLite)."""
    if request.param == "sqlite":
        yield "sqlite", ""
        return
    base = server_dsn()
    assert base is not None, "postgresql tests run only with a test server (tests/conftest.py)"
    with fresh_schema(base) as dsn:
        yield dsn, f"store: {as_url(dsn)}\n"


def test_a_store_error_quoting_a_patient_reaches_no_log_and_no_answer(
    tmp_path: Path, oru: bytes, backend: tuple[str, str]
) -> None:
    where, store_line = backend
    name = "sqlite" if where == "sqlite" else "postgresql"
    config = tmp_path / "overread.yaml"
    clients = "http_clients:\n" + http_client("sender", SENDER)
    config.write_text(store_line + "health_probe_interval: 0.5\n" + clients, encoding="utf-8")
    (tmp_path / "logs").mkdir()
    daemon = RunningDaemon(tmp_path / "state", tmp_path / "logs", extra=("--config", str(config)), start_timeout=60)
    daemon.start()
    try:
        conn = MllpConnection(daemon.address, timeout=30)
        try:
            # A patient the database takes: the store works before the refusals.
            assert msa(conn.request(with_control_id(oru, "LEAK-OK")))[0] == "AA"
            if name == "sqlite":
                _refuse_on_sqlite(tmp_path / "state" / "overread.db")
            else:
                _refuse_on_postgresql(where)
            ack = conn.request(with_control_id(_made_up_patient(oru), "LEAK-1"))
        finally:
            conn.close()
        assert msa(ack) == ("AR", "LEAK-1")
        assert b"|207" in ack
        assert daemon.http_port is not None
        fhir = post(daemon.http_port, _made_up_fhir_patient(), token=SENDER)
        assert fhir.status == 503
        assert wait_for(lambda: bool(events(daemon, "store_probe_failed")))
        status, health, _ = http_get(daemon.http_port, "/healthz")
    finally:
        assert daemon.stop() == 0
    error_type, error_code = REFUSED[name]
    assert status == 503
    # /healthz names the failure by its class and code.
    reason = json.loads(health)["reason"]
    assert error_type in reason and error_code in reason, reason
    assert fhir.json()["resourceType"] == "OperationOutcome"
    for answer in (ack, fhir.body, health):
        assert MRN.encode() not in answer and NAME.encode() not in answer
    output = daemon.stdout() + daemon.stderr()
    assert MRN not in output and NAME not in output
    probe = events(daemon, "store_probe_failed")[0]
    assert (probe["error_type"], probe["error_code"], probe["reason"]) == (
        error_type,
        error_code,
        "write_probe_refused",
    )
    assert events(daemon, "store_unavailable")
