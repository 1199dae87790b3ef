"""The comparisons cache: derived results by key, replaced on a new write, dropped at will."""

from __future__ import annotations

from datetime import timedelta, timezone

import pytest

from listener.store import CachedComparison, Store

from .records import T0


def _item(key: str, result: str = '{"grade": "1"}', accession: str = "A1") -> CachedComparison:
    return CachedComparison(key, accession, T0, result)


def test_cached_results_are_found_by_key_only(store: Store) -> None:
    assert store.cached_comparisons(["k1"]) == {}
    assert store.cache_comparisons([_item("k1"), _item("k2", '{"grade": "2b"}', "A2")]) == 2
    assert store.cached_comparisons(["k2", "k1", "missing", "k1"]) == {"k1": '{"grade": "1"}', "k2": '{"grade": "2b"}'}
    assert store.cached_comparisons([]) == {}
    assert store.cache_comparisons([]) == 0


def test_a_key_written_again_is_replaced(store: Store) -> None:
    store.cache_comparisons([_item("k1")])
    later = CachedComparison("k1", "A1", T0.astimezone(timezone(timedelta(hours=-6))), '{"grade": "3b"}')
    assert store.cache_comparisons([later]) == 1
    assert store.cached_comparisons(["k1"]) == {"k1": '{"grade": "3b"}'}


def test_many_keys_are_read_in_one_call(store: Store) -> None:
    """More keys than one statement takes are all found."""
    items = [_item(f"k{n}", f'{{"n": {n}}}') for n in range(1203)]
    assert store.cache_comparisons(items) == 1203
    found = store.cached_comparisons([i.key for i in items])
    assert len(found) == 1203 and found["k1202"] == '{"n": 1202}'


def test_dropping_the_cache_empties_it_and_keeps_the_rest(store: Store) -> None:
    from .records import record

    pk = store.save(record("C1")).message_pk
    store.cache_comparisons([_item("k1"), _item("k2")])
    assert store.drop_comparisons() == 2
    assert store.cached_comparisons(["k1", "k2"]) == {}
    assert store.drop_comparisons() == 0
    assert store.message_detail(pk) is not None


def test_a_cached_comparison_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="key"):
        _item("")
    with pytest.raises(ValueError, match="computed_at"):
        CachedComparison("k", "A1", T0.replace(tzinfo=None), "{}")
