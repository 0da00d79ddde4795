"""The count of events with no enrichment record (`missing_enrichment`, the replay's and
the processor's summary, the metric) counts the events a lookup was for.

Found in a newcomer's trial: a module enriching only its saves (``where=action.eq("save")``)
and counting clicks reported "events with no enrichment record: {'items': 5}" for five
clicks whose items were all in the table: the clicks were never looked up (the filter runs
first), and the count took each as a miss."""

from __future__ import annotations

import pytest

from usersignals import Count, LastN, Lookup, Signal, SignalRegistry, action
from usersignals.enrich import Materializer, TableSource
from usersignals.enrich.sources import encode_table_record
from usersignals.events import Event, Position
from usersignals.processing import Engine, MicroBatch
from usersignals.state.memory import MemoryStore

NOW = 1_767_225_600_000
items = Lookup("items", key="item_id", provides=("category",))
SIGNALS = [
    Signal(name="saves", version=1, where=action.eq("save"), enrich=[items.fields("category")],
           aggregate=LastN(5, keep=("item_id", "category")), retention="7d"),
    Signal(name="clicks", version=1, aggregate=Count(), retention="7d"),
]  # fmt: skip


@pytest.mark.parametrize("native_pipeline", [True, False])
def test_only_the_events_a_lookup_was_for_count_as_misses(native_pipeline: bool) -> None:
    store = MemoryStore()
    store.table("items").write({b"i1": encode_table_record({"category": "cats"})})
    engine = Engine(
        SignalRegistry(SIGNALS),
        store,
        Materializer({"items": TableSource("items", store.table("items"))}),
        native_pipeline=native_pipeline,
    )
    events = [
        Event("e1", "u1", "i1", "click", "home", NOW),
        Event("e2", "u1", "i2", "click", "home", NOW + 1),  # not in the table: no lookup
        Event("e3", "u1", "i1", "save", "home", NOW + 2),
        Event("e4", "u2", "i3", "save", "home", NOW + 3),  # looked up, absent: a miss
    ]
    positions = [Position("p", offset) for offset in range(len(events))]
    report = engine.process(MicroBatch(events, positions))
    assert report.missing_enrichment == {"items": 1}
