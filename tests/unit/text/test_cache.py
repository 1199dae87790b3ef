"""TextCache: one report's text analysis results, shared by whoever the caller hands it to."""

from __future__ import annotations

from listener.text import (
    TextCache,
    definite_statements,
    find_mentions,
    hedge_count,
    lateral_mentions,
    split_sentences,
)
from listener.text.terms import Terms

TEXT = (
    "FINDINGS: Small left pleural effusion. No pneumothorax. Possible right lower lobe pneumonia.\n"
    "IMPRESSION: Left effusion. Pneumonia cannot be excluded."
)


def test_a_region_is_split_once_per_cache() -> None:
    cache = TextCache()
    first = split_sentences(TEXT, 0, None, cache=cache)
    assert split_sentences(TEXT, 0, None, cache=cache) is first
    assert split_sentences(TEXT, 0, None) == first
    assert split_sentences(TEXT, 0, None) is not first  # no cache: computed afresh


def test_cached_results_equal_uncached_ones(terms: Terms) -> None:
    cache = TextCache()
    for _ in range(2):
        assert find_mentions(TEXT, 0, None, terms, cache=cache) == find_mentions(TEXT, 0, None, terms)
        assert lateral_mentions(TEXT, 0, None, terms, cache=cache) == lateral_mentions(TEXT, 0, None, terms)
        assert hedge_count(TEXT, 0, None, terms, cache=cache) == hedge_count(TEXT, 0, None, terms)
        assert definite_statements(TEXT, 0, None, terms, cache=cache) == definite_statements(TEXT, 0, None, terms)
    assert cache.sentences and cache.mentions and cache.sides and cache.modifiers


def test_mentions_are_found_once_per_cache(terms: Terms) -> None:
    cache = TextCache()
    first = find_mentions(TEXT, 0, None, terms, cache=cache)
    assert find_mentions(TEXT, 0, None, terms, cache=cache) is first
    assert find_mentions(TEXT, 0, None, terms) is not first


def test_one_cache_keeps_two_texts_apart(terms: Terms) -> None:
    other = TEXT.replace("left", "right").replace("Left", "Right")
    cache = TextCache()
    mine = find_mentions(TEXT, 0, None, terms, cache=cache)
    theirs = find_mentions(other, 0, None, terms, cache=cache)
    assert mine == find_mentions(TEXT, 0, None, terms)
    assert theirs == find_mentions(other, 0, None, terms)
    assert mine != theirs


def test_a_new_cache_starts_empty() -> None:
    cache = TextCache()
    assert (cache.sentences, cache.mentions, cache.sides, cache.modifiers) == ({}, {}, {}, {})
