"""collect(): every accession with a report received in a window, its whole chain graded, on each Store.

The stores hold real messages: sample HL7 bodies decoded by the pipeline and
saved as the daemon saves them, so each pair is decoded again and compared.
The comparisons cache is proven by what only it can do: grade a pair whose
raw bytes are purged.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from listener.history import history_document
from listener.outcome_data import HistoryContext, collect
from listener.outcomes import load_outcome_rules
from listener.pipeline import Pipeline
from listener.store import ScoreRecord, Store
from tests.unit.store.records import CHEST as SAMPLE
from tests.unit.store.records import CHEST_PNEUMOTHORAX as FINAL
from tests.unit.store.records import CHEST_PRELIM as PRELIM
from tests.unit.store.records import processed, save_processed

T0 = datetime(2026, 11, 17, 0, 0, tzinfo=UTC)
ACCESSION = b"A2611170088"
#: A clinical window holding every sample's report time.
WIDE = (T0 - timedelta(days=3650), T0 + timedelta(days=3650))


def _with_accession(raw: bytes, accession: str) -> bytes:
    return raw.replace(ACCESSION, accession.encode())


def _save(store: Store, pipeline: Pipeline, raw: bytes, control_id: str, hours: float) -> int:
    return save_processed(store, processed(pipeline, raw, control_id, T0 + timedelta(hours=hours))).message_pk


@pytest.fixture(name="ctx")
def fixture_ctx(pipeline: Pipeline) -> HistoryContext:
    return HistoryContext(pipeline, load_outcome_rules(), {})


def _grades(outcomes: tuple[object, ...]) -> list[tuple[str, list[tuple[str, bool, str | None]]]]:
    return [
        (o.chain.accession, [(g.pair.kind, g.comparable, g.grade) for g in o.graded])  # type: ignore[attr-defined]
        for o in outcomes
    ]


def test_a_prelim_before_the_window_and_a_final_inside_is_one_complete_chain(
    store: Store, pipeline: Pipeline, ctx: HistoryContext
) -> None:
    """The chain holds every version of an accession received in the window, also those before it."""
    _save(store, pipeline, _with_accession(PRELIM, "A1"), "P1", 0)
    _save(store, pipeline, _with_accession(FINAL, "A1"), "F1", 30)
    _save(store, pipeline, _with_accession(PRELIM, "A0"), "P0", 1)  # only before the window
    _save(store, pipeline, _with_accession(PRELIM, "A2"), "P2", 26)  # a prelim with no final yet
    _save(store, pipeline, _with_accession(SAMPLE, "A3"), "F3", 100)  # after the window
    since, until = T0 + timedelta(hours=24), T0 + timedelta(hours=48)
    found = collect(store, ctx, since=since, until=until, windows=[WIDE])
    # A1 has two versions: its chain; A2's lone prelim is counted from its summary.
    (a1,) = found.outcomes
    assert a1.chain.accession == "A1"
    assert [v.status for v in a1.chain.versions] == ["preliminary", "final"]
    (graded,) = a1.graded
    assert graded.pair.kind == "prelim_to_final" and graded.comparable
    assert graded.proposed_grade is not None and graded.proposed_grade.endswith("b")
    assert graded.explicit_grade is None and graded.grade == graded.proposed_grade
    assert graded.interpretive >= 1
    assert a1.before(graded).status == "preliminary" and a1.after(graded).status == "final"
    (a2,) = found.lone_in(*WIDE)
    assert (a2.first_accession, a2.count, a2.summary.status) == ("A2", 1, "preliminary")
    # The window's end is open.
    first_hour = collect(store, ctx, since=T0, until=T0 + timedelta(hours=1), windows=[WIDE])
    assert [o.chain.accession for o in first_hour.outcomes] == ["A1"]
    assert first_hour.lone_in(*WIDE) == ()
    more = collect(store, ctx, since=T0, until=T0 + timedelta(hours=1, minutes=1), windows=[WIDE])
    assert [o.chain.accession for o in more.outcomes] == ["A1"]
    assert [r.first_accession for r in more.lone_in(*WIDE)] == ["A0"]
    with pytest.raises(ValueError, match="not counted"):
        more.lone_in(T0, T0 + timedelta(hours=2))


def test_the_second_collect_reads_the_cache_even_with_raw_purged(
    store: Store, pipeline: Pipeline, ctx: HistoryContext
) -> None:
    """Graded pairs are kept in the comparisons cache: with every raw body purged (nothing to
    decode), the second call grades the same; a dropped cache leaves the pairs not comparable."""
    for n in range(3):
        _save(store, pipeline, _with_accession(PRELIM, f"A{n}"), f"P{n}", n)
        _save(store, pipeline, _with_accession(SAMPLE if n == 1 else FINAL, f"A{n}"), f"F{n}", n + 1)
    window = {"since": T0, "until": T0 + timedelta(days=1)}
    first = collect(store, ctx, **window).outcomes
    assert [g for _, pairs in _grades(first) for g in pairs] == [
        ("prelim_to_final", True, first[0].graded[0].proposed_grade),
        ("prelim_to_final", True, "1"),
        ("prelim_to_final", True, first[2].graded[0].proposed_grade),
    ]
    assert store.purge_raw(T0 + timedelta(days=2)) == 6
    second = collect(store, ctx, **window).outcomes
    assert [o.graded for o in second] == [o.graded for o in first]
    assert not any(v.raw_kept for o in second for v in o.chain.versions)
    # history reads the same cache.
    (pair,) = history_document(store, "A0", ctx)["comparisons"]
    assert pair["comparable"] and pair["proposed_grade"] == first[0].graded[0].proposed_grade
    assert store.drop_comparisons() == 3
    assert [g.reason for o in collect(store, ctx, **window).outcomes for g in o.graded] == [
        "not comparable: raw purged"
    ] * 3


def test_a_reprocessed_message_or_other_rules_miss_the_cache(
    store: Store, pipeline: Pipeline, ctx: HistoryContext
) -> None:
    """A new processing of the final (its text no longer adds the pneumothorax) is compared again:
    never the stale grade; grading rules of another version do not read the old results either."""
    _save(store, pipeline, _with_accession(PRELIM, "A1"), "P1", 0)
    final_pk = _save(store, pipeline, _with_accession(FINAL, "A1"), "F1", 1)
    window = {"since": T0, "until": T0 + timedelta(days=1)}
    (before,) = collect(store, ctx, **window).outcomes
    assert before.graded[0].proposed_grade not in (None, "1")
    store.replace_processing(
        final_pk,
        processed(pipeline, _with_accession(SAMPLE, "A1"), "F1", T0 + timedelta(hours=1)),
        now=T0 + timedelta(hours=2),
        superseded_by="reprocess by test",
        expected_processing=1,
    )
    (after,) = collect(store, ctx, **window).outcomes
    assert after.graded[0].comparable and after.graded[0].proposed_grade == "1"
    store.purge_raw(T0 + timedelta(days=2))
    other = dataclasses.replace(ctx, rules=dataclasses.replace(ctx.rules, version=ctx.rules.version + "-edited"))
    (again,) = collect(store, other, **window).outcomes
    assert again.graded[0].reason == "not comparable: raw purged"


def test_the_latest_explicit_score_wins_and_disagreement_shows(
    store: Store, pipeline: Pipeline, ctx: HistoryContext
) -> None:
    """Scores are placed as history places them: the latest recorded one on a pair is its grade."""
    _save(store, pipeline, _with_accession(PRELIM, "A1"), "P1", 0)
    _save(store, pipeline, _with_accession(FINAL, "A1"), "F1", 1)
    _save(store, pipeline, _with_accession(SAMPLE, "A2"), "F2", 2)  # one version: no pair takes a score
    at = T0 + timedelta(days=1)
    store.record_scores(
        [
            ScoreRecord("A1", "2a", "csv", at, "dr-peer", ""),
            ScoreRecord("A1", "3a", "cli", at + timedelta(minutes=1), "dr-lead", ""),
            ScoreRecord("A2", "2b", "cli", at, "dr-lead", ""),
        ]
    )
    found = collect(store, ctx, since=T0, until=at, windows=[WIDE])
    (a1,) = found.outcomes
    (graded,) = a1.graded
    assert graded.explicit_grade == "3a" and graded.grade == "3a"
    assert graded.proposed_grade is not None and graded.proposed_grade.endswith("b") and graded.disagreement
    assert [(r.first_accession, r.count) for r in found.lone_in(*WIDE)] == [("A2", 1)]


def test_a_pair_not_comparable_keeps_its_explicit_grade(store: Store, pipeline: Pipeline, ctx: HistoryContext) -> None:
    pk = _save(store, pipeline, _with_accession(PRELIM, "A1"), "P1", 0)
    _save(store, pipeline, _with_accession(FINAL, "A1"), "F1", 1)
    store.purge_raw(T0 + timedelta(minutes=30))
    store.record_scores([ScoreRecord("A1", "2b", "cli", T0 + timedelta(days=1))])
    ((graded,),) = (o.graded for o in collect(store, ctx, since=T0, until=T0 + timedelta(days=1)).outcomes)
    assert (graded.comparable, graded.reason, graded.grade, graded.disagreement) == (
        False,
        "not comparable: raw purged",
        "2b",
        False,
    )
    assert store.message_raw(pk) is None


def test_window_reads_processed_messages_only_and_refuse_naive_times(store: Store, pipeline: Pipeline) -> None:
    _save(store, pipeline, _with_accession(PRELIM, "A1"), "P1", 0)
    store.save(dataclasses.replace(processed(pipeline, _with_accession(PRELIM, "B1"), "R1", T0), state="rejected"))
    assert store.accessions_received(T0, T0 + timedelta(hours=1)) == ("A1",)
    # B1's report is no version; A1's prelim is alone.
    versions = store.window_versions(T0, T0 + timedelta(hours=1), [(T0, T0), WIDE])
    assert versions.multi == ()
    (lone,) = versions.lone
    assert (lone.window, lone.count, lone.first_accession) == (1, 1, "A1")
    assert store.accessions_received(T0 + timedelta(hours=1), T0) == ()
    with pytest.raises(ValueError, match="since"):
        store.accessions_received(T0.replace(tzinfo=None), T0)


def test_window_versions_splits_the_window_in_one_read(store: Store, pipeline: Pipeline) -> None:
    """multi: accessions with another row anywhere (before the window, or a rejected message's report),
    by code point; lone: the rest counted per window, none with 0 windows (docs/store.md, "Version summaries")."""
    _save(store, pipeline, _with_accession(PRELIM, "b1"), "P0", -30)  # before the window
    _save(store, pipeline, _with_accession(FINAL, "b1"), "F0", 0)
    _save(store, pipeline, _with_accession(FINAL, "Z9"), "F1", 0.1)
    store.save(dataclasses.replace(processed(pipeline, _with_accession(PRELIM, "Z9"), "R1", T0), state="rejected"))
    _save(store, pipeline, _with_accession(FINAL, "A1"), "F2", 0.2)
    _save(store, pipeline, _with_accession(PRELIM, "C3"), "P3", 0.3)
    hour = (T0, T0 + timedelta(hours=1))
    # The samples' clinical (report) times are later on the day: none falls in the day before.
    versions = store.window_versions(*hour, [WIDE, (T0 - timedelta(days=1), T0)])
    assert versions.multi == ("Z9", "b1")
    assert sorted((g.window, g.first_accession, g.count) for g in versions.lone) == [(0, "A1", 1), (0, "C3", 1)]
    assert store.window_versions(*hour, ()).multi == ("Z9", "b1")
    assert store.window_versions(*hour, ()).lone == ()
    # A window that holds the whole store (PostgreSQL then counts every accession's rows instead of
    # looking the window's up: docs/store.md, "The overread page on PostgreSQL"): the same split.
    whole = (T0 - timedelta(days=2), T0 + timedelta(hours=1))
    versions = store.window_versions(*whole, [WIDE])
    assert versions.multi == ("Z9", "b1")
    assert sorted((g.window, g.first_accession, g.count) for g in versions.lone) == [(0, "A1", 1), (0, "C3", 1)]


def test_chunks_give_the_same_outcomes(
    store: Store, pipeline: Pipeline, ctx: HistoryContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Accessions graded a few at a time come out the same, in accession order."""
    import listener.outcome_data

    for n in (3, 1, 2, 0, 4):
        _save(store, pipeline, _with_accession(PRELIM, f"A{n}"), f"P{n}", n)
        _save(store, pipeline, _with_accession(FINAL if n % 2 else SAMPLE, f"A{n}"), f"F{n}", n + 1)
    window = {"since": T0, "until": T0 + timedelta(days=1)}
    whole = collect(store, ctx, **window).outcomes
    monkeypatch.setattr(listener.outcome_data, "CHUNK", 2)
    assert collect(store, ctx, **window).outcomes == whole
    assert [o.chain.accession for o in whole] == ["A0", "A1", "A2", "A3", "A4"]
    assert [o.graded[0].proposed_grade == "1" for o in whole] == [True, False, True, False, True]
