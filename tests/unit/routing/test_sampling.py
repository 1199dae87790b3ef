"""Deterministic peer-review sampling: the rate, stability across runs, even spread."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from listener.routing import draw
from tests.unit.routing.helpers import policy_from, report, route

ACCESSIONS = [f"A26{n:07d}" for n in range(10_000)]


@pytest.mark.parametrize("rate", [0.01, 0.05, 0.10, 0.25])
@pytest.mark.parametrize("reader", ["NT7741", "NT7802", "R1042"])
def test_rate_within_one_point_over_10000(reader: str, rate: float) -> None:
    """Over 10,000 accessions each reader is sampled within 1 percentage point of the rate."""
    picked = sum(draw("2026-Q4", reader, acc) < rate for acc in ACCESSIONS)
    assert abs(picked / len(ACCESSIONS) - rate) < 0.01


def test_stable_across_runs() -> None:
    """The draw is a pure hash: pinned values catch any change of algorithm, salt or field order."""
    assert draw("2026-Q4", "NT7741", "A2611200044") == pytest.approx(0.4833047491, abs=1e-9)
    assert [draw("s", "R", acc) for acc in ACCESSIONS[:50]] == [draw("s", "R", acc) for acc in ACCESSIONS[:50]]


def test_stable_in_another_process() -> None:
    """A fresh interpreter with a different PYTHONHASHSEED draws the same values (no per-run state)."""
    code = "from listener.routing import draw; print(repr([draw('2026-Q4', 'NT7741', f'A{i}') for i in range(20)]))"
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert out.stdout.strip() == repr([draw("2026-Q4", "NT7741", f"A{i}") for i in range(20)])


def test_salt_and_reader_change_the_draw() -> None:
    """A new salt, or another reader, draws an independent sample (overlap near rate squared)."""
    base = {acc for acc in ACCESSIONS if draw("2026-Q4", "NT7741", acc) < 0.05}
    other_salt = {acc for acc in ACCESSIONS if draw("2027-Q1", "NT7741", acc) < 0.05}
    other_reader = {acc for acc in ACCESSIONS if draw("2026-Q4", "NT7802", acc) < 0.05}
    assert len(base & other_salt) < 0.01 * len(ACCESSIONS)
    assert len(base & other_reader) < 0.01 * len(ACCESSIONS)


def test_evenly_spread() -> None:
    """Draws fill [0, 1) evenly: each tenth holds 10% +/- 1.5 points, and consecutive accessions do not cluster."""
    values = [draw("2026-Q4", "NT7741", acc) for acc in ACCESSIONS]
    assert all(0.0 <= v < 1.0 for v in values)
    for tenth in range(10):
        share = sum(tenth / 10 <= v < (tenth + 1) / 10 for v in values) / len(values)
        assert abs(share - 0.10) < 0.015
    blocks = [sum(v < 0.05 for v in values[i : i + 1000]) for i in range(0, 10_000, 1000)]
    assert all(20 <= b <= 85 for b in blocks)


def test_sample_condition_in_a_policy(tmp_path: Path) -> None:
    """The ``sample`` condition routes the same accession the same way on every replay."""
    policy = policy_from(
        tmp_path,
        """
        rules:
          peer_review_sample:
            bucket: selective_overread
            when: {reader_type: [external], sample: {rate: 0.05, salt: "2026-Q4"}}
            pool: peer_review
        """,
    )
    routed = [route(report(reader="NT7741", accession=acc), policy).bucket for acc in ACCESSIONS[:2000]]
    again = [route(report(reader="NT7741", accession=acc), policy).bucket for acc in ACCESSIONS[:2000]]
    assert routed == again
    share = routed.count("selective_overread") / len(routed)
    assert 0.03 < share < 0.07
