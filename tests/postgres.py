"""The test PostgreSQL server: its DSN, and a fresh schema per store.

``.ci/postgres.sh start`` runs a throwaway server and prints
``OVERREAD_TEST_PG_DSN`` (docs/store.md, "Tests"). Tests marked
``postgresql`` run against it; without the variable they are deselected with
one summary line, and with ``OVERREAD_REQUIRE_PG=1`` (set by ``.ci/run``)
its absence is an error (``tests/conftest.py``).

Each store a test opens lives in its own schema (``search_path`` set through
the connection's ``options``), created empty and dropped afterwards, so tests
never see each other's rows and need no database of their own.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

#: The DSN of the test server (the superuser of a throwaway cluster).
DSN_ENV = "OVERREAD_TEST_PG_DSN"
#: Set to 1 to make a missing DSN an error rather than a skipped backend.
REQUIRE_ENV = "OVERREAD_REQUIRE_PG"


def server_dsn() -> str | None:
    """The test server's DSN, or None when no server was started."""
    return os.environ.get(DSN_ENV) or None


def schema_dsn(dsn: str, schema: str) -> str:
    """``dsn`` with its ``search_path`` set to ``schema`` (key=value form)."""
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, options=f"-c search_path={schema}")


@contextmanager
def fresh_schema(dsn: str, prefix: str = "t") -> Iterator[str]:
    """A new empty schema on the test server; yields a DSN that works in it; drops it afterwards."""
    import psycopg
    from psycopg import sql

    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(name)))
    try:
        yield schema_dsn(dsn, name)
    finally:
        with psycopg.connect(dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(name)))


def as_url(dsn: str) -> str:
    """A key=value DSN (a test schema's) as the ``postgresql://`` URL a configuration holds."""
    from urllib.parse import quote, urlencode

    from psycopg.conninfo import conninfo_to_dict

    params = {k: str(v) for k, v in conninfo_to_dict(dsn).items() if v is not None}
    user, dbname = params.pop("user", ""), params.pop("dbname", "")
    return f"postgresql://{user}@/{dbname}?{urlencode(params, quote_via=quote)}"
