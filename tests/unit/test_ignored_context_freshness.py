"""A context parameter a signal ignores does not move its answer's freshness.

DecayedScores and MeanVector ignore ``until`` (a decayed sum cannot take back the events
after it) and say so in ``ignored``; their answers still count every event up to the view
time. Their ``newest_event_ms`` used to be capped at ``until`` all the same, so an answer
over this week's events claimed its newest event was in 1970 (``until=1000``) with an age
of 56 years. Checked on the Python reference, on the core's read of a stored state
(``SignalReader.read``) and on the GET route's core-written body.
"""

from __future__ import annotations

import json

import pytest

from usersignals import (
    DecayedScores,
    Engine,
    Lookup,
    MeanVector,
    MicroBatch,
    Position,
    ReadContext,
    Signal,
    SignalRegistry,
)
from usersignals.enrich import Materializer, TableSource
from usersignals.enrich.sources import encode_table_record
from usersignals.offline import MemoryStore
from usersignals.serving.queries import resolve
from usersignals.serving.reader import SignalReader
from usersignals.testing import event

DAY = 86_400_000
NOW = 1_767_225_600_000
NEWEST = NOW - DAY // 2
UNTIL = NOW - 3 * DAY  # before the newest event: ignored by both signals
items = Lookup("items", key="item_id", provides=("embedding", "category"))
TABLE = {"i1": {"embedding": [1.0, 0.0], "category": "art"}}
SIGNALS = [
    Signal(
        name="interests",
        version=1,
        enrich=[items.fields("category")],
        aggregate=DecayedScores(key="category", half_life="7d"),
    ),
    Signal(
        name="taste",
        version=1,
        enrich=[items.fields("embedding")],
        aggregate=MeanVector(of="embedding", dim=2),
    ),
]
EVENTS = [event("u1", "i1", "save", ts=NOW - 5 * DAY), event("u1", "i1", "save", ts=NEWEST)]
IDS = [signal.name for signal in SIGNALS]


def stored(signal: Signal) -> tuple[SignalRegistry, MemoryStore]:
    registry = SignalRegistry([signal])
    store = MemoryStore()
    table = store.table("items")
    table.write({key.encode(): encode_table_record(record) for key, record in TABLE.items()})
    engine = Engine(registry, store, Materializer({"items": TableSource("items", table)}))
    engine.process(MicroBatch(EVENTS, [Position("p", i) for i in range(len(EVENTS))]))
    return registry, store


@pytest.mark.parametrize("signal", SIGNALS, ids=IDS)
def test_the_reference_reports_its_newest_counted_event(signal: Signal) -> None:
    runtime = signal.compiled.runtime
    state = runtime.apply(None, [(one, (TABLE[one.item_id],)) for one in EVENTS]).state
    answer = runtime.read(state, ReadContext(until_ms=UNTIL, now_ms=NOW))
    assert answer.newest_ms == NEWEST


@pytest.mark.parametrize("signal", SIGNALS, ids=IDS)
def test_the_core_read_reports_its_newest_counted_event(signal: Signal) -> None:
    registry, store = stored(signal)
    answer = SignalReader(registry, store).read("u1", None, ReadContext(until_ms=UNTIL, now_ms=NOW))
    result = answer.signals[signal.name]
    assert result.ignored == ["until"]
    assert result.newest_event_ms == NEWEST
    assert result.age_ms == NOW - NEWEST


@pytest.mark.parametrize("signal", SIGNALS, ids=IDS)
def test_the_route_body_reports_its_newest_counted_event(signal: Signal) -> None:
    registry, store = stored(signal)
    query = resolve(registry, f"until={UNTIL}".encode())
    body = SignalReader(registry, store).read_body("u1", query, NOW)
    assert body is not None
    result = json.loads(body)["signals"][signal.name]
    assert result["ignored"] == ["until"]
    assert result["newest_event_ms"] == NEWEST
