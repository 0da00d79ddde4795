"""Field references and the event filter language of signal definitions.

A field name is one of the event's own fields (``user_id``, ``item_id``, ``action``,
``surface``, ``ts``, ``event_id``), an attribute by path (``attrs.NAME``, or into nested objects
``attrs.device.os``), or a field that a declared enrichment provides (its bare name, e.g.
``category``). Predicates compose with ``&``, ``|``
and ``~`` and compile to plain Python callables, so filtering costs one call per event.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from usersignals.aggregations.rows import FieldResolver, Row
from usersignals.errors import SignalDefinitionError
from usersignals.events import AttrValue

BASE_FIELDS = ("event_id", "user_id", "item_id", "action", "surface", "ts")
#: The event fields that are text already (a lookup key is the field's text as it is).
TEXT_FIELDS = frozenset(BASE_FIELDS) - {"ts"}
ATTR_PREFIX = "attrs."

RowPredicate = Callable[[Row], bool]


def attrs_reader(path: str) -> Callable[[dict[str, Any] | None], Any]:
    """A reader of ``attrs`` at a dotted ``path`` ("device.os"); ``None`` when absent.

    A value on the way that is not an object (a list, a number) means the path is absent: a
    producer's odd attribute must not be able to stop the pipeline.
    """
    parts = path.split(".")
    if len(parts) == 1:
        return lambda attrs: attrs.get(path) if attrs else None

    def read(attrs: dict[str, Any] | None) -> Any:
        node: Any = attrs
        for part in parts:
            if not isinstance(node, dict):
                return None
            node = node.get(part)
        return node

    return read


class Predicate(ABC):
    """A boolean condition on an event, used in ``Signal(where=...)``."""

    @abstractmethod
    def compile(self, resolve: FieldResolver) -> RowPredicate: ...

    @abstractmethod
    def to_json(self) -> Any: ...

    @abstractmethod
    def fields(self) -> set[str]: ...

    def __and__(self, other: Predicate) -> Predicate:
        return _Combined("and", (self, other))

    def __or__(self, other: Predicate) -> Predicate:
        return _Combined("or", (self, other))

    def __invert__(self) -> Predicate:
        return _Not(self)

    def __bool__(self) -> bool:
        # `a and b` would be `b` alone, silently: Python's own `and` asks for a truth value.
        raise SignalDefinitionError(
            "", ["a filter has no truth value: combine filters with &, | and ~, not and/or/not"]
        )


@dataclass(frozen=True)
class Field:
    """A reference to an event field, an attribute or an enriched field, by name."""

    name: str

    def isin(self, values: Iterable[AttrValue]) -> Predicate:
        return _Compare(self.name, "in", _values(self.name, "isin", values))

    def notin(self, values: Iterable[AttrValue]) -> Predicate:
        return _Compare(self.name, "not_in", _values(self.name, "notin", values))

    def eq(self, value: AttrValue) -> Predicate:
        return _Compare(self.name, "==", _typed(self.name, "eq", value))

    def ne(self, value: AttrValue) -> Predicate:
        return _Compare(self.name, "!=", _typed(self.name, "ne", value))

    def gt(self, value: float) -> Predicate:
        return _Compare(self.name, ">", _number(self.name, "gt", value))

    def ge(self, value: float) -> Predicate:
        return _Compare(self.name, ">=", _number(self.name, "ge", value))

    def lt(self, value: float) -> Predicate:
        return _Compare(self.name, "<", _number(self.name, "lt", value))

    def le(self, value: float) -> Predicate:
        return _Compare(self.name, "<=", _number(self.name, "le", value))

    def exists(self) -> Predicate:
        return _Compare(self.name, "exists", None)


def _values(name: str, method: str, values: Iterable[AttrValue]) -> frozenset[AttrValue]:
    if isinstance(values, str | bytes):  # a string is an iterable of its letters
        raise SignalDefinitionError(
            "", [f"{name}.{method}() takes a list of values, e.g. {method}([{values!r}])"]
        )
    chosen = frozenset(values)
    if any(_never_of_type(name, value) for value in chosen):
        shown = sorted(chosen, key=repr)
        raise SignalDefinitionError("", [_mistyped(name, f"{method}({shown!r})")])
    return chosen


def _typed(name: str, method: str, value: AttrValue) -> AttrValue:
    """``value``, when an event's ``name`` can equal it: an event field's type is known
    (text, or the whole number ``ts``); attrs and enriched fields hold any JSON value."""
    if _never_of_type(name, value):
        raise SignalDefinitionError("", [_mistyped(name, f"{method}({value!r})")])
    return value


def _never_of_type(name: str, value: object) -> bool:
    if name in TEXT_FIELDS:
        return not isinstance(value, str)
    if name == "ts":
        return isinstance(value, bool) or not isinstance(value, int)
    return False


def _mistyped(name: str, call: str) -> str:
    if name == "ts":
        return f"ts is a whole number: {call} matches no event; compare with ms since the epoch"
    return f"{name} is text: {call} matches no event; compare with text"


def _number(name: str, method: str, value: object) -> float:
    # An ordering with a string (or None, or a bool) would match no event, silently.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SignalDefinitionError(
            "", [f"{name}.{method}() compares with a number, not {value!r}"]
        )
    if name in TEXT_FIELDS:
        raise SignalDefinitionError(
            "", [f"{name} is text: {method}() compares numbers and matches no event"]
        )
    return value


def field(name: str) -> Field:
    """``field("attrs.dwell_ms").ge(5000)``: a reference to any field by name."""
    return Field(name)


def attr(name: str) -> Field:
    """``attr("dwell_ms")`` is ``field("attrs.dwell_ms")``."""
    return Field(ATTR_PREFIX + name)


action = Field("action")
surface = Field("surface")
item_id = Field("item_id")


def _safe_order(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    # A missing or mistyped value never matches an ordering comparison (rather than raising
    # in the middle of a batch): a filter must not be able to stop the pipeline.
    def compare(left: Any, right: Any) -> bool:
        try:
            return left is not None and op(left, right)
        except TypeError:
            return False

    return compare


_ORDERINGS: dict[str, Callable[[Any, Any], bool]] = {
    ">": _safe_order(lambda a, b: a > b),
    ">=": _safe_order(lambda a, b: a >= b),
    "<": _safe_order(lambda a, b: a < b),
    "<=": _safe_order(lambda a, b: a <= b),
}


@dataclass(frozen=True)
class _Compare(Predicate):
    name: str
    op: str
    value: Any

    def compile(self, resolve: FieldResolver) -> RowPredicate:
        get = resolve(self.name)
        value = self.value
        if self.op == "in":
            return lambda row: get(row) in value
        if self.op == "not_in":
            return lambda row: get(row) not in value
        if self.op == "==":
            return lambda row: get(row) == value
        if self.op == "!=":
            return lambda row: get(row) != value
        if self.op == "exists":
            return lambda row: get(row) is not None
        order = _ORDERINGS[self.op]
        return lambda row: order(get(row), value)

    def to_json(self) -> Any:
        value = sorted(self.value, key=repr) if isinstance(self.value, frozenset) else self.value
        return {"field": self.name, "op": self.op, "value": value}

    def fields(self) -> set[str]:
        return {self.name}


@dataclass(frozen=True)
class _Combined(Predicate):
    op: str
    parts: tuple[Predicate, ...]

    def compile(self, resolve: FieldResolver) -> RowPredicate:
        compiled = [part.compile(resolve) for part in self.parts]
        if self.op == "and":
            return lambda row: all(check(row) for check in compiled)
        return lambda row: any(check(row) for check in compiled)

    def to_json(self) -> Any:
        return {self.op: [part.to_json() for part in self.parts]}

    def fields(self) -> set[str]:
        return set().union(*(part.fields() for part in self.parts))


@dataclass(frozen=True)
class _Not(Predicate):
    inner: Predicate

    def compile(self, resolve: FieldResolver) -> RowPredicate:
        check = self.inner.compile(resolve)
        return lambda row: not check(row)

    def to_json(self) -> Any:
        return {"not": self.inner.to_json()}

    def fields(self) -> set[str]:
        return self.inner.fields()
