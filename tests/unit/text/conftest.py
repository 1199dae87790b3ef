"""Fixtures for the text layer: the shipped vocabularies, compiled once."""

from __future__ import annotations

import pytest

from listener.assemble import load_terms
from listener.text.terms import Terms


@pytest.fixture(name="terms", scope="session")
def fixture_terms() -> Terms:
    """The vocabularies of policies/terms, compiled."""
    return load_terms()
