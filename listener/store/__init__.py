"""The durable store: messages, their results and the outbound queue.

Callers depend on :class:`Store` and the values of :mod:`listener.store.base`;
:func:`open_store` picks the backend (the embedded SQLite one is the only one).
"""

from __future__ import annotations

import os
from pathlib import Path

from listener.errors import StoreError

from listener.store.base import (
    MessageRecord,
    MessageState,
    MessageSummary,
    OutboxDepth,
    OutboxItem,
    OutboxRow,
    OutboxState,
    OutboxStats,
    ReportRecord,
    SaveResult,
    Store,
    Transport,
)
from listener.store.sqlite import DB_FILENAME, SQLiteStore, Synchronous

__all__ = [
    "DB_FILENAME",
    "MessageRecord",
    "MessageState",
    "MessageSummary",
    "OutboxDepth",
    "OutboxItem",
    "OutboxRow",
    "OutboxState",
    "OutboxStats",
    "ReportRecord",
    "SQLiteStore",
    "SaveResult",
    "Store",
    "Transport",
    "open_store",
]


def open_store(state_dir: str | os.PathLike[str], *, synchronous: Synchronous = "FULL", create: bool = True) -> Store:
    """Open the store kept in ``state_dir`` (``<state_dir>/overread.db``).

    Args:
        create: create the store when there is none, and migrate an older
            one (the daemon); the operator's commands pass False and get "no
            store in DIR", or a store of an older schema is refused with the
            command to run.

    Raises:
        StoreError: the store cannot be created, opened or migrated, or is
            missing and ``create`` is False.
    """
    if not create and not (Path(state_dir) / DB_FILENAME).is_file():
        raise StoreError(f"no store in {state_dir} (give --state-dir or --config)")
    # An operator's command never upgrades the schema under a running daemon of the older release.
    return SQLiteStore.in_state_dir(state_dir, synchronous=synchronous, migrate_schema=create)
