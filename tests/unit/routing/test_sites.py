"""sites.py extensions for routing: peer-review records, directory version, shipped files."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.errors import ConfigError
from listener.sites import ReaderHistory, load_directory, load_readers
from tests.unit.routing.helpers import POLICIES


def test_shipped_directory_loads() -> None:
    """policies/sites.yaml and readers.yaml load; the Nocturna reader is external, with a peer-review record."""
    d = load_directory(POLICIES)
    assert set(d.sites) == {"LEMC", "PVCH"}
    assert d.sites["LEMC"].timezone.key == "America/Chicago"
    nt = d.readers["NT7741"]
    assert nt.type == "external"
    assert nt.history == ReaderHistory(512, 11, "2026-10-31")
    assert len(d.version) == 10


def test_rate() -> None:
    """ReaderHistory.rate is discrepancies / reads, 0 with no reads."""
    assert ReaderHistory(200, 10).rate == pytest.approx(0.05)
    assert ReaderHistory(0, 0).rate == 0.0


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("{reads: 10, discrepancies: 11}", "cannot exceed reads"),
        ("{reads: 10.5, discrepancies: 1}", "whole number"),
        ("{reads: 10, discrepancies: 1, period: Q3}", "unknown key 'period'"),
    ],
)
def test_bad_peer_review_refused(tmp_path: Path, block: str, message: str) -> None:
    """A peer-review record that cannot be true is refused at its line."""
    path = tmp_path / "readers.yaml"
    path.write_text(f"readers:\n  X1:\n    type: external\n    peer_review: {block}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_readers(path)
    assert info.value.line == 4
    assert message in info.value.message


def test_reader_without_history_is_backward_compatible(tmp_path: Path) -> None:
    """A readers.yaml without peer_review still loads (history None)."""
    path = tmp_path / "readers.yaml"
    path.write_text("readers:\n  X1:\n    type: internal\n", encoding="utf-8")
    assert load_readers(path)["X1"].history is None


def test_directory_version_follows_files(tmp_path: Path) -> None:
    """The directory version changes when readers.yaml changes, and is stable otherwise."""
    (tmp_path / "readers.yaml").write_text("readers:\n  X1:\n    type: internal\n", encoding="utf-8")
    first = load_directory(tmp_path).version
    assert load_directory(tmp_path).version == first
    (tmp_path / "readers.yaml").write_text("readers:\n  X1:\n    type: external\n", encoding="utf-8")
    assert load_directory(tmp_path).version != first
