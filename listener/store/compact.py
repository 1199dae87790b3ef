"""Compact storage of the bulky columns: what is written and how it reads back.

Pure; both SQL backends use it (docs/store.md, "Compact storage"). Three forms:

* **Raw bytes** (``messages.raw``, ``processings.raw``): always zlib-compressed
  from the compaction schema step on, on both backends. A raw message is arbitrary bytes
  (a fuzzer's or a broken engine's), so no prefix could tell a compressed value
  from a plain one: the schema version says the column is compressed, and the
  migration compresses every stored row.
* **A route's explanation** (``reports.route_json``): the explanation, one line
  per rule, is most of a route's size and no search looks at it. The route's
  essentials stay plain JSON text in ``route_json`` (searches on pool and
  corrections read them in SQL) and the explanation's text moves, compressed,
  to ``reports.explanation``. Reading joins the two back into exactly the
  string that was written.
* **Report and findings JSON on SQLite** (``reports.report_json``,
  ``reports.findings_json``): a value of :data:`PACK_MIN` characters or more is
  stored zlib-compressed as a BLOB in its TEXT column, a shorter one as TEXT
  (``'[]'`` stays ``'[]'``, which the searches compare with). SQLite keeps a
  value's type, so the type tells the forms apart; the searches that look
  inside the JSON read it through the ``overread_json()`` SQL function
  (:func:`sql_json`). PostgreSQL keeps these columns as ``text`` and compresses
  them itself (TOAST), so its ``::json`` searches stay as they are.

zlib from the standard library: on the daemon's own records it makes a
report's JSON, findings and raw message smaller than zstd at level 3 does
(values of a few KB: zstd's frame costs more than it saves) and needs no
package (the figures: docs/benchmarks.md, "Store size"). A value shorter than
:data:`SMALL` is compressed with a state sized to it (:func:`_deflate`): the
same bytes, a fraction of the CPU, and still a plain zlib stream that every
version reads.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from typing import Any

from listener.errors import StoreError

#: zlib's level. Level 1 takes about 60 % of level 6's CPU for 3.5 % more
#: compressed bytes, but a SQLite report row then no longer fits three to an
#: 8 KiB page: 1.89x the raw size stored against 1.53x (docs/benchmarks.md,
#: "Store size"). Level 9 saves under 1 % more than 6.
LEVEL = 6

#: A value of at most this many bytes is compressed with an 8 KiB window (``wbits`` 13) and a
#: small hash (``memLevel`` 5). A match reaches at most the window less 262 bytes back, so the
#: window holds every match zlib's default 32 KiB window could find in so short a value; on the
#: daemon's records the compressed bytes are the same, and the CPU a fraction, most of which
#: zlib's default state of about 256 KiB took to clear and set up (docs/benchmarks.md,
#: "Stored forms: zlib's state sized to the value").
SMALL = 8192 - 262

#: Shorter JSON text stays TEXT: below this, compression saves little, and
#: ``'[]'``/``'null'`` must stay comparable in SQL.
PACK_MIN = 128

#: How the explanation starts in a route's JSON (``route_dict`` puts it last).
_EXPLANATION = ', "explanation": '


#: The columns that hold :func:`pack_json` values on SQLite only (PostgreSQL keeps
#: them as text): ``overread store copy`` moves them as plain JSON text.
SQLITE_PACKED_JSON: dict[str, frozenset[str]] = {"reports": frozenset({"report_json", "findings_json"})}


def pack_raw(raw: bytes | None, packed: bytes | None = None) -> bytes | None:
    """The stored form of a message's raw bytes (None stays None: not kept).

    ``packed``: that form made ahead (a worker process's, of these same bytes), used as is.
    """
    if raw is None:
        return None
    return packed if packed is not None else _deflate(raw)


def unpack_raw(value: Any) -> bytes | None:
    """The raw bytes of a stored ``raw`` column value (``bytes``, ``memoryview`` or None)."""
    return None if value is None else _inflate(value)


def pack_json(text: str) -> str | bytes:
    """The SQLite stored form of a JSON column: TEXT when short, else zlib bytes (stored as a BLOB)."""
    if len(text) < PACK_MIN:
        return text
    return _deflate(text.encode("utf-8"))


def unpack_json(value: Any) -> str:
    """The JSON text of a stored JSON column value: TEXT as is, a BLOB decompressed."""
    if isinstance(value, str):
        return value
    return _inflate(value).decode("utf-8")


def _deflate(data: bytes) -> bytes:
    """``data`` as a zlib stream at :data:`LEVEL`; a value of at most :data:`SMALL` bytes with a state
    sized to it (an 8 KiB window: any zlib reader reads it)."""
    if len(data) > SMALL:
        return zlib.compress(data, LEVEL)
    compressor = zlib.compressobj(LEVEL, zlib.DEFLATED, 13, 5)
    return compressor.compress(data) + compressor.flush()


def _inflate(value: Any) -> bytes:
    """zlib's inverse, failing as a :class:`StoreError` that says what the value is not."""
    try:
        return zlib.decompress(bytes(value))
    except zlib.error:
        raise StoreError(
            "a stored value is not in the compact form this version reads (written by an older "
            'version beside a newer one? docs/deployment.md, "Upgrading")'
        ) from None


def sql_json(value: Any) -> Any:
    """``overread_json(x)`` in SQLite: the JSON text of a column value (NULL stays NULL)."""
    if value is None or isinstance(value, str):
        return value
    return unpack_json(value)


def split_route(route_json: str) -> tuple[str, bytes | None]:
    """A route's JSON as (essentials, compressed explanation), or (as written, None) when it has none.

    The essentials are the written text up to the explanation, closed with
    ``}``; the explanation part is the rest of the text (its key included),
    so :func:`join_route` gives back the exact string. A route whose text is
    not in ``route_dict``'s form (explanation last, essentials that parse to
    the same values) is stored whole, as written.
    """
    cut = route_json.rfind(_EXPLANATION)
    if cut <= 0 or not route_json.endswith("}"):
        return route_json, None
    essentials = route_json[:cut] + "}"
    try:
        whole = json.loads(route_json)
        plain = json.loads(essentials)
    except ValueError:
        return route_json, None
    if not isinstance(whole, dict) or list(whole)[-1:] != ["explanation"]:
        return route_json, None
    del whole["explanation"]
    if plain != whole:
        return route_json, None
    return essentials, _deflate(route_json[cut:-1].encode("utf-8"))


def join_route(route_json: Any, explanation: Any) -> str:
    """The route's JSON as written, from the stored essentials and compressed explanation (or None)."""
    text = unpack_json(route_json)
    if explanation is None:
        return text
    return text[:-1] + zlib.decompress(bytes(explanation)).decode("utf-8") + "}"


def register_functions(conn: sqlite3.Connection) -> None:
    """Give a SQLite connection ``overread_json()``, which the searches inside stored JSON read through."""
    conn.create_function("overread_json", 1, sql_json, deterministic=True)
