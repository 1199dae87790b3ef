"""The texts ``overread show``, ``outbox list`` and the console print for an outbox row
(listener/views.py; docs/operations.md "Resending and unsticking the outbox")."""

from __future__ import annotations

from listener.errors import HL7_ERROR_MEANING, HL7_ERROR_TEXT
from listener.views import attempts_text, earlier_attempts, last_error_text, peer_error_text


def test_earlier_attempts_count_every_attempt_before_the_last_retry() -> None:
    """Two retries: the attempts before the second one (both rounds) are counted, not those after."""
    events = ["queued", "failed", "dead", "retried", "failed", "failed", "dead", "retried", "kicked", "delivered"]
    assert earlier_attempts(events) == 5
    assert attempts_text(1, earlier_attempts(events)) == "1 (5 before retry)"
    assert earlier_attempts(["queued", "failed", "delivered"]) == 0  # never retried
    assert attempts_text(2, 0) == "2"


def test_peer_error_codes_are_named_and_unknown_ones_left_alone() -> None:
    """ERR-3 codes HL7 v2.5 defines get their name and meaning; a site's own code stays bare."""
    assert peer_error_text("AR (ERR-3 207); next attempt 2026-12-06T10:00:00Z") == (
        "AR (ERR-3 207 Application internal error: the receiver failed on its side; its own log says why);"
        " next attempt 2026-12-06T10:00:00Z"
    )
    assert peer_error_text("AE (ERR-3 999)") == "AE (ERR-3 999)"
    assert peer_error_text("no answer within 30 s") == "no answer within 30 s"
    assert last_error_text("delivered", "AR (ERR-3 204)").startswith("before delivery: AR (ERR-3 204 Unknown key")
    assert last_error_text("dead", "") == ""
    assert set(HL7_ERROR_MEANING) == set(HL7_ERROR_TEXT)  # every named code has its meaning
