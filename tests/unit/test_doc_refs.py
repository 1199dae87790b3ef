"""Every ``docs/*.md`` a comment or docstring cites exists in the repository."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conftest import REPO

# A path that starts at the repository root ("docs/x.md"), not a longer path ending in it.
_DOC_REF = re.compile(r"(?<![\w./-])docs/[\w./-]+?\.md\b")

_SCANNED = ("listener", "tests", "bench", "fuzz")


def _references() -> dict[str, list[str]]:
    """Cited doc path -> the files (relative to the repository) that cite it."""
    cited: dict[str, list[str]] = {}
    for top in _SCANNED:
        for path in sorted((REPO / top).rglob("*.py")):
            if path.resolve() == Path(__file__).resolve():
                continue  # this file's examples are not citations
            text = path.read_text(encoding="utf-8")
            for ref in set(_DOC_REF.findall(text)):
                cited.setdefault(ref, []).append(str(path.relative_to(REPO)))
    return cited


def test_cited_docs_exist() -> None:
    """A citation of a missing docs/ file (renamed, merged, never written) fails here."""
    missing = {ref: files for ref, files in _references().items() if not (REPO / ref).is_file()}
    assert not missing, f"cited docs that do not exist: {missing}"


def test_the_scan_sees_the_citations() -> None:
    """The pattern finds citations at all (the listener cites several docs)."""
    cited = _references()
    assert "docs/operations.md" in cited and "docs/qa-rules.md" in cited


def test_pattern_skips_longer_paths() -> None:
    """Only paths from the repository root count: ``site/docs/x.md`` is another tree's."""
    assert _DOC_REF.findall("see docs/routing.md, (docs/cli.md) and site/docs/other.md") == [
        "docs/routing.md",
        "docs/cli.md",
    ]
