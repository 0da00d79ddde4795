"""What every aggregation is: a definition, and a compiled runtime with pure state functions.

An :class:`Aggregation` is the declarative part of a signal (``LastN(500, ...)``): it can list
its problems, the fields it reads, and render itself as JSON. ``compile`` binds it to a field
resolver and the signal's retention and returns an :class:`AggregationRuntime`, whose
functions are pure over plain Python state objects:

- ``apply(state, rows)``: fold a user's new events (sorted by event time) into the state;
- ``merge(a, b)``: combine two states built from disjoint event sets;
- ``read(state, context)``: answer a request-time view;
- ``encode`` / ``decode``: the state's compact binary form (the store holds only bytes).

Every runtime keeps its state *canonical*: the state after a set of events does not depend on
how those events were split into batches or in what order the batches came. That is what lets
a replay after a crash, with other batch boundaries, end in byte-identical state.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, NamedTuple, TypeVar

from usersignals.aggregations.context import ReadContext
from usersignals.aggregations.rows import FieldResolver, Row
from usersignals.values import FieldKind

S = TypeVar("S")


@dataclass(frozen=True)
class ReadOut:
    """An aggregation's answer: a JSON-ready value and the newest event time it includes."""

    value: Any
    newest_ms: int | None


class ApplyOut(NamedTuple, Generic[S]):
    """The state after ``apply`` and how many events were too old for the retention.

    A named tuple: ``apply`` runs once per user and signal of every micro-batch, and tuples
    are the cheapest records Python builds.
    """

    state: S
    expired: int


class AggregationRuntime(ABC, Generic[S]):
    """The compiled, executable form of an aggregation."""

    @abstractmethod
    def apply(self, state: S | None, rows: Sequence[Row]) -> ApplyOut[S]:
        """Fold ``rows`` (one user's new events, sorted by event time) into ``state``.

        ``rows`` is never empty, and its last row holds the newest event.
        """

    @abstractmethod
    def merge(self, a: S, b: S) -> S:
        """Combine two states of the same user built from disjoint sets of events."""

    @abstractmethod
    def read(self, state: S | None, context: ReadContext) -> ReadOut:
        """Answer ``context`` from ``state`` (``None``: the user has no events for it)."""

    @abstractmethod
    def encode(self, state: S) -> bytes: ...

    @abstractmethod
    def decode(self, data: bytes) -> S: ...


class Aggregation(ABC):
    """The declarative definition of an aggregation."""

    kind: ClassVar[str]

    @abstractmethod
    def problems(self) -> list[str]:
        """Every problem of this definition (empty when valid)."""

    def retention_problems(self, retention_ms: int) -> list[str]:
        """What is wrong with this definition under the signal's retention (asked once
        :meth:`problems` is empty): a time step the retention cannot hold, say."""
        return []

    @abstractmethod
    def fields(self) -> set[str]:
        """The event / attribute / enriched fields this aggregation reads."""

    def field_kinds(self) -> dict[str, FieldKind]:
        """What this aggregation needs of the fields it reads (``usersignals.values``).

        Checked on enriched fields as they enter (a field that does not fit is missing for
        the event, and counted); a field not listed may hold any value.
        """
        return {}

    @abstractmethod
    def context_parameters(self) -> frozenset[str]:
        """The request-time context parameters that change this aggregation's answer."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The definition's parameters as JSON-ready values, for the compiled form."""

    @abstractmethod
    def compile(self, resolve: FieldResolver, retention_ms: int) -> AggregationRuntime[Any]: ...

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.params()}
