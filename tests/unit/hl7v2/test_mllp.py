"""Unit and property tests for the sans-I/O MLLP framer."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from listener.errors import FramingError
from listener.hl7v2.mllp import (
    DEFAULT_MAX_FRAME_SIZE,
    HEAD_SIZE,
    FrameTooLarge,
    MllpFramer,
    frame,
)
from tests.strategies import chunked, mllp_streams

SB, EB, CR = b"\x0b", b"\x1c", b"\r"
MSG = b"MSH|^~\\&|RIS|HOSP|OVR|READ|20261123||ORU^R01|C1|P|2.5.1\rPID|1\r"
TRAILING = SB + b"MSH|^~\\&|NEXT"


def feed_all(framer: MllpFramer, chunks: list[bytes]) -> list[bytes]:
    """Feed every chunk and collect the frames, as the shell's dataReceived does."""
    frames: list[bytes] = []
    for chunk in chunks:
        frames += framer.feed(chunk)
    return frames


def tr(data: bytes, expected: list[bytes], *, discarded: int = 0) -> None:
    """Check ``data`` whole, byte at a time and followed by a partial frame (h11 style).

    ``data`` must leave the framer between frames: each way the frames must be
    ``expected``, the discarded count ``discarded``, and EOF must be clean
    unless the trailing partial frame is still open.
    """
    whole = MllpFramer()
    assert whole.feed(data) == expected
    assert whole.discarded_bytes == discarded
    assert whole.feed(b"") == []

    drip = MllpFramer()
    assert feed_all(drip, [data[i : i + 1] for i in range(len(data))]) == expected
    assert drip.discarded_bytes == discarded
    assert drip.feed(b"") == []

    trailing = MllpFramer()
    assert trailing.feed(data + TRAILING) == expected
    assert trailing.discarded_bytes == discarded
    assert trailing.in_frame
    with pytest.raises(FramingError):
        trailing.feed(b"")


def test_one_frame_with_trailing_cr() -> None:
    """The canonical frame 0x0B payload 0x1C 0x0D gives the payload, nothing discarded."""
    tr(SB + MSG + EB + CR, [MSG])


def test_missing_trailing_cr() -> None:
    """The CR after 0x1C is optional: a frame ends at 0x1C."""
    tr(SB + MSG + EB, [MSG])
    tr(SB + MSG + EB + SB + MSG + EB, [MSG, MSG])


def test_several_frames_in_one_read() -> None:
    """Several frames in one chunk all come out, in order."""
    payloads = [MSG, b"MSH|2\r", b""]
    tr(b"".join(frame(p) for p in payloads), payloads)


def test_empty_stream_and_empty_frame() -> None:
    """No bytes give no frames; an empty frame gives an empty payload."""
    tr(b"", [])
    tr(SB + EB + CR, [b""])


def test_junk_between_frames_is_discarded_and_counted() -> None:
    """Bytes outside frames are dropped and counted; a CR after 0x1C is not junk."""
    data = b"junk" + frame(MSG) + b"\r\n\x00" + frame(b"MSH|2") + b"xx"
    # "junk" + "\r\n\x00" (frame()'s own CR is the trailer) + "xx"
    tr(data, [MSG, b"MSH|2"], discarded=4 + 3 + 2)


def test_second_cr_after_frame_is_junk() -> None:
    """Only the one CR right after 0x1C is swallowed, whatever the chunking."""
    tr(SB + MSG + EB + CR + CR, [MSG], discarded=1)


def test_start_block_inside_frame_is_data() -> None:
    """0x0B inside a frame does not restart it: only 0x1C ends a frame."""
    tr(SB + b"A\x0bB" + EB + CR, [b"A\x0bB"])


def test_end_block_inside_data_ends_the_frame_and_the_rest_is_counted_junk() -> None:
    """0x1C inside a payload (MLLP forbids it in content) ends the frame there, whatever the
    chunking; the bytes after it up to the next 0x0B are discarded and counted, so the shell
    logs them (frame_discarded_bytes), and the next frame is read normally."""
    tr(SB + b"MSH|A" + EB + b"rest|B" + EB + CR + SB + b"NEXT" + EB + CR, [b"MSH|A", b"NEXT"], discarded=8)


def test_binary_payload_passes_through_undecoded() -> None:
    """The framer never decodes: any byte but 0x1C is payload, NUL and LF included."""
    payload = bytes(b for b in range(256) if b != 0x1C)
    tr(frame(payload), [payload])


def test_partial_frame_waits_for_end_block() -> None:
    """A frame split across reads comes out when its end block arrives."""
    framer = MllpFramer()
    assert framer.feed(SB + MSG[:10]) == []
    assert framer.in_frame
    assert framer.buffered_bytes == 10
    assert framer.feed(MSG[10:]) == []
    assert framer.feed(EB) == [MSG]
    assert framer.buffered_bytes == 0
    assert framer.feed(CR) == []
    assert framer.discarded_bytes == 0


def test_eof_mid_frame_raises() -> None:
    """End of stream inside a frame is a framing error (like h11 on early EOF)."""
    framer = MllpFramer()
    framer.feed(SB + b"MSH|")
    with pytest.raises(FramingError, match="ended inside a frame"):
        framer.feed(b"")
    with pytest.raises(FramingError):
        framer.feed(frame(MSG))


def test_eof_between_frames_is_clean_and_final() -> None:
    """EOF outside a frame returns nothing; repeating it is harmless; data after it is an error."""
    framer = MllpFramer()
    assert framer.feed(frame(MSG) + b"junk") == [MSG]
    assert framer.feed(b"") == []
    assert framer.feed(b"") == []
    with pytest.raises(FramingError, match="after end of stream"):
        framer.feed(frame(MSG))


def test_frame_at_exact_limit_is_accepted() -> None:
    """A payload of exactly max_frame_size bytes is accepted, even byte by byte."""
    payload = b"x" * 100
    tr_limit = MllpFramer(max_frame_size=100)
    assert tr_limit.feed(frame(payload)) == [payload]
    drip = MllpFramer(max_frame_size=100)
    data = frame(payload)
    assert feed_all(drip, [data[i : i + 1] for i in range(len(data))]) == [payload]


def test_frame_over_limit_in_one_read() -> None:
    """One byte over the limit is refused with the limit and the frame's head."""
    framer = MllpFramer(max_frame_size=100)
    with pytest.raises(FrameTooLarge) as info:
        framer.feed(frame(MSG + b"y" * 100))
    assert info.value.limit == 100
    assert info.value.head.startswith(MSG)
    assert len(info.value.head) <= HEAD_SIZE
    assert isinstance(info.value, FramingError)


def test_over_limit_is_refused_before_the_end_block_and_memory_stays_bounded() -> None:
    """The framer raises as soon as the frame would pass the limit, never buffering more."""
    limit = 64 * 1024
    framer = MllpFramer(max_frame_size=limit)
    framer.feed(SB + MSG)
    chunk = b"z" * 1000
    with pytest.raises(FrameTooLarge) as info:
        for _ in range(limit):  # far more than needed; no end block ever comes
            framer.feed(chunk)
            assert framer.buffered_bytes <= limit
    assert framer.buffered_bytes == 0
    assert info.value.head == (MSG + chunk * 5)[:HEAD_SIZE]


def test_huge_single_read_is_refused_without_copying_it() -> None:
    """A 50 MB read into the default limit raises FrameTooLarge, keeping only the head."""
    framer = MllpFramer()
    data = SB + MSG + b"\x00" * (50 * 1024 * 1024)
    with pytest.raises(FrameTooLarge) as info:
        framer.feed(data)
    assert info.value.limit == DEFAULT_MAX_FRAME_SIZE
    assert len(info.value.head) == HEAD_SIZE
    assert framer.buffered_bytes == 0


def test_framer_is_dead_after_frame_too_large() -> None:
    """After FrameTooLarge every feed raises FramingError, even a clean frame or EOF."""
    framer = MllpFramer(max_frame_size=4)
    with pytest.raises(FrameTooLarge):
        framer.feed(frame(b"12345"))
    with pytest.raises(FramingError, match="closed"):
        framer.feed(frame(b"1"))
    with pytest.raises(FramingError, match="closed"):
        framer.feed(b"")


def test_frames_before_an_oversized_one_are_not_lost() -> None:
    """Frames completed in the same read as an oversized frame travel on the error."""
    framer = MllpFramer(max_frame_size=8)
    with pytest.raises(FrameTooLarge) as info:
        framer.feed(frame(b"one") + frame(b"two") + frame(b"far too long"))
    assert info.value.frames == (b"one", b"two")
    assert info.value.head == b"far too long"


def test_limit_counts_payload_only_across_frames() -> None:
    """The limit applies per frame: many small frames in one read are fine."""
    framer = MllpFramer(max_frame_size=8)
    assert framer.feed(frame(b"12345678") * 50) == [b"12345678"] * 50


def test_max_frame_size_must_be_positive() -> None:
    """A zero limit is a configuration mistake, reported at construction."""
    with pytest.raises(ValueError):
        MllpFramer(max_frame_size=0)


def test_frame_wraps_payload() -> None:
    """frame() adds 0x0B before and 0x1C 0x0D after; the framer reads it back."""
    assert frame(b"MSH|x") == b"\x0bMSH|x\x1c\r"
    assert MllpFramer().feed(frame(MSG)) == [MSG]


def test_frame_refuses_end_block_in_payload() -> None:
    """A payload holding 0x1C cannot be framed: encoders must remove it first."""
    with pytest.raises(ValueError):
        frame(b"MSH|\x1c|")


@given(st.data(), mllp_streams())
def test_any_chunking_gives_the_same_frames(data: st.DataObject, stream: tuple[bytes, list[bytes]]) -> None:
    """Property: how a well-formed stream is chunked changes neither frames nor discarded count."""
    raw, expected = stream
    whole = MllpFramer()
    assert whole.feed(raw) == expected
    assert whole.feed(b"") == []
    framer = MllpFramer()
    assert feed_all(framer, data.draw(chunked(raw))) == expected
    assert framer.discarded_bytes == whole.discarded_bytes
    assert framer.feed(b"") == []


@given(st.data(), st.binary(max_size=200), st.integers(min_value=1, max_value=32))
def test_random_bytes_give_frames_or_framing_error(data: st.DataObject, raw: bytes, limit: int) -> None:
    """Property: arbitrary bytes, any chunking, any limit: frames or FramingError, nothing else.

    The frames must also be the same as for the whole input, up to the first error.
    """
    framer = MllpFramer(max_frame_size=limit)
    frames: list[bytes] = []
    try:
        for chunk in [*data.draw(chunked(raw)), b""]:
            frames += framer.feed(chunk)
            assert framer.buffered_bytes <= limit
    except FrameTooLarge as exc:
        frames += exc.frames
    except FramingError:
        pass
    assert all(len(f) <= limit and EB not in f for f in frames)

    reference = MllpFramer(max_frame_size=limit)
    try:
        expected = reference.feed(raw)
    except FrameTooLarge as exc:
        expected = list(exc.frames)
    assert frames == expected
