"""The receipt journal: every message is on disk before the pipeline touches it.

Layer: file I/O, no Twisted, no logging. Why (docs/hardening.md): a message
that crashes or wedges the daemon (a bug, the OOM killer, a watchdog kill) is
not ACKed, so the sender sends it again after the restart, and it crashes the
daemon again: a loop that stops the whole feed. The journal breaks the loop.

* Before the pipeline runs, the raw message is written to a **slot**: one of
  a few files (``<state>/journal/<n>.slot``) the journal keeps open and
  reuses, written whole by one ``pwrite`` (its header names the message's key
  and ends with a CRC of the entry); once the message is committed to the
  store (or answered without being stored), one byte written over the CRC
  voids it and the slot is free for the next message. Two system calls
  a message, no file created, linked or removed (docs/benchmarks.md, "The
  daemon's kernel time").
* A valid slot at start-up belongs to a message that was being processed
  when the daemon died. :meth:`Journal.recover` counts one crash for it and
  keeps it as a **keyed entry**, ``<state>/journal/<key digest>.msg``, which
  carries the count (a worker process's death, :meth:`Journal.count_crash`,
  writes one too). At :data:`QUARANTINE_AFTER` crashes the message is
  quarantined: the daemon stores it with state ``quarantined`` and answers it
  (and every resend) AE 207 without processing it again.
* A resend of a message with one crash is processed again; its keyed entry
  keeps its count (:meth:`Journal.begin` writes no slot for a key that has an
  entry already).

An entry cut short by a death while it was written fails its CRC, so it
counts no crash: the message was not processed yet and the sender still has
it. The journal is written without fsync: it protects against the process
dying, not the machine. A message in the journal was not ACKed, so it is
still the sender's to resend; after a power loss the worst case is one more
attempt.
"""

from __future__ import annotations

import hashlib
import os
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["QUARANTINE_AFTER", "Interrupted", "Journal", "journal_key"]

#: Crashes (daemon deaths during processing) after which a message is quarantined.
QUARANTINE_AFTER = 2

_MAGIC = b"OVERREAD-JOURNAL/1"
#: A slot's magic.
_SLOT_MAGIC = b"OVERREAD-SLOT/1"
#: :meth:`Journal.end` voids a slot by writing this over the first digit of its CRC. Not the
#: magic: a new entry cut short after its first bytes would write the magic back over the old
#: entry, which would count again; its CRC's digit comes only after the new key and length.
_VOID = b"!"
#: A slot whose entry was larger than this is truncated when freed (it gives the disk back).
_SLOT_KEEP = 1 << 20
#: Slot files kept open for reuse. Past them (many messages journaled at once: a store that
#: stalls while the workers go on) an entry gets a slot file of its own, closed once written
#: and removed by :meth:`Journal.end`, so the open descriptors stay bounded.
OPEN_SLOTS = 64


def journal_key(transport: str, *parts: str | bytes) -> str:
    """A file-name-safe digest naming one message (never the values themselves)."""
    digest = hashlib.sha256(transport.encode())
    for part in parts:
        digest.update(b"\0")
        digest.update(part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part)
    return digest.hexdigest()[:40]


@dataclass(frozen=True, slots=True)
class Interrupted:
    """A message whose processing was interrupted by the daemon's death.

    Attributes:
        key: its journal key.
        transport: ``mllp`` or ``http``.
        crashes: deaths counted so far, this start-up included.
        raw: the message bytes as received.
        meta: what the intake wrote beside them (e.g. the HTTP client's name).
    """

    key: str
    transport: str
    crashes: int
    raw: bytes
    meta: str


@dataclass(slots=True)
class _SlotFile:
    """One slot file of the journal (:meth:`Journal.begin`).

    Attributes:
        fd: its open descriptor (-1: closed).
        number: its file's number (``<number>.slot``).
        kept: kept open for reuse (else one entry's own, removed at its end).
        written: the length of the entry last written (0: none since it was voided).
        crc_at: the offset of that entry's CRC (where :meth:`Journal.end` voids it).
    """

    fd: int
    number: int
    kept: bool
    written: int = 0
    crc_at: int = 0


class Journal:
    """The journal directory of one state directory.

    Used by several threads at once (the reactor and the pipeline threads begin
    entries, the reactor ends them): the slots' bookkeeping is under a lock, the writes are not.

    Args:
        directory: ``<state>/journal`` (created 0700 when missing).
        open_slots: slot files kept open for reuse (:data:`OPEN_SLOTS`).
    """

    def __init__(self, directory: str | os.PathLike[str], open_slots: int = OPEN_SLOTS) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._prefix = os.path.join(os.fspath(self.directory), "")
        self._lock = threading.Lock()
        self._open_slots = open_slots
        #: Slot files kept open, not holding an entry.
        self._free: list[_SlotFile] = []
        #: Slot files kept open (free or holding an entry).
        self._kept = 0
        #: The key of each entry held by a slot, and that slot.
        self._live: dict[str, _SlotFile] = {}
        #: Keys with a keyed entry (``<key>.msg``): written by this process only (recover, count_crash).
        self._keyed: set[str] = set()
        #: The number of the next slot file to create.
        self._next = 0

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.msg"

    def begin(self, key: str, transport: str, raw: bytes, meta: str = "") -> None:
        """Record that ``raw`` is about to be processed (keeps an existing entry and its count)."""
        # One pwrite into a slot kept open: no file created, linked or removed per message
        # (docs/benchmarks.md, "The daemon's kernel time"). A death while writing leaves an
        # entry whose CRC fails (the new bytes are a prefix over the slot's old ones), so
        # recover() counts no crash the message did not cause.
        head = b"%s %s %s %s %d " % (
            _SLOT_MAGIC,
            key.encode(),
            transport.encode(),
            meta.encode("utf-8", "replace").hex().encode() or b"-",
            len(raw),
        )
        data = b"%s%08x\n%s" % (head, zlib.crc32(raw, zlib.crc32(head)), raw)
        with self._lock:
            if key in self._live or key in self._keyed:
                return  # an entry holds this message already: it keeps its count
            slot = self._free.pop() if self._free else None
            if slot is None:
                slot = self._new_slot()
            self._live[key] = slot
        try:
            view = memoryview(data)
            offset = 0
            while offset < len(data):
                offset += os.pwrite(slot.fd, view[offset:], offset)
            slot.written = len(data)
            slot.crc_at = len(head)
        except BaseException:
            with self._lock:
                del self._live[key]
            self._release(slot)
            raise
        if not slot.kept:
            os.close(slot.fd)
            slot.fd = -1

    def _new_slot(self) -> _SlotFile:
        """Create and open the next slot file (under the lock): kept open while fewer than
        ``open_slots`` are, else one entry's own (closed once written)."""
        while True:
            number = self._next
            self._next += 1
            try:
                fd = os.open(f"{self._prefix}{number}.slot", os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:  # another's (recover() was not run): never overwritten
                continue
            kept = self._kept < self._open_slots
            self._kept += kept
            return _SlotFile(fd, number, kept)

    def _slot_path(self, slot: _SlotFile) -> str:
        return f"{self._prefix}{slot.number}.slot"

    def _release(self, slot: _SlotFile) -> None:
        """A slot no entry holds: back to the free ones when kept open, else closed and removed."""
        if slot.kept:
            with self._lock:
                self._free.append(slot)
            return
        if slot.fd >= 0:
            os.close(slot.fd)
            slot.fd = -1
        try:
            os.unlink(self._slot_path(slot))
        except FileNotFoundError:
            pass

    def end(self, key: str) -> None:
        """The message is stored or answered: forget it."""
        with self._lock:
            slot = self._live.pop(key, None)
            keyed = key in self._keyed
            self._keyed.discard(key)
        if slot is not None:
            try:
                if slot.kept:  # (an entry's own file is removed by _release)
                    if slot.written > _SLOT_KEEP:
                        os.ftruncate(slot.fd, 0)
                    else:
                        os.pwrite(slot.fd, _VOID, slot.crc_at)
                slot.written = 0
            finally:
                self._release(slot)
        if keyed:
            try:
                os.unlink(f"{self._prefix}{key}.msg")
            except FileNotFoundError:
                pass

    def has_crashes(self, key: str) -> bool:
        """True when ``key``'s message has a keyed entry: a crash counted, not ended since (from memory)."""
        with self._lock:
            return key in self._keyed

    def count_crash(self, key: str) -> int:
        """A worker process died running the message of ``key``: count one crash; return the count.

        The same count :meth:`recover` keeps for a daemon death, so a message
        that kills worker processes is quarantined like one that kills the
        daemon (docs/hardening.md). The count goes to the message's keyed
        entry (made from its slot at the first death). An entry that is
        missing or unreadable counts as this first crash.
        """
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            with self._lock:
                slot = self._live.get(key)
            entry = None if slot is None else _read_slot_file(Path(self._slot_path(slot)))
            if entry is None or entry[0] != key:
                return 1
            _, transport, raw, meta = entry
            crashes, head_meta = 0, meta
        except OSError:
            return 1
        else:
            try:
                transport, crashes, head_meta, raw = _parse_keyed(data)
            except ValueError:
                return 1
        count = crashes + 1
        self._write_keyed(key, transport, count, head_meta, raw)
        with self._lock:
            self._keyed.add(key)
        return count

    def _write_keyed(self, key: str, transport: bytes, crashes: int, meta: bytes, raw: bytes) -> None:
        """Write ``key``'s keyed entry whole: under a private name, then renamed into place."""
        tmp = self.directory / f"{key}.{os.getpid()}.{threading.get_ident()}.part"
        tmp.write_bytes(b"%s %s %d %s\n" % (_MAGIC, transport, crashes, meta) + raw)
        os.replace(tmp, self._path(key))

    def pending(self) -> int:
        """How many messages the directory holds entries for (being processed, or interrupted).

        Read from the files, so another process (a test, an operator's tool) may ask too.
        """
        keys = {path.stem for path in self.directory.glob("*.msg")}
        for path in self.directory.glob("*.slot"):
            entry = _read_slot_file(path)
            if entry is not None:
                keys.add(entry[0])
        return len(keys)

    def crashes(self, key: str) -> int | None:
        """The crashes counted so far for ``key``'s message (0: journaled, none yet); None: no entry.

        Read from the files, as :meth:`pending` (an unreadable keyed entry reads as None).
        """
        try:
            return _parse_keyed(self._path(key).read_bytes())[1]
        except FileNotFoundError:
            pass
        except (OSError, ValueError):
            return None
        for path in self.directory.glob("*.slot"):
            entry = _read_slot_file(path)
            if entry is not None and entry[0] == key:
                return 0
        return None

    def recover(self) -> list[Interrupted]:
        """At start-up: count one crash for every message with an entry left behind; return them all.

        A slot's entry becomes a keyed entry with one crash; a keyed entry
        counts one more (a message with both counts what its keyed entry
        says, plus one). Every slot file is removed afterwards (this
        journal's own too: a test recovers in the same process), and so
        are half-written keyed entries (``.part``) and unreadable ones:
        their message was not processed yet, and the sender still has it.
        """
        with self._lock:
            for slot in self._free + list(self._live.values()):
                if slot.fd >= 0:
                    os.close(slot.fd)
            self._free, self._live, self._keyed, self._next, self._kept = [], {}, set(), 0, 0
        for part in self.directory.glob("*.part"):
            part.unlink(missing_ok=True)
        #: key -> (transport, crashes before this start-up, meta as written, raw)
        entries: dict[str, tuple[bytes, int, bytes, bytes]] = {}
        slots = sorted(self.directory.glob("*.slot"))
        for path in slots:
            entry = _read_slot_file(path)
            if entry is not None:
                key, transport, raw, meta = entry
                entries[key] = (transport, 0, meta, raw)
        for path in self.directory.glob("*.msg"):
            try:
                entries[path.stem] = _parse_keyed(path.read_bytes())
            except (OSError, ValueError):
                path.unlink(missing_ok=True)
        found: list[Interrupted] = []
        for key in sorted(entries):
            transport, crashes, meta, raw = entries[key]
            try:
                meta_text = "" if meta == b"-" else bytes.fromhex(meta.decode()).decode("utf-8", "replace")
            except (ValueError, UnicodeDecodeError):
                self._path(key).unlink(missing_ok=True)
                continue
            count = crashes + 1
            self._write_keyed(key, transport, count, meta, raw)
            self._keyed.add(key)
            found.append(Interrupted(key, transport.decode(), count, raw, meta_text))
        # Only once every count is in a keyed entry: a death before here loses none.
        for path in slots:
            path.unlink(missing_ok=True)
        return found


def _parse_keyed(data: bytes) -> tuple[bytes, int, bytes, bytes]:
    """A keyed entry's (transport, crashes, meta as written, raw).

    Raises:
        ValueError: not a journal entry.
    """
    head, sep, raw = data.partition(b"\n")
    magic, transport, crashes, meta = head.split(b" ")
    if not sep or magic != _MAGIC:
        raise ValueError("not a journal entry")
    return transport, int(crashes), meta, raw


def _parse_slot(data: bytes) -> tuple[str, bytes, bytes, bytes] | None:
    """A slot's entry as (key, transport, raw, meta as written); None when void, cut short or garbled."""
    if not data.startswith(_SLOT_MAGIC):
        return None
    end = data.find(b"\n")
    fields = data[:end].split(b" ")
    if end < 0 or len(fields) != 6:
        return None
    magic, key, transport, meta, size, crc = fields
    try:
        length = int(size)
        checked = int(crc, 16)
    except ValueError:
        return None
    raw = data[end + 1 : end + 1 + length]
    head = data[: end - len(crc)]
    if magic != _SLOT_MAGIC or len(raw) != length or zlib.crc32(raw, zlib.crc32(head)) != checked:
        return None
    try:
        return key.decode("ascii"), transport, raw, meta
    except UnicodeDecodeError:
        return None


def _read_slot_file(path: Path) -> tuple[str, bytes, bytes, bytes] | None:
    """The entry the slot file ``path`` holds (None: void, or unreadable)."""
    try:
        return _parse_slot(path.read_bytes())
    except OSError:
        return None
