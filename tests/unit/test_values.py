"""What each field kind accepts (the checks enriched fields pass where they enter)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usersignals._core import CHECK_UNSURE, check_records
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
        (vector(2), [float("inf"), float("-inf")], "not_finite"),  # fsum raises ValueError
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
    """A float of another type: the key and vector kinds want exactly int and float."""


class StrSubclass(str):
    """A str of another type: a key wants exactly str."""


field_values = st.one_of(
    components,
    st.lists(components, max_size=4),
    st.lists(components, max_size=4).map(tuple),
    st.lists(st.floats(allow_nan=False), max_size=4).map(lambda v: [*map(FloatSubclass, v)]),
    st.sampled_from([FloatSubclass(1.5), StrSubclass("c1"), b"c1", {"a": 1}, "c1", 7]),
)
kinds = st.sampled_from([KEY, SCALAR, NUMBER, vector(0), vector(2), vector(4)])
FIELDS = ["a", "b", "c"]


@settings(max_examples=300, deadline=None)
@given(
    records=st.lists(
        st.one_of(
            st.dictionaries(st.sampled_from(FIELDS), field_values, max_size=3),
            st.sampled_from([b"raw", None, ["a"]]),  # not a record
        ),
        max_size=6,
    ),
    expected=st.dictionaries(st.sampled_from(FIELDS), st.lists(kinds, min_size=1, max_size=2)),
)
def test_the_core_record_check_gives_pythons_verdicts(
    records: list[object], expected: dict[str, list[FieldKind]]
) -> None:
    """The Materializer checks a batch of records in the core: each record's problems are
    what ``FieldKind.problem`` (the reference) finds, field by field, where the core is sure;
    elsewhere it says so, and Python decides."""
    codes = [(name, [kind.code for kind in field_kinds]) for name, field_kinds in expected.items()]
    found = {(index, name): reason for index, name, reason in check_records(records, codes)}
    for index, record in enumerate(records):
        if not isinstance(record, dict):
            assert found.pop((index, "*")) == "not_an_object"
            continue
        for name, field_kinds in expected.items():
            value = record.get(name)
            reasons = [kind.problem(value) for kind in field_kinds] if value is not None else []
            first = next((r for r in reasons if r is not None), None)
            core = found.pop((index, name), None)
            if core == CHECK_UNSURE:  # only for what takes fsum: a list of numbers
                assert any(kind.name == "vector" for kind in field_kinds)
                assert isinstance(value, list | tuple), value
            else:
                assert core == first, (value, field_kinds)
    assert not found


TRICKY = [
    "c1", StrSubclass("c1"), 7, True, 1.5, FloatSubclass(1.5), FloatSubclass("inf"),
    float("nan"), float("-inf"), 10**400, b"c1", [1.0, 2], (1, 2.5), [1, True], [1e308, 1e308],
    [float("nan"), 0.0], [FloatSubclass(1.0), 2.0], ["a", 1], {"a": 1},
]  # fmt: skip


@pytest.mark.parametrize("kind", [KEY, SCALAR, NUMBER, vector(2)], ids=lambda k: k.name)
def test_the_core_record_check_on_each_edge(kind: FieldKind) -> None:
    records: list[object] = [{"f": value} for value in TRICKY]
    found = {index: reason for index, _, reason in check_records(records, [("f", [kind.code])])}
    for index, value in enumerate(TRICKY):
        reason = found.get(index)
        if reason == CHECK_UNSURE:
            assert kind.name == "vector", value
            continue
        assert reason == kind.problem(value), value
