"""listener.fhir.shape: nesting depth and control characters, before fhir.resources."""

from __future__ import annotations

from typing import Any

import pytest

from listener.errors import FhirDecodeError
from listener.fhir.shape import MAX_DEPTH, check_shape


def nested_arrays(levels: int) -> Any:
    """``levels`` containers in all: the outer object plus ``levels - 1`` arrays."""
    value: Any = "leaf"
    for _ in range(levels - 1):
        value = [value]
    return {"resourceType": "DiagnosticReport", "valueString": value} if levels > 1 else {"resourceType": "x"}


def test_depth_exactly_at_the_limit_passes_one_more_fails() -> None:
    """MAX_DEPTH containers are fine; MAX_DEPTH + 1 is a `structure` error at the deepest path."""
    check_shape(nested_arrays(MAX_DEPTH), "DiagnosticReport")
    with pytest.raises(FhirDecodeError) as info:
        check_shape(nested_arrays(MAX_DEPTH + 1), "DiagnosticReport")
    assert info.value.issue_code == "structure"
    assert info.value.expression == "DiagnosticReport.valueString" + "[0]" * (MAX_DEPTH - 1)


def test_very_deep_body_does_not_recurse() -> None:
    """100,000 levels (beyond Python's recursion limit) are refused without a RecursionError."""
    with pytest.raises(FhirDecodeError):
        check_shape(nested_arrays(100_000), "DiagnosticReport")


@pytest.mark.parametrize("char", [chr(c) for c in range(32) if c not in (9, 10, 13)])
def test_every_forbidden_c0_character_is_refused_with_its_path(char: str) -> None:
    """Each C0 control except tab/CR/LF in a string: `value` at the string's FHIRPath; the message has no value."""
    doc = {"resourceType": "DiagnosticReport", "identifier": [{"system": "s", "value": f"SECRET{char}"}]}
    with pytest.raises(FhirDecodeError) as info:
        check_shape(doc, "DiagnosticReport")
    assert (info.value.issue_code, info.value.expression) == ("value", "DiagnosticReport.identifier[0].value")
    assert "SECRET" not in str(info.value)


def test_tab_cr_lf_del_and_c1_pass() -> None:
    """FHIR strings allow tab, CR, LF (and DEL and C1, which its regex's \\S takes)."""
    check_shape({"resourceType": "DiagnosticReport", "conclusion": "a\tb\r\nc\x7f\x85"}, "DiagnosticReport")


def test_control_character_in_a_property_name_names_the_object_only() -> None:
    """A bad key is reported at its object; the key itself (request data) is not echoed."""
    doc = {"resourceType": "Bundle", "entry": [{"resource": {"resourceType": "Patient", "na\x00me": "x"}}]}
    with pytest.raises(FhirDecodeError) as info:
        check_shape(doc, "Bundle")
    assert info.value.expression == "Bundle.entry[0].resource"


def test_first_problem_in_document_order_is_reported() -> None:
    """With two bad strings the first one in the body is named."""
    doc = {"resourceType": "DiagnosticReport", "identifier": [{"value": "a\x00"}, {"value": "b\x00"}]}
    with pytest.raises(FhirDecodeError) as info:
        check_shape(doc, "DiagnosticReport")
    assert info.value.expression == "DiagnosticReport.identifier[0].value"
