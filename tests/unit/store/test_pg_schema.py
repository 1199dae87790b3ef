"""The PostgreSQL schema steps mirror SQLite's: one version means one schema in either backend.

A schema change adds a step to ``listener/store/schema.py`` and the same
version, with the same description, to ``listener/store/pg_schema.py``
(docs/store.md): this test fails while one list has a step the other lacks.
"""

from __future__ import annotations

import pytest

from listener.store.schema import MIGRATIONS, SCHEMA_VERSION

pytest.importorskip("psycopg")

from listener.store.pg_schema import PG_MIGRATIONS, PG_SCHEMA_VERSION


def test_postgresql_has_every_sqlite_schema_step() -> None:
    """Same versions, same descriptions, same labels (the daemon logs them as store_migrated)."""
    assert [(m.version, m.description) for m in PG_MIGRATIONS] == [(m.version, m.description) for m in MIGRATIONS]
    assert [m.label for m in PG_MIGRATIONS] == [m.label for m in MIGRATIONS]
    assert PG_SCHEMA_VERSION == SCHEMA_VERSION
