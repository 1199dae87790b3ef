"""The durable store: messages, their results and the outbound queue.

Callers depend on :class:`Store` and the values of :mod:`listener.store.base`;
:func:`open_store` builds the backend the settings name. A backend is one
module implementing :class:`Store` (and its :class:`ReportReader`) plus one
entry in :data:`BACKENDS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from listener.errors import StoreError
from listener.store.base import (
    CachedComparison,
    MessageRecord,
    MessageState,
    MessageSummary,
    OutboxDepth,
    OutboxItem,
    OutboxRow,
    OutboxState,
    OutboxStats,
    ReportReader,
    ReportRecord,
    SaveResult,
    ScoreRecord,
    Store,
    StoredReport,
    StoredScore,
    Transport,
)
from listener.store.sqlite import DB_FILENAME, SQLiteStore, Synchronous

__all__ = [
    "BACKENDS",
    "DB_FILENAME",
    "CachedComparison",
    "MessageRecord",
    "MessageState",
    "MessageSummary",
    "OutboxDepth",
    "OutboxItem",
    "OutboxRow",
    "OutboxState",
    "OutboxStats",
    "ReportReader",
    "ReportRecord",
    "SQLiteStore",
    "SaveResult",
    "ScoreRecord",
    "Store",
    "StoreSettings",
    "StoredReport",
    "StoredScore",
    "Transport",
    "open_store",
]


class StoreSettings(Protocol):
    """The store's part of the configuration (:class:`listener.config.Config` has it)."""

    @property
    def state_dir(self) -> Path:
        """Where the store lives."""
        ...

    @property
    def synchronous(self) -> str:
        """How hard a commit waits for the disk: FULL (default), EXTRA or NORMAL (docs/configuration.md)."""
        ...


#: Opens a backend: (state directory, synchronous mode, create) -> the store.
Opener = Callable[[Path, str, bool], Store]


def _open_sqlite(state_dir: Path, synchronous: str, create: bool) -> Store:
    if synchronous not in ("FULL", "EXTRA", "NORMAL"):
        raise ValueError("synchronous must be FULL, EXTRA or NORMAL")
    sync: Synchronous = synchronous  # type: ignore[assignment]  # checked just above
    if not create and not (state_dir / DB_FILENAME).is_file():
        raise StoreError(f"no store in {state_dir} (give --state-dir or --config)")
    # An operator's command never upgrades the schema under a running daemon of the older release.
    return SQLiteStore.in_state_dir(state_dir, synchronous=sync, migrate_schema=create)


#: The backends by name; :func:`open_store` picks one.
BACKENDS: dict[str, Opener] = {
    "sqlite": _open_sqlite,
}


def open_store(
    settings: StoreSettings | str | os.PathLike[str], *, create: bool = True, backend: str = "sqlite"
) -> Store:
    """Open the store the settings name: the daemon and every command open it here.

    Args:
        settings: the configuration (its ``state_dir`` and ``synchronous``), or
            just a state directory (synchronous FULL).
        create: create the store when there is none, and migrate an older
            one (the daemon); the operator's commands pass False and get "no
            store in DIR", or a store of an older schema is refused with the
            command to run.
        backend: a key of :data:`BACKENDS`.

    Raises:
        StoreError: the store cannot be created, opened or migrated, or is
            missing and ``create`` is False.
        ValueError: an unknown backend or synchronous mode.
    """
    if isinstance(settings, (str, os.PathLike)):
        state_dir, synchronous = Path(settings), "FULL"
    else:
        state_dir, synchronous = Path(settings.state_dir), settings.synchronous
    opener = BACKENDS.get(backend)
    if opener is None:
        raise ValueError(f"unknown store backend {backend!r}")
    return opener(state_dir, synchronous, create)
