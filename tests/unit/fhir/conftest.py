"""Fixtures for the FHIR layer tests: a decode helper bound to the default mapping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from listener.fhir import FhirClient, decode_fhir
from listener.model import Report
from listener.pipeline import Pipeline
from tests.conftest import RECEIVED

Decode = Callable[..., tuple[Report, ...]]


@pytest.fixture(name="decode")
def fixture_decode(pipeline: Pipeline) -> Decode:
    """decode_fhir with the repository's mapping, CPT table and the fixed clock."""

    def run(body: bytes, **kwargs: Any) -> tuple[Report, ...]:
        kwargs.setdefault("client", FhirClient())
        return decode_fhir(
            body, mapping=pipeline.mappings.default, received_at=RECEIVED, procedures=pipeline.procedures, **kwargs
        )

    return run
