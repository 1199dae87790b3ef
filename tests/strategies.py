"""Hypothesis strategies shared by the test suite."""

from __future__ import annotations

from hypothesis import strategies as st

from listener.hl7v2.ack import SEVERITIES, AckErrorDetail

START_BLOCK = 0x0B
END_BLOCK = 0x1C
CR = 0x0D


def payloads(max_size: int = 64) -> st.SearchStrategy[bytes]:
    """Frame payloads: any bytes but the MLLP block bytes (0x0B inside a frame restarts it)."""
    return st.binary(max_size=max_size).map(
        lambda b: b.replace(bytes([END_BLOCK]), b"").replace(bytes([START_BLOCK]), b"")
    )


def junk(max_size: int = 16) -> st.SearchStrategy[bytes]:
    """Bytes between frames: anything but a start block."""
    return st.binary(max_size=max_size).map(lambda b: b.replace(bytes([START_BLOCK]), b""))


@st.composite
def mllp_streams(draw: st.DrawFn, max_frames: int = 6) -> tuple[bytes, list[bytes]]:
    """A well-formed MLLP stream with junk between frames and optional trailing CRs.

    Returns:
        (stream bytes, the payloads a framer must return, in order)
    """
    frames = draw(st.lists(payloads(), max_size=max_frames))
    stream = bytearray(draw(junk()))
    for payload in frames:
        stream += bytes([START_BLOCK]) + payload + bytes([END_BLOCK])
        if draw(st.booleans()):
            stream.append(CR)
        stream += draw(junk())
    return bytes(stream), frames


@st.composite
def chunked(draw: st.DrawFn, data: bytes) -> list[bytes]:
    """``data`` cut at arbitrary points (empty chunks excluded: b"" means EOF)."""
    if not data:
        return []
    cuts = draw(st.lists(st.integers(min_value=1, max_value=max(1, len(data) - 1)), max_size=12, unique=True))
    bounds = [0, *sorted(c for c in cuts if c < len(data)), len(data)]
    return [data[a:b] for a, b in zip(bounds, bounds[1:], strict=False) if b > a]


#: Characters a hostile sender may put in MSH fields: controls, MLLP bytes,
#: delimiters, escape, non-ASCII.
HOSTILE_ALPHABET = "\x00\x01\x07\x08\t\x0b\x0c\x1b\x1c\x1f\x7f|^~\\&#}AZaz09 .-\u00e9\u00ff"


def hostile_text(max_size: int = 40) -> st.SearchStrategy[str]:
    """Field text a hostile sender could put in MSH (no CR/LF: those end the segment)."""
    return st.text(alphabet=HOSTILE_ALPHABET, max_size=max_size)


@st.composite
def hostile_msh(draw: st.DrawFn) -> bytes:
    """An MSH segment (plus a PID) with random delimiters and hostile field values."""
    field_sep = draw(st.sampled_from("|#!\x0b\x1c\x7f"))
    encoding = draw(st.text(alphabet="^~\\&}0|\x00\x1c", max_size=5))
    fields = draw(st.lists(hostile_text(), min_size=0, max_size=18))
    text = "MSH" + field_sep + encoding + field_sep + field_sep.join(fields) + "\rPID|1||MARKER\r"
    return text.encode("latin-1")


def ack_errors() -> st.SearchStrategy[AckErrorDetail]:
    """Arbitrary AckErrorDetail values, locations well-formed or not, texts hostile."""
    location = st.one_of(
        st.just(""),
        st.from_regex(r"[A-Z][A-Z0-9]{2}(\[[1-9]\])?-[1-9][0-9]?(\.[1-9](\.[1-9])?)?", fullmatch=True),
        hostile_text(12),
    )
    return st.builds(
        AckErrorDetail,
        code=st.sampled_from(["0", "100", "101", "102", "103", "200", "201", "202", "203", "207"]),
        location=location,
        severity=st.sampled_from(sorted(SEVERITIES)),
        text=hostile_text(),
    )
