"""The searches over stored reports (``store.reports``, the FHIR GET endpoints): routed reports,
reports with findings, and Tasks with their completion, newest first, processed messages only."""

from __future__ import annotations

import dataclasses
import json

from listener.store import ReportRecord, Store
from listener.store.base import TaskPool

from .records import T0, minutes, record


def _report(
    accession: str, status: str, bucket: str, route: object, findings: str = "[]", fhir_id: str = ""
) -> ReportRecord:
    return ReportRecord(
        accession=accession,
        report_json=json.dumps({"status": status, "fhir_id": fhir_id}),
        findings_json=findings,
        route_json=json.dumps(route),
        bucket=bucket,
    )


def _fill(store: Store) -> dict[str, int]:
    """Six messages; returns each one's report id by control id."""
    saves = (
        record("M1", received=T0, reports=(_report("ACC1", "preliminary", "review", {"pool": "neuro"}),)),
        dataclasses.replace(
            record(
                "M2",
                received=T0 + minutes(1),
                reports=(_report("ACC1", "final", "release", {"pool": "neuro"}, '[{"code": "x"}]', fhir_id="F2"),),
            ),
            transport="http",
        ),
        record(
            "M3",
            received=T0 + minutes(2),
            reports=(_report("ACC2", "final", "release", {"pool": "body", "corrections": ["laterality"]}),),
        ),
        record("M4", received=T0 + minutes(3), reports=(_report("", "preliminary", "review", {"pool": "body"}),)),
        record(
            "M5",
            received=T0 + minutes(4),
            state="rejected",
            ack_code="AE",
            reports=(_report("ACC3", "final", "review", {"pool": "body"}, '[{"code": "y"}]'),),
        ),
        record(
            "M6",
            received=T0 + minutes(5),
            reports=(_report("ACC9", "final", "review", None, '[{"code": "z"}]', fhir_id="F6"),),
        ),
    )
    for rec in saves:
        store.save(rec)
    # Each message is told apart by its receive time; a report's id is the store's own.
    found = {
        r.received: r.report_pk
        for r in store.reports.routed(pool=None, limit=100) + store.reports.with_findings(limit=100)
    }
    return {rec.control_id: found[rec.received] for rec in saves if rec.received in found}


def test_routed_reports_newest_first_by_pool(store: Store) -> None:
    """Routed reports of processed messages only (not M5, rejected; not M6, no route), newest first."""
    ids = _fill(store)
    routed = store.reports.routed(pool=None, limit=100)
    assert [r.report_pk for r in routed] == [ids["M4"], ids["M3"], ids["M2"], ids["M1"]]
    assert [r.report_pk for r in store.reports.routed(pool="neuro", limit=100)] == [ids["M2"], ids["M1"]]
    assert [r.report_pk for r in store.reports.routed(pool="neuro", limit=1)] == [ids["M2"]]
    m2 = routed[2]
    assert (m2.accession, m2.transport, m2.received) == ("ACC1", "http", T0 + minutes(1))
    assert json.loads(m2.report_json)["fhir_id"] == "F2" and json.loads(m2.findings_json) == [{"code": "x"}]


def test_reports_with_findings_by_fhir_id_or_accession(store: Store) -> None:
    """Findings searches: all, by accession, or by FHIR id (HTTP messages only)."""
    ids = _fill(store)
    assert [r.report_pk for r in store.reports.with_findings(limit=100)] == [ids["M6"], ids["M2"]]
    assert [r.report_pk for r in store.reports.with_findings(accession="ACC1", limit=100)] == [ids["M2"]]
    assert [r.report_pk for r in store.reports.with_findings(fhir_id="F2", limit=100)] == [ids["M2"]]
    assert store.reports.with_findings(fhir_id="F6", limit=100) == []  # M6 came over MLLP
    assert store.reports.with_findings(accession="ACC3", limit=100) == []  # M5 was rejected


def test_tasks_open_and_completed(store: Store) -> None:
    """A released report with no corrections is no Task (M2); a preliminary is completed by the
    later final of its accession (M1 by M2); no accession never completes (M4)."""
    ids = _fill(store)
    every = store.reports.tasks(status=None, pool=None, limit=100)
    assert [(r.report_pk, done) for r, done in every] == [
        (ids["M4"], None),
        (ids["M3"], None),
        (ids["M1"], T0 + minutes(1)),
    ]
    assert [r.report_pk for r, _ in store.reports.tasks(status="requested", pool=None, limit=100)] == [
        ids["M4"],
        ids["M3"],
    ]
    assert [r.report_pk for r, _ in store.reports.tasks(status="completed", pool=None, limit=100)] == [ids["M1"]]
    assert [r.report_pk for r, _ in store.reports.tasks(status=None, pool="body", limit=1)] == [ids["M4"]]


def test_open_task_pools_count_the_newest_open_tasks(store: Store) -> None:
    """The open Tasks (M3, M4; M1 is completed) counted by pool with the oldest; a route naming no
    pool counts under "" (M7); ``limit`` keeps the newest."""
    _fill(store)
    store.save(record("M7", received=T0 + minutes(6), reports=(_report("ACC7", "preliminary", "review", {}),)))
    assert store.reports.open_task_pools(limit=100) == [
        TaskPool("", 1, T0 + minutes(6)),
        TaskPool("body", 2, T0 + minutes(2)),
    ]
    assert store.reports.open_task_pools(limit=2) == [
        TaskPool("", 1, T0 + minutes(6)),
        TaskPool("body", 1, T0 + minutes(3)),
    ]


def test_a_copy_at_the_same_stage_does_not_complete_a_task(store: Store) -> None:
    """A second preliminary of the accession leaves the first one's Task open."""
    store.save(record("P1", reports=(_report("ACC1", "preliminary", "review", {"pool": "neuro"}),)))
    store.save(
        record("P2", received=T0 + minutes(1), reports=(_report("ACC1", "preliminary", "review", {"pool": "neuro"}),))
    )
    assert [done for _, done in store.reports.tasks(status=None, pool=None, limit=100)] == [None, None]


def test_message_of_a_fhir_id_whatever_its_findings_or_state(store: Store) -> None:
    """``message_of``: the message that carried the report with that FHIR id (the id of a POST's
    Location), with or without findings or a route; an MLLP report's or an unknown id is None."""
    _fill(store)
    pks = {m.control_id: m.message_pk for m in store.messages(limit=100)}
    bare = dataclasses.replace(
        record("M7", received=T0 + minutes(6), reports=(_report("ACC7", "final", "release", None, fhir_id="F7"),)),
        transport="http",
    )
    store.save(bare)
    pks["M7"] = next(m.message_pk for m in store.messages(control_id="M7", limit=1))
    assert store.reports.message_of("F2") == pks["M2"]
    assert store.reports.message_of("F7") == pks["M7"]  # no findings, no route: still found
    assert store.reports.message_of("F6") is None  # an MLLP message's report: not a FHIR id
    assert store.reports.message_of("F9") is None
