"""The samples in samples/hl7 route to the bucket samples/README.md gives them, with exactly the QA
findings samples/expected.yaml lists.

The README table is parsed, so a new sample row is tested without editing
this file. A process_check row also proves the QA rule that finds its
defect reports an error. The findings test fails on any extra or missing rule
id; a sample whose extra finding is a known false alarm being fixed on another
branch (expected.yaml `known_false_alarm`) is a strict xfail, which fails once
the fix lands so that the mark is removed.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from listener.assemble import build_pipeline
from listener.config import load_config
from listener.pipeline import Pipeline, process
from tests.conftest import RECEIVED

REPO = Path(__file__).resolve().parents[3]
ROW = re.compile(r"^\| `([^`]+\.hl7)` \|.*\| `(always_final|selective_overread|process_check|release)`")


def _rows() -> list[tuple[str, str]]:
    rows = []
    for line in (REPO / "samples" / "README.md").read_text(encoding="utf-8").splitlines():
        match = ROW.match(line)
        if match:
            rows.append((match.group(1), match.group(2)))
    return rows


def _expected() -> tuple[dict[str, list[str]], dict[str, str]]:
    doc = yaml.safe_load((REPO / "samples" / "expected.yaml").read_text(encoding="utf-8"))
    return dict(doc["samples"]), dict(doc.get("known_false_alarm") or {})


def _expected_params() -> list[object]:
    expected, known = _expected()
    params: list[object] = []
    for name, rules in sorted(expected.items()):
        marks = (
            [pytest.mark.xfail(strict=True, reason=f"false alarm fixed on branch {known[name]}")]
            if name in known
            else []
        )
        params.append(pytest.param(name, sorted(rules), id=name, marks=marks))
    return params


@pytest.fixture(name="routed_pipeline", scope="module")
def fixture_routed_pipeline() -> Pipeline:
    """The repository's pipeline, which loads policies/routing.yaml."""
    pipe = build_pipeline(load_config(None))
    assert pipe.decide_route is not None
    return pipe


def test_every_readme_row_parsed() -> None:
    """The README table yields a row per sample file (guards the parser above)."""
    files = {p.name for p in (REPO / "samples" / "hl7").glob("*.hl7")}
    assert {name for name, _ in _rows()} == files


@pytest.mark.parametrize(("name", "bucket"), _rows(), ids=[r[0] for r in _rows()])
def test_sample_routes_to_readme_bucket(routed_pipeline: Pipeline, name: str, bucket: str) -> None:
    """Each sample gets the README's routing bucket from the default policy."""
    outcome = process((REPO / "samples" / "hl7" / name).read_bytes(), routed_pipeline, received_at=RECEIVED)
    assert outcome.error is None
    (result,) = outcome.reports
    assert result.route is not None
    if bucket == "process_check":
        assert any(f.severity.value == "error" for f in result.findings), "the defect's QA error is missing"
    assert result.route.bucket == bucket, result.route.explanation
    if result.route.bucket != "release":
        assert result.route.reasons


def test_every_sample_has_expected_findings() -> None:
    """samples/expected.yaml names every sample file, and only those."""
    files = {p.name for p in (REPO / "samples" / "hl7").glob("*.hl7")}
    expected, known = _expected()
    assert set(expected) == files
    assert set(known) <= files


@pytest.mark.parametrize(("name", "rules"), _expected_params())
def test_sample_gets_exactly_the_expected_findings(routed_pipeline: Pipeline, name: str, rules: list[str]) -> None:
    """Each sample's QA findings are exactly the rule ids samples/expected.yaml lists: none extra, none missing."""
    outcome = process((REPO / "samples" / "hl7" / name).read_bytes(), routed_pipeline, received_at=RECEIVED)
    assert outcome.error is None
    (result,) = outcome.reports
    found = sorted(f.rule for f in result.findings)
    assert found == rules, [f"{f.rule} ({f.severity.value}): {f.message}" for f in result.findings]
