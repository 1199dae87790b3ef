"""inside_any answers "does any span hold this offset?" exactly as the scan over every span did."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from listener.text.scope import inside_any

_SPANS = st.lists(st.tuples(st.integers(0, 60), st.integers(0, 60)), max_size=25)


@given(spans=_SPANS, points=st.lists(st.integers(-5, 70), max_size=30))
def test_inside_any_equals_any_over_the_spans(spans: list[tuple[int, int]], points: list[int]) -> None:
    # Overlapping, nested, empty and reversed spans included: only start <= offset < end holds.
    inside = inside_any(spans)
    for point in points:
        assert inside(point) == any(start <= point < end for start, end in spans)


def test_a_nested_span_does_not_hide_the_longer_one_around_it() -> None:
    # [0, 100) holds 50 although the span starting nearest before it, [10, 20), ends before it.
    inside = inside_any([(0, 100), (10, 20)])
    assert inside(50)
    assert not inside(100)
    assert not inside_any([])(0)
