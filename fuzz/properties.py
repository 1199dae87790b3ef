"""The properties each fuzz target checks, one function per target.

Pure Python with no atheris import: ``fuzz/run.py`` drives these under atheris,
and ``tests/unit/test_fuzz_regressions.py`` replays every saved crashing input
through the same functions in the normal test suite. Each function takes the
fuzzer's bytes and raises AssertionError (or the unexpected exception itself)
when a property fails.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from functools import lru_cache

from listener.assemble import build_pipeline
from listener.config import load_config
from listener.errors import DecodeError, FhirDecodeError, FramingError, InvalidValue
from listener.hl7v2.mllp import FrameTooLarge, MllpFramer
from listener.hl7v2.segments import LOG_VALUE_MAX, check_header_lengths, read_header, strip_envelope
from listener.pipeline import Outcome, Pipeline, process, process_fhir

RECEIVED = datetime(2026, 11, 20, 7, 30, tzinfo=UTC)

#: A message header segment: "MSH" and a delimiter at the start of a line or
#: after a start block. A second one (with the first's field separator) makes
#: a payload two messages, which must never be accepted. ("MSHOBX|..." or
#: "MSH^..." in a '|' message is no segment: report text may hold it.)
_LINE_MSH = re.compile(rb"(?:^|[\r\n\x0b])MSH([^\w\s])")


@lru_cache(maxsize=1)
def default_pipeline() -> Pipeline:
    """The pipeline the daemon builds from the repository's own configuration."""
    return build_pipeline(load_config(None))


def _run_framer(stream: bytes, chunks: list[bytes], limit: int) -> tuple[list[bytes], list[int], int, str]:
    framer = MllpFramer(max_frame_size=limit)
    frames: list[bytes] = []
    ending = "clean"
    try:
        for chunk in [*chunks, b""]:
            frames += framer.feed(chunk)
            assert framer.buffered_bytes <= limit
    except FrameTooLarge as exc:
        frames += exc.frames
        ending = "too large"
    except FramingError:
        ending = "error"
    return frames, framer.take_discarded_partials(), framer.discarded_bytes, ending


def check_framer(data: bytes) -> None:
    """Framer: frames or FramingError only; chunking changes nothing; no block byte in a frame.

    Byte 0 picks the limit (small ones exercise FrameTooLarge), byte 1 the
    chunk size; the rest is the stream.
    """
    if len(data) < 2:
        return
    limit = 1 + data[0] * 4 if data[0] < 255 else 4 * 1024 * 1024
    step = 1 + (data[1] % 16) ** 2  # 1 (byte at a time) to 226
    stream = data[2:]
    whole = _run_framer(stream, [stream] if stream else [], limit)
    pieces = _run_framer(stream, [stream[i : i + step] for i in range(0, len(stream), step)], limit)
    assert whole == pieces, "chunking changed the framer's results"
    for payload in whole[0]:
        assert b"\x0b" not in payload and b"\x1c" not in payload
        assert len(payload) <= limit


def check_header(data: bytes) -> None:
    """read_header never raises; its API for the shell stays bounded and clean."""
    header = read_header(data)
    if header is None:
        return
    oversized = header.oversized_field
    assert oversized in ("", "MSH-3", "MSH-4", "MSH-10") or re.fullmatch(r"MSH-[34]\.\d+", oversized)
    for key, value in header.log_fields().items():
        assert len(value) <= LOG_VALUE_MAX, key
        assert not re.search(r"[\x00-\x1f\x7f]", value), key
    try:
        check_header_lengths(header)
    except InvalidValue as exc:
        assert exc.location == oversized and exc.hl7_code == "102"
    else:
        assert oversized == ""
    for prop in ("control_id", "sending_application", "sending_facility", "message_type", "version", "charset"):
        assert isinstance(getattr(header, prop), str)


def _check_outcome(outcome: Outcome, *, identified: bool) -> None:
    assert outcome.error_type == "", f"unexpected {outcome.error_type} inside the pipeline"
    assert outcome.disposition in ("accepted", "ignored", "rejected")
    if outcome.disposition == "rejected":
        assert isinstance(outcome.error, DecodeError)
        assert outcome.error.hl7_code.isdigit()
    else:
        assert outcome.error is None
    if outcome.disposition == "accepted":
        assert outcome.reports
        # HL7 v2 requires both (101 otherwise); FHIR makes the accession optional per client.
        for result in outcome.reports if identified else ():
            assert result.report.accession and result.report.patient.id


def check_hl7(data: bytes) -> None:
    """process() never raises, never fails unexpectedly, and never accepts two messages."""
    outcome = process(data, default_pipeline(), received_at=RECEIVED)
    _check_outcome(outcome, identified=True)
    if outcome.disposition == "accepted":
        body = strip_envelope(data)
        field_sep = body[3:4]
        assert _LINE_MSH.findall(body).count(field_sep) <= 1, "a payload with two MSH segments was accepted"
        assert b"\x0b" not in body, "a payload holding a start block was accepted"


def check_fhir(data: bytes) -> None:
    """process_fhir() never raises and answers every failure with a FhirDecodeError."""
    outcome = process_fhir(data, default_pipeline(), received_at=RECEIVED, media_type="application/fhir+json")
    _check_outcome(outcome, identified=False)
    if outcome.error is not None:
        assert isinstance(outcome.error, FhirDecodeError)


TARGETS: dict[str, Callable[[bytes], None]] = {
    "framer": check_framer,
    "header": check_header,
    "hl7": check_hl7,
    "fhir": check_fhir,
}
