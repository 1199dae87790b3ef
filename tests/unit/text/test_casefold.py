"""Case-sensitive twins of case-insensitive patterns over lower-cased ASCII text: same offsets, same groups."""

from __future__ import annotations

import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from listener.text.cache import TextCache
from listener.text.casefold import lowered_source, lowered_text, lowered_twin
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


def test_twins_without_blank_space_classes_use_ascii_classes() -> None:
    """A twin whose pattern holds no ``\\s``/``\\S`` is compiled with ``re.ASCII``: on every ASCII
    character its ``\\w``, ``\\d`` and ``\\b`` agree with the str pattern's; one with ``\\s`` keeps
    Unicode's classes (``\\x1c``-``\\x1f`` are blank space only there)."""
    from listener.text.casefold import lowered_flags

    assert lowered_flags(r"\bno\w*\d", re.IGNORECASE | re.UNICODE) == re.ASCII
    assert lowered_flags(r"no\s+\w", re.IGNORECASE | re.UNICODE) == re.UNICODE
    twin = lowered_twin(re.compile(r"\b\w\d?\b", re.IGNORECASE))
    assert twin is not None and twin.flags & re.ASCII
    text = "".join(map(chr, range(128))).lower() + " a1 b_ 9"
    assert [m.span() for m in twin.finditer(text)] == [m.span() for m in re.finditer(r"\b\w\d?\b", text)]
    spaced = lowered_twin(re.compile(r"a\sb", re.IGNORECASE))
    assert spaced is not None and not spaced.flags & re.ASCII and spaced.search("a\x1cb")
