"""``overread store``: backup, restore, check and migrate the store (docs/operations.md).

Layer: CLI (I/O for users). The work is done by :mod:`listener.store.backup`
and :mod:`listener.store.maintenance`; this module parses options, prints and
chooses the exit status. Conventions as ``overread messages``: ``--config F``
(its ``state_dir``) and ``--state-dir DIR`` (wins); ``--format text`` (default)
or ``--format json`` (one object). Nothing printed comes from a stored message:
paths, versions, counts and ids only.

* ``backup DEST``: an online, consistent copy while the daemon runs.
* ``restore SRC [--force]``: refused while a daemon holds the state directory.
* ``check [--quick]``: exit 0 sound, 1 problems found, 2 usage error or no store.
* ``migrate [--list]``: run (or list) the schema migrations.
* ``copy --from STORE --to STORE``: move a whole store between SQLite and
  PostgreSQL (:mod:`listener.store.copy`); refused while a daemon has either open.
* ``drop-comparisons``: empty the comparisons cache (derived data, docs/outcomes.md,
  "Scorecards: where the figures come from"); runs beside the daemon.

Exit status of backup, restore, migrate, copy and drop-comparisons: 0 done, 2 refused or failed (the
message on stderr names the file and what is wrong).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from listener import __version__
from listener.errors import StoreError
from listener.logs import HASH_KEY_FILE
from listener.store.backup import BACKUP_PAGES
from listener.store.copy import COPY_BATCH
from listener.store.schema import MIGRATIONS, SCHEMA_VERSION, Migration

__all__ = ["add_store_parser", "cmd_store"]

EXIT_OK = 0
EXIT_PROBLEMS = 1
EXIT_ERROR = 2

#: State files that travel with the database in a backup.
STATE_FILES = (HASH_KEY_FILE,)
_MAX_PROBLEMS_SHOWN = 20


def add_store_parser(sub: Any) -> None:
    """Add ``store`` and its subcommands to the top-level subparsers."""
    store = sub.add_parser(
        "store",
        help="back up, restore, check or migrate the store",
        description="Back up, restore, check or upgrade the store in the state directory "
        "(docs/operations.md, 'Backup, restore, upgrade').",
    )
    actions = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")

    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--config", metavar="F", help="daemon config file (its state_dir is used)")
        parser.add_argument("--state-dir", metavar="DIR", help="where the store lives (default ./var)")
        parser.add_argument("--format", choices=("text", "json"), default="text")

    backup = actions.add_parser(
        "backup",
        help="copy the store (and the log hash key) into a new directory, while the daemon runs",
        epilog="exit status: 0 written; 2 no store, DEST in the way, or the copy failed",
    )
    backup.add_argument("dest", metavar="DEST", help="backup directory to create (must not exist, or be empty)")
    backup.add_argument(
        "--pages",
        type=int,
        default=BACKUP_PAGES,
        metavar="N",
        help=f"database pages copied per step (default {BACKUP_PAGES})",
    )
    common(backup)

    restore = actions.add_parser(
        "restore",
        help="restore a backup directory into the state directory (daemon stopped)",
        epilog="exit status: 0 restored; 2 refused (daemon running, store exists without --force, "
        "backup damaged) or failed",
    )
    restore.add_argument("src", metavar="SRC", help="a directory written by 'overread store backup'")
    restore.add_argument(
        "--force",
        action="store_true",
        help="move an existing store aside (overread.db.before-restore-<time>) instead of refusing",
    )
    common(restore)

    check = actions.add_parser(
        "check",
        help="check the store's integrity and schema version, count its rows",
        epilog="exit status: 0 sound; 1 problems found; 2 usage error or no store",
    )
    check.add_argument("--quick", action="store_true", help="PRAGMA quick_check instead of integrity_check")
    common(check)

    migrate = actions.add_parser(
        "migrate",
        help="run the pending schema migrations (daemon stopped)",
        epilog="exit status: 0 migrated or nothing to do; 2 refused or failed (nothing changed)",
    )
    migrate.add_argument("--list", action="store_true", help="list every migration and whether it is applied")
    common(migrate)

    copy = actions.add_parser(
        "copy",
        help="copy a whole store into an empty one: SQLite to PostgreSQL or back (daemons stopped)",
        description="Copy every table of the source store into the target, ids kept, in one transaction, "
        "then verify each table's row count and checksum (docs/store.md, 'Moving a store'). "
        "STORE is sqlite:PATH (a state directory or an overread.db file) or postgresql://USER@HOST/DBNAME.",
        epilog="exit status: 0 copied and verified; 2 refused (a store in use, the source not at this "
        "program's schema, the target not empty) or failed (the target keeps nothing of the copy)",
    )
    copy.add_argument("--from", dest="source", required=True, metavar="STORE", help="the store to copy")
    copy.add_argument("--to", dest="target", required=True, metavar="STORE", help="the empty store to fill")
    copy.add_argument(
        "--from-password-file", metavar="F", help="the source's PostgreSQL password (else PGPASSWORD or ~/.pgpass)"
    )
    copy.add_argument(
        "--to-password-file", metavar="F", help="the target's PostgreSQL password (else PGPASSWORD or ~/.pgpass)"
    )
    copy.add_argument(
        "--batch", type=int, default=COPY_BATCH, metavar="N", help=f"rows per read and write (default {COPY_BATCH})"
    )
    copy.add_argument("--format", choices=("text", "json"), default="text")

    drop = actions.add_parser(
        "drop-comparisons",
        help="empty the cache of compared prelim/final pairs (derived; computed again when read)",
        epilog="exit status: 0 dropped; 2 no store, an older schema, or failed",
    )
    common(drop)


def cmd_store(
    args: argparse.Namespace,
    state_dir: Path,
    out: TextIO,
    err: TextIO | None = None,
    *,
    store_url: str = "",
    password_file: Path | None = None,
) -> int:
    """Run ``overread store <action>``; return the exit status (errors to ``err``, default stderr).

    ``store_url`` (the configuration's ``store:``) names a PostgreSQL store:
    ``migrate`` works on it, the file-level actions refuse (docs/store.md).
    """
    action = args.store_command
    try:
        if action == "copy":
            return _copy(args, out)
        if store_url:
            return _postgresql(args, store_url, password_file, out)
        if action == "backup":
            return _backup(args, state_dir, out)
        if action == "restore":
            return _restore(args, state_dir, out)
        if action == "check":
            return _check(args, state_dir, out)
        if action == "migrate":
            return _list(args, state_dir, out) if args.list else _migrate(args, state_dir, out)
        if action == "drop-comparisons":
            return _drop_comparisons(args, state_dir, out)
    except StoreError as exc:
        (err or sys.stderr).write(f"overread store {action}: {exc}\n")
        return EXIT_ERROR
    raise AssertionError(f"unknown store action {action}")


def _postgresql(args: argparse.Namespace, url: str, password_file: Path | None, out: TextIO) -> int:
    """``overread store migrate [--list]`` on a PostgreSQL store; the other actions are the server's tools'."""
    from listener.store.pg_schema import PG_MIGRATIONS, PG_SCHEMA_VERSION
    from listener.store.pgurl import display_url
    from listener.store.postgresql import migrate_store, stored_version

    where = display_url(url)
    if args.store_command != "migrate":
        raise StoreError(
            f"the store is PostgreSQL ({where}): {args.store_command} works on the SQLite file;"
            " use the server's tools (pg_dump, pg_basebackup, amcheck), see docs/store.md"
        )
    password = None
    if password_file is not None:
        try:
            password = password_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            raise StoreError(f"store_password_file {password_file} cannot be read") from None
    if args.list:
        version = stored_version(url, password)
        head = (
            f"no store in {where}: every migration runs when the daemon creates it"
            if version == 0
            else f"store {where}: schema v{version} (this program: v{PG_SCHEMA_VERSION})"
        )
        lines = [head] + [
            f"  {step.label}  [{'applied' if step.version <= version else 'pending'}]" for step in PG_MIGRATIONS
        ]
        obj = {
            "path": where,
            "schema_version": version or None,
            "code_version": PG_SCHEMA_VERSION,
            "migrations": [
                {"from": s.version - 1, "to": s.version, "description": s.description, "applied": s.version <= version}
                for s in PG_MIGRATIONS
            ],
        }
        _emit(args, out, obj, lines)
        return EXIT_OK
    before, steps = migrate_store(url, password)
    if steps:
        lines = [step.label for step in steps] + [f"store {where} migrated from v{before} to v{PG_SCHEMA_VERSION}"]
    else:
        lines = [f"store {where} is at v{before}: nothing to migrate"]
    steps_json = [{"from": s.version - 1, "to": s.version, "description": s.description} for s in steps]
    _emit(args, out, {"path": where, "before": before, "after": PG_SCHEMA_VERSION, "steps": steps_json}, lines)
    return EXIT_OK


def _emit(args: argparse.Namespace, out: TextIO, obj: dict[str, Any], lines: list[str]) -> None:
    if args.format == "json":
        out.write(json.dumps(obj, ensure_ascii=False) + "\n")
    else:
        out.write("".join(f"{line}\n" for line in lines))


def _step_dict(step: Migration) -> dict[str, Any]:
    return {"from": step.version - 1, "to": step.version, "description": step.description}


def _backup(args: argparse.Namespace, state_dir: Path, out: TextIO) -> int:
    from listener.store.backup import MANIFEST_FILENAME, backup_store, manifest_dict

    dest = Path(args.dest)
    if args.pages < 1:
        raise StoreError("--pages must be at least 1")
    started = time.monotonic()
    manifest = backup_store(
        state_dir,
        dest,
        now=datetime.now(UTC),
        program_version=__version__,
        state_files=STATE_FILES,
        pages=args.pages,
    )
    seconds = round(time.monotonic() - started, 3)
    files = ", ".join(f"{f.name} ({f.size} bytes)" for f in manifest.files)
    key_note = (
        ""
        if any(f.name == HASH_KEY_FILE for f in manifest.files)
        else f"  note: {state_dir / HASH_KEY_FILE} does not exist; the backup has no log hash key"
    )
    lines = [
        f"backup written to {dest}",
        f"  source:   {manifest.source}",
        f"  schema:   v{manifest.schema_version}",
        f"  messages: {manifest.message_count}, outbox rows: {manifest.outbox_count}",
        f"  files:    {files}, {MANIFEST_FILENAME}",
        f"  took {seconds} s",
    ] + ([key_note] if key_note else [])
    _emit(args, out, {"backup": str(dest), **manifest_dict(manifest), "seconds": seconds}, lines)
    return EXIT_OK


def _restore(args: argparse.Namespace, state_dir: Path, out: TextIO) -> int:
    from listener.store.backup import manifest_dict
    from listener.store.restore import restore_store

    result = restore_store(Path(args.src), state_dir, force=args.force, now=datetime.now(UTC), state_files=STATE_FILES)
    m = result.manifest
    lines = [
        f"restored {args.src} into {state_dir}",
        f"  backup of {m.source}, made {m.created.isoformat()} by overread {m.program_version}",
        f"  schema:   v{m.schema_version} (this program: v{SCHEMA_VERSION}"
        + ("; migrated when the daemon starts)" if m.schema_version < SCHEMA_VERSION else ")"),
        f"  messages: {m.message_count}, outbox rows: {m.outbox_count}",
        f"  restored: {', '.join(p.name for p in result.restored)}",
    ] + [f"  moved aside: {p}" for p in result.moved_aside]
    obj = {
        "restored": str(args.src),
        "state_dir": str(state_dir),
        "manifest": manifest_dict(m),
        "files": [str(p) for p in result.restored],
        "moved_aside": [str(p) for p in result.moved_aside],
    }
    _emit(args, out, obj, lines)
    return EXIT_OK


def _check(args: argparse.Namespace, state_dir: Path, out: TextIO) -> int:
    from listener.store.maintenance import check_store

    result = check_store(state_dir, quick=args.quick)
    check_name = "quick_check" if result.quick else "integrity_check"
    lines = [
        f"store:    {result.path}",
        f"schema:   v{result.schema_version} (this program: v{result.code_version})",
        f"check:    {check_name} {'ok' if result.ok else 'found problems'}",
    ]
    if result.message_count is not None:
        lines.append(f"messages: {result.message_count}, reports: {result.report_count}")
        outbox = ", ".join(f"{state} {n}" for state, n in result.outbox_counts) or "empty"
        lines.append(f"outbox:   {outbox}")
    if result.pending:
        lines.append("pending migrations (run at the next daemon start, or now: overread store migrate):")
        lines += [f"  {step.label}" for step in result.pending]
    if result.problems:
        lines.append(f"problems ({len(result.problems)}):")
        lines += [f"  {p}" for p in result.problems[:_MAX_PROBLEMS_SHOWN]]
        if len(result.problems) > _MAX_PROBLEMS_SHOWN:
            lines.append(f"  ... and {len(result.problems) - _MAX_PROBLEMS_SHOWN} more (--format json lists all)")
    obj = {
        "path": str(result.path),
        "ok": result.ok,
        "check": check_name,
        "schema_version": result.schema_version,
        "code_version": result.code_version,
        "pending": [_step_dict(s) for s in result.pending],
        "problems": list(result.problems),
        "message_count": result.message_count,
        "report_count": result.report_count,
        "outbox": dict(result.outbox_counts),
    }
    _emit(args, out, obj, lines)
    return EXIT_OK if result.ok else EXIT_PROBLEMS


def _list(args: argparse.Namespace, state_dir: Path, out: TextIO) -> int:
    from listener.store import DB_FILENAME
    from listener.store.maintenance import stored_version

    version = stored_version(state_dir)
    db = state_dir / DB_FILENAME
    if version is None:
        head = f"no store in {state_dir}: every migration runs when the daemon creates it"
    else:
        head = f"store {db}: schema v{version} (this program: v{SCHEMA_VERSION})"
        if version > SCHEMA_VERSION:
            head += "; newer than this program: upgrade overread"
    current = version or 0
    lines = [head] + [f"  {step.label}  [{'applied' if step.version <= current else 'pending'}]" for step in MIGRATIONS]
    obj = {
        "path": str(db),
        "schema_version": version,
        "code_version": SCHEMA_VERSION,
        "migrations": [{**_step_dict(s), "applied": s.version <= current} for s in MIGRATIONS],
    }
    _emit(args, out, obj, lines)
    return EXIT_OK


def _migrate(args: argparse.Namespace, state_dir: Path, out: TextIO) -> int:
    from listener.store.maintenance import migrate_store

    result = migrate_store(state_dir)
    if result.steps:
        lines = [step.label for step in result.steps]
        lines.append(f"store {result.path} migrated from v{result.before} to v{result.after}")
    else:
        lines = [f"store {result.path} is at v{result.after}: nothing to migrate"]
    obj = {
        "path": str(result.path),
        "before": result.before,
        "after": result.after,
        "steps": [_step_dict(s) for s in result.steps],
    }
    _emit(args, out, obj, lines)
    return EXIT_OK


def _drop_comparisons(args: argparse.Namespace, state_dir: Path, out: TextIO) -> int:
    from listener.store import DB_FILENAME, open_store

    store = open_store(state_dir, create=False)
    try:
        dropped = store.drop_comparisons()
    finally:
        store.close()
    db = state_dir / DB_FILENAME
    plural = "" if dropped == 1 else "s"
    _emit(args, out, {"path": str(db), "dropped": dropped}, [f"dropped {dropped} cached comparison{plural} from {db}"])
    return EXIT_OK


def _copy(args: argparse.Namespace, out: TextIO) -> int:
    from listener.store.copy import copy_store, parse_store_spec

    def password_file(value: str | None) -> Path | None:
        return Path(value) if value else None

    source = parse_store_spec(args.source, "--from", password_file(args.from_password_file))
    target = parse_store_spec(args.target, "--to", password_file(args.to_password_file))
    result = copy_store(source, target, batch=args.batch)
    width = max((len(t.name) for t in result.tables), default=0)
    lines = [
        f"copied {result.source} to {result.target} (schema v{result.schema_version}), verified",
        *(f"  {t.name:<{width}}  {t.rows} rows  checksum {t.checksum}" for t in result.tables),
        f"  {result.rows} rows in {len(result.tables)} tables, took {result.seconds} s",
    ]
    obj = {
        "from": result.source,
        "to": result.target,
        "schema_version": result.schema_version,
        "tables": {t.name: {"rows": t.rows, "checksum": t.checksum} for t in result.tables},
        "rows": result.rows,
        "verified": True,
        "seconds": result.seconds,
    }
    _emit(args, out, obj, lines)
    return EXIT_OK
