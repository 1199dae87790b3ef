"""Console logins: sessions held in the daemon's memory, each with its CSRF token.

Layer: plain Python, no Twisted (the reactor thread calls it). See docs/console.md,
"Signing in".

A session is made when a client signs in with its API token; the browser keeps
only a random session id in an HttpOnly, SameSite=Strict cookie. The daemon
keeps the id's SHA-256 (a memory dump or a log never yields a usable cookie),
the client's name and permissions, and a CSRF token that every POST form
carries. Sessions end on sign-out, after ``idle`` without a request, after
``lifetime`` in all, and when the daemon restarts. At most ``capacity``
sessions live at once; a new one pushes out the least recently used.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["DEFAULT_IDLE_S", "DEFAULT_LIFETIME_S", "Session", "Sessions", "tokens_match"]

#: A session not used for this long is gone (seconds).
DEFAULT_IDLE_S = 30 * 60
#: A session lasts at most this long, used or not (seconds).
DEFAULT_LIFETIME_S = 12 * 3600
#: Sessions kept at once; the least recently used goes first.
DEFAULT_CAPACITY = 1000


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "replace")).hexdigest()


def tokens_match(sent: str, expected: str) -> bool:
    """Whether a form's token ``sent`` is ``expected`` (both non-empty), compared in constant time."""
    return (
        bool(sent)
        and bool(expected)
        and hmac.compare_digest(sent.encode("utf-8", "replace"), expected.encode("utf-8", "replace"))
    )


@dataclass(slots=True)
class Session:
    """One signed-in browser: whose it is, its CSRF token and its clock. What the client may do
    is not kept here: it is read from the live configuration on every request."""

    client: str
    csrf: str
    created: float
    last_used: float = field(default=0.0)

    def csrf_ok(self, token: str) -> bool:
        """Whether ``token`` (a form's ``csrf`` field) is this session's, compared in constant time."""
        return tokens_match(token, self.csrf)


class Sessions:
    """The daemon's console sessions (one instance per HTTP site)."""

    def __init__(
        self,
        clock: Callable[[], float],
        *,
        idle: float = DEFAULT_IDLE_S,
        lifetime: float = DEFAULT_LIFETIME_S,
        capacity: int = DEFAULT_CAPACITY,
    ) -> None:
        self.clock = clock
        self.idle = idle
        self.lifetime = lifetime
        self.capacity = capacity
        self._by_digest: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._by_digest)

    def open(self, client: str) -> tuple[str, Session]:
        """A new session for ``client``: the id for the cookie and the session."""
        now = self.clock()
        session_id = secrets.token_urlsafe(32)
        session = Session(client=client, csrf=secrets.token_urlsafe(32), created=now, last_used=now)
        self._by_digest[_digest(session_id)] = session
        while len(self._by_digest) > self.capacity:
            self._by_digest.popitem(last=False)
        return session_id, session

    def find(self, session_id: str) -> Session | None:
        """The live session of a cookie's id (its clock renewed), or None if unknown or expired."""
        if not session_id:
            return None
        key = _digest(session_id)
        session = self._by_digest.get(key)
        if session is None:
            return None
        now = self.clock()
        if now - session.last_used > self.idle or now - session.created > self.lifetime:
            del self._by_digest[key]
            return None
        session.last_used = now
        self._by_digest.move_to_end(key)
        return session

    def close(self, session_id: str) -> bool:
        """End a session (sign-out); whether there was one."""
        return self._by_digest.pop(_digest(session_id), None) is not None
