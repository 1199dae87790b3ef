"""The receipt journal: every message is on disk before the pipeline touches it.

Layer: file I/O, no Twisted, no logging. Why (docs/hardening.md): a message
that crashes or wedges the daemon (a bug, the OOM killer, a watchdog kill) is
not ACKed, so the sender sends it again after the restart, and it crashes the
daemon again: a loop that stops the whole feed. The journal breaks the loop.

* Before the pipeline runs, the raw message is written to
  ``<state>/journal/<key digest>.msg``; once the message is committed to the
  store (or answered without being stored), the file is removed.
* A file still there at start-up belongs to a message that was being
  processed when the daemon died. :meth:`Journal.recover` counts one crash
  for it. At :data:`QUARANTINE_AFTER` crashes the message is quarantined: the
  daemon stores it with state ``quarantined`` and answers it (and every
  resend) AE 207 without processing it again.
* A resend of a message with one crash is processed again; its file keeps
  its count (:meth:`begin` never overwrites an existing entry).

The journal is written without fsync: it protects against the process dying,
not the machine. A message in the journal was not ACKed, so it is still the
sender's to resend; after a power loss the worst case is one more attempt.
"""

from __future__ import annotations

import hashlib
import os
import threading
from dataclasses import dataclass
from pathlib import Path

__all__ = ["QUARANTINE_AFTER", "Interrupted", "Journal", "journal_key"]

#: Crashes (daemon deaths during processing) after which a message is quarantined.
QUARANTINE_AFTER = 2

_MAGIC = b"OVERREAD-JOURNAL/1"


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


class Journal:
    """The journal directory of one state directory.

    Args:
        directory: ``<state>/journal`` (created 0700 when missing).
    """

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        # begin() and end() run once per message each: they join plain strings
        # and call os directly (no Path objects, no file object), about 12 us
        # less per message (docs/benchmarks.md, "Where the rest goes").
        self._prefix = os.path.join(os.fspath(self.directory), "")

    def _path(self, key: str) -> Path:
        return self.directory / f"{key}.msg"

    def begin(self, key: str, transport: str, raw: bytes, meta: str = "") -> None:
        """Record that ``raw`` is about to be processed (keeps an existing entry and its count)."""
        header = b"%s %s 0 %s\n" % (_MAGIC, transport.encode(), meta.encode("utf-8", "replace").hex().encode() or b"-")
        path = f"{self._prefix}{key}.msg"
        # Written whole under a private name, then linked into place: a death
        # while writing leaves no entry (only a .part file that recover()
        # removes), never a truncated one that would count a crash the
        # message did not cause. link() refuses to replace an existing entry,
        # so an entry with its count stays as it is (a resend after a crash);
        # no stat() first: the common case, no entry, costs one call less.
        part = f"{self._prefix}{key}.{os.getpid()}.{threading.get_ident()}.part"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            try:
                data = memoryview(header + raw)
                while data:
                    data = data[os.write(fd, data) :]
            finally:
                os.close(fd)
            try:
                os.link(part, path)
            except FileExistsError:
                pass
        finally:
            try:
                os.unlink(part)
            except FileNotFoundError:
                pass

    def end(self, key: str) -> None:
        """The message is stored or answered: forget it."""
        try:
            os.unlink(f"{self._prefix}{key}.msg")
        except FileNotFoundError:
            pass

    def count_crash(self, key: str) -> int:
        """A worker process died running the message of ``key``: count one crash; return the count.

        The same count :meth:`recover` keeps for a daemon death, so a message
        that kills worker processes is quarantined like one that kills the
        daemon (docs/hardening.md). An entry that is missing or unreadable
        counts as this first crash.
        """
        path = self._path(key)
        try:
            data = path.read_bytes()
            head, _, raw = data.partition(b"\n")
            magic, transport, crashes, meta = head.split(b" ")
            if magic != _MAGIC:
                raise ValueError("not a journal entry")
            count = int(crashes) + 1
        except (OSError, ValueError):
            return 1
        tmp = self.directory / f"{key}.{os.getpid()}.{threading.get_ident()}.part"
        tmp.write_bytes(b"%s %s %d %s\n" % (magic, transport, count, meta) + raw)
        os.replace(tmp, path)
        return count

    def pending(self) -> int:
        """How many entries the directory holds (messages being processed, or interrupted)."""
        return sum(1 for _ in self.directory.glob("*.msg"))

    def recover(self) -> list[Interrupted]:
        """At start-up: count one crash for every entry left behind; return them all.

        Half-written entries (``.part``: a death while writing one) and
        unreadable ones are removed: their message was not processed yet,
        and the sender still has it.
        """
        found: list[Interrupted] = []
        for part in self.directory.glob("*.part"):
            part.unlink(missing_ok=True)
        for path in sorted(self.directory.glob("*.msg")):
            try:
                data = path.read_bytes()
                head, sep, raw = data.partition(b"\n")
                magic, transport, crashes, meta = head.split(b" ")
                if not sep or magic != _MAGIC:
                    raise ValueError("not a journal entry")
                count = int(crashes) + 1
                meta_text = "" if meta == b"-" else bytes.fromhex(meta.decode()).decode("utf-8", "replace")
            except (OSError, ValueError, UnicodeDecodeError):
                path.unlink(missing_ok=True)
                continue
            tmp = path.with_suffix(".tmp")
            tmp.write_bytes(b"%s %s %d %s\n" % (magic, transport, count, meta) + raw)
            os.replace(tmp, path)
            found.append(Interrupted(path.stem, transport.decode(), count, raw, meta_text))
        return found
