"""``frozen_builder`` (listener/model.py): the mentions' constructor builds what the dataclass's own does."""

from __future__ import annotations

from dataclasses import FrozenInstanceError, dataclass, fields

import pytest
from hypothesis import given
from hypothesis import strategies as st

from listener.model import frozen_builder
from listener.text.context import Cue, Mention, _new_mention

#: Mention compiled by mypyc (docs/development.md, "Compiled modules"): its fields are C members,
#: ints and bools unboxed, and ``frozen_builder`` gives the class itself.
COMPILED = "__mypyc_attrs__" in vars(Mention)

_VALUES = st.tuples(
    st.text(max_size=8),  # concept
    st.text(max_size=8),  # text
    st.integers(),
    st.integers(),
    st.integers(),
    st.integers(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["patient", "other"]),
    st.sampled_from(["", "left", "right", "bilateral"]),
    st.booleans(),
    st.booleans(),
    st.sampled_from(["", "F", "M"]),
    st.lists(st.builds(Cue, st.text(max_size=4), st.integers(), st.integers()), max_size=2).map(tuple),
)


@given(_VALUES)
def test_new_mention_is_the_dataclass_constructor(values: tuple[object, ...]) -> None:
    """Property: the fast constructor gives an equal mention, each field the very value passed, with the
    same hash, and as frozen as the dataclass's."""
    built, expected = _new_mention(*values), Mention(*values)
    assert type(built) is Mention
    assert built == expected and hash(built) == hash(expected)
    pairs = [(getattr(built, f.name), v) for f, v in zip(fields(Mention), values, strict=True)]
    # Each field the very value passed; compiled, an equal one (an int is stored unboxed).
    assert all(a == v for a, v in pairs) if COMPILED else all(a is v for a, v in pairs)
    with pytest.raises(FrozenInstanceError):
        built.start = 0  # type: ignore[misc]


@pytest.mark.skipif(COMPILED, reason="compiled Mention: _new_mention is the class, whose cues has a default")
def test_a_missing_or_extra_value_is_refused() -> None:
    """Every field needs its value: none is left unset (a slot read would raise later, far from here)."""
    values = ("pneumonia", "pneumonia", 0, 9, 0, 10, False, False, False, False, "patient", "", False, True, "", ())
    assert _new_mention(*values) == Mention(*values)
    with pytest.raises(TypeError):
        _new_mention(*values[:-1])
    with pytest.raises(TypeError):
        _new_mention(*values, ())


def test_only_frozen_slotted_dataclasses_without_post_init() -> None:
    """A class whose ``__init__`` does more than set its fields keeps it."""

    @dataclass(slots=True)
    class Plain:
        a: int

    @dataclass(frozen=True)
    class NoSlots:
        a: int

    @dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError(self.a)

    for cls in (Plain, NoSlots, Checked):
        with pytest.raises(TypeError):
            frozen_builder(cls)
