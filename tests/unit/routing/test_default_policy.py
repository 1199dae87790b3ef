"""The shipped policies/routing.yaml, one case per bucket and trigger.

Each row builds a LEMC (or Pinevale) report, runs decide_route with the fixed
clock and checks the bucket, the primary reason and the pool. 08:00 UTC on
2026-11-20 is 02:00 in Chicago (CST), inside the overnight window; 18:00 UTC
is noon, outside it.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest

from listener.model import ResultStatus, Severity
from listener.routing import draw
from listener.sites import ReaderHistory
from tests.unit.routing.helpers import NOW, default_policy, finding, report, route

NIGHT = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)  # 02:00 CST
DAY = datetime(2026, 11, 20, 18, 0, tzinfo=UTC)  # 12:00 CST
PRELIM = ResultStatus.PRELIMINARY
CHILD = date(2016, 3, 1)
HEDGED = (
    "FINDINGS:\nThere is a 9 mm nodule in the right upper lobe.\n"
    "IMPRESSION:\n1. Nodule may represent infection, possibly inflammatory.\n"
    "2. Malignancy cannot be excluded.\n3. Findings could be related to prior granulomatous disease.\n"
)


def _sampled_accession(reader: str) -> str:
    """The first accession A0..A9999 that the default 5% draw picks for ``reader``."""
    return next(f"A{i}" for i in range(10_000) if draw("2026-Q4", reader, f"A{i}") < 0.05)


CASES: list[tuple[str, dict[str, Any], tuple[Any, ...], dict[str, Any], str, str, str]] = [
    # id, report kwargs, findings, context kwargs, bucket, first reason, pool
    (
        "overnight external neuro prelim",
        dict(reader="NT7741", status=PRELIM, at=NIGHT),
        (),
        {},
        "always_final",
        "overnight_external_neuro_prelim",
        "neuroradiology",
    ),
    (
        "overnight external stroke CTA",
        dict(reader="NT7741", status=PRELIM, at=NIGHT, procedure="70496", priority="stat"),
        (),
        {},
        "always_final",
        "overnight_external_neuro_prelim",
        "neuroradiology",
    ),
    (
        "overnight external trauma CT",
        dict(
            text="FINDINGS:\nNo injury.\nIMPRESSION:\nNo acute injury.",
            reader="NT7741",
            status=PRELIM,
            at=NIGHT,
            procedure="74177",
            priority="stat",
        ),
        (),
        {},
        "always_final",
        "overnight_external_trauma_prelim",
        "emergency_final",
    ),
    (
        "overnight external pediatric MR",
        dict(
            text="FINDINGS:\nIntact menisci.\nIMPRESSION:\nNormal knee.",
            reader="NT7741",
            status=PRELIM,
            at=NIGHT,
            procedure="73721",
            birth_date=CHILD,
        ),
        (),
        {},
        "always_final",
        "overnight_external_pediatric_cross_sectional",
        "pediatric_radiology",
    ),
    ("external prelim in daytime", dict(reader="NT7741", status=PRELIM, at=DAY), (), {}, "release", "", "none"),
    ("external final overnight", dict(reader="NT7741", at=NIGHT), (), {}, "release", "", "none"),
    ("internal prelim overnight", dict(reader="R1042", status=PRELIM, at=NIGHT), (), {}, "release", "", "none"),
    (
        "affirmed critical finding",
        dict(text="FINDINGS:\nAcute right subdural hematoma.\nIMPRESSION:\nAcute right subdural hematoma."),
        (),
        {},
        "selective_overread",
        "critical_finding_affirmed",
        "critical_results",
    ),
    (
        "negated critical finding",
        dict(text="FINDINGS:\nNo intracranial hemorrhage.\nIMPRESSION:\nNo intracranial hemorrhage."),
        (),
        {},
        "release",
        "",
        "none",
    ),
    (
        "hedged impression",
        dict(text=HEDGED, procedure="71250"),
        (),
        {},
        "selective_overread",
        "uncertain_impression",
        "general_overread",
    ),
    (
        "pediatric neuro, reader not a pediatric neuroradiologist",
        dict(birth_date=CHILD, at=DAY),
        (),
        {},
        "selective_overread",
        "pediatric_neuro_subspecialty",
        "pediatric_neuroradiology",
    ),
    (
        "client preference: Pinevale external MR",
        dict(
            text="FINDINGS:\nMild disc bulge.\nIMPRESSION:\nMild spondylosis.",
            site="PVCH",
            reader="NT7741",
            procedure="72148",
            at=DAY,
        ),
        (),
        {},
        "selective_overread",
        "pinevale_external_mr_preference",
        "general_overread",
    ),
    (
        "Pinevale MR read internally",
        dict(
            text="FINDINGS:\nMild disc bulge.\nIMPRESSION:\nMild spondylosis.",
            site="PVCH",
            reader="PV0318",
            procedure="72148",
            at=DAY,
        ),
        (),
        {},
        "release",
        "",
        "none",
    ),
    (
        "modality/acuity: stat external CTA by day",
        dict(
            text="FINDINGS:\nNormal arteries.\nIMPRESSION:\nNo embolus.",
            reader="NT7741",
            at=DAY,
            procedure="71275",
            priority="stat",
        ),
        (),
        {},
        "selective_overread",
        "stat_external_cta",
        "general_overread",
    ),
    (
        "reader discrepancy rate from readers.yaml",
        dict(reader="NT7802", at=DAY),
        (),
        {},
        "selective_overread",
        "reader_discrepancy_above_threshold",
        "peer_review",
    ),
    (
        "reader discrepancy rate passed in",
        dict(reader="R1187"),
        (),
        {"reader_history": {"R1187": ReaderHistory(100, 10)}},
        "selective_overread",
        "reader_discrepancy_above_threshold",
        "peer_review",
    ),
    (
        "too few reviewed reads for a rate",
        dict(reader="R1187"),
        (),
        {"reader_history": {"R1187": ReaderHistory(20, 5)}},
        "release",
        "",
        "none",
    ),
    (
        "peer-review sample of an external reader",
        dict(reader="NT7741", at=DAY, accession=_sampled_accession("NT7741")),
        (),
        {},
        "selective_overread",
        "external_peer_review_sample",
        "peer_review",
    ),
    (
        "QA error returns to author",
        dict(),
        (finding("laterality.impression_vs_findings"),),
        {},
        "process_check",
        "qa_errors_return_to_author",
        "author",
    ),
    (
        "QA warning alone releases",
        dict(),
        (finding("communication.clarity", Severity.WARNING),),
        {},
        "release",
        "",
        "none",
    ),
    ("clean internal final", dict(), (), {}, "release", "", "none"),
]


@pytest.mark.parametrize(
    ("kwargs", "findings", "context", "bucket", "reason", "pool"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_default_policy_bucket(
    kwargs: dict[str, Any], findings: tuple[Any, ...], context: dict[str, Any], bucket: str, reason: str, pool: str
) -> None:
    """Each trigger of the default policy routes to its bucket, naming its rule first and its pool."""
    result = route(report(**kwargs), default_policy(), findings, **context)
    assert result.bucket == bucket
    assert (result.reasons[0] if result.reasons else "") == reason
    assert result.pool == pool
    assert result.policy_version.startswith("default-2026.11+")


def test_critical_finding_sets_priority_and_deadline() -> None:
    """The critical-finding rule raises priority to stat and sets a 60-minute deadline from the decision time."""
    rep = report(
        "FINDINGS:\nModerate right pneumothorax.\nIMPRESSION:\nModerate right pneumothorax.", procedure="71046"
    )
    result = route(rep, default_policy())
    assert (result.bucket, result.priority) == ("selective_overread", "stat")
    assert result.deadline == NOW + timedelta(minutes=60)


def test_site_turnaround_deadline() -> None:
    """``turnaround_minutes: site`` uses the site's contract target for the report's priority (LEMC stat: 30)."""
    rep = report(reader="NT7741", status=PRELIM, at=NIGHT, priority="stat")
    result = route(rep, default_policy())
    assert result.bucket == "always_final"
    assert result.deadline == NOW + timedelta(minutes=30)


def test_release_keeps_report_priority_and_no_deadline() -> None:
    """A released report keeps its own priority and gets no deadline."""
    result = route(report(priority="asap"), default_policy())
    assert (result.bucket, result.priority, result.deadline, result.reasons) == ("release", "asap", None, ())


def test_unknown_reader_is_not_external() -> None:
    """A reader missing from readers.yaml has type unknown: the external-only rules do not fire."""
    result = route(report(reader="ZZ0000", status=PRELIM, at=NIGHT), default_policy())
    assert result.bucket == "release"
    assert any("unknown (ZZ0000, not in readers.yaml)" in line for line in result.explanation)


def test_unknown_birth_date_is_not_pediatric() -> None:
    """Without a birth date, age conditions do not match, and the explanation says why."""
    result = route(report(birth_date=None, at=DAY), default_policy())
    assert result.bucket == "release"
    assert any("patient_age unknown" in line for line in result.explanation)
