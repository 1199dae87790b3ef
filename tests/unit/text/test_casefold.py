"""Case-sensitive twins of case-insensitive patterns over lower-cased ASCII text: same offsets, same groups."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listener.text.cache import TextCache
from listener.text.casefold import ascii_form, lowered_source, lowered_text, lowered_twin
from listener.text.laterality import lateral_mentions
from listener.text.terms import Terms


def test_lowered_source_keeps_escapes_and_group_names() -> None:
    """Letters are lower-cased; ``\\S``, ``\\W``, ``\\B`` and group names are not."""
    source = r"(?P<Side>LEFT|Right)\S+\W(?P=Side)\B[A-Z]"
    assert lowered_source(source) == r"(?P<Side>left|right)\S+\W(?P=Side)\B[a-z]"


def test_patterns_without_a_twin() -> None:
    """No twin for an exact pattern, inline flags, a code escape or a non-ASCII pattern: the caller keeps the original."""
    assert lowered_twin(re.compile("left")) is None
    assert lowered_twin(re.compile("(?i)left")) is None
    assert lowered_twin(re.compile(r"\x4Ceft", re.IGNORECASE)) is None  # "L" by its code
    assert lowered_twin(re.compile("\u212aNEE", re.IGNORECASE)) is None  # the Kelvin sign folds to "k"
    twin = lowered_twin(re.compile(r"(?P<s>LEFT)\s+KNEE", re.IGNORECASE))
    assert twin is not None and twin.flags & re.IGNORECASE == 0


def test_lowered_text_only_for_ascii() -> None:
    """A non-ASCII text has no lowered copy (its length could change); a cache keeps one per text."""
    assert lowered_text("Left KNEE", None) == "left knee"
    assert lowered_text("\u0130 left", None) is None
    cache = TextCache()
    first = lowered_text("Left KNEE", cache)
    assert first == "left knee" and lowered_text("Left KNEE", cache) is first
    assert lowered_text("\u0130 left", cache) is None and "\u0130 left" in cache.lowered


def test_shipped_laterality_has_twins(terms: Terms) -> None:
    """The shipped laterality vocabulary compiles to twins, so the cached path is the twin path."""
    assert terms.laterality.lowered is not None


WORDS = [
    "left",
    "Right",
    "RIGHT",
    "bilateral",
    "Bibasilar",
    "bi-apical",
    "L",
    "Rt",
    "knee",
    "KNEE",
    "Lung",
    "lower lobe",
    "Lower Lobe",
    "hip",
    "kidney",
    "breast",
    "subclavian",
    "catheter",
    "chest tube",
    "in place",
    "effusion",
    "of the",
    "side",
    "ventricle",
    "liver",
]
pieces = st.one_of(st.sampled_from(WORDS), st.sampled_from([" ", ", ", ". ", " - ", "\n", ": ", "(", ")"]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(words=st.lists(pieces, max_size=30))
def test_twins_find_the_same_side_words(terms: Terms, words: list[str]) -> None:
    """With a cache (twins over the lowered text) and without (the originals), the same side words and anatomy."""
    text = "".join(words)
    for variant in (text, text.upper(), text.swapcase()):
        assert lateral_mentions(variant, 0, None, terms, cache=TextCache()) == lateral_mentions(variant, 0, None, terms)


_ASCII_FORM_PATTERNS = [
    r"\b\w\d?\b",
    r"no\s+\w+",
    r"[^\s,]+\S",
    r"[\s\d]x",
    r"[]\s]+",
    r"[^]\s]",
    r"\\s\w",
    r"(?<=\s)a\b",
]


@settings(max_examples=400, deadline=None)
@given(text=st.text(alphabet="aB1_ \t\n\x0b\x1c\x1d\x1f,]\\xs-", max_size=30))
def test_ascii_forms_match_as_the_str_patterns_on_ascii_text(text: str) -> None:
    """A twin in ``re.ASCII`` form (``\\s`` widened to the str pattern's ASCII blank space) finds the
    same spans as the str pattern on lower-cased ASCII text, separators ``\\x1c``-``\\x1f`` included."""
    low = text.lower()
    for source in _ASCII_FORM_PATTERNS:
        twin = lowered_twin(re.compile(source, re.IGNORECASE))
        assert twin is not None and twin.flags & re.ASCII, source
        assert [m.span() for m in twin.finditer(low)] == [m.span() for m in re.finditer(source, low)], source


def test_ascii_form_keeps_what_it_cannot_widen() -> None:
    """A ``\\S`` inside a class, or a verbose pattern, keeps the str pattern's classes."""
    assert ascii_form(r"[\S,]", re.IGNORECASE | re.UNICODE) == (r"[\S,]", re.UNICODE)
    assert ascii_form(r"a \s", re.VERBOSE | re.UNICODE) == (r"a \s", re.VERBOSE | re.UNICODE)
    assert ascii_form(r"a\sb", re.IGNORECASE | re.UNICODE) == (r"a[\s\x1c-\x1f]b", re.ASCII)
