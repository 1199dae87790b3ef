"""Prior studies: the pipeline's ``priors_for`` hook and the daemon's store look-up behind it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from listener.errors import StoreError
from listener.model import Patient, Report
from listener.pipeline import process
from listener.qa.engine import Prior
from listener.server.priors import PriorLookup
from listener.store.base import PriorStudy
from tests.unit.qa.factory import make_report, pipeline

REPO = Path(__file__).resolve().parents[3]
# ZZ9000104^^^LEMC, XR chest, "COMPARISON: None.", observed 2026-11-19.
NEW = (REPO / "samples/hl7/xr-chest-pneumothorax-no-communication.hl7").read_bytes()
RECEIVED = datetime(2026, 11, 19, 21, 0, tzinfo=UTC)
CHEST_XR = Prior("A1", date(2026, 11, 17), "XR", "chest", "71046")


def _rules(outcome: Any) -> set[str]:
    return {f.rule for r in outcome.reports for f in r.findings}


def test_priors_for_is_asked_per_decoded_report_and_wins() -> None:
    """The hook sees the decoded report (its patient) and its answer is the report's priors."""
    seen: list[Report] = []

    def priors_for(report: Report) -> tuple[Prior, ...] | None:
        seen.append(report)
        return (CHEST_XR,)

    outcome = process(NEW, pipeline(), received_at=RECEIVED, priors_for=priors_for)
    assert [(r.patient.id, r.patient.id_authority) for r in seen] == [("ZZ9000104", "LEMC")]
    assert "comparison.none_with_priors" in _rules(outcome)
    unknown = process(NEW, pipeline(), received_at=RECEIVED, priors=(CHEST_XR,), priors_for=lambda _: None)
    assert "comparison.none_with_priors" not in _rules(unknown)
    assert "comparison.none_with_priors" not in _rules(process(NEW, pipeline(), received_at=RECEIVED))


class _Store:
    """The one Store method PriorLookup uses, recording its arguments."""

    def __init__(self, studies: tuple[PriorStudy, ...] = (), error: Exception | None = None) -> None:
        self.studies, self.error = studies, error
        self.calls: list[tuple[Any, ...]] = []

    def prior_studies(
        self, patient_id: str, patient_authority: str, *, before: datetime, exclude_accession: str = "", limit: int = 50
    ) -> tuple[PriorStudy, ...]:
        self.calls.append((patient_id, patient_authority, before, exclude_accession, limit))
        if self.error is not None:
            raise self.error
        return self.studies


def _report(patient_id: str = "MRN1") -> Report:
    report = make_report("FINDINGS:\nClear.\nIMPRESSION:\nNormal.", accession="ACC9")
    return replace(report, patient=Patient(patient_id, "HOSP"), times=replace(report.times, received=RECEIVED))


def test_lookup_asks_the_store_for_the_patient_and_converts() -> None:
    store = _Store((PriorStudy("A1", date(2026, 11, 17), "XR", "chest", "71046"),))
    lookup = PriorLookup(store, limit=7)  # type: ignore[arg-type]
    assert lookup(_report()) == (CHEST_XR,)
    assert store.calls == [("MRN1", "HOSP", RECEIVED, "ACC9", 7)]
    assert PriorLookup(_Store())(_report()) is None  # type: ignore[arg-type]  # nothing on record: unknown


def test_no_patient_id_means_unknown_without_a_lookup() -> None:
    store = _Store()
    assert PriorLookup(store)(_report(" ")) is None  # type: ignore[arg-type]
    assert store.calls == []


def test_failed_lookup_is_unknown_and_reported_by_type_only() -> None:
    failures: list[str] = []
    store = _Store(error=StoreError("the store cannot be read (OperationalError)"))
    assert PriorLookup(store, failed=failures.append)(_report()) is None  # type: ignore[arg-type]
    assert failures == ["StoreError"]
