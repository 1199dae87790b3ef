"""``overread serve``'s flags over the config file (docs/cli.md, "overread serve"): ``--workers``."""

from __future__ import annotations

from pathlib import Path

import pytest

from listener.cli import build_parser, daemon_config
from listener.config import load_config, usable_cores


def serve_config(tmp_path: Path, config: str, *flags: str) -> int:
    """The ``workers`` a daemon started with ``flags`` and a config file holding ``config`` runs."""
    path = tmp_path / "overread.yaml"
    path.write_text(config, encoding="utf-8")
    args = build_parser().parse_args(["serve", "--config", str(path), *flags])
    return daemon_config(args, load_config(path)).workers


def test_workers_flag_wins_over_the_file(tmp_path: Path) -> None:
    assert serve_config(tmp_path, "workers: 3\n") == 3
    assert serve_config(tmp_path, "workers: 3\n", "--workers", "0") == 0
    assert serve_config(tmp_path, "workers: 0\n", "--workers", "auto") == usable_cores()
    assert serve_config(tmp_path, "pipeline_workers: 2\n", "--workers", "2") == 2


def test_no_flag_and_no_key_is_auto(tmp_path: Path) -> None:
    assert serve_config(tmp_path, "pipeline_workers: 2\n") == usable_cores()


@pytest.mark.parametrize("value", ["-1", "two", "1.5", ""])
def test_a_bad_workers_flag_is_refused_by_name(value: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stop:
        build_parser().parse_args(["serve", "--workers", value])
    assert stop.value.code == 2
    assert "argument --workers" in capsys.readouterr().err
