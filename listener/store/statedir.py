"""The state directory's lock: is a daemon using this store?

Layer: storage (files), no logging. ``overread serve`` holds an exclusive
``fcntl.flock`` on ``<state>/overread.lock`` for as long as it runs
(:mod:`listener.statelock`). Operations
that replace or rewrite the store underneath a daemon (``overread store
restore``, ``overread store migrate``) take the same lock, without waiting: if
a daemon holds it they refuse, and while they hold it no daemon can start.

``flock`` locks belong to the open file description and vanish when the
process dies (kill -9 included), so a stale lock file never blocks anyone.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from listener.errors import StoreError
from listener.statelock import LOCK_FILENAME

__all__ = ["LOCK_FILENAME", "daemon_holds", "state_dir_locked"]


def _open_lock_file(state_dir: Path) -> int:
    """Open (creating, 0600) the lock file; never truncate it: its owner may keep a pid there."""
    return os.open(state_dir / LOCK_FILENAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)


@contextlib.contextmanager
def state_dir_locked(state_dir: str | os.PathLike[str], what: str) -> Iterator[None]:
    """Hold the state directory's lock for the duration of the block.

    The directory is created (0700) if it does not exist yet.

    Args:
        state_dir: the daemon's state directory.
        what: the operation, for the refusal ("restore", "migrate").

    Raises:
        StoreError: another process (a running daemon) holds the lock, or the
            lock file cannot be opened. The text names the lock file.
    """
    directory = Path(state_dir)
    lock_path = directory / LOCK_FILENAME
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = _open_lock_file(directory)
    except OSError as exc:
        raise StoreError(f"{lock_path}: cannot open the lock file ({exc.strerror or type(exc).__name__})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise StoreError(
                f"{lock_path} is held: a daemon (overread serve) is using {directory}; stop it before the {what}"
            ) from None
        except OSError as exc:
            raise StoreError(f"{lock_path}: cannot lock ({exc.strerror or type(exc).__name__})") from None
        yield
    finally:
        os.close(fd)  # releases the lock


def daemon_holds(state_dir: str | os.PathLike[str]) -> bool:
    """Return True when another process holds the state directory's lock now.

    A directory or lock file that does not exist is not held. The answer may be
    stale by the time it is used; to act on it, hold :func:`state_dir_locked`.
    """
    try:
        fd = os.open(Path(state_dir) / LOCK_FILENAME, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError:
        return True  # unreadable: treat as in use, the caller refuses
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
