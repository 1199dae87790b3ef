"""Fixtures for the text layer: the shipped vocabularies, compiled once."""

from __future__ import annotations

import pytest

from listener.assemble import load_terms
from listener.model import SectionKind
from listener.text.sections import HeadingRules, compile_heading_rules
from listener.text.terms import Terms


@pytest.fixture(name="terms", scope="session")
def fixture_terms() -> Terms:
    """The vocabularies of policies/terms, compiled."""
    return load_terms()


#: A small heading vocabulary for the section tests (not the shipped one).
HEADINGS = {
    "FINDINGS": SectionKind.FINDINGS,
    "IMPRESSION": SectionKind.IMPRESSION,
    "NUCLEAR INTERPRETATION": SectionKind.IMPRESSION,
    "INTERPRETATION": SectionKind.IMPRESSION,
    "SUMMARY": SectionKind.IMPRESSION,
    "EXAM": SectionKind.TECHNIQUE,
    "CLINICAL": SectionKind.INDICATION,
}


@pytest.fixture(name="rules", scope="module")
def fixture_rules() -> HeadingRules:
    """:data:`HEADINGS`, compiled."""
    return compile_heading_rules(HEADINGS)
