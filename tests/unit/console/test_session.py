"""Console sessions: expiry, capacity, sign-out and CSRF comparison (listener/console/session.py)."""

from __future__ import annotations

from listener.console.session import Sessions
from listener.console.web import safe_next


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_session_is_found_by_its_id_and_renewed_by_use_until_idle() -> None:
    clock = Clock()
    sessions = Sessions(clock, idle=60, lifetime=3600)
    session_id, session = sessions.open("analyst")
    clock.now += 50
    assert sessions.find(session_id) is session
    clock.now += 50  # 100 s after opening, 50 s after last use
    assert sessions.find(session_id) is session
    clock.now += 61
    assert sessions.find(session_id) is None
    assert len(sessions) == 0


def test_a_session_ends_after_its_lifetime_however_busy() -> None:
    clock = Clock()
    sessions = Sessions(clock, idle=60, lifetime=200)
    session_id, _ = sessions.open("analyst")
    for _ in range(4):
        clock.now += 50
        assert sessions.find(session_id) is not None
    clock.now += 50
    assert sessions.find(session_id) is None


def test_the_least_recently_used_session_goes_when_full() -> None:
    clock = Clock()
    sessions = Sessions(clock, capacity=2)
    first, _ = sessions.open("a")
    second, _ = sessions.open("b")
    assert sessions.find(first) is not None  # first is now the most recent
    third, _ = sessions.open("c")
    assert sessions.find(second) is None
    assert sessions.find(first) is not None and sessions.find(third) is not None


def test_sign_out_closes_only_that_session_and_unknown_ids_find_nothing() -> None:
    sessions = Sessions(Clock())
    one, _ = sessions.open("a")
    two, _ = sessions.open("a")
    assert sessions.close(one) and not sessions.close(one)
    assert sessions.find(one) is None and sessions.find(two) is not None
    assert sessions.find("") is None and sessions.find("x" * 43) is None


def test_csrf_tokens_are_per_session_and_compared_whole() -> None:
    sessions = Sessions(Clock())
    _, a = sessions.open("a")
    _, b = sessions.open("a")
    assert a.csrf != b.csrf
    assert a.csrf_ok(a.csrf)
    assert not a.csrf_ok(b.csrf) and not a.csrf_ok("") and not a.csrf_ok(a.csrf[:-1])


def test_after_sign_in_only_console_paths_are_followed() -> None:
    assert safe_next("/console/messages?accession=A1") == "/console/messages?accession=A1"
    for target in ("https://evil.example/console/", "//evil.example/", "/fhir/Task", "/console//x", ""):
        assert safe_next(target) == "/console/"
