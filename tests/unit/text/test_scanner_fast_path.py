"""Scanner.scan (C finder + key lookup) equals the token-by-token reference loop, exactly."""

from __future__ import annotations

import re
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listener.text.scanner import Scanner, build_scanner
from listener.text.scanner import cased_class as _cased_class
from listener.text.scanner import key_finder as _key_finder
from listener.text.terms import Terms

#: Words that start keys of the shipped vocabularies, words that start none,
#: and characters whose lower case is unusual (dotted I, Kelvin sign, long s,
#: dotless i, sigma) or that are word characters without being letters.
WORDS = [
    "no",
    "not",
    "No",
    "NOT",
    "without",
    "left",
    "Right",
    "bilateral",
    "L",
    "R",
    "Lt",
    "pneumothorax",
    "effusion",
    "EFFUSIONS",
    "edema",
    "opacity",
    "history",
    "possible",
    "cannot",
    "rule",
    "out",
    "negative",
    "for",
    "the",
    "and",
    "of",
    "lung",
    "knee",
    "in place",
    "left in place",
    "no change",
    "free air",
    "mass",
    "nodule",
    "fracture",
    "change",
    "in",
    "place",
    "air",
    "free",
    # a side word that starts a concept's match: each scanner keeps its own floor
    "bibasilar",
    "opacities",
]
ODD = "\u0130\u0131\u212a\u017f\u03a3\u03c3\u03c2\u00df\u1e9e_0123456789"
ALPHABET = "abcdefghiklmnoprstuvwxyzABEFILNORT :;?,.-/()'\n\t\r" + ODD

pieces = st.one_of(
    st.sampled_from(WORDS),
    st.text(alphabet=ALPHABET, min_size=1, max_size=4),
    # (the separators \x1c-\x1f are blank space to a str pattern's \s, not to re.ASCII's: the lowered
    # finder counts them as blank space too)
    st.sampled_from([" ", "  ", "\n", ", ", ". ", ": ", "-", "/", "\x1c", "\x1f ", "\x0b", "_"]),
)
texts = st.lists(pieces, max_size=40).map("".join)


def signature(matches: list[re.Match[str]]) -> list[tuple[object, ...]]:
    """Everything a caller can see of a match: span, every group's span, the pattern."""
    return [(m.span(), tuple(m.span(g) for g in range(1, m.re.groups + 1)), m.re.pattern) for m in matches]


#: Overlapping multi-word patterns: a match swallows the next candidate token.
OVERLAPPING = build_scanner(
    [
        ("pseudo", ("no change", "free air", "left in place")),
        ("neg", ("no", "not")),
        ("word", ("change", "air", "in", "place", "l")),
    ]
)


def shipped(terms: Terms) -> list[Scanner]:
    side = terms.laterality.side_scanner
    assert side is not None
    return [terms.concept_scanner, terms.modifier_scanner, side, OVERLAPPING]


def test_shipped_scanners_use_the_finder(terms: Terms) -> None:
    """Every shipped scanner has only known starts, so the fast path is what runs (and what the other tests check)."""
    for scanner in shipped(terms)[:3]:
        assert scanner.default is None
        assert scanner._finder is not None
        assert scanner._lower_finder is not None


ascii_pieces = st.one_of(
    st.sampled_from(WORDS),
    st.text(alphabet=ALPHABET.translate({ord(c): None for c in ODD if not c.isascii()}), min_size=1, max_size=4),
    # (the separators \x1c-\x1f are blank space to a str pattern's \s, not to re.ASCII's: the lowered
    # finder counts them as blank space too)
    st.sampled_from([" ", "  ", "\n", ", ", ". ", ": ", "-", "/", "\x1c", "\x1f ", "\x0b", "_"]),
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.lists(ascii_pieces, max_size=40).map("".join), data=st.data())
def test_lowered_ascii_scan_equals_token_loop(terms: Terms, text: str, data: st.DataObject) -> None:
    """On ASCII text (scanned through its lowered copy) and any window, scan() returns scan_tokens()'s matches."""
    assert text.isascii()
    n = len(text)
    start = data.draw(st.integers(min_value=0, max_value=n + 2), label="start")
    end = data.draw(st.one_of(st.none(), st.integers(min_value=0, max_value=n + 3)), label="end")
    for variant in (text, text.upper(), text.swapcase()):
        for scanner in shipped(terms):
            assert signature(scanner.scan(variant, start, end)) == signature(scanner.scan_tokens(variant, start, end))


def test_non_ascii_region_takes_the_cased_finder(terms: Terms) -> None:
    """One non-ASCII character in the region and the scan reads the original text: same matches as the token loop."""
    text = "No left effusion. \u0130 Right pneumothorax is not excluded."
    scanner = terms.concept_scanner
    found = scanner.scan(text)
    assert [m.group(0) for m in found] == [m.group(0) for m in scanner.scan_tokens(text)]
    assert "pneumothorax" in [m.group(0) for m in found]
    # The same region without the dotted capital I is ASCII and finds the same findings.
    plain = text.replace("\u0130", "I")
    assert [m.group(0) for m in scanner.scan(plain)] == [m.group(0) for m in found]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, data=st.data())
def test_fast_scan_equals_token_loop(terms: Terms, text: str, data: st.DataObject) -> None:
    """On generated text and any (start, end) window, scan() returns exactly scan_tokens()'s matches."""
    n = len(text)
    start = data.draw(st.integers(min_value=0, max_value=n + 2), label="start")
    end = data.draw(st.one_of(st.none(), st.integers(min_value=0, max_value=n + 3)), label="end")
    for scanner in shipped(terms):
        assert signature(scanner.scan(text, start, end)) == signature(scanner.scan_tokens(text, start, end))


@settings(max_examples=200, deadline=None)
@given(text=texts)
def test_fast_scan_equals_token_loop_on_case_changes(terms: Terms, text: str) -> None:
    """Upper-cased and swap-cased text (where str.lower and the finder's classes must agree) give the same matches."""
    for variant in (text, text.upper(), text.swapcase()):
        for scanner in shipped(terms):
            assert signature(scanner.scan(variant)) == signature(scanner.scan_tokens(variant))


def test_a_match_hides_the_candidates_inside_it() -> None:
    """Matches never overlap: "change" inside "no change" is not reported again."""
    text = "No change; left in place. Change"
    assert [m.group(0) for m in OVERLAPPING.scan(text)] == ["No change", "left in place", "Change"]
    assert signature(OVERLAPPING.scan(text)) == signature(OVERLAPPING.scan_tokens(text))


def test_cased_classes_cover_every_code_point() -> None:
    """Each character whose lower case starts with an ASCII character is in that character's class."""
    classes = {chr(a): re.compile(_cased_class(chr(a))) for a in range(128)}
    missing = []
    for cp in range(sys.maxunicode + 1):
        c = chr(cp)
        low = c.lower()
        if low[:1].isascii() and low and classes[low[0]].fullmatch(c) is None:
            missing.append(hex(cp))
    assert missing == []


def test_scanner_with_unknown_starts_keeps_the_token_loop() -> None:
    """A pattern with no literal start gives a default alternation; then there is no finder and results are unchanged."""
    scanner = build_scanner([("a", (r"\d+ mm",)), ("b", ("no",))])
    assert scanner.default is not None
    assert scanner._finder is None
    text = "No 12 mm nodule; no 3 mm"
    assert [m.group(0) for m in scanner.scan(text)] == ["No", "12 mm", "no", "3 mm"]


def test_non_ascii_keys_keep_the_token_loop() -> None:
    """A key with a non-ASCII character is compared only by str.lower, so no finder is built for it."""
    assert _key_finder(["\u00e9p"]) is None
    scanner = build_scanner([("a", ("\u00e9panchement",)), ("b", ("no",))])
    assert scanner._finder is None
    assert [m.group(0) for m in scanner.scan("no \u00c9panchement")] == ["no", "\u00c9panchement"]


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ("nonono", 2, None),  # a window starting inside a word: its first token starts there
        ("left knee", 0, 2),  # the key reaches past the window's end
        ("xno no", 1, None),
        ("no", 5, None),
        ("", 0, None),
    ],
)
def test_window_edges(terms: Terms, text: str, start: int, end: int | None) -> None:
    """Windows that start mid-word, end mid-key or lie past the text agree with the token loop."""
    for scanner in shipped(terms):
        assert signature(scanner.scan(text, start, end)) == signature(scanner.scan_tokens(text, start, end))


def test_lowered_finder_captures_the_longest_key() -> None:
    """The lowered finder's group 1 is the longest key its token starts with, at the token's start."""
    finder = _key_finder(["no", "not", "nodul", "eff", "?"], lowered=True)
    assert finder is not None
    found = [(m.start(1), m.group(1)) for m in finder.finditer("a nodule, not no effusion? x") if m.start(1) >= 0]
    assert found == [(2, "nodul"), (10, "not"), (14, "no"), (17, "eff"), (25, "?")]


def test_ascii_classes_are_the_str_patterns_classes_on_ascii() -> None:
    """On every ASCII character, ``re.ASCII``'s ``\\w`` and ``[\\s\\x1c-\\x1f]`` (the lowered finder's and
    RegionIndex's) hold exactly where a str pattern's ``\\w`` and ``\\s`` do."""
    from listener.text.scanner import _ASCII_SPACE

    space, word = re.compile(rf"[{_ASCII_SPACE}]", re.ASCII), re.compile(r"\w", re.ASCII)
    for code in range(128):
        ch = chr(code)
        assert bool(space.match(ch)) == bool(re.match(r"\s", ch)), code
        assert bool(word.match(ch)) == bool(re.match(r"\w", ch)), code


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=texts, data=st.data())
def test_shared_walk_scan_equals_token_loop(terms: Terms, text: str, data: st.DataObject) -> None:
    """One walk of the shared finder, read by each shipped scanner, gives exactly scan_tokens()'s matches,
    on any window, case and text (a walk of a non-ASCII region is None: the scanner's own finder runs)."""
    shared = terms.shared_finder
    assert shared is not None
    n = len(text)
    start = data.draw(st.integers(min_value=0, max_value=n + 2), label="start")
    end = data.draw(st.one_of(st.none(), st.integers(min_value=0, max_value=n + 3)), label="end")
    for variant in (text, text.upper(), text.swapcase()):
        walked = shared.walk(variant, start, end)
        hi = len(variant) if end is None else end  # ("ß".upper() is "SS": a variant can be longer)
        assert (walked is None) == (not variant[start : hi + 4].isascii())
        walks: dict[object, object] = {}
        for scanner in shipped(terms)[:3]:
            expected = signature(scanner.scan_tokens(variant, start, end))
            assert signature(scanner.scan(variant, start, end, walked=walked)) == expected
            assert signature(shared.scan(scanner, variant, start, hi, walks)) == expected
        # The three scanners read one walk (the memo's other entry: whether the text's ASCII forms apply).
        assert [k for k in walks if k[0] is shared] == [(shared, variant, start, hi)]  # type: ignore[index]


def test_one_pass_keeps_each_scanners_own_floor(terms: Terms) -> None:
    """The shared finder's one pass over a walk matches the three scanners apart: a concept match that
    starts at a side word ("Bibasilar opacities") or covers a trigger leaves those to their scanners."""
    shared = terms.shared_finder
    assert shared is not None
    for text in ("Bibasilar opacities, possible edema.", "No change in the right lower lobe pneumonia."):
        walks: dict[object, object] = {}
        found = [signature(shared.scan(sc, text, 0, len(text), walks)) for sc in shipped(terms)[:3]]
        assert found == [signature(sc.scan_tokens(text, 0, len(text))) for sc in shipped(terms)[:3]]
    assert found[0] and found[1]  # (the last text has a concept and a trigger)


def test_shared_finder_holds_every_scanners_keys(terms: Terms) -> None:
    """The shared finder stops at a token with the longest key of the three scanners' that it starts with;
    a scanner reads its own longest key off it."""
    shared = terms.shared_finder
    assert shared is not None
    walked = shared.walk("No left pleural effusion.", 0)
    assert walked is not None
    keys = dict(walked.candidates)
    assert keys[0] == "no" and keys[3].startswith("left")
    assert terms.modifier_scanner._own_key(keys[0]) == "no"
    assert terms.concept_scanner._own_key("zzzzz") == ""
    assert walked.ascii_form
    with_separator = shared.walk("no\x1ceffusion", 0)
    assert with_separator is not None and not with_separator.ascii_form


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.lists(ascii_pieces, max_size=40).map("".join), data=st.data())
def test_a_region_reads_a_wider_walk_from_its_start(terms: Terms, text: str, data: st.DataObject) -> None:
    """A region scanned after a wider one from the same start (a section's first sentence after the
    section) reads that walk and finds exactly scan_tokens()'s matches; one from another start walks
    on its own."""
    shared = terms.shared_finder
    assert shared is not None
    n = len(text)
    start = data.draw(st.integers(min_value=0, max_value=n), label="start")
    wide = data.draw(st.integers(min_value=start, max_value=n + 3), label="wide")
    narrow = data.draw(st.integers(min_value=start, max_value=wide), label="narrow")
    other = data.draw(st.integers(min_value=0, max_value=n), label="other start")
    walks: dict[object, object] = {}
    for scanner in shipped(terms)[:3]:
        shared.scan(scanner, text, start, wide, walks)
    wide_walk = walks[(shared, text, start, wide)][0]  # type: ignore[index]
    for lo, hi in ((start, narrow), (other, max(other, narrow))):
        for scanner in shipped(terms)[:3]:
            expected = signature(scanner.scan_tokens(text, lo, hi))
            assert signature(shared.scan(scanner, text, lo, hi, walks)) == expected
    assert walks[(shared, text, start, narrow)][0] is wide_walk  # type: ignore[index]
