"""Strict (hl7apy) validation: only for feeds that ask, with codes and no values."""

from __future__ import annotations

from dataclasses import replace

import pytest

from listener.errors import DecodeError
from listener.hl7v2.decode import decode_message
from listener.hl7v2.mapping import MappingSet
from listener.pipeline import Pipeline
from tests.conftest import RECEIVED
from tests.unit.hl7v2.test_decode import BASE, MARKER, _msg


def _strict(pipeline: Pipeline) -> MappingSet:
    return MappingSet(replace(pipeline.mappings.default, validation="strict"))


def test_strict_accepts_a_valid_oru(pipeline: Pipeline) -> None:
    """A well-formed v2.5.1 ORU passes hl7apy's strict structure validation."""
    decoded = decode_message(_msg(BASE), _strict(pipeline), received_at=RECEIVED)
    assert decoded.reports[0].accession == "ACC1001"


def test_strict_bad_date_is_data_type_error_without_value(pipeline: Pipeline) -> None:
    """A malformed timestamp fails strict validation with 102 and no quoted value."""
    segs = list(BASE)
    segs[1] = segs[1].replace("19700102", f"1970{MARKER}")
    with pytest.raises(DecodeError) as info:
        decode_message(_msg(segs), _strict(pipeline), received_at=RECEIVED)
    assert info.value.hl7_code == "102"
    assert MARKER not in str(info.value)


def test_lenient_feed_accepts_what_strict_refuses(pipeline: Pipeline, corpus) -> None:  # type: ignore[no-untyped-def]
    """Real feeds with status words pass the lenient default but fail strict validation."""
    raw = (corpus / "hl7/scout/oru_v24_final_us_abdomen_tx_tilde_rp.hl7").read_bytes()
    assert decode_message(raw, pipeline.mappings, received_at=RECEIVED).reports
    with pytest.raises(DecodeError) as info:
        decode_message(raw, _strict(pipeline), received_at=RECEIVED)
    assert info.value.hl7_code in {"100", "101", "102", "103"}
