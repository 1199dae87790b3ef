"""One daemon per state directory: an exclusive lock on ``<state_dir>/overread.lock``.

Layer: I/O helper for the daemon shell (no reactor, no logging).

Two daemons on one state directory would share the SQLite store, the hash key and
the outbound queue: each would deliver the other's routing messages and answer
duplicates it never saw. ``serve`` takes this lock before it opens the store and
keeps it for the life of the process; the kernel drops it when the process ends,
however it ends (kill -9 included), so a stale lock file never blocks a restart.

Why ``flock`` rather than POSIX ``lockf``: a POSIX lock belongs to the process and is
released when *any* descriptor of that file is closed by it, while a ``flock`` lock
belongs to our one open file description. Both come from :mod:`fcntl`.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path
from typing import IO

from listener.errors import StoreError

__all__ = ["LOCK_FILENAME", "StateDirLock", "lock_state_dir"]

LOCK_FILENAME = "overread.lock"


class StateDirLock:
    """A held lock; it lasts until :meth:`release` or the end of the process."""

    def __init__(self, path: Path, file: IO[str]) -> None:
        self.path = path
        self._file: IO[str] | None = file

    @property
    def held(self) -> bool:
        """True until released."""
        return self._file is not None

    def release(self) -> None:
        """Drop the lock (closing the descriptor is what releases it)."""
        if self._file is not None:
            self._file.close()
            self._file = None


def lock_state_dir(state_dir: str | os.PathLike[str]) -> StateDirLock:
    """Take the state directory's lock, creating the directory (0700) if needed.

    Args:
        state_dir: the daemon's state directory.

    Returns:
        The held lock; keep a reference to it for as long as the daemon runs.

    Raises:
        StoreError: another process holds the lock (its pid is named when known), or
            the lock file cannot be created.
    """
    directory = Path(state_dir)
    path = directory / LOCK_FILENAME
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreError(
            f"cannot create the lock file {path} ({errno.errorcode.get(exc.errno or 0, type(exc).__name__)})"
        ) from None
    file = os.fdopen(fd, "r+", encoding="ascii")
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = file.read(32).strip()
        file.close()
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            by = f" (pid {holder})" if holder.isdigit() else ""
            raise StoreError(
                f"state directory {directory} is in use by another overread daemon{by}; "
                "stop it first, or give this one its own --state-dir"
            ) from None
        raise StoreError(f"cannot lock {path} ({errno.errorcode.get(exc.errno or 0, type(exc).__name__)})") from None
    # The pid is for people (and the message above); the lock itself is what counts.
    file.truncate(0)
    file.write(f"{os.getpid()}\n")
    file.flush()
    return StateDirLock(path, file)
