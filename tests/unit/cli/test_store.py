"""`overread store backup|restore|check|migrate` on real files (no daemon: see
tests/integration/test_store_ops.py for the running one)."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from listener.cli import main
from listener.store import SQLiteStore
from listener.store import schema as store_schema
from listener.store.backup import backup_store
from listener.store.statedir import LOCK_FILENAME, daemon_holds
from tests.unit.store.records import T0, item, record
from tests.unit.store.v1 import make_v1_store, table_rows, user_version

KEY = bytes(range(32))


@pytest.fixture(name="state_dir")
def fixture_state_dir(tmp_path: Path) -> Path:
    """A state directory with three messages (one with an outbox row) and a hash key."""
    state = tmp_path / "state"
    store = SQLiteStore.in_state_dir(state)
    store.save(record("M1", received=T0, outbox=(item("ACC1", "O1"),)))
    store.save(record("M2", received=T0))
    store.save(record("M3", ack_code="AE", state="rejected", received=T0, reports=()))
    store.close()
    (state / "hash.key").write_bytes(KEY)
    return state


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run `overread store ...`; return (exit status, stdout, stderr)."""
    status = main(["store", *argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextmanager
def daemon_lock(state_dir: Path) -> Iterator[None]:
    """Hold <state>/overread.lock as `overread serve` does (flock LOCK_EX on its own open
    file description, so this process's own attempts conflict with it as another's would)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_FILENAME, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        yield
    finally:
        os.close(fd)


def _corrupt_index(db: Path) -> None:
    """Make messages_received index a different column than its entries hold: integrity_check
    then reports rows missing from the index (deterministically, without a crash)."""
    conn = sqlite3.connect(db, isolation_level=None)
    (version,) = conn.execute("PRAGMA schema_version").fetchone()
    conn.execute("PRAGMA writable_schema = ON")
    conn.execute(
        "UPDATE sqlite_master SET sql = 'CREATE INDEX messages_received ON messages (feed)'"
        " WHERE name = 'messages_received'"
    )
    conn.execute(f"PRAGMA schema_version = {version + 1}")
    conn.close()


# -------------------------------------------------------------------- backup


def test_backup_writes_db_key_and_manifest_privately(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """DEST is created 0700 holding a self-contained overread.db (no -wal), the hash key and a
    manifest with version, time, counts, source and checksums; JSON output repeats it."""
    dest = tmp_path / "backups" / "b1"
    status, out, _ = run(capsys, "backup", str(dest), "--state-dir", str(state_dir), "--format", "json")
    assert status == 0
    assert sorted(p.name for p in dest.iterdir()) == ["hash.key", "manifest.json", "overread.db"]
    assert _mode(dest) == 0o700
    assert all(_mode(p) == 0o600 for p in dest.iterdir())
    assert (dest / "hash.key").read_bytes() == KEY
    manifest = json.loads((dest / "manifest.json").read_text())
    assert manifest["schema_version"] == store_schema.SCHEMA_VERSION
    assert (manifest["message_count"], manifest["outbox_count"]) == (3, 1)
    assert manifest["source"] == str((state_dir / "overread.db").resolve())
    assert list(manifest["files"]) == ["overread.db", "hash.key"]
    assert json.loads(out)["backup"] == str(dest)
    conn = sqlite3.connect(f"file:{dest / 'overread.db'}?mode=ro", uri=True)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert conn.execute("SELECT control_id FROM messages ORDER BY id").fetchall() == [("M1",), ("M2",), ("M3",)]
    conn.close()
    assert not list(tmp_path.joinpath("backups").glob(".*")), "no partial directory left behind"


def test_backup_refuses_a_used_destination_and_a_missing_store(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A non-empty DEST is never written into; an empty one is used; no store is exit 2."""
    dest = tmp_path / "used"
    dest.mkdir()
    (dest / "notes.txt").write_text("keep me")
    status, _, err = run(capsys, "backup", str(dest), "--state-dir", str(state_dir))
    assert status == 2 and str(dest) in err and "not an empty directory" in err
    assert [p.name for p in dest.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run(capsys, "backup", str(empty), "--state-dir", str(state_dir))[0] == 0
    assert (empty / "overread.db").is_file()
    status, _, err = run(capsys, "backup", str(tmp_path / "b2"), "--state-dir", str(tmp_path / "nothing"))
    assert status == 2 and "no store in" in err
    assert not (tmp_path / "b2").exists()


def test_backup_is_one_consistent_snapshot_while_another_process_commits(state_dir: Path, tmp_path: Path) -> None:
    """Copied one page per step while another process commits messages (each with two reports
    and an outbox row): the backup never restarts (pages remaining only go down: one pinned
    snapshot, so it ends under any load), and the copy has every message committed before the
    backup began, each message whole, the manifest's count, and passes integrity_check."""
    store = SQLiteStore.in_state_dir(state_dir)
    for n in range(400):  # a page each: hundreds of steps (random bytes, as the store compresses raw bytes)
        store.save(record(f"P{n}", received=T0, raw=b"MSH|" + os.urandom(6000)))
    store.close()
    repo = Path(__file__).resolve().parents[3]
    proc = subprocess.Popen(
        [sys.executable, str(repo / "tests" / "unit" / "store" / "crash_writer.py"), str(state_dir), "W", "2"],
        stdout=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=str(repo)),
        cwd=repo,
        text=True,
    )
    assert proc.stdout is not None
    try:
        committed_before = [proc.stdout.readline().strip() for _ in range(50)]
        remaining: list[int] = []

        def step(left: int, total: int) -> None:
            # Stands for a large store: each step takes longer than a commit, so the writer
            # commits between almost every two steps. A restart makes `left` go back up.
            assert not remaining or left < remaining[-1], "the backup restarted"
            remaining.append(left)
            time.sleep(0.002)

        manifest = backup_store(state_dir, tmp_path / "b", now=T0, program_version="test", pages=1, progress=step)
        assert proc.poll() is None, "the writer kept running through the backup"
    finally:
        proc.kill()
        proc.wait()
    conn = sqlite3.connect(f"file:{tmp_path / 'b' / 'overread.db'}?mode=ro", uri=True)
    copied = {row[0] for row in conn.execute("SELECT control_id FROM messages")}
    assert set(committed_before) <= copied
    assert len(remaining) > 300 and remaining[-1] == 0
    assert len(copied) == manifest.message_count
    incomplete = conn.execute(
        "SELECT count(*) FROM messages m WHERE m.control_id LIKE 'W-%' AND ("
        " (SELECT count(*) FROM reports r WHERE r.message_id = m.id) != 2"
        " OR (SELECT count(*) FROM outbox o WHERE o.message_id = m.id) != 1)"
    ).fetchone()[0]
    assert incomplete == 0
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()


# ------------------------------------------------------------------- restore


def _backup(state_dir: Path, dest: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    assert run(capsys, "backup", str(dest), "--state-dir", str(state_dir))[0] == 0
    return dest


def test_restore_into_a_new_state_dir_gives_the_same_messages_and_key(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Restoring into an empty place recreates overread.db (0600) and hash.key; `overread
    messages` lists exactly what the original lists."""
    backup = _backup(state_dir, tmp_path / "b", capsys)
    new = tmp_path / "new"
    status, out, _ = run(capsys, "restore", str(backup), "--state-dir", str(new))
    assert status == 0 and "restored" in out
    assert (new / "hash.key").read_bytes() == KEY
    assert _mode(new / "overread.db") == 0o600 and _mode(new / "hash.key") == 0o600
    assert main(["messages", "--state-dir", str(state_dir)]) == 0
    original = capsys.readouterr().out
    assert main(["messages", "--state-dir", str(new)]) == 0
    assert capsys.readouterr().out == original != ""


def test_restore_is_refused_while_a_daemon_holds_the_state_dir(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """With overread.lock held (a running daemon), restore refuses, even with --force, names
    the lock file, and changes nothing; once released it proceeds."""
    backup = _backup(state_dir, tmp_path / "b", capsys)
    target = tmp_path / "target"
    with daemon_lock(target):
        assert daemon_holds(target)
        status, _, err = run(capsys, "restore", str(backup), "--state-dir", str(target), "--force")
        assert status == 2
        assert str(target / LOCK_FILENAME) in err and "stop it" in err
        assert sorted(p.name for p in target.iterdir()) == [LOCK_FILENAME]
    assert not daemon_holds(target)
    assert run(capsys, "restore", str(backup), "--state-dir", str(target))[0] == 0


def test_restore_refuses_to_replace_a_store_without_force(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An existing store (or a different hash key) is left alone without --force."""
    backup = _backup(state_dir, tmp_path / "b", capsys)
    before = (state_dir / "overread.db").read_bytes()
    status, _, err = run(capsys, "restore", str(backup), "--state-dir", str(state_dir))
    assert status == 2 and str(state_dir / "overread.db") in err and "--force" in err
    assert (state_dir / "overread.db").read_bytes() == before
    keyed = tmp_path / "keyed"
    keyed.mkdir()
    (keyed / "hash.key").write_bytes(bytes(32))
    status, _, err = run(capsys, "restore", str(backup), "--state-dir", str(keyed))
    assert status == 2 and str(keyed / "hash.key") in err
    assert not (keyed / "overread.db").exists()


def test_restore_force_moves_the_old_store_aside_with_its_wal(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--force renames overread.db, its -wal and a different hash.key to *.before-restore-<time>;
    a leftover WAL is never left next to the restored file."""
    backup = _backup(state_dir, tmp_path / "b", capsys)
    store = SQLiteStore.in_state_dir(state_dir)
    store.save(record("LATER", received=T0))
    # A crashed daemon's files: the WAL holds LATER, the lock file stays (not held).
    conn = sqlite3.connect(state_dir / "overread.db")
    conn.execute("PRAGMA wal_autocheckpoint = 0")
    wal_bytes = Path(f"{state_dir / 'overread.db'}-wal").read_bytes()
    conn.close()
    store.close()
    Path(f"{state_dir / 'overread.db'}-wal").write_bytes(wal_bytes)
    (state_dir / "hash.key").write_bytes(bytes(32))
    status, out, _ = run(capsys, "restore", str(backup), "--state-dir", str(state_dir), "--force")
    assert status == 0
    names = sorted(p.name for p in state_dir.iterdir())
    aside = [n for n in names if n.startswith("overread.db.before-restore-")]
    assert len(aside) == 2 and aside[1] == aside[0] + "-wal", names
    assert any(n.startswith("hash.key.before-restore-") for n in names)
    assert "overread.db-wal" not in names
    assert (state_dir / "hash.key").read_bytes() == KEY
    assert "moved aside" in out
    store = SQLiteStore.in_state_dir(state_dir)
    try:
        assert [m.control_id for m in store.messages()] == ["M1", "M2", "M3"]
    finally:
        store.close()


@pytest.mark.parametrize("damage", ["flip_byte", "no_manifest", "foreign_file", "corrupt_consistently"])
def test_restore_refuses_a_damaged_backup(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    """A changed byte, a missing manifest, a manifest naming a file overread does not restore, or a
    database that fails integrity_check (with checksums made to match) are refused, naming the
    file; the target stays empty."""
    backup = _backup(state_dir, tmp_path / "b", capsys)
    db = backup / "overread.db"
    manifest_path = backup / "manifest.json"
    if damage == "flip_byte":
        data = bytearray(db.read_bytes())
        data[len(data) // 2] ^= 0xFF
        db.write_bytes(bytes(data))
        expected = f"{db}: SHA-256 does not match"
    elif damage == "no_manifest":
        manifest_path.unlink()
        expected = f"{manifest_path}: missing"
    elif damage == "foreign_file":
        manifest = json.loads(manifest_path.read_text())
        manifest["files"]["overread.lock"] = manifest["files"]["hash.key"]
        manifest_path.write_text(json.dumps(manifest))
        expected = "'overread.lock', not a file overread restores"
    else:
        import hashlib

        _corrupt_index(db)
        manifest = json.loads(manifest_path.read_text())
        manifest["files"]["overread.db"] = {
            "bytes": db.stat().st_size,
            "sha256": hashlib.sha256(db.read_bytes()).hexdigest(),
        }
        manifest_path.write_text(json.dumps(manifest))
        expected = f"{db}: integrity check failed"
    target = tmp_path / "target"
    status, _, err = run(capsys, "restore", str(backup), "--state-dir", str(target))
    assert status == 2
    assert expected in err
    assert not (target / "overread.db").exists()


# --------------------------------------------------------------------- check


def test_check_exit_codes(state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """0 for a sound store (with counts and versions), 1 when integrity_check finds problems
    (they are listed), 2 when there is no store."""
    status, out, _ = run(capsys, "check", "--state-dir", str(state_dir))
    assert status == 0
    assert f"v{store_schema.SCHEMA_VERSION} (this program: v{store_schema.SCHEMA_VERSION})" in out
    assert "integrity_check ok" in out and "messages: 3, reports: 2" in out and "pending 1" in out
    status, out, _ = run(capsys, "check", "--state-dir", str(state_dir), "--quick", "--format", "json")
    obj = json.loads(out)
    assert status == 0 and obj["ok"] and obj["check"] == "quick_check" and obj["outbox"] == {"pending": 1}
    _corrupt_index(state_dir / "overread.db")
    status, out, _ = run(capsys, "check", "--state-dir", str(state_dir), "--format", "json")
    obj = json.loads(out)
    assert status == 1 and not obj["ok"]
    assert any("messages_received" in p for p in obj["problems"])
    status, _, err = run(capsys, "check", "--state-dir", str(tmp_path / "nothing"))
    assert status == 2 and "no store in" in err


def test_check_reports_pending_migrations_and_a_newer_schema(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An older store is sound with its pending steps listed (exit 0); a newer one is a problem
    that says to upgrade (exit 1). check changes neither."""
    old = tmp_path / "old"
    db = make_v1_store(old)
    status, out, _ = run(capsys, "check", "--state-dir", str(old))
    assert status == 0 and "schema:   v1" in out and store_schema.MIGRATIONS[1].label in out
    assert user_version(db) == 1
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {store_schema.SCHEMA_VERSION + 1}")
    conn.close()
    status, out, _ = run(capsys, "check", "--state-dir", str(old))
    assert status == 1 and "upgrade overread" in out


# ------------------------------------------------------------------- migrate


def test_migrate_list_shows_applied_and_pending(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--list names every migration with its description and whether the store has it."""
    make_v1_store(tmp_path / "state")
    status, out, _ = run(capsys, "migrate", "--list", "--state-dir", str(tmp_path / "state"), "--format", "json")
    obj = json.loads(out)
    assert status == 0 and obj["schema_version"] == 1
    assert [(m["to"], m["applied"]) for m in obj["migrations"]] == [(1, True)] + [
        (v, False) for v in range(2, store_schema.SCHEMA_VERSION + 1)
    ]
    assert all(m["description"] for m in obj["migrations"])
    status, out, _ = run(capsys, "migrate", "--list", "--state-dir", str(tmp_path / "state"))
    assert f"{store_schema.MIGRATIONS[1].label}  [pending]" in out


def test_migrate_upgrades_a_v1_store_keeping_every_row(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`overread store migrate` prints each step "vN -> vN+1: ...", leaves messages, reports and
    outbox rows identical, and a second run has nothing to do."""
    db = make_v1_store(tmp_path / "state")
    before = table_rows(db)
    status, out, _ = run(capsys, "migrate", "--state-dir", str(tmp_path / "state"))
    assert status == 0
    assert out.splitlines()[0] == store_schema.MIGRATIONS[1].label
    assert user_version(db) == store_schema.SCHEMA_VERSION
    assert table_rows(db) == before
    status, out, _ = run(capsys, "migrate", "--state-dir", str(tmp_path / "state"))
    assert status == 0 and "nothing to migrate" in out
    status, out, _ = run(capsys, "check", "--state-dir", str(tmp_path / "state"))
    assert status == 0


def test_migrate_is_refused_while_a_daemon_runs_and_for_a_newer_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A held state directory and a store newer than the program are refused (exit 2), naming
    the file and both versions; the file is left as it was."""
    state = tmp_path / "state"
    db = make_v1_store(state)
    with daemon_lock(state):
        status, _, err = run(capsys, "migrate", "--state-dir", str(state))
    assert status == 2 and LOCK_FILENAME in err
    assert user_version(db) == 1
    conn = sqlite3.connect(db)
    conn.execute(f"PRAGMA user_version = {store_schema.SCHEMA_VERSION + 1}")
    conn.close()
    status, _, err = run(capsys, "migrate", "--state-dir", str(state))
    assert status == 2 and str(db) in err and "upgrade overread" in err
    assert f"version {store_schema.SCHEMA_VERSION + 1}" in err
    assert user_version(db) == store_schema.SCHEMA_VERSION + 1


def test_state_dir_comes_from_config_unless_given(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--config F uses its state_dir; --state-dir wins over it (as `overread messages`)."""
    make_v1_store(tmp_path / "from_config")
    config = tmp_path / "overread.yaml"
    config.write_text("state_dir: from_config\n")
    status, out, _ = run(capsys, "check", "--config", str(config))
    assert status == 0 and str(tmp_path / "from_config" / "overread.db") in out
    status, _, err = run(capsys, "check", "--config", str(config), "--state-dir", str(tmp_path / "other"))
    assert status == 2 and str(tmp_path / "other") in err


def test_drop_comparisons_empties_the_cache_and_keeps_the_messages(
    state_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The derived cache goes; messages stay; a missing store or an older schema is refused (exit 2)."""
    from listener.store import CachedComparison

    store = SQLiteStore.in_state_dir(state_dir)
    store.cache_comparisons([CachedComparison(f"k{n}", "ACC1", T0, "{}") for n in range(3)])
    store.close()
    assert main(["store", "drop-comparisons", "--state-dir", str(state_dir), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"path": str(state_dir / "overread.db"), "dropped": 3}
    assert main(["store", "drop-comparisons", "--state-dir", str(state_dir)]) == 0
    assert capsys.readouterr().out == f"dropped 0 cached comparisons from {state_dir / 'overread.db'}\n"
    store = SQLiteStore.in_state_dir(state_dir)
    try:
        assert store.cached_comparisons(["k0"]) == {} and len(list(store.messages())) == 3
    finally:
        store.close()
    assert main(["store", "drop-comparisons", "--state-dir", str(tmp_path / "none")]) == 2
    old = make_v1_store(tmp_path / "old")
    assert main(["store", "drop-comparisons", "--state-dir", str(old.parent)]) == 2
    assert "older than" in capsys.readouterr().err
    assert user_version(old) == 1
