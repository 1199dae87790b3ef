"""The overread page's figures on a real SQLite store holding graded chains (docs/console.md, "Overread").

Nocturna's reader NT7741 sends eight preliminaries that Lakeshore's finals each contradict with
a large pneumothorax (grade 3b); its colleague NT7802 sends twelve that are finalled unchanged
(grade 1). The group's significant rate is 8 of 20; NT7741's interval lies wholly above the
group's, NT7802's does not. Built from our chest X-ray sample, edited as tests/unit/cli/test_scorecard.py
edits it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from listener.console.overread import CACHE_SECONDS, STALE_SECONDS, OverreadPage, in_thread
from listener.console.web import NAV, Caller, Ctx, environment
from listener.errors import StoreError
from listener.outcomes import DEFAULT_OUTCOMES_FILE, load_outcome_rules
from listener.pipeline import Pipeline
from listener.store import SQLiteStore
from listener.store.queries import ReportQueries
from tests.unit.cli.test_scorecard import FINAL, FINAL_PNEUMOTHORAX, PRELIM, _save

NOW = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
MANAGER = Caller("manager", frozenset({"console"}), "bearer")


class Clock:
    """Monotonic seconds the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(name="store", scope="module")
def fixture_store(tmp_path_factory: pytest.TempPathFactory, pipeline: Pipeline) -> Iterator[SQLiteStore]:
    store = SQLiteStore.in_state_dir(tmp_path_factory.mktemp("overread") / "state")
    try:
        for n in range(20):
            reader, final = (b"NT7741", FINAL_PNEUMOTHORAX) if n < 8 else (b"NT7802", FINAL)
            _save(store, pipeline, PRELIM.replace(b"NT7741", reader), f"OV{n}", f"OVP{n}", n)
            _save(store, pipeline, final, f"OV{n}", f"OVF{n}", 120 + n)
        yield store
    finally:
        store.close()


def _page(
    store: SQLiteStore,
    pipeline: Pipeline,
    clock: Clock,
    refresh: Callable[[Callable[[], None]], None] = in_thread,
) -> OverreadPage:
    rules = load_outcome_rules(DEFAULT_OUTCOMES_FILE)
    services: dict[str, Any] = {
        "store": store,
        "queries": store.reports,
        "pipeline": lambda: pipeline,
        "outcome_rules": lambda: rules,
        "fhir_clients": dict,
    }
    return OverreadPage(services, clock=clock, refresh=refresh)


def _ctx(now: datetime, **params: str) -> Ctx:
    return Ctx(MANAGER, "GET", (), params, {}, now)


def test_a_reader_whose_interval_lies_above_the_groups_is_flagged(store: SQLiteStore, pipeline: Pipeline) -> None:
    page = _page(store, pipeline, Clock())
    reply = page(_ctx(NOW, window="7d", min_reads="5"))
    rows = {r["key"]: r for r in reply.context["rows"]}
    assert set(rows) == {"NT7741", "NT7802", "R1311"}
    nt7741, nt7802 = rows["NT7741"], rows["NT7802"]
    assert (nt7741["graded"], nt7741["group"], nt7741["flagged"]) == (8, "Nocturna Teleradiology", True)
    any_rate, significant = nt7741["cells"]
    assert (significant["count"], significant["text"], significant["above"]) == (8, "100.0%", True)
    assert (nt7802["graded"], nt7802["flagged"], nt7802["cells"][1]["text"]) == (12, False, "0.0%")
    assert rows["R1311"]["graded"] == 0 and rows["R1311"]["note"].startswith("no graded reads")

    groups = {r["key"]: r for r in page(_ctx(NOW, window="7d", by="group", min_reads="5")).context["rows"]}
    nocturna = groups["Nocturna Teleradiology"]
    assert (nocturna["graded"], nocturna["cells"][1]["count"], nocturna["cells"][1]["text"]) == (20, 8, "40.0%")
    assert not nocturna["flagged"]  # groups are not compared with anything

    # Every preliminary was finalled 120 minutes later, all on 2026-11-17.
    days = [t for t in reply.context["turnaround"] if t["count"]]
    assert [(t["label"], t["count"], t["median"], t["p90"]) for t in days] == [("11-17", 20, 120.0, 120.0)]
    assert reply.context["mix_totals"] == {
        bucket: sum(b.count for b in store.bucket_mix(NOW - timedelta(days=7), NOW, step="day") if b.bucket == bucket)
        for bucket in reply.context["mix_totals"]
    }
    assert sum(reply.context["mix_totals"].values()) == 40

    html = (
        environment()
        .get_template("overread.html.j2")
        .render({"caller": MANAGER, "csrf": "", "nav": NAV, "page": "overread", **reply.context})
    )
    assert 'NT7741 <span class="flag">above group</span>' in html
    for secret in ("ZZ9000103", "ZZDEMO", "NORA"):
        assert secret not in html


def test_a_kept_document_is_shown_while_a_newer_one_is_computed(tmp_path: Path, pipeline: Pipeline) -> None:
    store = SQLiteStore.in_state_dir(tmp_path / "state")
    jobs: list[Callable[[], None]] = []
    try:
        _save(store, pipeline, PRELIM, "OC1", "OCP1", 0)
        clock = Clock()
        page = _page(store, pipeline, clock, jobs.append)
        first = page(_ctx(NOW, window="7d"))
        assert first.context["computed"] == NOW and not first.context["cached"]
        assert sum(first.context["mix_totals"].values()) == 1
        later = NOW + timedelta(seconds=30)
        clock.now += 30
        again = page(_ctx(later, window="7d"))
        assert again.context["computed"] == NOW and again.context["cached"] and not again.context["refreshing"]
        assert page(_ctx(later, window="30d")).context["computed"] == later  # other choices: their own document
        assert jobs == []

        # A new message: the kept document is shown, once, while a newer one is computed in the background.
        _save(store, pipeline, FINAL, "OC1", "OCF1", 120)
        stale = page(_ctx(later, window="7d"))
        assert stale.context["computed"] == NOW and stale.context["refreshing"]
        assert sum(stale.context["mix_totals"].values()) == 1
        assert page(_ctx(later, window="7d")).context["refreshing"] and len(jobs) == 1  # one job per document
        jobs.pop()()
        fresh = page(_ctx(later + timedelta(seconds=1), window="7d"))
        assert fresh.context["computed"] == later and not fresh.context["refreshing"]
        assert sum(fresh.context["mix_totals"].values()) == 2

        # A minute later the document is refreshed in the background; much later it is still shown
        # (never a wait once kept), saying how old it is.
        clock.now += CACHE_SECONDS + 1
        assert page(_ctx(later, window="7d")).context["refreshing"] and len(jobs) == 1
        assert page(_ctx(later, window="7d")).context["old_minutes"] == 0
        clock.now += STALE_SECONDS  # the background job has not run yet
        end = later + timedelta(seconds=STALE_SECONDS)
        old = page(_ctx(end, window="7d"))
        assert old.context["computed"] == later and old.context["refreshing"]
        assert old.context["old_minutes"] == int((CACHE_SECONDS + 1 + STALE_SECONDS + 1) // 60)
        assert len(jobs) == 1  # still the one job
        jobs.pop()()
        assert not page(_ctx(end, window="7d")).context["refreshing"]
    finally:
        store.close()


def test_warm_computes_the_default_view_in_the_background(tmp_path: Path, pipeline: Pipeline) -> None:
    store = SQLiteStore.in_state_dir(tmp_path / "state")
    jobs: list[Callable[[], None]] = []
    try:
        _save(store, pipeline, PRELIM, "OC1", "OCP1", 0)
        page = _page(store, pipeline, Clock(), jobs.append)
        page.warm(NOW)
        assert len(jobs) == 1
        jobs.pop()()
        shown = page(_ctx(NOW + timedelta(seconds=5)))  # the default view: no choices in the query
        assert shown.context["computed"] == NOW and shown.context["cached"]
    finally:
        store.close()


def test_a_failed_read_that_ran_alongside_fails_the_page(
    store: SQLiteStore, pipeline: Pipeline, tmp_path: Path
) -> None:
    """The worklist's count and the graded chains are read on threads of their own while the page
    draws (docs/console.md, "Overread"); a read that fails there fails the computed page with the
    store's own error, as a read on the page's thread does."""
    page = _page(store, pipeline, Clock())
    page.queries = ReportQueries(tmp_path / "none" / "overread.db")  # no such store: cannot be opened
    with pytest.raises(StoreError, match="cannot be opened for reading"):
        page.document(NOW, "7d", "reader", 5)
    found = _page(store, pipeline, Clock()).document(NOW, "7d", "reader", 5)
    assert {r["key"]: r["graded"] for r in found["rows"]}["NT7741"] == 8
    assert [(p["pool"], p["open"]) for p in found["pools"]] == [
        (p.pool or "(no pool)", p.open) for p in sorted(store.reports.open_task_pools(limit=5000), key=lambda p: p.pool)
    ]
