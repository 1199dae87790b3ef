"""Restoring a backup directory into the state directory.

Layer: storage (files, SQLite), no logging. Used by ``overread store restore``
(docs/operations.md, "Backup, restore, upgrade").

A restore replaces the state directory's store only while no daemon holds the
state directory (:mod:`listener.store.statedir`), after checking the backup
(checksums, then ``PRAGMA integrity_check``); an existing store is moved aside
as ``overread.db.before-restore-<time>`` (its ``-wal``/``-shm`` with it: a WAL
left behind would be replayed onto the restored file).
"""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from listener.errors import StoreError, database_error
from listener.store.backup import (
    MANIFEST_FILENAME,
    SIDECAR_SUFFIXES,
    BackupManifest,
    connect_existing,
    copy_private,
    file_digest,
    fsync_path,
    integrity_problems,
    read_manifest,
)
from listener.store.schema import SCHEMA_VERSION, newer_schema_text, schema_version
from listener.store.sqlite import DB_FILENAME
from listener.store.statedir import state_dir_locked

__all__ = ["RestoreResult", "restore_store", "verify_backup"]


@dataclass(frozen=True, slots=True)
class RestoreResult:
    """What a restore did.

    Attributes:
        manifest: the restored backup's manifest.
        restored: the files written into the state directory.
        moved_aside: where the files that were replaced now are.
    """

    manifest: BackupManifest
    restored: tuple[Path, ...]
    moved_aside: tuple[Path, ...]


def verify_backup(backup: Path, state_files: Sequence[str] = ()) -> BackupManifest:
    """Check a backup directory before it is restored.

    Checks: the manifest is valid and lists only the database and
    ``state_files``; every file it lists exists with its size and SHA-256;
    the database passes ``PRAGMA integrity_check``; its schema version is the
    manifest's, and one this program can open (maybe after migrating).

    Raises:
        StoreError: the first problem found, naming the file.
    """
    manifest = read_manifest(backup / MANIFEST_FILENAME)
    for entry in manifest.files:
        path = backup / entry.name
        if entry is not manifest.files[0] and entry.name not in state_files:
            raise StoreError(f"{backup / MANIFEST_FILENAME}: lists {entry.name!r}, not a file overread restores")
        if not path.is_file():
            raise StoreError(f"{path}: listed in {MANIFEST_FILENAME} but missing")
        try:
            found = file_digest(path)
        except OSError as exc:
            raise StoreError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
        if found.size != entry.size:
            raise StoreError(f"{path}: {found.size} bytes, {MANIFEST_FILENAME} says {entry.size}")
        if found.sha256 != entry.sha256:
            raise StoreError(f"{path}: SHA-256 does not match {MANIFEST_FILENAME} (damaged or changed)")
    db = backup / DB_FILENAME
    conn = connect_existing(db, read_only=True)
    try:
        problems = integrity_problems(conn)
        if problems:
            raise StoreError(f"{db}: integrity check failed ({len(problems)} problems)")
        version = schema_version(conn)
    except sqlite3.Error as exc:
        raise StoreError(f"{db}: cannot be checked ({database_error(exc)})") from None
    finally:
        conn.close()
    if version != manifest.schema_version:
        raise StoreError(f"{db}: schema version {version}, {MANIFEST_FILENAME} says {manifest.schema_version}")
    if version == 0:
        raise StoreError(f"{db}: not an overread store (no schema version)")
    if version > SCHEMA_VERSION:
        raise StoreError(f"{db}: {newer_schema_text(version, SCHEMA_VERSION)}")
    return manifest


def _aside_name(path: Path, stamp: str) -> Path:
    """``<name>.before-restore-<stamp>``, with ``.N`` added when that is taken."""
    candidate = path.with_name(f"{path.name}.before-restore-{stamp}")
    n = 1
    while candidate.exists() or any(Path(f"{candidate}{s}").exists() for s in SIDECAR_SUFFIXES):
        n += 1
        candidate = path.with_name(f"{path.name}.before-restore-{stamp}.{n}")
    return candidate


def restore_store(
    backup: Path, state_dir: Path, *, force: bool, now: datetime, state_files: Sequence[str] = ()
) -> RestoreResult:
    """Restore the backup directory ``backup`` into ``state_dir``.

    Holds the state directory's lock throughout (refused while a daemon runs;
    no daemon can start meanwhile). Without ``force`` an existing store (the
    database, or a leftover ``-wal``/``-shm``) or a different state file (hash
    key) is left alone and the restore refused; with ``force`` they are renamed
    to ``<name>.before-restore-<UTC time>``.

    Args:
        backup: the backup directory (made by :func:`backup_store`).
        state_dir: the daemon's state directory (created if missing).
        force: move existing files aside instead of refusing.
        now: names the moved-aside files (aware).
        state_files: the state files a backup may carry (the log hash key).

    Raises:
        StoreError: the backup fails :func:`verify_backup`, a daemon holds the
            state directory, something would be overwritten without ``force``,
            or a file operation failed; the text names the file.
    """
    manifest = verify_backup(backup, state_files)
    with state_dir_locked(state_dir, "restore"):
        db = state_dir / DB_FILENAME
        in_the_way = [p for p in (db, *(Path(f"{db}{s}") for s in SIDECAR_SUFFIXES)) if p.exists()]
        for entry in manifest.files[1:]:
            current = state_dir / entry.name
            if current.exists() and file_digest(current).sha256 != entry.sha256:
                in_the_way.append(current)
        if in_the_way and not force:
            names = ", ".join(str(p) for p in in_the_way)
            raise StoreError(f"{names}: would be replaced; use --force to move the current files aside")
        return _swap_in(backup, state_dir, manifest, in_the_way, now)


def _swap_in(
    backup: Path, state_dir: Path, manifest: BackupManifest, in_the_way: list[Path], now: datetime
) -> RestoreResult:
    token = f"{os.getpid()}-{secrets.token_hex(4)}"
    staged: dict[str, Path] = {}
    try:
        # 1. Copy everything next to its final place first (checked as written).
        for entry in manifest.files:
            temp = state_dir / f".{entry.name}.restoring-{token}"
            staged[entry.name] = temp
            copy_private(backup / entry.name, temp, entry)
        # 2. Move the current files aside: the database with its sidecars.
        stamp = now.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        moved: list[Path] = []
        db = state_dir / DB_FILENAME
        db_aside = _aside_name(db, stamp)
        for path in in_the_way:
            if path.name.startswith(DB_FILENAME):
                target = Path(f"{db_aside}{path.name[len(DB_FILENAME) :]}")
            else:
                target = _aside_name(path, stamp)
            os.rename(path, target)
            moved.append(target)
        # 3. Put the restored files in place.
        restored = []
        for name, temp in staged.items():
            os.rename(temp, state_dir / name)
            restored.append(state_dir / name)
        fsync_path(state_dir)
    except OSError as exc:
        raise StoreError(
            f"{exc.filename or state_dir}: restore failed ({exc.strerror or type(exc).__name__})"
        ) from None
    finally:
        for temp in staged.values():
            temp.unlink(missing_ok=True)
    return RestoreResult(manifest, tuple(restored), tuple(moved))
