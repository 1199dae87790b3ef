"""contradiction.normal_over_findings: a normal or "no acute" impression over abnormal findings (listener/qa/normalcy.py)."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest

from listener.model import Severity
from listener.qa.engine import RuleSettings
from tests.unit.qa.factory import findings_for, make_report, pipeline

RULE = "contradiction.normal_over_findings"


def _report(findings: str, impression: str) -> str:
    return f"INDICATION:\nCough.\nCOMPARISON:\nNone.\nFINDINGS:\n{findings}\nIMPRESSION:\n{impression}"


def _rules(findings: str, impression: str) -> list[str]:
    return [f.rule for f in findings_for(make_report(_report(findings, impression)), rule_prefix="contradiction.")]


@pytest.mark.parametrize(
    ("findings", "impression"),
    [
        # a plain normal impression: any significant finding, whatever its size or age
        ("Stable mild cardiomegaly. The lungs are clear.", "Normal chest radiograph."),
        ("Stable mild cardiomegaly. The lungs are clear.", "Negative chest."),
        ("The heart is normal. Small left pleural effusion.", "Unremarkable examination."),
        ("A 6 mm nodule in the right upper lobe, unchanged.", "No abnormality."),
        # "no acute": an acute finding of any size, or any significant finding that is new or growing
        ("Small right pleural effusion. The heart is normal.", "No acute cardiopulmonary process."),
        ("Mild pulmonary edema. The heart is normal.", "No acute cardiopulmonary abnormality."),
        (
            "Marked interval increase in heart size, cardiomegaly. The lungs are clear.",
            "No acute cardiopulmonary process.",
        ),
        ("Mildly displaced fracture of the left 6th rib.", "Without acute cardiopulmonary disease."),
        # an impression made only of "no acute ..." leaves out an enlarged heart, stable or not
        ("Stable mild cardiomegaly. The lungs are clear.", "No acute cardiopulmonary abnormality."),
    ],
)
def test_normal_impression_over_findings_fires(findings: str, impression: str) -> None:
    """Each pairs a normal impression with a finding it denies; exactly one contradiction finding results."""
    found = findings_for(make_report(_report(findings, impression)), rule_prefix="contradiction.")
    assert [f.rule for f in found] == [RULE]
    assert found[0].severity is Severity.WARNING
    assert [e.section for e in found[0].evidence] == ["impression", "findings"]


@pytest.mark.parametrize(
    ("findings", "impression"),
    [
        # chronic findings under "no acute": no contradiction (cardiomegaly when the impression names it)
        ("Stable mild cardiomegaly. The lungs are clear.", "Cardiomegaly. No acute cardiopulmonary abnormality."),
        ("Borderline cardiomegaly. The lungs are clear.", "No acute cardiopulmonary abnormality."),
        ("Old healed left rib fracture. The lungs are clear.", "No acute cardiopulmonary process."),
        ("Chronic small left pleural effusion. The heart is normal.", "No acute cardiopulmonary process."),
        ("Calcified granuloma in the right upper lobe.", "Normal chest radiograph."),
        # not acute by nature and not new
        ("Mild bibasilar atelectasis. The heart is normal.", "No acute cardiopulmonary abnormality."),
        # hedged, trace, or a device
        ("Possible small right pleural effusion.", "No acute cardiopulmonary process."),
        ("Trace left pleural effusion.", "No acute cardiopulmonary process."),
        # the impression names the finding, qualifies itself, or points back
        ("Small right pleural effusion.", "Small right pleural effusion. No acute cardiopulmonary process."),
        ("Stable mild cardiomegaly.", "Otherwise normal chest radiograph."),
        ("Small right pleural effusion.", "As described above."),
        # nothing abnormal
        ("The heart is normal. The lungs are clear.", "Normal chest radiograph."),
    ],
)
def test_normal_impression_over_findings_negatives(findings: str, impression: str) -> None:
    """Near misses: chronic, minor, hedged or named findings, and a qualified impression."""
    assert RULE not in _rules(findings, impression)


def test_one_defect_gives_one_finding() -> None:
    """Where contradiction.normal_impression already reports the impression, this rule stays silent."""
    rules = _rules("There is a large right pneumothorax.", "No acute cardiopulmonary abnormality.")
    assert rules == ["contradiction.normal_impression"]


def test_acute_concepts_are_tunable() -> None:
    """Removing a concept from ``acute`` leaves it to the plain-normal form only."""
    base = pipeline().qa
    assert base is not None
    rules = dict(base.rules)
    old = rules[RULE]
    rules[RULE] = RuleSettings(old.enabled, old.severity, MappingProxyType({**old.params, "acute": ["pneumothorax"]}))
    qa = replace(base, rules=MappingProxyType(rules))
    report = make_report(_report("Small right pleural effusion.", "No acute cardiopulmonary process."))
    assert RULE not in [f.rule for f in findings_for(report, qa=qa)]
    assert RULE in [f.rule for f in findings_for(report)]
