"""What each field kind accepts (the checks enriched fields pass where they enter)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usersignals.values import KEY, NUMBER, SCALAR, FieldKind, vector


@pytest.mark.parametrize(
    ("kind", "value", "problem"),
    [
        (KEY, "c1", None),
        (KEY, 42, None),
        (KEY, 1.5, "wrong_type"),
        (KEY, True, "wrong_type"),
        (KEY, ["c1"], "wrong_type"),
        (KEY, {"name": "c1"}, "wrong_type"),
        (SCALAR, 1.5, None),
        (SCALAR, False, None),
        (SCALAR, float("nan"), "not_finite"),
        (SCALAR, ["c1"], "wrong_type"),
        (NUMBER, 3, None),
        (NUMBER, "3", "wrong_type"),
        (NUMBER, True, "wrong_type"),
        (NUMBER, float("inf"), "not_finite"),
        (vector(3), [0.5, 1, -2.0], None),
        (vector(3), ["0.5", "1", "2"], "wrong_type"),
        (vector(3), [0.5, True, 1.0], "wrong_type"),
        (vector(3), [0.5, 1.0], "wrong_length"),
        (vector(3), [0.5, float("nan"), 1.0], "not_finite"),
        (vector(3), [1e308, 1e308, 1e308], "not_finite"),
        (vector(3), "abc", "wrong_type"),
    ],
)
def test_field_kinds(kind: FieldKind, value: object, problem: str | None) -> None:
    assert kind.problem(value) == problem


components = st.one_of(
    st.floats(),  # NaN and the infinities included
    st.sampled_from([1e308, -1e308, 1.7e308, 5e307, 0.0, -0.0]),  # sums near overflow
    st.integers(-(2**70), 2**70),
    st.sampled_from([10**400, True, False, None, "1.5", [1.0], 1 + 0j]),
)


class FloatSubclass(float):
    """A float of another type: the check wants exactly int and float, as Python's does."""


@settings(max_examples=400, deadline=None)
@given(
    value=st.one_of(
        st.lists(components, max_size=5),
        st.lists(components, max_size=5).map(tuple),
        st.lists(st.floats(allow_nan=False), max_size=5).map(lambda v: [*map(FloatSubclass, v)]),
        st.sampled_from(["abc", b"abc", None, 3, {"a": 1}, {1.0, 2.0}]),
    ),
    dim=st.integers(0, 5),
)
def test_the_core_vector_check_gives_pythons_verdict(value: object, dim: int) -> None:
    """The Materializer checks a vector in the core's one pass where it is sure, in Python
    (``vector_problem_exactly``, with math.fsum) otherwise: the same verdict either way."""
    kind = vector(dim)
    assert kind.problem(value) == kind.vector_problem_exactly(value)
