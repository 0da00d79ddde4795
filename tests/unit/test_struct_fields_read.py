"""The core reads a batch's event and position fields through the member descriptors of
their struct types (crates/usersignals-py/src/attrs.rs), where ``getattr`` would look the
descriptor up first: for any objects in a batch, whatever their types, it must read what
``getattr`` reads. Here batches mix ``Event`` and ``Position`` with lookalikes (a subclass,
a subclass whose field is a property, slotted and plain classes, a class of its own
``__getattribute__``), in any order, so each kind comes first in some batches: the stored
bytes and reports equal those of the same batches as plain structs."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.test_native_pipeline import open_engine, run, stream

from usersignals import Event, Position
from usersignals._core import BatchSession

EVENT_FIELDS = ("event_id", "user_id", "item_id", "action", "surface", "ts", "attrs")


class SubEvent(Event):
    pass


class ShoutedAction(Event):
    """A subclass whose ``action`` is a property: ``getattr`` finds it before the member."""

    @property  # type: ignore[misc]
    def action(self) -> str:
        return "save"


class SlottedEvent:
    __slots__ = EVENT_FIELDS

    def __init__(self, **fields: Any) -> None:
        for name, value in fields.items():
            setattr(self, name, value)


class PlainEvent:
    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)


class ProxiedEvent:
    def __init__(self, **fields: Any) -> None:
        self._fields = fields

    def __getattribute__(self, name: str) -> Any:
        if name == "_fields":
            return object.__getattribute__(self, name)
        return self._fields[name]


class SlottedPosition:
    __slots__ = ("offset", "partition")

    def __init__(self, partition: str, offset: int) -> None:
        self.partition, self.offset = partition, offset


class SubPosition(Position):
    pass


EVENT_KINDS = [Event, SubEvent, ShoutedAction, SlottedEvent, PlainEvent, ProxiedEvent]
POSITION_KINDS = [Position, SubPosition, SlottedPosition]


def dressed(event: Event, kind: type) -> Any:
    return kind(**{name: getattr(event, name) for name in EVENT_FIELDS})


def plain(obj: Any) -> Event:
    """The plain ``Event`` of what ``getattr`` reads from ``obj``."""
    return Event(**{name: getattr(obj, name) for name in EVENT_FIELDS})


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    size=st.integers(1, 80),
    cuts=st.lists(st.integers(1, 100), max_size=4),
    kinds=st.lists(st.tuples(st.sampled_from(EVENT_KINDS), st.sampled_from(POSITION_KINDS)),
                   min_size=1, max_size=8),
)  # fmt: skip
def test_fields_read_from_any_objects_are_what_getattr_reads(
    seed: int, size: int, cuts: list[int], kinds: list[tuple[type, type]]
) -> None:
    pairs = stream(seed, size)
    mixed = [
        (dressed(event, kinds[i % len(kinds)][0]),
         kinds[i % len(kinds)][1](position.partition, position.offset))
        for i, (event, position) in enumerate(pairs)
    ]  # fmt: skip
    expected_pairs = [(plain(e), Position(p.partition, p.offset)) for e, p in mixed]
    engine, reference = open_engine(True, 86_400_000), open_engine(True, 86_400_000)
    assert engine._batches is not None
    assert run(engine, mixed, cuts) == run(reference, expected_pairs, cuts)  # type: ignore[arg-type]
    assert dict(engine.store.scan(b"u:")) == dict(reference.store.scan(b"u:"))


@pytest.mark.parametrize("first", [True, False])
def test_a_field_getattr_cannot_read_raises_its_error(first: bool) -> None:
    """An unset slot: the member descriptor raises what ``getattr`` raises, whether its type
    is the one the reader resolved (first) or not."""
    event = Event("e0", "u0", "i0", "click", "home", 1, None)
    broken = SlottedEvent(event_id="e1", user_id="u1", item_id="i0", action="click",
                          surface="home", attrs=None)  # fmt: skip
    with pytest.raises(AttributeError) as expected:
        broken.ts  # noqa: B018
    events = [broken, event] if first else [event, broken]
    positions = [Position("t/0", 0), Position("t/0", 1)]
    engine = open_engine(True, 86_400_000)
    with pytest.raises(AttributeError) as raised:
        BatchSession.select(
            engine._native.plans, events, positions, b"u:", lambda keys: [None] * len(keys), None
        )
    assert str(raised.value) == str(expected.value)
