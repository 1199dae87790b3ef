"""The scanner's own pattern parse: starts and widths, and that it uses public APIs only."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from listener.text.scanner import first_chars, parse_pattern, pattern_widths, prefixes

TEXT = Path(__file__).resolve().parents[3] / "listener" / "text"


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("effusions?", {"eff"}),
        ("(broncho)?pneumonia", {"bro", "pne"}),
        ("no", {"no"}),
        ("n", {"n"}),
        ("(?:left|right)\\s+lung", {"lef", "rig"}),
        ("[Ll]t\\.?", {"lt", "lt."}),
        ("(?<!\\w)no\\b", {"no"}),
        ("\\d+ mm", None),
        (".*", None),
        ("a?", None),
        ("\\1", None),
    ],
)
def test_prefixes(pattern: str, expected: set[str] | None) -> None:
    got = prefixes(pattern)
    assert (set(got) if got is not None else None) == expected


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [
        ("no", (2, 2)),
        ("effusions?", (8, 9)),
        ("(?:a|bcd)e", (2, 4)),
        ("x{2,5}", (2, 5)),
        ("x+", (1, 10_000)),
        ("(?=a)b(?<!c)", (1, 1)),
        ("a{,3}", (0, 3)),
        ("\\s+and\\s+", (5, 10_000)),
    ],
)
def test_widths(pattern: str, expected: tuple[int, int]) -> None:
    assert pattern_widths(pattern) == expected


def test_unknown_constructs_are_unknown_not_errors() -> None:
    for pattern in ("(?x) a", "(a)\\1", "(?(1)a|b)", "\\q", "(unclosed", "[unclosed"):
        assert parse_pattern(pattern) is None
        assert prefixes(pattern) is None
        assert first_chars(pattern) is None
        assert pattern_widths(pattern) == (0, 0)


ATOMS = [
    "a",
    "b",
    "k",
    "K",
    "\\.",
    "\\s",
    "\\w",
    "\\d",
    "[a-c]",
    "[^a]",
    "[a-z]",
    ".",
    "\\b",
    "-",
    "'",
    " ",
    "(?=a)",
    "(?<!\\w)",
]
QUANTIFIERS = ["", "", "", "?", "*", "+", "{2}", "{1,3}", "{,2}", "*?", "+?", "*+"]


@st.composite
def patterns(draw: st.DrawFn, depth: int = 0) -> str:
    kind = draw(st.integers(0, 3 if depth < 3 else 0))
    if kind == 0:
        body = draw(st.sampled_from(ATOMS))
    elif kind == 1:
        body = "(" + draw(patterns(depth + 1)) + ")"
    elif kind == 2:
        body = "(?:" + "|".join(draw(st.lists(patterns(depth + 1), min_size=2, max_size=3))) + ")"
    else:
        body = "".join(draw(st.lists(patterns(depth + 1), min_size=2, max_size=4)))
    return body + draw(st.sampled_from(QUANTIFIERS))


@settings(max_examples=300, deadline=None)
@given(patterns(), st.lists(st.text(alphabet="abkKcz.- 'xé9\u212a", max_size=10), min_size=1, max_size=5))
def test_every_match_starts_with_a_prefix(pattern: str, texts: list[str]) -> None:
    """Soundness: wherever the pattern matches, the text (lower-cased) starts with one of its prefixes."""
    try:
        rx = re.compile(pattern, re.IGNORECASE)
    except re.error:
        return
    pre = prefixes(pattern)
    lo, hi = pattern_widths(pattern)
    for text in texts:
        for i in range(len(text)):
            m = rx.match(text, i)
            if m is None:
                continue
            if pre is not None and m.end() > i:
                assert any(text[i : i + 3].lower().startswith(q) for q in pre), (pattern, text[i:])
            if (lo, hi) != (0, 0):
                assert lo <= m.end() - i <= hi


def test_text_layer_uses_no_private_re_modules() -> None:
    """``re._parser``, ``re._constants``, ``sre_parse`` and friends are CPython internals."""
    private = {"re._parser", "re._constants", "re._compiler", "sre_parse", "sre_constants", "sre_compile"}
    for path in sorted(TEXT.glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                names = {base} | {f"{base}.{a.name}" for a in node.names}
            else:
                continue
            assert not names & private, f"{path.name} imports {sorted(names & private)}"


def test_longer_prefixes_for_the_scanner() -> None:
    """Scanners key on up to five characters; where five give too many starts, three; then the first."""
    assert prefixes("effusions?", 5) == {"effus"}
    assert prefixes("(broncho)?pneumonia", 5) == {"bronc", "pneum"}
    assert prefixes("no", 5) == {"no"}
    assert prefixes("(?:left|right)\\s+lung", 5) == {"left", "right"}
    # 8 x 8 x 8 x 8 starts of five characters are too many; the 8 x 8 of three are not.
    wide = "[a-h][a-h]x[a-h][a-h]y"
    got = prefixes(wide, 5)
    assert got is not None and got == prefixes(wide) and len(got) == 64 and {len(k) for k in got} == {3}
