"""The console pages' pure helpers: window starts, bin starts, counts with empty bins as zeros, NACK codes,
the worklist per pool."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from listener.console.bins import bin_label, bin_starts, fill, is_nack, window_start
from listener.console.overread import worklist
from listener.store.base import TaskPool

NOW = datetime(2026, 12, 6, 7, 41, 5, tzinfo=UTC)


def test_a_window_of_24_hours_ends_with_the_current_hour() -> None:
    since = window_start(NOW, "hour", 24)
    assert since == datetime(2026, 12, 5, 8, tzinfo=UTC)
    starts = bin_starts(since, NOW, "hour")
    assert len(starts) == 24 and starts[-1] == datetime(2026, 12, 6, 7, tzinfo=UTC)
    assert [bin_label(s, "hour") for s in starts[:2]] == ["08:00", "09:00"]


def test_days_and_weeks_end_with_today() -> None:
    since = window_start(NOW, "day", 7)
    assert since == datetime(2026, 11, 30, tzinfo=UTC)
    assert bin_starts(since, NOW, "day")[-1] == datetime(2026, 12, 6, tzinfo=UTC)
    weeks = bin_starts(window_start(NOW, "week", 12), NOW, "week")
    assert len(weeks) == 12
    # The last week is today and the six days before it.
    assert weeks[-1] == datetime(2026, 11, 30, tzinfo=UTC) and bin_label(weeks[-1], "week") == "11-30"


def test_fill_puts_zeros_in_empty_bins_and_sums_rows_of_one_bin() -> None:
    starts = bin_starts(window_start(NOW, "hour", 4), NOW, "hour")
    rows = [
        (starts[0], "RIS", 3),
        (starts[0], "RIS", 2),
        (starts[3], "PACS", 1),
        (starts[2] + timedelta(minutes=30), "RIS", 4),  # inside the third bin, not on its start
        (starts[0] - timedelta(hours=1), "RIS", 9),  # before the window: left out
    ]
    series = fill(starts, rows, lambda r: r[0], lambda r: r[1], lambda r: r[2])
    assert series == {"PACS": [0, 0, 0, 1], "RIS": [5, 0, 4, 0]}
    assert list(series) == ["PACS", "RIS"]
    assert fill(starts, [], lambda r: r[0], lambda r: r[1], lambda r: r[2]) == {}


def test_refusals_are_the_error_and_reject_codes_and_http_errors() -> None:
    assert [c for c in ("AA", "AE", "AR", "CA", "CE", "CR") if is_nack(c)] == ["AE", "AR", "CE", "CR"]
    assert [c for c in ("200", "201", "400", "422", "503", "", "²") if is_nack(c)] == ["400", "422", "503"]


def test_the_worklist_names_the_pool_of_no_name_and_sorts_by_name() -> None:
    pools = [
        TaskPool("neuroradiology", 2, NOW - timedelta(hours=9)),
        TaskPool("", 1, NOW - timedelta(hours=4)),
        TaskPool("general_overread", 1, NOW - timedelta(hours=3)),
    ]
    assert worklist(pools) == [
        {"pool": "(no pool)", "open": 1, "oldest": NOW - timedelta(hours=4)},
        {"pool": "general_overread", "open": 1, "oldest": NOW - timedelta(hours=3)},
        {"pool": "neuroradiology", "open": 2, "oldest": NOW - timedelta(hours=9)},
    ]
