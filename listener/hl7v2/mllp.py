"""Sans-I/O MLLP framer: bytes from a socket in, complete frame payloads out.

Pure: no I/O, no clock, no logging, never decodes text. The Twisted shell owns
the socket; it calls :meth:`MllpFramer.feed` from ``dataReceived`` and
``feed(b"")`` from ``connectionLost``, like h11's ``receive_data``.

Semantics (MLLP release 2, HL7 v2.5.1 appendix C, read tolerantly):

* A frame is ``START_BLOCK`` (0x0B), the payload, ``END_BLOCK`` (0x1C), then a
  ``CARRIAGE_RETURN`` (0x0D). The frame ends at 0x1C. The 0x0D after it is
  optional: if it is the very next byte (even in a later ``feed``) it is
  swallowed, otherwise nothing happens. So the frames returned, and the count
  of discarded bytes, do not depend on how the stream was chunked.
* Bytes outside a frame (before the first 0x0B, between 0x1C[0x0D] and the
  next 0x0B) are discarded and counted in :attr:`MllpFramer.discarded_bytes`,
  so the shell can log how much junk a peer sent (never the bytes themselves).
* Inside a frame, 0x0B is data: only 0x1C ends a frame. (A peer that restarts
  a frame without ending the previous one gets both glued into one payload,
  which then fails to decode and is answered, instead of silently vanishing.)
* Payloads longer than ``max_frame_size`` bytes are refused with
  :class:`FrameTooLarge` as soon as the buffered frame would exceed the limit,
  before the end block arrives: the framer never holds more than
  ``max_frame_size`` payload bytes. The error carries the first 4 KiB of the
  frame so that the shell can read MSH and address an AR NACK, and the frames
  completed earlier in the same ``feed`` call (``.frames``), which must still be
  processed and answered first. After it the framer is dead: every later
  ``feed`` raises :class:`FramingError`.
* ``feed(b"")`` means end of stream: it raises :class:`FramingError` when a
  partial frame is buffered (like h11 on an early EOF), else returns ``[]``.
  Once EOF was fed, more data raises :class:`FramingError`.

The framer raises nothing but :class:`FramingError` (and subclasses), whatever
the bytes; this is checked by property tests.
"""

from __future__ import annotations

from listener.errors import FramingError
from listener.hl7v2.segments import CARRIAGE_RETURN, END_BLOCK, START_BLOCK

__all__ = [
    "DEFAULT_MAX_FRAME_SIZE",
    "HEAD_SIZE",
    "FrameTooLarge",
    "MllpFramer",
    "frame",
]

#: Largest payload accepted by default (4 MiB), named after h11's constant.
DEFAULT_MAX_FRAME_SIZE = 4 * 1024 * 1024

#: How much of an oversized frame :class:`FrameTooLarge` keeps (enough for MSH).
HEAD_SIZE = 4 * 1024

_SB = START_BLOCK[0]
_EB = END_BLOCK[0]
_CR = CARRIAGE_RETURN[0]


class FrameTooLarge(FramingError):
    """A frame's payload is longer than the framer's limit.

    Attributes:
        limit: the limit in bytes (``max_frame_size``).
        head: the first bytes of the payload (at most :data:`HEAD_SIZE`), so the
            shell can read MSH and send an AR NACK before closing.
        frames: complete frames that came before the oversized one in the same
            ``feed`` call. They are valid messages: process and answer them
            (in order) before the AR, as if ``feed`` had returned them.
    """

    def __init__(self, limit: int, head: bytes, frames: tuple[bytes, ...] = ()) -> None:
        super().__init__(f"MLLP frame exceeds the limit of {limit} bytes")
        self.limit = limit
        self.head = head
        self.frames = frames


def frame(payload: bytes) -> bytes:
    """Wrap one message in MLLP framing: 0x0B payload 0x1C 0x0D.

    Args:
        payload: the message bytes (segments ending with CR).

    Returns:
        The framed bytes, ready for ``transport.write``.

    Raises:
        ValueError: if ``payload`` contains 0x1C, which would end the frame
            early (encoders strip it from data; this is a programming error).
    """
    if END_BLOCK in payload:
        raise ValueError("payload contains the MLLP end block byte 0x1C")
    return START_BLOCK + payload + END_BLOCK + CARRIAGE_RETURN


class MllpFramer:
    """Cut an MLLP byte stream into frame payloads (see the module docstring).

    Attributes:
        max_frame_size: largest payload accepted, in bytes.
        discarded_bytes: bytes seen outside any frame so far (junk, stray CRs).
    """

    __slots__ = (
        "max_frame_size",
        "discarded_bytes",
        "_buffer",
        "_in_frame",
        "_after_end",
        "_eof",
        "_dead",
    )

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        if max_frame_size < 1:
            raise ValueError("max_frame_size must be at least 1")
        self.max_frame_size = max_frame_size
        self.discarded_bytes = 0
        self._buffer = bytearray()
        self._in_frame = False
        # True right after an end block: a CR that comes next is the trailer.
        self._after_end = False
        self._eof = False
        self._dead = False

    @property
    def buffered_bytes(self) -> int:
        """Payload bytes of the current, incomplete frame (never above the limit)."""
        return len(self._buffer)

    @property
    def in_frame(self) -> bool:
        """True when a start block was seen and its end block not yet."""
        return self._in_frame

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next bytes of the stream; return the frames they complete.

        Args:
            data: bytes as received; ``b""`` signals end of stream.

        Returns:
            The payloads (bytes between 0x0B and 0x1C) of every frame completed
            by ``data``, in stream order; often empty.

        Raises:
            FrameTooLarge: a frame grew past ``max_frame_size``; the frames
                completed before it in this call are in its ``.frames``. The
                framer is dead afterwards.
            FramingError: end of stream inside a frame, data after end of
                stream, or any call after an earlier error.
        """
        if self._dead:
            raise FramingError("MLLP framer is closed after an earlier error")
        if not data:
            return self._end_of_stream()
        if self._eof:
            self._dead = True
            raise FramingError("MLLP data after end of stream")

        # Strategy: jump between delimiters with bytes.find (C speed); Python
        # code runs once per frame, never once per byte.
        frames: list[bytes] = []
        pos = 0
        size = len(data)
        if self._after_end:
            self._after_end = False
            if data[0] == _CR:
                pos = 1
        while pos < size:
            if not self._in_frame:
                start = data.find(START_BLOCK, pos)
                if start < 0:
                    self.discarded_bytes += size - pos
                    break
                self.discarded_bytes += start - pos
                self._in_frame = True
                pos = start + 1
                continue
            room = self.max_frame_size - len(self._buffer)
            # Only look as far as the limit allows: room payload bytes plus
            # the end block itself. Anything longer is refused unread.
            window = min(size, pos + room + 1)
            end = data.find(END_BLOCK, pos, window)
            if end < 0:
                if size - pos > room:
                    self._refuse(data, pos, frames)
                self._buffer += data[pos:]
                break
            if self._buffer:
                self._buffer += data[pos:end]
                frames.append(bytes(self._buffer))
                self._buffer.clear()
            else:
                frames.append(data[pos:end])
            self._in_frame = False
            pos = end + 1
            if pos < size:
                if data[pos] == _CR:
                    pos += 1
            else:
                self._after_end = True
        return frames

    def _refuse(self, data: bytes, pos: int, frames: list[bytes]) -> None:
        head = bytes(self._buffer[:HEAD_SIZE])
        if len(head) < HEAD_SIZE:
            stop = pos + HEAD_SIZE - len(head)
            end = data.find(END_BLOCK, pos, stop)
            head += data[pos : stop if end < 0 else end]
        self._buffer = bytearray()
        self._in_frame = False
        self._dead = True
        raise FrameTooLarge(self.max_frame_size, head, tuple(frames))

    def _end_of_stream(self) -> list[bytes]:
        self._eof = True
        self._after_end = False
        if self._in_frame:
            self._dead = True
            buffered = len(self._buffer)
            self._buffer = bytearray()
            raise FramingError(f"MLLP stream ended inside a frame ({buffered} bytes buffered)")
        return []
