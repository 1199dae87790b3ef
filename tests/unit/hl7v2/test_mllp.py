"""Unit and property tests for the sans-I/O MLLP framer."""

from __future__ import annotations

from pathlib import Path

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
from tests.strategies import chunked, mllp_streams, payloads

SB, EB, CR = b"\x0b", b"\x1c", b"\r"
SAMPLES = Path(__file__).resolve().parents[3] / "samples" / "hl7"
MSG = b"MSH|^~\\&|RIS|HOSP|OVR|READ|20261123||ORU^R01|C1|P|2.5.1\rPID|1\r"
TRAILING = SB + b"MSH|^~\\&|NEXT"


def feed_all(framer: MllpFramer, chunks: list[bytes]) -> list[bytes]:
    """Feed every chunk and collect the frames, as the shell's dataReceived does."""
    frames: list[bytes] = []
    for chunk in chunks:
        frames += framer.feed(chunk)
    return frames


def tr(data: bytes, expected: list[bytes], *, discarded: int = 0, partials: tuple[int, ...] = ()) -> None:
    """Check ``data`` whole, byte at a time and followed by a partial frame (h11 style).

    ``data`` must leave the framer between frames: each way the frames must be
    ``expected``, the discarded count ``discarded``, the sizes of the partial
    frames dropped by a restart ``partials``, and EOF must be clean unless the
    trailing partial frame is still open.
    """
    whole = MllpFramer()
    assert whole.feed(data) == expected
    assert whole.discarded_bytes == discarded
    check_partials(whole, partials)
    assert whole.feed(b"") == []

    drip = MllpFramer()
    assert feed_all(drip, [data[i : i + 1] for i in range(len(data))]) == expected
    assert drip.discarded_bytes == discarded
    check_partials(drip, partials)
    assert drip.feed(b"") == []

    trailing = MllpFramer()
    assert trailing.feed(data + TRAILING) == expected
    assert trailing.discarded_bytes == discarded
    check_partials(trailing, partials)
    assert trailing.in_frame
    with pytest.raises(FramingError):
        trailing.feed(b"")


def check_partials(framer: MllpFramer, partials: tuple[int, ...]) -> None:
    """The partial sizes queued, and the totals, are ``partials``; taking them empties the queue."""
    assert framer.restarts == len(partials)
    assert framer.restarted_bytes == sum(partials)
    assert framer.take_discarded_partials() == list(partials)
    assert framer.take_discarded_partials() == []


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


def test_start_block_inside_frame_restarts_it() -> None:
    """0x0B inside a frame drops the partial before it and starts a new frame, counted by size."""
    tr(SB + b"A\x0bB" + EB + CR, [b"B"], partials=(1,))
    tr(SB + b"\x0b\x0bB" + EB + CR, [b"B"], partials=(0, 0))
    tr(SB + b"AB\x0b" + EB + CR, [b""], partials=(2,))
    tr(
        SB + b"one" + EB + SB + b"tw" + SB + b"two" + EB + CR + SB + b"x" + SB + SB + b"three" + EB,
        [b"one", b"two", b"three"],
        partials=(2, 1, 0),
    )


def test_restart_mid_frame_never_glues_two_messages() -> None:
    """The attack: A's first 400 bytes, a 0x0B, then B whole: only B comes out, A's head is
    counted as a 400-byte partial; same in the other order, whatever the chunking."""
    a = (SAMPLES / "xr-chest-2v-normal.hl7").read_bytes()
    b = (SAMPLES / "ct-head-critical-sdh-communicated.hl7").read_bytes()
    for first, second in ((a, b), (b, a)):
        tr(SB + first[:400] + SB + second + EB + CR, [second], partials=(400,))
        tr(frame(first) + SB + second[:123] + frame(first), [first, first], partials=(123,))


def test_restart_resets_the_size_limit() -> None:
    """A restart drops the partial, so only the new frame counts against the limit; the limit
    is applied at the same byte whatever the chunking."""
    framer = MllpFramer(max_frame_size=10)
    assert framer.feed(SB + b"x" * 10 + SB + b"y" * 10 + EB) == [b"y" * 10]
    assert framer.take_discarded_partials() == [10]
    drip = MllpFramer(max_frame_size=10)
    data = SB + b"x" * 10 + SB + b"y" * 10 + EB
    assert feed_all(drip, [data[i : i + 1] for i in range(len(data))]) == [b"y" * 10]
    for framer in (MllpFramer(max_frame_size=10), MllpFramer(max_frame_size=10)):
        with pytest.raises(FrameTooLarge):
            feed_all(framer, [SB + b"x" * 11 + SB + b"y" + EB])
        assert framer.take_discarded_partials() == []


def test_many_restarts_stay_linear() -> None:
    """A frame of 0x0B bytes (every byte a restart) before one 0x1C is handled in linear time."""
    framer = MllpFramer()
    data = SB * 2_000_000 + b"z" * 10 + EB
    assert framer.feed(data) == [b"z" * 10]
    assert framer.restarts == 2_000_000 - 1
    assert framer.restarted_bytes == 0


def test_end_block_inside_data_ends_the_frame_and_the_rest_is_counted_junk() -> None:
    """0x1C inside a payload (MLLP forbids it in content) ends the frame there, whatever the
    chunking; the bytes after it up to the next 0x0B are discarded and counted, so the shell
    logs them (frame_discarded_bytes), and the next frame is read normally."""
    tr(SB + b"MSH|A" + EB + b"rest|B" + EB + CR + SB + b"NEXT" + EB + CR, [b"MSH|A", b"NEXT"], discarded=8)


def test_binary_payload_passes_through_undecoded() -> None:
    """The framer never decodes: any byte but 0x0B and 0x1C is payload, NUL and LF included."""
    payload = bytes(b for b in range(256) if b not in (0x0B, 0x1C))
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
    with pytest.raises(ValueError, match="start block"):
        frame(b"MSH|\x0b|")


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
    assert framer.take_discarded_partials() == reference.take_discarded_partials()
    assert (framer.discarded_bytes, framer.restarted_bytes) == (reference.discarded_bytes, reference.restarted_bytes)


@given(st.data(), st.lists(st.tuples(payloads(), st.booleans()), max_size=6))
def test_restarted_frames_are_dropped_whatever_the_chunking(
    data: st.DataObject, parts: list[tuple[bytes, bool]]
) -> None:
    """Property: a stream where some frames are cut short by the next 0x0B gives exactly the
    complete frames, and the cut frames' sizes in order, for any chunking."""
    stream = bytearray()
    expected: list[bytes] = []
    partials: list[int] = []
    for payload, cut in parts:
        if cut:
            stream += SB + payload  # the next SB (or the final frame's) restarts it
            partials.append(len(payload))
        else:
            stream += frame(payload)
            expected.append(payload)
    if parts and parts[-1][1]:
        stream += frame(b"last")
        expected.append(b"last")
    framer = MllpFramer()
    assert feed_all(framer, data.draw(chunked(bytes(stream)))) == expected
    assert framer.take_discarded_partials() == partials
    whole = MllpFramer()
    assert whole.feed(bytes(stream)) == expected
    assert (whole.restarts, whole.restarted_bytes) == (framer.restarts, framer.restarted_bytes)
