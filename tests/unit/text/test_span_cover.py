"""SpanCover answers "does any span hold this point?" exactly as the scan over every span did."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from listener.text.scope import SpanCover

_SPANS = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=25)


@given(spans=_SPANS, points=st.lists(st.integers(-5, 70), max_size=30))
def test_holds_equals_any_over_the_spans(spans: list[tuple[int, int]], points: list[int]) -> None:
    # Overlapping, nested, empty and reversed spans included: only start <= point < end holds.
    cover = SpanCover(spans)
    for point in points:
        assert cover.holds(point) == any(start <= point < end for start, end in spans)


def test_a_nested_span_does_not_hide_the_longer_one_around_it() -> None:
    # [0, 100) holds 50 although the span starting nearest before it, [10, 20), ends before it.
    cover = SpanCover([(0, 100), (10, 20)])
    assert cover.holds(50)
    assert not cover.holds(100)
    assert not SpanCover([]).holds(0)
