"""What each field kind accepts (the checks enriched fields pass where they enter)."""

from __future__ import annotations

import pytest

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
