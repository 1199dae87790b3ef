"""Retention: raw bodies are dropped after a while, metadata and answers stay."""

from __future__ import annotations

from datetime import timedelta

import pytest

from listener.store import Store

from .records import T0, record


def test_purge_raw_drops_old_bodies_only(store: Store) -> None:
    """purge_raw() nulls raw for messages received before the cut-off and keeps everything else."""
    old = store.save(record("OLD", received=T0, raw=b"old body")).message_pk
    new = store.save(record("NEW", received=T0 + timedelta(days=40), raw=b"new body")).message_pk
    assert store.purge_raw(T0 + timedelta(days=30)) == 1
    assert store.message_raw(old) is None
    assert store.message_raw(new) == b"new body"
    summaries = {m.control_id: m for m in store.messages()}
    assert summaries["OLD"].raw_kept is False and summaries["OLD"].report_count == 1
    assert summaries["NEW"].raw_kept is True
    # The duplicate check still answers for a purged message, with the original ACK.
    duplicate = store.find_duplicate("RIS", "HOSP", "OLD")
    assert duplicate is not None and duplicate.ack == record().ack
    assert store.purge_raw(T0 + timedelta(days=30)) == 0


def test_purge_raw_works_in_chunks(store: Store) -> None:
    """More messages than one chunk are all purged, and the count is exact."""
    futures = [store.submit(record(f"C{i}", received=T0 + timedelta(seconds=i))) for i in range(1234)]
    for f in futures:
        f.result()
    store.save(record("KEEP", received=T0 + timedelta(days=1)))
    store.save(record("NORAW", received=T0, raw=None))
    assert store.purge_raw(T0 + timedelta(hours=1)) == 1234
    assert [m.control_id for m in store.messages() if m.raw_kept] == ["KEEP"]


def test_purge_raw_needs_an_aware_time(store: Store) -> None:
    """A naive cut-off is a caller bug."""
    with pytest.raises(ValueError):
        store.purge_raw(T0.replace(tzinfo=None))
