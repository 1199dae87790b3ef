"""Live discrepancy figures: computed from a real store (listener/live_figures.py), cached by the daemon's
LiveRates (listener/server/live_rates.py), kept when a refresh fails.

The store holds real messages: the chest radiograph sample decoded by the
pipeline and saved as the daemon saves it. NT7741 (Nocturna Teleradiology)
sends three preliminaries whose finals add a large pneumothorax (a critical
finding added: a "b" grade, significant); R1187 one preliminary whose final
says the same.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from listener.live_figures import compute_live_figures
from listener.outcome_data import HistoryContext
from listener.outcomes import load_outcome_rules
from listener.pipeline import Pipeline
from listener.server.live_rates import LiveRates
from listener.server.metrics import Metrics
from listener.sites import ReaderHistory
from listener.store import SQLiteStore, Store
from tests.unit.store.records import CHEST as SAMPLE
from tests.unit.store.records import CHEST_PNEUMOTHORAX as CRITICAL_FINAL
from tests.unit.store.records import CHEST_PRELIM as PRELIM
from tests.unit.store.records import processed, save_processed

T0 = datetime(2026, 11, 17, 0, 0, tzinfo=UTC)
UNTIL = T0 + timedelta(days=1)


def _by(raw: bytes, reader: bytes, accession: bytes) -> bytes:
    return (
        raw.replace(b"R1311^DELACROIX", reader + b"^READER")
        .replace(b"R1311&DELACROIX", reader + b"&READER")
        .replace(b"A2611170088", accession)
    )


def _save(store: Store, pipeline: Pipeline, raw: bytes, control_id: str, hours: float) -> None:
    save_processed(store, processed(pipeline, raw, control_id, T0 + timedelta(hours=hours)))


@pytest.fixture(name="store")
def fixture_store(tmp_path: Any, pipeline: Pipeline) -> Any:
    store = SQLiteStore.in_state_dir(tmp_path / "state")
    for i in range(3):
        accession = f"LR{i}".encode()
        _save(store, pipeline, _by(PRELIM, b"NT7741", accession), f"P{i}", i)
        _save(store, pipeline, _by(CRITICAL_FINAL, b"R1042", accession), f"F{i}", i + 0.5)
    _save(store, pipeline, _by(PRELIM, b"R1187", b"LR9"), "P9", 4)
    _save(store, pipeline, _by(SAMPLE, b"R1042", b"LR9"), "F9", 4.5)
    yield store
    store.close()


@pytest.fixture(name="ctx")
def fixture_ctx(pipeline: Pipeline) -> HistoryContext:
    return HistoryContext(pipeline, load_outcome_rules(), {})


def test_figures_per_reader_and_group(store: Store, ctx: HistoryContext) -> None:
    figures = compute_live_figures(store, ctx, until=UNTIL, window_days=30)
    assert figures.readers["NT7741"] == ReaderHistory(3, 3)
    assert figures.readers["R1187"] == ReaderHistory(1, 0)
    assert figures.groups["Nocturna Teleradiology"] == ReaderHistory(3, 3)
    assert figures.groups["Lakeshore Radiology"] == ReaderHistory(1, 0)
    assert "R1042" not in figures.readers  # its finals replaced nothing: no graded reads
    assert figures.source == "store 30 d to 2026-11-18T00:00Z"


def test_a_window_before_the_reads_has_none(store: Store, ctx: HistoryContext) -> None:
    figures = compute_live_figures(store, ctx, until=T0 - timedelta(days=1), window_days=30)
    assert dict(figures.readers) == {} and dict(figures.groups) == {}


def _direct(work: Any, *args: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(work, *args)


def test_cache_refreshes_and_keeps_the_figures_when_the_store_fails(store: Store, ctx: HistoryContext) -> None:
    metrics = Metrics()
    clock = Clock()
    now = [UNTIL]
    rates = LiveRates(
        store,
        clock,
        context=lambda: ctx,
        window_days=30,
        refresh_seconds=60,
        metrics=metrics,
        clock=lambda: now[0],
        run_in_thread=_direct,
    )
    assert rates.figures() is None and math.isnan(rates.age_seconds())
    rates.start()  # the first refresh runs at once
    first = rates.figures()
    assert first is not None and first.readers["NT7741"] == ReaderHistory(3, 3)
    assert metrics.live_figures_refreshes.labels("ok")._value.get() == 1
    now[0] = UNTIL + timedelta(seconds=90)
    assert rates.age_seconds() == 90.0
    store.close()  # the next refresh cannot read the store
    clock.advance(60)
    assert rates.figures() is first
    assert metrics.live_figures_refreshes.labels("failed")._value.get() == 1
    assert metrics.live_figures_refreshes.labels("ok")._value.get() == 1
    assert b"overread_live_figures_age_seconds 90.0" in metrics.render()
    rates.stop()
    clock.advance(600)
    assert metrics.live_figures_refreshes.labels("failed")._value.get() == 1  # stopped: no more refreshes
