"""Explicit scores: recorded once, listed per accession, stored with the message that carried them."""

from __future__ import annotations

import dataclasses
from datetime import timedelta, timezone

import pytest

from listener.store import ScoreRecord, Store
from listener.store.base import SCORER_MAX, TEXT_MAX

from .records import T0, record


def _score(grade: str = "2b", *, source: str = "cli", scorer: str = "dr-final", minutes: int = 0) -> ScoreRecord:
    return ScoreRecord("A1", grade, source, T0 + timedelta(minutes=minutes), scorer, "missed pneumothorax")  # type: ignore[arg-type]


def test_scores_are_listed_per_accession_in_recorded_order(store: Store) -> None:
    """Scores of one accession only, oldest recorded first, with no message for an import or the CLI."""
    assert store.record_scores([_score("2b"), _score("1", source="csv", minutes=1)]) == 2
    store.record_scores([dataclasses.replace(_score(), accession="B1")])
    found = store.scores("A1")
    assert [(s.score.grade, s.score.source, s.message_pk) for s in found] == [("2b", "cli", None), ("1", "csv", None)]
    assert found[0].id < found[1].id
    assert found[0].score == _score("2b")
    assert found[0].score.scored_at.utcoffset() == timedelta(0)
    assert store.scores("NONE") == () and store.scores("") == ()
    assert len(store.scores("A1", limit=1)) == 1


def test_scores_of_many_accessions_match_one_by_one(store: Store) -> None:
    """scores_of_accessions gives each accession exactly its scores(), bounded per accession;
    empty and unknown accessions and those with no score are left out."""
    store.record_scores([_score("2b"), _score("1", source="csv", minutes=1), _score("3a", minutes=2)])
    store.record_scores([dataclasses.replace(_score(), accession="B1"), dataclasses.replace(_score(), accession="C1")])
    found = store.scores_of_accessions(["B1", "A1", "NONE", "", "A1"])
    assert list(found) == ["A1", "B1"]
    assert found == {"A1": store.scores("A1"), "B1": store.scores("B1")}
    assert [s.score.grade for s in found["A1"]] == ["2b", "1", "3a"]
    assert store.scores_of_accessions(["A1", "B1"], limit=2) == {
        "A1": store.scores("A1", limit=2),
        "B1": store.scores("B1"),
    }
    assert store.scores_of_accessions([]) == {} and store.scores_of_accessions(["A1"], limit=0) == {}
    many = [f"X{n}" for n in range(1100)] + ["A1"]
    assert list(store.scores_of_accessions(many)) == ["A1"]


def test_recording_the_same_score_again_adds_nothing(store: Store) -> None:
    """Same accession, source, scorer, grade and time: idempotent, also across time zones."""
    assert store.record_scores([_score()]) == 1
    again = dataclasses.replace(_score(), scored_at=T0.astimezone(timezone(timedelta(hours=2))), note="other note")
    assert store.record_scores([_score(), again]) == 0
    assert len(store.scores("A1")) == 1
    # Another scorer, grade, source or time is another score.
    assert store.record_scores([_score(scorer="dr-b"), _score("3b"), _score(source="csv"), _score(minutes=1)]) == 4
    assert len(store.scores("A1")) == 5


def test_scores_carried_by_a_message_keep_its_pk(store: Store) -> None:
    """A message's scores are stored with it; saving a duplicate of the message adds none."""
    rec = dataclasses.replace(record("C1"), scores=(_score(source="obx"),))
    pk = store.save(rec).message_pk
    assert store.save(rec).duplicate
    (found,) = store.scores("A1")
    assert (found.message_pk, found.score.source) == (pk, "obx")


def test_long_scorer_and_note_are_cut(store: Store) -> None:
    store.record_scores([dataclasses.replace(_score(), scorer="s" * 1000, note="n" * 5000)])
    (found,) = store.scores("A1")
    assert len(found.score.scorer) == SCORER_MAX and len(found.score.note) == TEXT_MAX


def test_a_score_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="grade"):
        _score("4")
    with pytest.raises(ValueError, match="source"):
        _score(source="mail")
    with pytest.raises(ValueError, match="accession"):
        dataclasses.replace(_score(), accession="")
    with pytest.raises(ValueError, match="scored_at"):
        dataclasses.replace(_score(), scored_at=T0.replace(tzinfo=None))


def test_a_new_processing_carrying_the_same_score_adds_nothing(store: Store) -> None:
    """Reprocessing a message that carries a score keeps one score (the pk of that message)."""
    rec = dataclasses.replace(record("C1"), scores=(_score(source="obx"),))
    pk = store.save(rec).message_pk
    store.replace_processing(
        pk, rec, now=T0 + timedelta(hours=1), superseded_by="reprocess by test", expected_processing=1
    )
    (found,) = store.scores("A1")
    assert found.message_pk == pk
