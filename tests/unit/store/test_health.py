"""What a store says about its health (docs/hardening.md): every backend, through the contract
fixture; SQLite's failed write probe through a real read-only database file."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from listener.errors import StoreError
from listener.store import SQLiteStore, Store

NOW = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def test_a_store_that_saves_and_probes_is_healthy_until_closed(new_store: Callable[[], Store]) -> None:
    store = new_store()
    assert store.health_reason() == "" and store.health()
    store.probe(NOW)
    assert store.health_reason() == ""
    store.close()
    assert store.health_reason() == "store writer stopped" and not store.health()


def test_a_failed_probe_makes_sqlite_unhealthy_until_one_succeeds(sqlite_store: SQLiteStore, db_path: Path) -> None:
    """A SQLite write probe that fails (a trigger refuses the probe's row here) names
    the failure in health_reason; the next probe that succeeds clears it."""
    with sqlite3.connect(db_path) as conn:
        conn.execute("CREATE TRIGGER refuse_probe BEFORE INSERT ON health_probe BEGIN SELECT RAISE(ABORT, 'full'); END")
    with pytest.raises(StoreError):
        sqlite_store.probe(NOW)
    assert sqlite_store.health_reason().startswith("write probe failed")
    with sqlite3.connect(db_path) as conn:
        conn.execute("DROP TRIGGER refuse_probe")
    sqlite_store.probe(NOW)
    assert sqlite_store.health_reason() == ""
