"""scorecard(): per reader, group, site, modality and body region over a window (docs/outcomes.md, "Scorecards").

The chains are built by the real build_chain() from small stored-row stand-ins;
every expected figure below is worked out by hand from the scenario in
``_month()``.
"""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from listener.outcomes.graded import AccessionOutcome, GradedPair
from listener.outcomes.history import build_chain
from listener.outcomes.scorecard import (
    DISCREPANCY_KEYS,
    Scorecard,
    ScorecardRow,
    percentile,
    render_csv,
    render_text,
    scorecard,
    wilson,
)
from listener.sites import Directory, load_directory
from tests.unit.outcomes.stored import Entry

POLICIES = Path(__file__).resolve().parents[3] / "policies"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
SINCE, UNTIL = T0, T0 + timedelta(days=30)


def entry(
    pk: int,
    status: str,
    reader: str,
    *,
    report: datetime | None,
    received: datetime | None = None,
    observation: datetime | None = None,
    categories: tuple[str, ...] = (),
    addendum: bool = False,
    modality: str = "CT",
    site: str = "LEMC",
    body_region: str = "head",
) -> Entry:
    doc: dict[str, Any] = {
        "accession": "A",
        "status": status,
        "reader": {"id": reader, "name": "Dr Reader", "type": "external"},
        "procedure": {"code": "70450", "text": "CT head"},
        "modality": modality,
        "site": site,
        "body_region": body_region,
        "patient": {"id": "MRN-SECRET", "name": "DOE^JANE"},
        "times": {
            "report": report.isoformat() if report else None,
            "observation": observation.isoformat() if observation else None,
        },
        "sections": [{"kind": "findings"}, *([{"kind": "addendum"}] if addendum else [])],
    }
    findings = [{"rule": f"{c}.some_rule", "category": c} for c in categories]
    arrived = received or report or T0
    return Entry(pk, 0, f"C{pk}", arrived, "mllp", "default", json.dumps(doc), json.dumps(findings), "release", True)


def graded(
    proposed: str | None,
    explicit: str | None = None,
    *,
    interpretive: int = 0,
    operational: int = 0,
    kinds: tuple[str, ...] = (),
    comparable: bool = True,
) -> dict[str, Any]:
    return {
        "proposed_grade": proposed,
        "explicit_grade": explicit,
        "interpretive": interpretive,
        "operational": operational,
        "operational_kinds": kinds,
        "comparable": comparable,
        "reason": "" if comparable else "not comparable: raw purged",
    }


def outcome(accession: str, entries: list[Entry], grades: list[dict[str, Any]]) -> AccessionOutcome:
    chain = build_chain(accession, entries)
    assert len(chain.pairs) == len(grades), chain.pairs
    return AccessionOutcome(chain, tuple(GradedPair(pair=p, **g) for p, g in zip(chain.pairs, grades, strict=True)))


def at(days: float = 0, minutes: float = 0) -> datetime:
    return T0 + timedelta(days=days, minutes=minutes)


def _month() -> list[AccessionOutcome]:
    """NT7741 and NT7802 (Nocturna Teleradiology) read prelims; R1311 (Lakeshore) reads the finals."""
    return [
        # prelim 30 min after the exam; final 240 min after the prelim; a 2b the comparison found.
        outcome(
            "A1",
            [
                entry(
                    1, "preliminary", "NT7741", report=at(0, 90), observation=at(0, 60), categories=("communication",)
                ),
                entry(2, "final", "R1311", report=at(0, 330)),
            ],
            [graded("2b", interpretive=1)],
        ),
        # prelim 60 min after the exam; final 120 min later; proposed 1, scored 3b (a disagreement).
        outcome(
            "A2",
            [
                entry(
                    3,
                    "preliminary",
                    "NT7741",
                    report=at(2, 60),
                    observation=at(2),
                    categories=("communication", "laterality"),
                ),
                entry(4, "final", "R1311", report=at(2, 180)),
            ],
            [graded("1", "3b", operational=2, kinds=("laterality_corrected", "wording_changed"))],
        ),
        # prelim without an exam time; final 600 min later (no difference); the final corrected by an addendum, 2a.
        outcome(
            "A3",
            [
                entry(5, "preliminary", "NT7741", report=at(3)),
                entry(6, "final", "R1311", report=at(3, 600)),
                entry(7, "corrected", "R1311", report=at(3, 700), addendum=True),
            ],
            [graded("1"), graded("2a", interpretive=1)],
        ),
        # the other Nocturna reader: its pair is not comparable and has no score.
        outcome(
            "A4",
            [
                entry(8, "preliminary", "NT7802", report=at(4)),
                entry(9, "final", "R1311", report=at(4, 60), site="PVCH"),
            ],
            [graded(None, comparable=False)],
        ),
        # prelim before the window: only its final counts.
        outcome(
            "A5",
            [entry(10, "preliminary", "NT7741", report=at(-1)), entry(11, "final", "R1311", report=at(0, 10))],
            [graded("3b", interpretive=2)],
        ),
        # a cancelled version is no read.
        outcome("A6", [entry(12, "cancelled", "NT7741", report=at(5))], []),
        # a reader readers.yaml does not know, a prelim with an addendum and no final, no modality.
        outcome("A7", [entry(13, "preliminary", "X999", report=at(6), addendum=True, modality="")], []),
    ]


@pytest.fixture(scope="module")
def directory() -> Directory:
    return load_directory(POLICIES)


def card(directory: Directory, by: str = "reader", min_reads: int = 1, **kw: Any) -> Scorecard:
    return scorecard(_month(), by=by, directory=directory, since=SINCE, until=UNTIL, min_reads=min_reads, **kw)


def row(c: Scorecard, key: str) -> ScorecardRow:
    (found,) = [r for r in c.rows if r.key == key]
    return found


# ------------------------------------------------------------------ Wilson and percentiles


@pytest.mark.parametrize(
    ("count", "total", "low", "high"),
    [
        # Reference values of the Wilson score interval (95%), e.g. Newcombe 1998, table I, and R's
        # binom::binom.wilson / statsmodels proportion_confint(method="wilson").
        (0, 10, 0.0, 0.2775),
        (1, 100, 0.0018, 0.0545),
        (5, 50, 0.0435, 0.2136),
        (10, 10, 0.7225, 1.0),
    ],
)
def test_wilson_matches_reference_values(count: int, total: int, low: float, high: float) -> None:
    got_low, got_high = wilson(count, total)
    assert got_low == pytest.approx(low, abs=5e-5)
    assert got_high == pytest.approx(high, abs=5e-5)


def test_wilson_needs_a_trial() -> None:
    with pytest.raises(ValueError, match="at least one trial"):
        wilson(0, 0)


def test_percentile_is_nearest_rank() -> None:
    values = [10.0, 1.0, 9.0, 2.0, 8.0, 3.0, 7.0, 4.0, 6.0, 5.0]
    assert percentile(values, 90) == 9.0  # ceil(0.9 * 10) = 9th smallest
    assert percentile([1.0, 2.0, 3.0], 90) == 3.0  # ceil(2.7) = 3rd
    assert percentile([42.0], 90) == 42.0


# ------------------------------------------------------------------ reader rows, figure by figure


def test_row_order_is_reads_then_key(directory: Directory) -> None:
    c = card(directory)
    assert [(r.key, r.reads) for r in c.rows] == [("R1311", 6), ("NT7741", 3), ("NT7802", 1), ("X999", 1)]


def test_external_reader_figures(directory: Directory) -> None:
    r = row(card(directory), "NT7741")
    assert r.group == "Nocturna Teleradiology"
    # A1, A2, A3 prelims; A5's prelim is before the window, A6 is cancelled.
    assert (r.reads, r.prelims, r.finals, r.overread, r.graded) == (3, 3, 0, 3, 3)
    d = r.discrepancies
    # Grades 2b (A1), 3b (A2, explicit over the proposed 1), 1 (A3).
    assert {k: d[k].count for k in DISCREPANCY_KEYS} == {"any": 2, "2a": 0, "2b": 1, "3a": 0, "3b": 1, "significant": 2}
    assert d["any"].rate == pytest.approx(2 / 3)
    assert d["any"].of == 3
    low, high = wilson(2, 3)
    assert (d["any"].low, d["any"].high) == (low, high)
    assert d["2a"].rate == 0.0
    assert not r.too_few and r.note == ""
    assert r.disagreements == 1
    # A1 differs in findings, A2 only as a document; A3 does not differ.
    assert r.differing == 2
    assert (r.interpretive_share, r.operational_share) == (0.5, 0.5)
    assert dict(r.operational_kinds) == {"laterality_corrected": 1, "wording_changed": 1}
    assert {k: (v.count, v.rate) for k, v in r.qa_defects.items()} == {
        "communication": (2, pytest.approx(2 / 3)),
        "laterality": (1, pytest.approx(1 / 3)),
    }
    # Exam to prelim: 30 and 60 minutes (A3 has no exam time).
    assert (r.prelim_minutes.count, r.prelim_minutes.median, r.prelim_minutes.p90) == (2, 45.0, 60.0)
    # Prelim to final: 240, 120, 600 minutes.
    p2f = r.prelim_to_final_minutes
    assert (p2f.count, p2f.median, p2f.p90) == (3, 240.0, 600.0)
    # No finals of its own: no corrected rate.
    assert (r.corrected.count, r.corrected.of, r.corrected.rate) == (0, 0, None)
    assert (r.addendum.count, r.addendum.rate) == (0, 0.0)


def test_reads_count_every_version_in_the_window(directory: Directory) -> None:
    r = row(card(directory), "R1311")
    # Versions by R1311 in the window: finals 2, 4, 6, 9, 11 and correction 7 = 6 reads, 5 finals.
    assert (r.reads, r.prelims, r.finals) == (6, 0, 5)
    # Only the A3 final was replaced (by the correction): graded 2a.
    assert (r.overread, r.graded) == (1, 1)
    assert r.discrepancies["2a"].count == 1 and r.discrepancies["any"].rate == 1.0
    assert r.discrepancies["significant"].count == 0
    assert (r.corrected.count, r.corrected.of, r.corrected.rate) == (1, 5, 0.2)
    # The A3 final is amended by a correction carrying an addendum: counted once, on the final.
    assert (r.addendum.count, r.addendum.of, r.addendum.rate) == (1, 6, pytest.approx(1 / 6))
    assert r.prelim_minutes.count == 0 and r.prelim_minutes.median is None
    assert r.prelim_to_final_minutes.count == 0


def test_not_comparable_pair_is_overread_but_not_graded(directory: Directory) -> None:
    r = row(card(directory), "NT7802")
    assert (r.reads, r.overread, r.graded) == (1, 1, 0)
    assert r.too_few
    assert r.note == "no graded reads: too few for a rate (needs 1)"
    assert all(r.discrepancies[k].rate is None and r.discrepancies[k].low is None for k in DISCREPANCY_KEYS)
    assert r.interpretive_share is None
    # Its prelim-to-final time still counts: 60 minutes.
    assert r.prelim_to_final_minutes.median == 60.0


def test_unknown_reader(directory: Directory) -> None:
    r = row(card(directory), "X999")
    assert r.group == "(not in readers.yaml)"
    assert (r.reads, r.overread, r.graded) == (1, 0, 0)
    assert (r.addendum.count, r.addendum.rate) == (1, 1.0)


# ------------------------------------------------------------------ too few reads


def test_too_few_graded_reads_print_no_rate(directory: Directory) -> None:
    c = card(directory, min_reads=30)
    r = row(c, "NT7741")
    assert r.too_few
    assert r.note == "3 graded reads: too few for a rate (needs 30)"
    for k in DISCREPANCY_KEYS:
        assert (r.discrepancies[k].rate, r.discrepancies[k].low, r.discrepancies[k].high) == (None, None, None)
    assert r.discrepancies["any"].count == 2  # the count is still given
    assert (r.interpretive_share, r.operational_share) == (None, None)
    assert r.qa_defects["communication"].rate is None and r.qa_defects["communication"].count == 2
    # Turnaround is no rate: it is given whatever the count.
    assert r.prelim_to_final_minutes.median == 240.0
    assert row(c, "R1311").note == "1 graded read: too few for a rate (needs 30)"


def test_rate_given_from_exactly_min_reads(directory: Directory) -> None:
    r = row(card(directory, min_reads=3), "NT7741")
    assert not r.too_few and r.discrepancies["significant"].rate == pytest.approx(2 / 3)
    r = row(card(directory, min_reads=4), "NT7741")
    assert r.too_few and r.discrepancies["significant"].rate is None


def test_bad_arguments(directory: Directory) -> None:
    with pytest.raises(ValueError, match="by must be one of"):
        card(directory, by="patient")
    with pytest.raises(ValueError, match="min_reads"):
        card(directory, min_reads=0)


# ------------------------------------------------------------------ grouping


def test_by_group_uses_readers_yaml(directory: Directory) -> None:
    c = card(directory, by="group")
    assert [(r.key, r.reads, r.graded) for r in c.rows] == [
        ("Lakeshore Radiology", 6, 1),
        ("Nocturna Teleradiology", 4, 3),
        ("(not in readers.yaml)", 1, 0),
    ]
    nocturna = row(c, "Nocturna Teleradiology")
    assert nocturna.readers == ("NT7741", "NT7802")
    assert nocturna.group is None
    assert nocturna.overread == 4
    assert nocturna.prelim_to_final_minutes.count == 4  # 240, 120, 600, 60
    assert nocturna.prelim_to_final_minutes.median == 180.0


def test_by_site_modality_and_body_region(directory: Directory) -> None:
    sites = card(directory, by="site")
    assert [(r.key, r.reads) for r in sites.rows] == [("LEMC", 10), ("PVCH", 1)]
    modalities = card(directory, by="modality")
    assert [(r.key, r.reads) for r in modalities.rows] == [("CT", 10), ("(no modality)", 1)]
    regions = card(directory, by="body_region")
    assert [(r.key, r.reads, r.graded) for r in regions.rows] == [("head", 11, 4)]
    assert all(r.group is None for r in regions.rows)


def test_only_keeps_one_row_case_ignored(directory: Directory) -> None:
    c = card(directory, only="nt7741")
    assert [r.key for r in c.rows] == ["NT7741"]
    assert card(directory, only="nobody").rows == ()
    g = card(directory, by="group", only="NOCTURNA TELERADIOLOGY")
    assert [r.key for r in g.rows] == ["Nocturna Teleradiology"]


# ------------------------------------------------------------------ window


def test_window_edges(directory: Directory) -> None:
    """A version counts when its clinical time is in [since, until): since included, until excluded."""
    outcomes = [
        outcome("E1", [entry(1, "preliminary", "NT7741", report=SINCE)], []),
        outcome("E2", [entry(2, "preliminary", "NT7741", report=UNTIL - timedelta(microseconds=1))], []),
        outcome("E3", [entry(3, "preliminary", "NT7741", report=UNTIL)], []),
        outcome("E4", [entry(4, "preliminary", "NT7741", report=SINCE - timedelta(seconds=1))], []),
        # No report time: the receive time decides.
        outcome("E5", [entry(5, "preliminary", "NT7741", report=None, received=SINCE + timedelta(days=1))], []),
        outcome("E6", [entry(6, "preliminary", "NT7741", report=None, received=UNTIL + timedelta(days=1))], []),
    ]
    c = scorecard(outcomes, by="reader", directory=directory, since=SINCE, until=UNTIL)
    assert [(r.key, r.reads) for r in c.rows] == [("NT7741", 3)]


def test_pair_counts_with_its_before_version(directory: Directory) -> None:
    """A prelim in the window whose final comes after it is still overread and graded."""
    outcomes = [
        outcome(
            "W1",
            [
                entry(1, "preliminary", "NT7741", report=UNTIL - timedelta(hours=1)),
                entry(2, "final", "R1311", report=UNTIL + timedelta(hours=1)),
            ],
            [graded("2b", interpretive=1)],
        )
    ]
    c = scorecard(outcomes, by="reader", directory=directory, since=SINCE, until=UNTIL, min_reads=1)
    assert [(r.key, r.reads, r.overread, r.graded) for r in c.rows] == [("NT7741", 1, 1, 1)]
    assert c.rows[0].prelim_to_final_minutes.median == 120.0


def test_negative_interval_is_left_out(directory: Directory) -> None:
    outcomes = [
        outcome(
            "N1",
            [
                # The exam time is after the report time: a clock error, no turnaround.
                entry(1, "preliminary", "NT7741", report=at(1), observation=at(1, 30)),
                entry(2, "final", "R1311", report=at(2)),
            ],
            [graded("1")],
        )
    ]
    r = row(scorecard(outcomes, by="reader", directory=directory, since=SINCE, until=UNTIL), "NT7741")
    assert r.prelim_minutes.count == 0 and r.prelim_to_final_minutes.count == 1


# ------------------------------------------------------------------ documents


def test_json_document(directory: Directory) -> None:
    doc = card(directory, min_reads=2).to_json()
    text = json.dumps(doc)
    assert "MRN-SECRET" not in text and "DOE" not in text
    assert doc["document_version"] == 1
    assert doc["by"] == "reader"
    assert doc["window"] == {"since": SINCE.isoformat(), "until": UNTIL.isoformat()}
    assert doc["min_reads"] == 2
    nt = doc["rows"][1]
    assert nt["key"] == "NT7741" and nt["group"] == "Nocturna Teleradiology"
    for key in ("reads", "overread", "graded", "discrepancies", "too_few", "note", "interpretive_share"):
        assert key in nt
    for key in ("operational_share", "qa_defects", "turnaround", "corrected", "addendum", "disagreements"):
        assert key in nt
    assert list(nt["discrepancies"]) == list(DISCREPANCY_KEYS)
    assert nt["discrepancies"]["significant"] == {
        "count": 2,
        "of": 3,
        "rate": round(2 / 3, 6),
        "low": round(wilson(2, 3)[0], 6),
        "high": round(wilson(2, 3)[1], 6),
    }
    assert nt["turnaround"] == {
        "prelim_minutes": {"count": 2, "median": 45.0, "p90": 60.0},
        "prelim_to_final_minutes": {"count": 3, "median": 240.0, "p90": 600.0},
    }
    assert nt["qa_defects"]["laterality"] == {"count": 1, "of": 3, "rate": round(1 / 3, 6)}
    assert nt["corrected"] == {"count": 0, "of": 0, "rate": None}
    nt2 = doc["rows"][2]
    assert nt2["key"] == "NT7802" and nt2["too_few"] and nt2["discrepancies"]["any"]["rate"] is None
    group_doc = card(directory, by="group").to_json()
    assert "group" not in group_doc["rows"][0] and group_doc["rows"][1]["readers"] == ["NT7741", "NT7802"]


def test_text_table_is_aligned_with_a_legend(directory: Directory) -> None:
    text = render_text(card(directory, min_reads=2))
    lines = text.splitlines()
    assert lines[0].startswith("scorecard by reader, 2026-03-01T00:00:00+00:00 to 2026-03-31T00:00:00+00:00 (4 rows)")
    header = lines[1]
    assert header.split()[:3] == ["reader", "group", "reads"]
    column = header.index("reads")
    body = lines[2:6]
    assert [line.split()[0] for line in body] == ["R1311", "NT7741", "NT7802", "X999"]
    assert [line[column:].split()[0] for line in body] == ["6", "3", "1", "1"]
    nt = body[1]
    assert "2/3 66.7% [" in nt  # any discrepancy, with its interval
    assert "45/60 (n=2)" in nt and "240/600 (n=3)" in nt
    assert "no graded reads: too few for a rate (needs 2)" in body[2]
    assert "0/1 -" in body[2]  # NT7802: too few, no rate
    legend = lines[6]
    assert "95% Wilson interval" in legend and "below 2 (too few for a rate)" in legend
    assert "QA defects at submit time" in text
    assert "  NT7741: communication 2/3 66.7%, laterality 1/3 33.3%" in lines


def test_text_without_rows(directory: Directory) -> None:
    text = render_text(card(directory, only="nobody"))
    assert "no reads in the window for 'nobody'" in text


def test_csv_one_row_per_subject(directory: Directory) -> None:
    text = render_csv(card(directory, min_reads=2))
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["key"] for r in rows] == ["R1311", "NT7741", "NT7802", "X999"]
    nt = rows[1]
    assert nt["group"] == "Nocturna Teleradiology"
    assert (nt["reads"], nt["graded"], nt["too_few"], nt["note"]) == ("3", "3", "false", "")
    assert float(nt["any_rate"]) == pytest.approx(2 / 3, abs=1e-5)
    assert float(nt["significant_low"]) == pytest.approx(wilson(2, 3)[0], abs=1e-5)
    assert (nt["prelim_minutes_median"], nt["prelim_to_final_minutes_p90"]) == ("45", "600")
    assert (nt["qa_communication_count"], nt["qa_laterality_count"]) == ("2", "1")
    assert nt["corrected_rate"] == ""  # no finals
    nt2 = rows[2]
    assert nt2["too_few"] == "true" and nt2["any_rate"] == "" and nt2["any_low"] == ""
    # A category the row does not have: 0, and no rate below min_reads.
    assert (nt2["qa_communication_count"], nt2["qa_communication_rate"]) == ("0", "")
    r1311 = rows[0]
    assert (r1311["qa_communication_count"], r1311["qa_communication_rate"]) == ("0", "0")
    assert float(r1311["corrected_rate"]) == pytest.approx(0.2)
