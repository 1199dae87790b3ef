"""PostgreSQL store URLs: which ones name the backend, and how to print one without its password.

Layer: pure text (no driver import), so the config loader can check a
``store:`` value without psycopg installed (docs/store.md).
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

#: URL prefixes that name the PostgreSQL backend.
SCHEMES = ("postgresql://", "postgres://")

#: What to do when a postgresql:// store is named and the driver is missing. The package is
#: installed from its checkout or wheel, not from a package index (docs/store.md, "Choosing PostgreSQL").
PSYCOPG_MISSING = (
    "a postgresql:// store needs psycopg: install the package with its postgresql extra,"
    " from the checkout: pip install '.[postgresql]' (docs/store.md)"
)


def is_postgresql_url(url: str) -> bool:
    """True when ``url`` names a PostgreSQL store."""
    return url.startswith(SCHEMES)


def display_url(url: str) -> str:
    """The URL with any password removed (from the user part and from a ``password=`` parameter): safe to print.

    A libpq ``key=value`` string (the tests' form) loses its ``password=`` pair.
    """
    if "://" not in url:
        return re.sub(r"\s*\bpassword\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", "", url).strip()
    parts = urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        netloc = f"{userinfo.partition(':')[0]}@{hostport}"
    query = parts.query
    pairs = parse_qsl(query, keep_blank_values=True)
    if any(k == "password" for k, _ in pairs):
        query = urlencode([(k, v) for k, v in pairs if k != "password"])
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def url_has_password(url: str) -> bool:
    """True when the URL carries a password (``user:secret@`` or ``?password=``)."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0] if "@" in parts.netloc else ""
    return ":" in userinfo or any(k == "password" for k, _ in parse_qsl(parts.query, keep_blank_values=True))
