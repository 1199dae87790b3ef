"""Sans-I/O MLLP framer: bytes from a socket in, complete frame payloads out.

Pure: no I/O, no clock, no logging, never decodes text. The Twisted shell owns
the socket; it calls :meth:`MllpFramer.feed` from ``dataReceived`` and
``feed(b"")`` from ``connectionLost``, like h11's ``receive_data``.

Semantics (MLLP release 2, HL7 v2.5.1 appendix C, read tolerantly):

* A frame is ``START_BLOCK`` (0x0B), the payload, ``END_BLOCK`` (0x1C), then a
  ``CARRIAGE_RETURN`` (0x0D). The frame ends at 0x1C. The 0x0D after it is
  optional: if it is the very next byte (even in a later ``feed``) it is
  swallowed, otherwise nothing happens.
* Bytes outside a frame (before the first 0x0B, between 0x1C[0x0D] and the
  next 0x0B) are discarded and counted in :attr:`MllpFramer.discarded_bytes`,
  so the shell can log how much junk a peer sent (never the bytes themselves).
* A 0x0B inside a frame means the sender restarted: MLLP forbids 0x0B in
  content, and a sender that gives up on a message mid-frame and sends the
  next one starts it with 0x0B without ending the first. The partial payload
  before it is discarded and the bytes after it are read as a new frame.
  Treating that 0x0B as data would glue the head of one message to another
  whole message, and the glued payload can decode cleanly: one patient's
  header and PID with another patient's order and report. Each discarded
  partial is counted (:attr:`MllpFramer.restarts`,
  :attr:`MllpFramer.restarted_bytes`) and its size queued for the shell,
  which takes them with :meth:`MllpFramer.take_discarded_partials` after
  each ``feed`` and logs them (size only).
* Payloads longer than ``max_frame_size`` bytes are refused with
  :class:`FrameTooLarge` as soon as the buffered frame would exceed the limit,
  before the end block arrives: the framer never holds more than
  ``max_frame_size`` payload bytes. A restart resets the count, since the
  partial before it is gone. The error carries the first 4 KiB of the frame so
  that the shell can read MSH and address an AR NACK, and the frames completed
  earlier in the same ``feed`` call (``.frames``), which must still be
  processed and answered first. After it the framer is dead: every later
  ``feed`` raises :class:`FramingError`.
* ``feed(b"")`` means end of stream: it raises :class:`FramingError` when a
  partial frame is buffered (like h11 on an early EOF), else returns ``[]``.
  Once EOF was fed, more data raises :class:`FramingError`.

The frames returned, the discarded and restarted counts, the partial sizes and
the point where a frame is refused as too large do not depend on how the stream
was chunked. The framer raises nothing but :class:`FramingError` (and
subclasses), whatever the bytes; both are checked by property tests and by the
fuzzer (``fuzz/``).
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
            early, or 0x0B, which a receiver reads as a restarted frame
            (encoders strip both from data; this is a programming error).
    """
    if END_BLOCK in payload:
        raise ValueError("payload contains the MLLP end block byte 0x1C")
    if START_BLOCK in payload:
        raise ValueError("payload contains the MLLP start block byte 0x0B")
    return START_BLOCK + payload + END_BLOCK + CARRIAGE_RETURN


class MllpFramer:
    """Cut an MLLP byte stream into frame payloads (see the module docstring).

    Attributes:
        max_frame_size: largest payload accepted, in bytes.
        discarded_bytes: bytes seen outside any frame so far (junk, stray CRs).
        restarts: frames abandoned by a 0x0B before their 0x1C, so far.
        restarted_bytes: payload bytes of those abandoned frames, so far.
    """

    __slots__ = (
        "max_frame_size",
        "discarded_bytes",
        "restarts",
        "restarted_bytes",
        "_partials",
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
        self.restarts = 0
        self.restarted_bytes = 0
        # Sizes of the partial frames discarded since take_discarded_partials.
        self._partials: list[int] = []
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

    def take_discarded_partials(self) -> list[int]:
        """Return the sizes of the partial frames dropped by a restart since the last call.

        A partial frame is the payload between a 0x0B and a later 0x0B that
        came before any 0x1C (see the module docstring). Sizes are in stream
        order and count payload bytes only. The shell calls this after every
        ``feed`` (also when ``feed`` raised) and logs one event per size; the
        totals stay in :attr:`restarts` and :attr:`restarted_bytes`.

        Returns:
            The sizes in bytes (often empty); the queue is emptied.
        """
        partials, self._partials = self._partials, []
        return partials

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next bytes of the stream; return the frames they complete.

        Args:
            data: bytes as received; ``b""`` signals end of stream.

        Returns:
            The payloads (bytes between 0x0B and 0x1C) of every frame completed
            by ``data``, in stream order; often empty. Partial frames dropped
            by a restart are not returned: see :meth:`take_discarded_partials`.

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
        # code runs once per frame or restart, never once per byte. No byte is
        # searched twice for the same delimiter: ``end`` remembers the next
        # 0x1C (or, when -1, that there is none before ``end_searched_to``),
        # so a run of restarts before one 0x1C stays linear.
        frames: list[bytes] = []
        pos = 0
        size = len(data)
        end = -1
        end_searched_to = 0
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
            # the delimiter itself. Anything longer is refused unread. The
            # window never shrinks within a call (the buffer only holds bytes
            # of an earlier call), so a 0x1C found earlier is still inside it.
            window = min(size, pos + room + 1)
            if end < pos:
                end = data.find(END_BLOCK, max(pos, end_searched_to), window)
                if end < 0:
                    end_searched_to = window
            restart = data.find(START_BLOCK, pos, end if end >= 0 else window)
            if restart >= 0:
                self._restart(restart - pos)
                pos = restart + 1
                continue
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

    def _restart(self, tail: int) -> None:
        """Drop the frame being read (buffered bytes plus ``tail`` bytes of this call)."""
        size = len(self._buffer) + tail
        self._buffer.clear()
        self.restarts += 1
        self.restarted_bytes += size
        self._partials.append(size)

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
