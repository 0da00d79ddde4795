"""An ``as_of`` a state cannot answer is refused even when nothing is left in the state.

Sum, MeanVector and Distinct keep a state whose newest event added nothing (no value, no
embedding, no distinct field) and whose older events expired. Read as of a time those
expired events covered, such a state used to answer "nothing" (a total of 0, no vector, an
estimate of 0) where the events had counted: each read returned early on an empty state,
before its look-back check. The answer must be the refusal (``422 as_of_unavailable``), as
it is when the newest event does count; checked on the Python reference, on the core's
reads of a stored state (``SignalReader.read``), and on the GET route's core-written body.
"""

from __future__ import annotations

from typing import Any

import pytest

from usersignals import (
    AsOfError,
    Distinct,
    Event,
    Lookup,
    MeanVector,
    ReadContext,
    Signal,
    Sum,
)
from usersignals.serving.queries import resolve
from usersignals.testing import event, run_signals

DAY = 86_400_000
NOW = 1_767_225_600_000
items = Lookup("items", key="item_id", provides=("embedding", "creator_id"))
TABLE = {"i1": {"embedding": [1.0, 0.0], "creator_id": "c1"}}  # i2 has no record
SIGNALS = [
    Signal(name="total", version=1, aggregate=Sum(of="attrs.value", by="surface"), retention="1d"),
    Signal(
        name="taste",
        version=1,
        enrich=[items.fields("embedding")],
        aggregate=MeanVector(of="embedding", dim=2),
        retention="1d",
    ),
    Signal(
        name="creators",
        version=1,
        enrich=[items.fields("creator_id")],
        aggregate=Distinct(of="creator_id"),
        retention="1d",
    ),
]
#: The first event counts and expires (retention 1 day); the newest adds nothing.
EVENTS = [
    event("u1", "i1", "click", ts=NOW - 10 * DAY, attrs={"value": 5}),
    event("u1", "i2", "click", ts=NOW),
]
BEFORE = NOW - 10 * DAY
IDS = [signal.name for signal in SIGNALS]


def reference_state(signal: Signal, events: list[Event]) -> Any:
    runtime = signal.compiled.runtime
    state = None
    for one in events:  # one batch each: the first expires when the second applies
        state = runtime.apply(state, [(one, (TABLE.get(one.item_id, {}),))]).state
        state = runtime.decode(runtime.encode(state))
    return state


@pytest.mark.parametrize("signal", SIGNALS, ids=IDS)
def test_the_reference_refuses(signal: Signal) -> None:
    state = reference_state(signal, EVENTS)
    with pytest.raises(AsOfError):
        signal.compiled.runtime.read(state, ReadContext(as_of_ms=BEFORE, now_ms=NOW))


@pytest.mark.parametrize("signal", SIGNALS, ids=IDS)
def test_the_core_refuses(signal: Signal) -> None:
    with pytest.raises(AsOfError):
        run_signals([signal], EVENTS, tables={"items": TABLE}, context={"as_of": str(BEFORE)})


@pytest.mark.parametrize("signal", SIGNALS, ids=IDS)
def test_the_route_body_refuses(signal: Signal) -> None:
    from usersignals import Engine, MicroBatch, Position, SignalRegistry
    from usersignals.enrich import Materializer, TableSource
    from usersignals.enrich.sources import encode_table_record
    from usersignals.offline import MemoryStore
    from usersignals.serving.reader import SignalReader

    registry = SignalRegistry([signal])
    store = MemoryStore()
    table = store.table("items")
    table.write({key.encode(): encode_table_record(record) for key, record in TABLE.items()})
    engine = Engine(registry, store, Materializer({"items": TableSource("items", table)}))
    for offset, one in enumerate(EVENTS):
        engine.process(MicroBatch([one], [Position("p", offset)]))
    reader = SignalReader(registry, store)
    query = resolve(registry, f"names={signal.name}&as_of={BEFORE}".encode())
    with pytest.raises(AsOfError):
        reader.read_body("u1", query, NOW)


@pytest.mark.parametrize("signal", SIGNALS, ids=IDS)
def test_a_state_with_nothing_left_still_answers_nothing_when_it_can(signal: Signal) -> None:
    """Read as of now (nothing expired is wanted), the same state answers "nothing"."""
    answers = run_signals([signal], EVENTS, tables={"items": TABLE})
    empty = {"total": {"total": 0, "by": {}}, "taste": {"vector": None, "weight": 0.0}}
    assert answers["u1"][signal.name] == empty.get(signal.name, {"estimate": 0})
