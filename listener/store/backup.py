"""Backups of the store: an online consistent copy, its manifest, and file helpers.

Layer: storage (files, SQLite), no logging. Used by ``overread store backup``
(docs/operations.md, "Backup, restore, upgrade"); restoring is
:mod:`listener.store.restore`.

A backup is a directory (0700) holding ``overread.db`` (a self-contained
SQLite file, journal mode DELETE, no ``-wal``), the state files that belong
with it (the log hash key), and ``manifest.json``: schema version, time,
message and outbox counts, the source path, and each file's size and SHA-256.
The manifest holds counts and paths only, never stored data.

Consistency without stopping the daemon. Strategy: the copy is made with
SQLite's online backup API, in steps of :data:`BACKUP_PAGES` pages, while the
source connection holds ONE read transaction open from before the first step
to after the last. In WAL mode a reader never blocks the writer (it only keeps
checkpoints from passing its snapshot, so the WAL grows during the backup),
and every step reads the same snapshot: the copy is the store as it was at one
commit. Without that read transaction each step would see the daemon's newest
commit, and SQLite restarts a backup whose source changed: under a steady
stream of messages a large backup would never finish.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import sqlite3
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from listener.errors import StoreError, database_error
from listener.store.schema import SCHEMA_VERSION, newer_schema_text, schema_version
from listener.store.sqlite import DB_FILENAME, DEFAULT_BUSY_TIMEOUT_MS, create_private_file

__all__ = [
    "BACKUP_PAGES",
    "MANIFEST_FILENAME",
    "SIDECAR_SUFFIXES",
    "BackupManifest",
    "FileDigest",
    "backup_store",
    "connect_existing",
    "copy_private",
    "file_digest",
    "fsync_path",
    "integrity_problems",
    "manifest_dict",
    "read_manifest",
]

#: The manifest file inside a backup directory.
MANIFEST_FILENAME = "manifest.json"
#: Identifies the manifest's layout; a reader refuses a format it does not know.
MANIFEST_FORMAT = "overread-backup/1"
#: Pages copied per backup step (4 MiB with 4 KiB pages).
BACKUP_PAGES = 1024
#: SQLite files that belong to a database file of the same name.
SIDECAR_SUFFIXES = ("-wal", "-shm", "-journal")
_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class FileDigest:
    """One file of a backup: its name in the directory, size and SHA-256 (hex)."""

    name: str
    size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class BackupManifest:
    """What ``manifest.json`` says about a backup.

    Attributes:
        schema_version: ``PRAGMA user_version`` of the copied database.
        created: when the copy's snapshot was taken (aware, UTC).
        message_count: messages in the copy.
        outbox_count: outbox rows in the copy.
        source: the database file that was copied (absolute path).
        program_version: the overread version that made the backup.
        files: the database first, then the other state files copied.
    """

    schema_version: int
    created: datetime
    message_count: int
    outbox_count: int
    source: str
    program_version: str
    files: tuple[FileDigest, ...]


# ------------------------------------------------------------------ manifest


def manifest_dict(manifest: BackupManifest) -> dict[str, Any]:
    """The manifest as the JSON object written to ``manifest.json``."""
    return {
        "format": MANIFEST_FORMAT,
        "schema_version": manifest.schema_version,
        "created": manifest.created.astimezone(UTC).isoformat(),
        "message_count": manifest.message_count,
        "outbox_count": manifest.outbox_count,
        "source": manifest.source,
        "program_version": manifest.program_version,
        "files": {f.name: {"bytes": f.size, "sha256": f.sha256} for f in manifest.files},
    }


def read_manifest(path: Path) -> BackupManifest:
    """Read and validate a backup's ``manifest.json``.

    Raises:
        StoreError: the file is missing, not JSON, of another format, or a
            field is missing or of the wrong type; the text names the file and
            the field.
    """
    try:
        data = json.loads(path.read_text("utf-8"))
    except FileNotFoundError:
        raise StoreError(f"{path}: missing (not an overread backup directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{path}: cannot be read as JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict) or data.get("format") != MANIFEST_FORMAT:
        raise StoreError(f"{path}: not a manifest of format {MANIFEST_FORMAT}")

    def field(name: str, kind: type) -> Any:
        value = data.get(name)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise StoreError(f"{path}: field {name!r} is missing or not a {kind.__name__}")
        return value

    files_obj = field("files", dict)
    files = []
    for name, entry in files_obj.items():
        if not _plain_name(name) or not isinstance(entry, dict):
            raise StoreError(f"{path}: files entry {name!r} is not a plain file name with bytes and sha256")
        size, digest = entry.get("bytes"), entry.get("sha256")
        if not isinstance(size, int) or not isinstance(digest, str) or len(digest) != 64:
            raise StoreError(f"{path}: files entry {name!r} needs integer bytes and a 64-digit sha256")
        files.append(FileDigest(name, size, digest))
    if not files or files[0].name != DB_FILENAME:
        raise StoreError(f"{path}: files must list {DB_FILENAME} first")
    try:
        created = datetime.fromisoformat(field("created", str))
    except ValueError:
        raise StoreError(f"{path}: field 'created' is not an ISO 8601 time") from None
    if created.tzinfo is None:
        raise StoreError(f"{path}: field 'created' has no UTC offset")
    return BackupManifest(
        schema_version=field("schema_version", int),
        created=created,
        message_count=field("message_count", int),
        outbox_count=field("outbox_count", int),
        source=field("source", str),
        program_version=field("program_version", str),
        files=tuple(files),
    )


def _plain_name(name: str) -> bool:
    """A file name that stays inside its directory (no separators, not hidden)."""
    return bool(name) and "/" not in name and "\0" not in name and not name.startswith(".")


# --------------------------------------------------------------------- files


def file_digest(path: Path) -> FileDigest:
    sha = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
    return FileDigest(path.name, size, sha.hexdigest())


def fsync_path(path: Path) -> None:
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def copy_private(source: Path, target: Path, expected: FileDigest | None = None) -> FileDigest:
    """Copy ``source`` to a new 0600 ``target``, fsynced; check it against ``expected``.

    The digest is taken of the bytes as written, so a file that changed after
    it was checked is caught here.

    Raises:
        StoreError: the bytes copied do not match ``expected``.
        OSError: a read or write failed.
    """
    sha = hashlib.sha256()
    size = 0
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as out, open(source, "rb") as inp:
        os.fchmod(out.fileno(), 0o600)
        while chunk := inp.read(_CHUNK):
            sha.update(chunk)
            size += len(chunk)
            out.write(chunk)
        out.flush()
        os.fsync(out.fileno())
    digest = FileDigest(source.name, size, sha.hexdigest())
    if expected is not None and (digest.size, digest.sha256) != (expected.size, expected.sha256):
        raise StoreError(f"{source}: changed while being copied (does not match its manifest entry)")
    return digest


def connect_existing(path: Path, *, read_only: bool) -> sqlite3.Connection:
    """Open an existing database file (never creating one) in autocommit mode.

    ``read_only`` opens with ``mode=ro``: for files that no daemon uses (a
    backup). A live store is opened read-write with ``query_only`` instead,
    because a WAL reader needs to write the ``-shm`` index.

    Raises:
        StoreError: the file does not exist or cannot be opened (names the file).
    """
    if not path.is_file():
        raise StoreError(f"{path}: no such database file")
    uri = f"file:{urllib.parse.quote(str(path.resolve()))}?mode={'ro' if read_only else 'rw'}"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None, timeout=DEFAULT_BUSY_TIMEOUT_MS / 1000)
        conn.execute(f"PRAGMA busy_timeout = {DEFAULT_BUSY_TIMEOUT_MS}")
    except sqlite3.Error as exc:
        raise StoreError(f"{path}: cannot be opened ({database_error(exc)})") from None
    return conn


def integrity_problems(conn: sqlite3.Connection, *, quick: bool = False) -> list[str]:
    """Run ``PRAGMA integrity_check`` (or ``quick_check``); return its problems ([] when ok).

    The texts name tables, indexes, pages and row ids, never column values.
    """
    rows = conn.execute(f"PRAGMA {'quick_check' if quick else 'integrity_check'}").fetchall()
    problems = [str(row[0]) for row in rows]
    return [] if problems == ["ok"] else problems


def _counts(conn: sqlite3.Connection) -> tuple[int, int]:
    messages = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
    outbox = conn.execute("SELECT count(*) FROM outbox").fetchone()[0]
    return int(messages), int(outbox)


# -------------------------------------------------------------------- backup


def backup_store(
    state_dir: Path,
    dest: Path,
    *,
    now: datetime,
    program_version: str,
    state_files: Sequence[str] = (),
    pages: int = BACKUP_PAGES,
    progress: Callable[[int, int], object] | None = None,
) -> BackupManifest:
    """Copy the store of ``state_dir`` (and ``state_files`` present there) into ``dest``.

    The daemon may keep running and writing: see the module's strategy.
    ``dest`` must not exist or be an empty directory; the copy is assembled
    in a hidden sibling directory and renamed to ``dest`` when complete, so
    ``dest`` never holds half a backup.

    Args:
        state_dir: the daemon's state directory.
        dest: the backup directory to create (0700).
        now: the time recorded as the backup's (aware).
        program_version: recorded in the manifest.
        state_files: names of state files copied when present (the log hash key).
        pages: database pages copied per step.
        progress: called after each step with (pages remaining, pages in all).

    Returns:
        The manifest written.

    Raises:
        StoreError: no store, ``dest`` in the way, the copy failed its quick
            check, or a file operation failed; the text names the file.
    """
    source = state_dir / DB_FILENAME
    if not source.is_file():
        raise StoreError(f"no store in {state_dir} ({source} does not exist)")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise StoreError(f"{dest}: exists and is not an empty directory; choose a new backup directory")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        work = dest.parent / f".{dest.name}.partial-{os.getpid()}-{secrets.token_hex(4)}"
        work.mkdir(mode=0o700)
        os.chmod(work, 0o700)
    except OSError as exc:
        raise StoreError(
            f"{dest.parent}: cannot create the backup directory ({exc.strerror or type(exc).__name__})"
        ) from None
    try:
        schema, messages, outbox = _copy_database(source, work / DB_FILENAME, pages, progress)
        files = [file_digest(work / DB_FILENAME)]
        for name in state_files:
            if (state_dir / name).is_file():
                files.append(copy_private(state_dir / name, work / name))
        manifest = BackupManifest(
            schema_version=schema,
            created=now.astimezone(UTC),
            message_count=messages,
            outbox_count=outbox,
            source=str(source.resolve()),
            program_version=program_version,
            files=tuple(files),
        )
        manifest_path = work / MANIFEST_FILENAME
        fd = os.open(manifest_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(manifest_dict(manifest), fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        fsync_path(work)
        os.rename(work, dest)  # an empty dest directory is replaced atomically
        fsync_path(dest.parent)
    except BaseException as exc:
        shutil.rmtree(work, ignore_errors=True)
        if isinstance(exc, OSError):
            where = exc.filename or dest
            raise StoreError(f"{where}: backup failed ({exc.strerror or type(exc).__name__})") from None
        raise
    return manifest


def _copy_database(
    source: Path, target: Path, pages: int, progress: Callable[[int, int], object] | None
) -> tuple[int, int, int]:
    """Copy ``source`` to ``target`` from one snapshot; return (schema version, messages, outbox rows)."""
    src = connect_existing(source, read_only=False)
    try:
        src.execute("PRAGMA query_only = ON")
        create_private_file(target)
        dst = sqlite3.connect(target, isolation_level=None)
        try:
            # The read transaction that pins one snapshot for every step (module docstring).
            src.execute("BEGIN")
            try:
                schema = schema_version(src)
                src.execute("SELECT count(*) FROM sqlite_master").fetchone()  # the snapshot starts here
                if schema > SCHEMA_VERSION:
                    raise StoreError(f"{source}: {newer_schema_text(schema, SCHEMA_VERSION)}")
                step = None if progress is None else (lambda _status, left, total: progress(left, total))
                src.backup(dst, pages=pages, sleep=0, progress=step)
            finally:
                src.execute("COMMIT")
            # A self-contained file: no -wal to carry along, readable with mode=ro.
            dst.execute("PRAGMA journal_mode = DELETE")
            problems = integrity_problems(dst, quick=True)
            if problems:
                raise StoreError(f"{target}: the copy failed its quick check ({len(problems)} problems)")
            messages, outbox = _counts(dst)
        finally:
            dst.close()
        fsync_path(target)
    except sqlite3.Error as exc:
        raise StoreError(f"{source}: backup failed ({database_error(exc)})") from None
    finally:
        src.close()
    return schema, messages, outbox
