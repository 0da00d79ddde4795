"""A user-defined aggregation's ``params()`` and ``fields()`` are its definition: a mistake in
either is a problem.

``params()`` is what a version's identity is made of (``signals compile``, the digests that
``plan``, ``replay`` and ``serve`` compare). One that returned a list, a ``timedelta`` or a set,
or put a ``kind`` of its own over the class's, was accepted when the signal was defined and
then ended ``signals compile`` and ``replay`` with a traceback from the JSON encoder (or, for
``kind``, silently renamed the aggregation). Now the signal's definition names the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest

from usersignals import Signal, SignalDefinitionError
from usersignals.aggregations import Aggregation, AggregationRuntime


@dataclass(frozen=True)
class Custom(Aggregation):
    """An aggregation whose ``params()`` answers whatever the test gives it."""

    answer: Any = None
    kind = "custom"

    def problems(self) -> list[str]:
        return []

    def fields(self) -> set[str]:
        return {"action"}

    def context_parameters(self) -> frozenset[str]:
        return frozenset()

    def params(self) -> Any:
        return self.answer

    def compile(self, resolve: Any, retention_ms: int) -> AggregationRuntime[Any]:
        raise AssertionError("not compiled in these tests")


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (["window"], "Custom.params() must return a dict of JSON-ready values, not list"),
        (None, "Custom.params() must return a dict of JSON-ready values, not NoneType"),
        ({"window": timedelta(days=1)}, "not JSON-ready (timedelta)"),
        ({"ids": {1, 2}}, "not JSON-ready (set)"),
        ({"x": object()}, "not JSON-ready (object)"),
        ({"x": float("nan")}, "not JSON-ready (a NaN or infinite number)"),
        ({1: "a"}, "Custom.params() keys must be strings, not [1]"),
        ({"kind": "other"}, "Custom.params() must not hold 'kind'"),
    ],
)
def test_a_params_mistake_is_a_definition_problem(answer: Any, expected: str) -> None:
    with pytest.raises(SignalDefinitionError) as caught:
        Signal(name="custom", version=1, aggregate=Custom(answer))
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_json_ready_params_define_the_signal() -> None:
    answer = {"window": "1d", "weights": {"save": 2.5}, "keys": ["a", "b"], "on": True}
    signal = Signal(name="custom", version=1, aggregate=Custom(answer))
    assert signal.to_json()["aggregate"] == {"kind": "custom", **answer}


@dataclass(frozen=True)
class NamesFields(Custom):
    """An aggregation whose ``fields()`` answers whatever the test gives it."""

    named: Any = None

    def fields(self) -> Any:
        return self.named

    def params(self) -> Any:
        return {}


@pytest.mark.parametrize(
    ("named", "expected"),
    [
        ("action", "NamesFields.fields() must return a set of field names, not str"),
        (["action"], "NamesFields.fields() must return a set of field names, not list"),
        (
            {"action", 3},
            "NamesFields.fields() must return a set of field names, not a set holding int",
        ),
    ],
)
def test_a_fields_mistake_is_one_problem_not_one_per_letter(named: Any, expected: str) -> None:
    # fields() = "action" was read as the fields "a", "c", "t", ...: six problems, each an
    # "unknown field" that the author never wrote.
    with pytest.raises(SignalDefinitionError) as caught:
        Signal(name="custom", version=1, aggregate=NamesFields(named=named))
    assert list(caught.value.problems) == [expected]


@pytest.mark.parametrize("name", ["attrs..x", "attrs.x.", "attrs.x..y"])
def test_an_attribute_path_with_an_empty_step_is_a_problem(name: str) -> None:
    from usersignals import Count, field

    with pytest.raises(SignalDefinitionError) as caught:
        Signal(name="custom", version=1, where=field(name).eq("a"), aggregate=Count())
    assert list(caught.value.problems) == [f"field {name!r}: an attribute path has no empty step"]


@dataclass(frozen=True)
class Compiles(Custom):
    """An aggregation whose ``compile()`` resolves ``field``, or raises ``error``."""

    field: str = "action"
    error: Exception | None = None

    def params(self) -> Any:
        return {}

    def compile(self, resolve: Any, retention_ms: int) -> AggregationRuntime[Any]:
        if self.error is not None:
            raise self.error
        resolve(self.field)
        raise NotImplementedError("never reached in these tests")


def test_a_compile_that_resolves_an_undeclared_field_is_a_definition_problem() -> None:
    """Found in a newcomer's trial: ``resolve("actoin")`` passed ``signals compile`` and
    ended ``preview``, ``replay`` and ``run`` with a ``KeyError`` traceback; a server
    answered every read of the signal ``signal_failed``. The registry compiles each signal
    and names the field."""
    from usersignals import SignalRegistry

    signal = Signal(name="custom", version=1, aggregate=Compiles(field="actoin"))
    with pytest.raises(SignalDefinitionError) as caught:
        SignalRegistry([signal])
    (problem,) = caught.value.problems
    assert "'actoin'" in problem
    assert "Compiles.fields()" in problem


def test_a_compile_that_raises_is_a_definition_problem() -> None:
    from usersignals import SignalRegistry

    signal = Signal(name="custom", version=1, aggregate=Compiles(error=ValueError("no table")))
    with pytest.raises(SignalDefinitionError) as caught:
        SignalRegistry([signal])
    assert caught.value.signal == "custom"
    assert caught.value.problems == ("Compiles.compile() failed: ValueError: no table",)


@dataclass(frozen=True)
class CallsItselfCount(Custom):
    """A user-defined aggregation that took a built-in kind's name."""

    kind = "count"

    def params(self) -> Any:
        return {}


def test_a_built_in_kind_taken_by_another_aggregation_is_a_problem() -> None:
    """Found in a signal author's trial: an aggregation of its own declaring kind = "count"
    compiled, and `GET /v1/signals` and every answer called it a "count" while it answered
    its own values: clients and reviewers reading the kind were misled."""
    with pytest.raises(SignalDefinitionError) as caught:
        Signal(name="custom", version=1, aggregate=CallsItselfCount())
    assert list(caught.value.problems) == [
        "CallsItselfCount's kind 'count' is a built-in aggregation's (Count): give it a kind "
        "of its own"
    ]


def test_a_subclass_of_a_built_in_aggregation_keeps_its_kind() -> None:
    from usersignals import LastN

    @dataclass(frozen=True)
    class MyLastN(LastN):
        pass

    signal = Signal(name="mine", version=1, aggregate=MyLastN(5))
    assert signal.to_json()["aggregate"]["kind"] == "last_n"
