"""collect() counts lone versions from the stored summaries and grades the rest: the same
scorecards as grading every accession of the window from its decoded chain, on each Store.

The reference below builds every chain of the window from the stored JSON with the public
pieces (:meth:`Store.accessions_received`, :meth:`Store.report_histories`,
:func:`listener.outcomes.history.build_chain`, :func:`listener.outcome_data.compare_chains`,
:func:`listener.outcome_data.place_scores`, :func:`listener.outcome_data.graded_pair`), as
collect() did for every accession before the summaries (docs/outcomes.md, "Scorecards: where
the figures come from").
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from listener.feedback import weeks_of
from listener.outcome_data import HistoryContext, collect, compare_chains, graded_pair, place_scores
from listener.outcomes import load_outcome_rules
from listener.outcomes.graded import AccessionOutcome
from listener.outcomes.history import build_chain
from listener.outcomes.scorecard import BY, prelim_to_final, scorecard
from listener.pipeline import Pipeline
from listener.sites import EMPTY_DIRECTORY
from listener.store import ScoreRecord, Store
from listener.store.base import HISTORY_LIMIT
from tests.unit.store.records import CHEST, CHEST_PNEUMOTHORAX, CHEST_PRELIM, processed, save_processed

T0 = datetime(2026, 11, 17, 0, 0, tzinfo=UTC)
SINCE, UNTIL = T0 - timedelta(days=1), T0 + timedelta(days=20)


def _variant(
    raw: bytes, accession: str, *, reader: str = "", status: bytes = b"", day: int = 0, hour: int = 0
) -> bytes:
    """The sample as another accession, optionally another reader, result status and report time."""
    out = raw.replace(b"A2611170088", accession.encode())
    if reader:
        out = out.replace(b"R1311^", reader.encode() + b"^").replace(b"R1311&", reader.encode() + b"&")
    if status:
        out = out.replace(b"|CR|F||", b"|CR|" + status + b"||").replace(b"||||||F|||", b"||||||" + status + b"|||")
    if day or hour:
        for stamp in (b"20261117103400", b"20261117093400"):
            moved = datetime.strptime(stamp.decode(), "%Y%m%d%H%M%S") + timedelta(days=day, hours=hour)
            out = out.replace(stamp, moved.strftime("%Y%m%d%H%M%S").encode())
    return out


def _save(store: Store, pipeline: Pipeline, raw: bytes, control_id: str, hours: float) -> int:
    return save_processed(store, processed(pipeline, raw, control_id, T0 + timedelta(hours=hours))).message_pk


def _reference(store: Store, ctx: HistoryContext) -> tuple[AccessionOutcome, ...]:
    """Every accession of the window graded from its decoded chain."""
    histories = store.report_histories(store.accessions_received(SINCE, UNTIL), limit=HISTORY_LIMIT)
    chains = [(build_chain(accession, entries), entries) for accession, entries in sorted(histories.items())]
    scores = store.scores_of_accessions([c.accession for c, _ in chains], limit=HISTORY_LIMIT)
    out = []
    for compared in compare_chains(store, chains, ctx):
        placed, _ = place_scores(scores.get(compared.chain.accession, ()), compared.chain)
        graded = tuple(graded_pair(c, s) for c, s in zip(compared.pairs, placed, strict=True))
        out.append(AccessionOutcome(compared.chain, graded))
    return tuple(out)


@pytest.fixture(name="ctx")
def fixture_ctx(pipeline: Pipeline) -> HistoryContext:
    return HistoryContext(pipeline, load_outcome_rules(), {})


def _fill(store: Store, pipeline: Pipeline) -> None:
    readers = ("R1311", "R2001", "R3002", "R4003")
    # Pairs: prelim then final (one adds a pneumothorax), in order and out of order.
    for n in range(6):
        reader = readers[n % 4]
        prelim = _variant(CHEST_PRELIM, f"P{n:02}", reader=reader, day=n)
        final = _variant(CHEST_PNEUMOTHORAX if n % 2 else CHEST, f"P{n:02}", reader=readers[(n + 1) % 4], day=n)
        first, second = (final, prelim) if n == 5 else (prelim, final)
        _save(store, pipeline, first, f"PA{n}", n * 24 + 1)
        _save(store, pipeline, second, f"PB{n}", n * 24 + 2)
    # A final and its correction; a final sent again.
    _save(store, pipeline, _variant(CHEST, "C01", reader="R2001", day=2), "C1", 50)
    _save(store, pipeline, _variant(CHEST_PNEUMOTHORAX, "C01", reader="R2001", status=b"C", day=2, hour=3), "C2", 53)
    _save(store, pipeline, _variant(CHEST, "C02", reader="R3002", day=3), "C3", 70)
    _save(store, pipeline, _variant(CHEST_PNEUMOTHORAX, "C02", reader="R3002", day=3, hour=1), "C4", 71)
    # Lone versions: prelims, finals, a cancelled one, several readers and report times
    # (some before the window, some inside), many alike.
    for n in range(24):
        raw = CHEST_PRELIM if n % 3 == 0 else CHEST
        status = b"X" if n == 7 else b""
        day = (n % 9) - 2
        _save(store, pipeline, _variant(raw, f"L{n:02}", reader=readers[n % 4], status=status, day=day), f"L{n}", n * 7)
    # A prelim before the window whose final is inside it.
    _save(store, pipeline, _variant(CHEST_PRELIM, "E01", day=-5), "E1", -100)
    _save(store, pipeline, _variant(CHEST_PNEUMOTHORAX, "E01", day=1), "E2", 30)
    # A lone version reprocessed (a new processing of its one message), and one rejected beside an accepted one.
    pk = _save(store, pipeline, _variant(CHEST_PRELIM, "R01", day=4), "R1", 100)
    store.replace_processing(
        pk,
        processed(pipeline, _variant(CHEST, "R01", day=4), "R1", T0 + timedelta(hours=100)),
        now=T0 + timedelta(hours=101),
        superseded_by="reprocess by test",
        expected_processing=1,
    )
    rejected = processed(pipeline, _variant(CHEST_PRELIM, "J01", day=4), "J1", T0 + timedelta(hours=110))
    store.save(dataclasses.replace(rejected, state="rejected"))
    _save(store, pipeline, _variant(CHEST, "J01", day=4), "J2", 111)
    # Explicit scores; the first pairs' raw bytes purged (graded from the cache only after a first read).
    at = T0 + timedelta(days=6)
    store.record_scores(
        [
            ScoreRecord("P01", "2a", "csv", at, "dr-peer", ""),
            ScoreRecord("P02", "3b", "cli", at, "dr-lead", ""),
            ScoreRecord("L03", "2b", "cli", at, "dr-lead", ""),  # a lone version: no pair takes it
        ]
    )


def test_collect_gives_the_scorecards_of_every_decoded_chain(
    store: Store, pipeline: Pipeline, ctx: HistoryContext
) -> None:
    _fill(store, pipeline)
    _reference(store, ctx)  # the pairs' comparisons cached while their raw bytes are there
    store.purge_raw(T0 + timedelta(hours=30))
    reference = _reference(store, ctx)
    assert any(not v.raw_kept for o in reference for v in o.chain.versions)
    weeks = weeks_of(SINCE, UNTIL)
    found = collect(store, ctx, since=SINCE, until=UNTIL, windows=weeks)
    assert found.outcomes == tuple(o for o in reference if len(o.chain.versions) > 1 or o.chain.accession == "J01")
    lone = found.lone_in(SINCE, UNTIL)
    assert sum(r.count for r in lone) >= 20 and any(r.summary.status == "preliminary" for r in lone)
    assert {r.summary.status for r in lone} >= {"preliminary", "final", "cancelled"}
    assert len({r.reader_id for r in lone}) == 4
    directory = pipeline.qa.directory if pipeline.qa is not None else EMPTY_DIRECTORY
    for since, until in ((SINCE, UNTIL), *weeks):
        for by in BY:
            expected = scorecard(reference, by=by, directory=directory, since=since, until=until, min_reads=2)
            got = found.scorecard(by=by, directory=directory, since=since, until=until, min_reads=2)
            assert got.to_json() == expected.to_json(), (by, since)
    assert prelim_to_final(found.outcomes, since=SINCE, until=UNTIL) == prelim_to_final(
        reference, since=SINCE, until=UNTIL
    )
    card = scorecard(reference, by="reader", directory=directory, since=SINCE, until=UNTIL, min_reads=1)
    assert sum(r.graded for r in card.rows) >= 8 and sum(r.prelims for r in card.rows) >= 8
