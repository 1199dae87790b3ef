"""The console's aggregate reads: traffic by bin, bucket mix by bin, messages by bucket (docs/store.md)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from listener.store import BucketBin, ReportRecord, Store, TrafficBin

from .records import T0, record, report

HOUR = timedelta(hours=1)
US = timedelta(microseconds=1)


def _bucketed(accession: str, bucket: str) -> ReportRecord:
    return dataclasses.replace(report(accession), bucket=bucket)


def _fill(store: Store) -> None:
    """Messages around T0 (12:00 UTC): bins 11:00 (one), 12:00 (four), 13:00 (one), next day (one)."""
    store.save(record("C0", received=T0 - US))
    store.save(record("C1", received=T0))
    store.save(record("C2", received=T0 + timedelta(minutes=10), app="LAB"))
    # 13:59:59 at +02:00 is 11:59:59 UTC: binned by UTC, not by the offset it was given in.
    store.save(record("C3", received=datetime(2024, 5, 1, 13, 59, 59, tzinfo=timezone(timedelta(hours=2)))))
    store.save(record("C4", received=T0 + HOUR - US, state="rejected", ack_code="AE", reports=()))
    store.save(dataclasses.replace(record("C5", received=T0 + HOUR), transport="http"))
    store.save(record("C6", received=T0 + timedelta(days=1), facility=""))


def test_traffic_by_hour_groups_by_utc_bin_and_kind(store: Store) -> None:
    """Each (UTC hour, sender, transport, ack, state) is one bin with its count; [since, until) is half open."""
    _fill(store)
    got = store.traffic(T0 - HOUR, T0 + timedelta(days=1), step="hour")
    at = T0 - HOUR
    assert got == (
        TrafficBin(at, "RIS", "HOSP", "mllp", "AA", "processed", 2),
        TrafficBin(T0, "LAB", "HOSP", "mllp", "AA", "processed", 1),
        TrafficBin(T0, "RIS", "HOSP", "mllp", "AA", "processed", 1),
        TrafficBin(T0, "RIS", "HOSP", "mllp", "AE", "rejected", 1),
        TrafficBin(T0 + HOUR, "RIS", "HOSP", "http", "AA", "processed", 1),
    )
    assert all(b.start.utcoffset() == timedelta(0) for b in got)
    # The window cuts inside a bin: only the messages in it count, under the bin's start.
    assert store.traffic(T0 + US, T0 + HOUR, step="hour") == (
        TrafficBin(T0, "LAB", "HOSP", "mllp", "AA", "processed", 1),
        TrafficBin(T0, "RIS", "HOSP", "mllp", "AE", "rejected", 1),
    )


def test_traffic_by_day(store: Store) -> None:
    """Day bins start at UTC midnight."""
    _fill(store)
    day = T0.replace(hour=0)
    assert store.traffic(day, day + timedelta(days=2), step="day") == (
        TrafficBin(day, "LAB", "HOSP", "mllp", "AA", "processed", 1),
        TrafficBin(day, "RIS", "HOSP", "http", "AA", "processed", 1),
        TrafficBin(day, "RIS", "HOSP", "mllp", "AA", "processed", 3),
        TrafficBin(day, "RIS", "HOSP", "mllp", "AE", "rejected", 1),
        TrafficBin(day + timedelta(days=1), "RIS", "", "mllp", "AA", "processed", 1),
    )


def test_bucket_mix_counts_current_reports_by_bin(store: Store) -> None:
    """Every current report counts once under its message's bin; a reprocess's reports replace the earlier ones."""
    first = store.save(record("C1", received=T0, reports=(_bucketed("A1", "review"), _bucketed("A2", "release"))))
    store.save(record("C2", received=T0 + timedelta(minutes=5), reports=(_bucketed("A3", "review"),)))
    store.save(record("C3", received=T0 + HOUR, reports=(_bucketed("A4", "escalate"),)))
    store.save(record("C4", received=T0 + 2 * HOUR, reports=(_bucketed("A5", "review"),)))
    assert store.bucket_mix(T0, T0 + 2 * HOUR, step="hour") == (
        BucketBin(T0, "release", 1),
        BucketBin(T0, "review", 2),
        BucketBin(T0 + HOUR, "escalate", 1),
    )
    again = record("C1", received=T0, reports=(_bucketed("A1", "release"),))
    store.replace_processing(
        first.message_pk, again, now=T0 + 3 * HOUR, superseded_by="reprocess by test", expected_processing=1
    )
    day = T0.replace(hour=0)
    assert store.bucket_mix(day, day + timedelta(days=1), step="day") == (
        BucketBin(day, "escalate", 1),
        BucketBin(day, "release", 1),
        BucketBin(day, "review", 2),
    )


def test_messages_by_bucket(store: Store) -> None:
    """bucket= keeps messages with at least one current report in that bucket, with the other filters."""
    store.save(record("C1", reports=(_bucketed("A1", "review"), _bucketed("A2", "release"))))
    store.save(record("C2", reports=(_bucketed("A3", "release"),)))
    store.save(record("C3", reports=(_bucketed("A4", "review"),)))
    store.save(record("C4", reports=()))
    assert [m.control_id for m in store.messages(bucket="review")] == ["C1", "C3"]
    assert [m.control_id for m in store.messages(bucket="release")] == ["C1", "C2"]
    assert [m.control_id for m in store.messages(bucket="review", limit=1)] == ["C1"]
    assert [m.control_id for m in store.messages(bucket="review", accession="A2")] == ["C1"]
    assert [m.control_id for m in store.messages(bucket="review", accession="A3")] == []
    assert list(store.messages(bucket="escalate")) == []


def test_aggregates_refuse_naive_times_and_unknown_steps(store: Store) -> None:
    """A naive time or a step other than hour/day is a caller bug; an empty window has no bins."""
    store.save(record("C1"))
    naive = T0.replace(tzinfo=None)
    for read in (store.traffic, store.bucket_mix):
        with pytest.raises(ValueError):
            read(naive, T0, step="hour")
        with pytest.raises(ValueError):
            read(T0, T0 + HOUR, step="week")
        assert read(T0 + HOUR, T0, step="day") == ()
        assert read(T0, T0, step="hour") == ()
