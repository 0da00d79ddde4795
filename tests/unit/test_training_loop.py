"""The training set's loop in the core gives every label what the engine's rounds give it.

``compute_features`` runs every labelled user through the core's pipeline steps in one call
(``Engine.label_rows``) when every signal is native; the rounds of micro-batches through the
engine (``_in_rounds``, reading each round's records back from the store) stay as the path
of Python aggregations, and as the reference here: for random histories with late events
and redelivered event ids, random label times and contexts, both give the same values.
"""

from __future__ import annotations

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from native_batching import event_lists
from usersignals import Engine, Event, Position, hours
from usersignals.enrich import Materializer, TableSource
from usersignals.enrich.sources import encode_table_record
from usersignals.examples import reference
from usersignals.offline import MemoryStore, training
from usersignals.serving.reader import SignalReader
from usersignals.signals.registry import SignalRegistry

USERS = ["u1", "u2", "u3"]
ITEMS = [f"i{n}" for n in range(8)]
TABLE = {
    item: {"category": f"c{n % 3}", "creator_id": f"k{n % 4}", "embedding": [n / 8] * 32}
    for n, item in enumerate(ITEMS[:-1])  # the last item has no record
}
REGISTRY = SignalRegistry(reference.SIGNALS)
CONTEXTS = ["", "window=1h", "window=2d,actions=save,click", "limit=3,dedupe=true"]

events = event_lists(
    USERS,
    ITEMS,
    ["click", "save", "hide", "view"],
    ["home", "search"],
    steps=st.integers(0, hours(5)),
    lateness=st.integers(0, hours(30)),
)


def engine_parts() -> tuple[Engine, SignalReader]:
    store = MemoryStore()
    items = store.table("items")
    items.write({key.encode(): encode_table_record(r) for key, r in TABLE.items()})
    engine = Engine(REGISTRY, store, Materializer({"items": TableSource("items", items)}))
    return engine, SignalReader(REGISTRY, store)


@settings(max_examples=60, deadline=None)
@given(
    history=events,
    repeats=st.lists(st.integers(0, 59), max_size=6),
    label_hours=st.lists(st.tuples(st.sampled_from(USERS), st.integers(0, 120)), min_size=1),
    context=st.sampled_from(CONTEXTS),
)
def test_the_core_loop_gives_each_label_what_the_rounds_give(
    history: list[Event], repeats: list[int], label_hours: list[tuple[str, int]], context: str
) -> None:
    # Redelivered events (the same event id again, later in the archive): dedupe drops them.
    history = history + [history[i % len(history)] for i in repeats]
    pairs = [(event, Position("a/0", offset)) for offset, event in enumerate(history)]
    base = min(event.ts for event in history)
    labels = [(row, user, base + h * hours(1)) for row, (user, h) in enumerate(label_hours)]
    columns = training.feature_columns(REGISTRY, [context])

    in_core = training.compute_features(engine_parts(), columns, pairs, labels)
    by_user: dict[str, list[tuple[Event, Position]]] = {}
    for event, position in sorted(pairs, key=lambda p: (p[0].ts, p[1].partition, p[1].offset)):
        by_user.setdefault(event.user_id, []).append((event, position))
    groups = training._label_groups(by_user, labels)
    in_rounds = training._in_rounds(engine_parts(), columns, by_user, groups)

    def values(rows: list[tuple[int, list[bytes]]]) -> dict[int, list[object]]:
        return {row: [msgspec.json.decode(v) for v in written] for row, written in rows}

    assert len(in_core) == len(labels)
    assert values(in_core) == values(in_rounds)


def test_the_shards_balance_the_labelled_users() -> None:
    """The busiest user gets a shard to themselves when their work (labels squared) outweighs
    the rest; every labelled user has a shard, the same in every process."""
    counts = {"busy": 10, "b": 6, "c": 5, "d": 3, "e": 1}
    labels = [
        (row, user, row) for row, user in enumerate(u for u, n in counts.items() for _ in range(n))
    ]
    assigned = training.balanced_shards(labels, 2)
    assert set(assigned) == set(counts)
    assert assigned == training.balanced_shards(list(reversed(labels)), 2)
    assert [user for user, shard in assigned.items() if shard == assigned["busy"]] == ["busy"]
    loads = [sum(counts[u] ** 2 for u, s in assigned.items() if s == shard) for shard in (0, 1)]
    assert sorted(loads) == [36 + 25 + 9 + 1, 100]
