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


@pytest.mark.parametrize(
    "text",
    [
        # the impression diagnoses what the findings describe by its signs
        "FINDINGS:\nThere is a right upper lobe opacity. Cardiomediastinal silhouette is normal. Pulmonary "
        "vasculature is normal. Osseous structures are normal.\nIMPRESSION:\nRight upper lobe pneumonia.",
        "FINDINGS:\nThere is a 2.6 cm masslike density over the lingula. No pleural effusion is seen. The heart is "
        "borderline enlarged.\nIMPRESSION:\nLeft lower lobe nodule which is worrisome.",
        "FINDINGS:\nCentered over the mid abdomen there are multiple air-filled dilated loops of small bowel measuring "
        "up to 3.7 cm in diameter.\nIMPRESSION:\nSmall bowel obstruction.",
        "FINDINGS:\nA large pleural air collection is present on the right. Mediastinum is shifted to the left as "
        "compared to the previous examination.\nIMPRESSION:\nLarge right pneumothorax.",
        "FINDINGS:\nThere is an approximately 5-mm shift of the midline towards the right side. There is loss of the "
        "cortical sulci on the right side.\nIMPRESSION:\nA 5 mm midline shift secondary to severe edema.",
        "FINDINGS:\nChest clear. Hand: there is cortical and trabecular irregularity through the waist of the "
        "scaphoid.\nIMPRESSION:\nMinimally displaced fracture through the waist of the scaphoid.",
    ],
)
def test_impression_not_in_findings_signs_describe_it(text: str) -> None:
    """An impression diagnosis whose radiographic signs the findings describe (opacity, density, dilated loops) is described."""
    assert "alignment.impression_not_in_findings" not in _rules(text)


def test_impression_not_in_findings_sign_on_the_other_side() -> None:
    """An opacity described only on the left does not support a right lower lobe pneumonia."""
    text = (
        "FINDINGS:\nThere is a left lower lobe opacity. The heart size is normal. The mediastinal contours are "
        "normal and the bones are intact.\nIMPRESSION:\nRight lower lobe pneumonia."
    )
    assert "alignment.impression_not_in_findings" in _rules(text)


@pytest.mark.parametrize(
    "text",
    [
        # the next sentence explains it away
        "FINDINGS:\nSmall, nodular opacity in the right upper lobe. This represents a granuloma. "
        "No pneumothorax.\nIMPRESSION:\nNo acute findings.",
        # overlapping shadows
        "FINDINGS:\nApparent nodular opacity on the lateral projection is felt to represent confluence of "
        "overlapping silhouettes.\nIMPRESSION:\nNegative for acute abnormality.",
        # what another examination showed
        "FINDINGS:\nLeft-sided rib fractures are better appreciated on the comparison CT.\nIMPRESSION:\n"
        "Stable left basilar airspace disease.",
        "FINDINGS:\nOn a previous outside CT scan, the right upper lobe was consolidated.\nIMPRESSION:\n"
        "Right upper lobe opacity which appears improved.",
        # the impression names it by its signs
        "FINDINGS:\nDiffuse parahilar and alveolar consolidations are present.\nIMPRESSION:\n"
        "Heart failure with pulmonary alveolar edema.",
        "FINDINGS:\nThere is a tiny satellite nodule in the left upper lobe that is hypermetabolic.\nIMPRESSION:\n"
        "There is a tiny satellite area of hypermetabolic FDG in the left upper lobe.",
        # the impression sums the findings up
        "FINDINGS:\nPatchy nodular densities in both lower lungs. Scattered bronchial wall thickening.\n"
        "IMPRESSION:\nFindings consistent with widespread changes from cystic fibrosis.",
    ],
)
def test_finding_missing_explained_or_named_by_sign(text: str) -> None:
    """Findings explained away, seen on another exam, named by their signs, or summed up are not omissions."""
    assert "alignment.finding_missing_from_impression" not in _rules(text)


@pytest.mark.parametrize(
    "text",
    [
        # a displaced fracture nobody carried into the impression
        "FINDINGS:\nThe cardiomediastinal silhouette is normal. Displaced fracture of the mid one-third of the right "
        "clavicle.\nIMPRESSION:\nMinimal bibasilar atelectasis.",
        # a new finding compared with a prior study is not 'seen on another exam'
        "FINDINGS:\nNew right lower lobe consolidation compared to the prior exam.\nIMPRESSION:\nNo acute disease.",
        # a right nodule is not addressed by a left opacity
        "FINDINGS:\nThere is a 9 mm nodule in the right upper lobe.\nIMPRESSION:\nLeft basilar opacity, atelectasis.",
        # a critical finding is not summed up by 'findings consistent with'
        "FINDINGS:\nSmall right pneumothorax. Patchy bibasilar densities.\nIMPRESSION:\n"
        "Findings consistent with cystic fibrosis.",
    ],
)
def test_finding_missing_still_fires(text: str) -> None:
    """Omissions the new exceptions must not hide: a displaced fracture, a new consolidation, the other side, a critical finding."""
    assert "alignment.finding_missing_from_impression" in _rules(text)


def test_related_concepts_are_symmetric_clusters() -> None:
    """Pneumonia and consolidation describe the same finding; a concept is always related to itself."""
    assert "consolidation" in related_concepts("pneumonia")
    assert "pneumonia" in related_concepts("consolidation")
    assert related_concepts("no_such_concept") == frozenset({"no_such_concept"})


# --------------------------------------------------------------------------
# Fire rates on clean real reports (read at test time, never copied here).

import csv  # noqa: E402
import re  # noqa: E402

from tests.conftest import REPORTS  # noqa: E402

_CORPUS = REPORTS
_HEADING = re.compile(r",\s*([A-Z][A-Z0-9 /&(),-]{2,60}):\s*,?")


def _clean_reports(limit: int) -> list[str]:
    texts: list[str] = []
    csv.field_size_limit(10**8)
    with open(_CORPUS / "indiana-openi" / "indiana_reports.csv", newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            parts = [
                f"{head}: {row[key].strip()}"
                for key, head in (
                    ("indication", "INDICATION"),
                    ("comparison", "COMPARISON"),
                    ("findings", "FINDINGS"),
                    ("impression", "IMPRESSION"),
                )
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


@pytest.mark.corpus
def test_clean_corpus_fire_rates_stay_tiny() -> None:
    """On clean Indiana + mtsamples reports, laterality/contradiction/alignment rarely fire.

    The corpus holds a few genuine dictation defects (e.g. "There is
    pneumothorax." under "No acute disease"), so the bound is small, not zero.
    """
    texts = _clean_reports(1500)
    errors = warnings = 0
    for text in texts:
        found = [
            f for f in findings_for(make_report(text)) if f.category in ("laterality", "contradiction", "alignment")
        ]
        errors += any(f.severity is Severity.ERROR for f in found)
        warnings += bool(found)
    assert errors / len(texts) <= 0.005
    assert warnings / len(texts) <= 0.02


def test_low_bone_mass_is_not_a_mass() -> None:
    """ "Osteopenia (low bone mass)" names body composition, not a lesion (the DXA sample's wording)."""
    findings = (
        "FINDINGS:\nLumbar spine L1-L4 T-score -1.8. Left femoral neck T-score -2.1. Total hip T-score -1.6. "
        "The lowest T-score is at the left femoral neck.\n"
    )
    found = findings_for(
        make_report(findings + "IMPRESSION:\n1. Osteopenia (low bone mass) by WHO criteria.", procedure="77080"),
        rule_prefix="alignment.",
    )
    assert not found
    # A mass the findings never describe still is one.
    found = findings_for(
        make_report(findings + "IMPRESSION:\n1. Osteopenia. 2. Soft tissue mass of the left hip.", procedure="77080"),
        rule_prefix="alignment.impression_not_in_findings",
    )
    assert found
