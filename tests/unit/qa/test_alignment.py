"""Alignment rules: significant findings reach the impression; impression findings are described."""

from __future__ import annotations

import pytest

from listener.model import Severity
from listener.qa.alignment import related_concepts
from tests.unit.qa.factory import findings_for, make_report


def _rules(text: str) -> list[str]:
    return [f.rule for f in findings_for(make_report(text), rule_prefix="alignment.")]


def test_nodule_in_findings_missing_from_impression() -> None:
    """A 9 mm nodule described in findings but absent from the impression is a warning."""
    report = make_report(
        "FINDINGS:\nThere is a 9 mm nodule in the right upper lobe. No pneumothorax.\n"
        "IMPRESSION:\nNo acute cardiopulmonary process."
    )
    found = findings_for(report, rule_prefix="alignment.finding_missing_from_impression")
    assert len(found) == 1 and found[0].severity is Severity.WARNING
    assert found[0].evidence[0].section == "findings"
    assert "lung nodule" in found[0].message


def test_critical_finding_missing_from_impression() -> None:
    """Critical concepts are always checked, whatever the concept list."""
    assert "alignment.finding_missing_from_impression" in _rules(
        "FINDINGS:\nSmall right pneumothorax.\nIMPRESSION:\nRight lower lobe pneumonia."
    )


@pytest.mark.parametrize(
    "text",
    [
        # same concept in the impression
        "FINDINGS:\n9 mm right upper lobe nodule.\nIMPRESSION:\nRight upper lobe nodule.",
        # a related concept in the impression
        "FINDINGS:\nRight lower lobe consolidation.\nIMPRESSION:\nRight lower lobe pneumonia.",
        # broader family
        "FINDINGS:\nLarge tension pneumothorax.\nIMPRESSION:\nPneumothorax, discussed with Dr. A.",
        # stable/chronic findings may be left out
        "FINDINGS:\nStable 5 mm nodule in the left lower lobe.\nIMPRESSION:\nNo acute disease.",
        # minor non-critical findings
        "FINDINGS:\nMinimal subsegmental atelectasis.\nIMPRESSION:\nNo acute disease.",
        # the impression points back to the findings
        "FINDINGS:\n9 mm right upper lobe nodule.\nIMPRESSION:\nSee findings above.",
        # negated in findings
        "FINDINGS:\nNo pneumothorax. No nodule.\nIMPRESSION:\nNormal chest.",
    ],
)
def test_finding_missing_negatives(text: str) -> None:
    """Findings that are carried, related, stable, minor or absent are not omissions."""
    assert "alignment.finding_missing_from_impression" not in _rules(text)


def test_impression_finding_never_described() -> None:
    """A pneumothorax in the impression with no trace in a full findings section."""
    report = make_report(
        "FINDINGS:\nThe heart size is normal. The lungs are clear. The mediastinal contours are normal. "
        "The osseous structures are intact.\nIMPRESSION:\nRight pneumothorax."
    )
    found = findings_for(report, rule_prefix="alignment.impression_not_in_findings")
    assert len(found) == 1 and found[0].severity is Severity.WARNING
    assert found[0].evidence[0].section == "impression"


@pytest.mark.parametrize(
    "text",
    [
        # described with a related sign
        "FINDINGS:\nThere is dense consolidation in the right lower lobe with air bronchograms. "
        "The heart size is normal and the mediastinum is unremarkable.\nIMPRESSION:\nRight lower lobe pneumonia.",
        # hedged impression
        "FINDINGS:\nThe heart size is normal. The lungs are clear. The mediastinal contours are normal and "
        "the bones are intact.\nIMPRESSION:\nPossible small pneumothorax, consider repeat.",
        # findings too short to compare
        "FINDINGS:\nPA and lateral views.\nIMPRESSION:\nRight pneumothorax.",
    ],
)
def test_impression_not_in_findings_negatives(text: str) -> None:
    """Supported, hedged, or uncomparable impression statements do not fire."""
    assert "alignment.impression_not_in_findings" not in _rules(text)


def test_related_concepts_are_symmetric_clusters() -> None:
    """Pneumonia and consolidation describe the same finding; a concept is always related to itself."""
    assert "consolidation" in related_concepts("pneumonia")
    assert "pneumonia" in related_concepts("consolidation")
    assert related_concepts("no_such_concept") == frozenset({"no_such_concept"})


# --------------------------------------------------------------------------
# Fire rates on clean real reports (read at test time, never copied here).

import csv  # noqa: E402
import re  # noqa: E402
from pathlib import Path  # noqa: E402

_CORPUS = Path(__file__).resolve().parents[4] / "shared" / "corpus" / "reports"
_HEADING = re.compile(r",\s*([A-Z][A-Z0-9 /&(),-]{2,60}):\s*,?")


def _clean_reports(limit: int) -> list[str]:
    texts: list[str] = []
    csv.field_size_limit(10**8)
    with open(_CORPUS / "indiana-openi" / "indiana_reports.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            parts = [
                f"{head}: {row[key].strip()}"
                for key, head in (("indication", "INDICATION"), ("comparison", "COMPARISON"),
                                  ("findings", "FINDINGS"), ("impression", "IMPRESSION"))
                if (row[key] or "").strip()
            ]
            if parts:
                texts.append("\n".join(parts))
            if len(texts) >= limit:
                break
    with open(_CORPUS / "mtsamples-radiology" / "mtsamples_radiology.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            body = _HEADING.sub(lambda m: "\n" + m.group(1) + ":\n", "," + (row["transcription"] or "")).strip()
            if body:
                texts.append(re.sub(r"\.,\s*", ".\n", body))
    return texts


@pytest.mark.skipif(not _CORPUS.is_dir(), reason="shared corpus not available")
def test_clean_corpus_fire_rates_stay_tiny() -> None:
    """On clean Indiana + mtsamples reports, laterality/contradiction/alignment rarely fire.

    The corpus holds a few genuine dictation defects (e.g. "There is
    pneumothorax." under "No acute disease"), so the bound is small, not zero.
    """
    texts = _clean_reports(1500)
    errors = warnings = 0
    for text in texts:
        found = [
            f
            for f in findings_for(make_report(text))
            if f.category in ("laterality", "contradiction", "alignment")
        ]
        errors += any(f.severity is Severity.ERROR for f in found)
        warnings += bool(found)
    assert errors / len(texts) <= 0.005
    assert warnings / len(texts) <= 0.02
