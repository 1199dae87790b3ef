"""The state-directory lock: exclusive, named in the refusal, released with its descriptor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from listener.errors import StoreError
from listener.statelock import LOCK_FILENAME, lock_state_dir


def test_second_lock_on_the_same_directory_is_refused_with_the_holders_pid(tmp_path: Path) -> None:
    """A second taker gets a StoreError naming the directory and the holding pid."""
    held = lock_state_dir(tmp_path / "state")
    with pytest.raises(StoreError) as info:
        lock_state_dir(tmp_path / "state")
    assert "in use by another overread daemon" in str(info.value)
    assert f"pid {os.getpid()}" in str(info.value)
    assert held.held


def test_release_lets_the_next_one_in_and_creates_the_directory_private(tmp_path: Path) -> None:
    """The directory is created 0700; after release the lock can be taken again."""
    first = lock_state_dir(tmp_path / "new" / "state")
    assert (tmp_path / "new" / "state").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "new" / "state" / LOCK_FILENAME).read_text().strip() == str(os.getpid())
    first.release()
    assert not first.held
    lock_state_dir(tmp_path / "new" / "state").release()


def test_other_directories_are_independent(tmp_path: Path) -> None:
    """Locks on two state directories do not interfere."""
    a = lock_state_dir(tmp_path / "a")
    b = lock_state_dir(tmp_path / "b")
    a.release()
    b.release()


def test_unusable_directory_is_a_store_error(tmp_path: Path) -> None:
    """A state directory path that is a file gives a StoreError, not an OSError."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(StoreError):
        lock_state_dir(tmp_path / "file")
