"""The durable store: messages, their results and the outbound queue.

Callers depend on :class:`Store` and the values of :mod:`listener.store.base`;
:func:`open_store` builds the backend the settings name. A backend is one
module implementing :class:`Store` (and its :class:`ReportReader`) plus one
entry in :data:`BACKENDS`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from listener.errors import StoreError
from listener.store.base import (
    BucketBin,
    CachedComparison,
    MessageRecord,
    MessageState,
    MessageSummary,
    OutboxClaim,
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
    TrafficBin,
    Transport,
)
from listener.store.pgurl import PSYCOPG_MISSING, display_url, is_postgresql_url
from listener.store.sqlite import DB_FILENAME, SQLiteStore, Synchronous

if TYPE_CHECKING:  # psycopg is optional: the class is imported where it is made
    from listener.store.postgresql import PriorReader as PgPriorReader

__all__ = [
    "BACKENDS",
    "BucketBin",
    "DB_FILENAME",
    "CachedComparison",
    "MessageRecord",
    "MessageState",
    "MessageSummary",
    "OutboxDepth",
    "OutboxItem",
    "OutboxClaim",
    "OutboxRow",
    "OutboxState",
    "OutboxStats",
    "ReportReader",
    "ReportRecord",
    "SQLiteStore",
    "SaveResult",
    "ScoreRecord",
    "Store",
    "StoreLocation",
    "StoreSettings",
    "StoredReport",
    "StoredScore",
    "TrafficBin",
    "Transport",
    "open_store",
    "postgres_prior_reader",
    "store_description",
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

    @property
    def store_url(self) -> str:
        """ "" for SQLite in the state directory, or a ``postgresql://`` URL (docs/store.md)."""
        ...

    @property
    def store_password_file(self) -> Path | None:
        """The file holding the PostgreSQL password, or None."""
        ...


@dataclass(frozen=True, slots=True)
class StoreLocation:
    """Where a store is, as :func:`open_store` hands it to a backend's opener.

    Attributes:
        state_dir: the state directory (SQLite keeps its file there).
        synchronous: SQLite's synchronous mode.
        url: "" (SQLite), or the PostgreSQL URL (no password in it).
        password_file: the file holding the PostgreSQL password, or None.
    """

    state_dir: Path
    synchronous: str = "FULL"
    url: str = ""
    password_file: Path | None = None


#: Opens a backend: (where, create) -> the store.
Opener = Callable[[StoreLocation, bool], Store]


#: A command run by a user who may not read and write the daemon's state directory
#: (docs/cli.md: they run as the daemon's user; docs/operations.md installs it as ``overread``).
_NO_ACCESS = (
    "permission denied on the store in {where}: run the command as the user the daemon runs as"
    " (installed as in docs/operations.md: sudo -u overread ...)"
)


def _may(path: Path, mode: int) -> bool:
    """Whether this process (its effective user and groups, as open() checks) has ``mode`` on ``path``."""
    return os.access(path, mode, effective_ids=True)


def _open_sqlite(where: StoreLocation, create: bool) -> Store:
    if where.synchronous not in ("FULL", "EXTRA", "NORMAL"):
        raise ValueError("synchronous must be FULL, EXTRA or NORMAL")
    sync: Synchronous = where.synchronous  # type: ignore[assignment]  # checked just above
    if not create:
        path = where.state_dir / DB_FILENAME
        try:
            exists = path.is_file()
        except PermissionError:
            raise StoreError(_NO_ACCESS.format(where=where.state_dir)) from None
        if not exists:
            raise StoreError(f"no store in {where.state_dir} (give --state-dir or --config)")
        # SQLite writes the -wal/-shm files beside the database even to read it.
        if not (_may(where.state_dir, os.R_OK | os.W_OK | os.X_OK) and _may(path, os.R_OK | os.W_OK)):
            raise StoreError(_NO_ACCESS.format(where=where.state_dir))
    # An operator's command never upgrades the schema under a running daemon of the older release.
    return SQLiteStore.in_state_dir(where.state_dir, synchronous=sync, migrate_schema=create)


def _password(where: StoreLocation) -> str | None:
    """The PostgreSQL password of ``store_password_file`` (None: none named, libpq's own ways apply)."""
    if where.password_file is None:
        return None
    try:
        return where.password_file.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        raise StoreError(f"store_password_file {where.password_file} cannot be read") from None


def _open_postgresql(where: StoreLocation, create: bool) -> Store:
    try:
        from listener.store.postgresql import PostgresStore
    except ImportError:
        raise StoreError(PSYCOPG_MISSING) from None
    # An operator's command never upgrades the schema under a running daemon of the older release.
    return PostgresStore(where.url, password=_password(where), migrate_schema=create)


def postgres_prior_reader(settings: StoreSettings | StoreLocation) -> PgPriorReader:
    """A read session for prior look-ups on the PostgreSQL store the settings name (a worker
    process's own: :class:`listener.store.postgresql.PriorReader`; it connects at its first look-up).

    Raises:
        StoreError: the settings name no PostgreSQL store, psycopg is missing, or the password
            file cannot be read.
    """
    where = _location(settings)
    if not is_postgresql_url(where.url):
        raise StoreError("no PostgreSQL store to read prior studies from")
    try:
        from listener.store.postgresql import PriorReader
    except ImportError:
        raise StoreError(PSYCOPG_MISSING) from None
    return PriorReader(where.url, _password(where))


#: The backends by name; :func:`open_store` picks one (by the URL when not told).
BACKENDS: dict[str, Opener] = {
    "sqlite": _open_sqlite,
    "postgresql": _open_postgresql,
}


def _location(settings: StoreSettings | StoreLocation | str | os.PathLike[str]) -> StoreLocation:
    if isinstance(settings, StoreLocation):
        return settings
    if isinstance(settings, (str, os.PathLike)):
        return StoreLocation(Path(settings))
    return StoreLocation(
        Path(settings.state_dir),
        settings.synchronous,
        getattr(settings, "store_url", ""),
        getattr(settings, "store_password_file", None),
    )


def store_description(settings: StoreSettings | StoreLocation | str | os.PathLike[str]) -> str:
    """What to print for the store the settings name: the URL without its password, or the SQLite file."""
    where = _location(settings)
    return display_url(where.url) if where.url else str(where.state_dir / DB_FILENAME)


def open_store(
    settings: StoreSettings | StoreLocation | str | os.PathLike[str], *, create: bool = True, backend: str | None = None
) -> Store:
    """Open the store the settings name: the daemon and every command open it here.

    Args:
        settings: the configuration (its ``state_dir``, ``synchronous``,
            ``store_url`` and ``store_password_file``), or just a state
            directory (SQLite, synchronous FULL).
        create: create the store when there is none, and migrate an older
            one (the daemon); the operator's commands pass False and get "no
            store in DIR", or a store of an older schema is refused with the
            command to run.
        backend: a key of :data:`BACKENDS`; None: ``postgresql`` for a
            ``postgresql://`` URL, else ``sqlite``.

    Raises:
        StoreError: the store cannot be created, opened or migrated, or is
            missing and ``create`` is False.
        ValueError: an unknown backend or synchronous mode.
    """
    where = _location(settings)
    if backend is None:
        backend = "postgresql" if is_postgresql_url(where.url) else "sqlite"
    opener = BACKENDS.get(backend)
    if opener is None:
        raise ValueError(f"unknown store backend {backend!r}")
    return opener(where, create)
