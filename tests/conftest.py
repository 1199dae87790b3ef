"""Shared fixtures: the corpus location, the default pipeline, a fixed clock."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from listener.config import load_config
from listener.pipeline import Pipeline

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"
RECEIVED = datetime(2026, 11, 20, 7, 30, tzinfo=timezone.utc)


@pytest.fixture(name="pipeline", scope="session")
def fixture_pipeline() -> Pipeline:
    """The pipeline built from the repository's own mappings and tables."""
    return load_config(None).pipeline()


@pytest.fixture(name="corpus", scope="session")
def fixture_corpus() -> Path:
    """../shared/corpus, read at test time (never copied into the project)."""
    if not CORPUS.is_dir():
        pytest.fail(f"shared corpus not found at {CORPUS}")
    return CORPUS
