"""The training set's loop in the core gives every label what the engine's rounds give it.

``compute_features`` runs every labelled user through the core's pipeline steps in one call
(``Engine.label_rows``) when every signal is native; the rounds of micro-batches through the
engine (``_in_rounds``, reading each round's records back from the store) stay as the path
of Python aggregations, and as the reference here: for random histories with late events
and redelivered event ids, random label times and contexts, both give the same values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from native_batching import event_lists
from usersignals import Engine, Event, Position, hours
from usersignals.enrich import Materializer, TableSource
from usersignals.enrich.sources import encode_table_record
from usersignals.examples import reference
from usersignals.offline import MemoryStore, training
from usersignals.offline.features_file import value_rows
from usersignals.offline.label_shards import plan_label_shards
from usersignals.processing.dedupe import EventIdDedupe
from usersignals.processing.engine import DEFAULT_DEDUPE_HORIZON_MS
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


def engine_parts(engine_dedupes: bool) -> training.FeatureEngine:
    """As ``FeatureEngine.build`` makes them: the engine without dedupe, the repeats judged
    before it with the default horizon; or, with ``engine_dedupes``, nothing judged before
    and the engine's own dedupe on (``Engine.label_rows`` honours the engine's horizon, in
    the order it is fed, as ``Engine.process`` does)."""
    store = MemoryStore()
    items = store.table("items")
    items.write({key.encode(): encode_table_record(r) for key, r in TABLE.items()})
    materializer = Materializer({"items": TableSource("items", items)})
    horizon = DEFAULT_DEDUPE_HORIZON_MS
    engine = Engine(
        REGISTRY, store, materializer, dedupe_horizon_ms=horizon if engine_dedupes else None
    )
    repeats = None if engine_dedupes else EventIdDedupe(horizon)
    return training.FeatureEngine(engine, SignalReader(REGISTRY, store), repeats)


@settings(max_examples=60, deadline=None)
@given(
    history=events,
    repeats=st.lists(st.integers(0, 59), max_size=6),
    label_hours=st.lists(st.tuples(st.sampled_from(USERS), st.integers(0, 120)), min_size=1),
    context=st.sampled_from(CONTEXTS),
    engine_dedupes=st.booleans(),
)
def test_the_core_loop_gives_each_label_what_the_rounds_give(
    history: list[Event],
    repeats: list[int],
    label_hours: list[tuple[str, int]],
    context: str,
    engine_dedupes: bool,
) -> None:
    # Redelivered events (the same event id again, later in the archive): dedupe drops those
    # within its horizon, judged in archive order before either path applies the rest, or
    # by each path's engine in the order it is fed.
    history = history + [history[i % len(history)] for i in repeats]
    pairs = [(event, Position("a/0", offset)) for offset, event in enumerate(history)]
    base = min(event.ts for event in history)
    labels = [(row, user, base + h * hours(1)) for row, (user, h) in enumerate(label_hours)]
    columns = training.feature_columns(REGISTRY, [context])

    parts = engine_parts(engine_dedupes)
    in_core = value_rows(training.compute_features(parts, columns, pairs, labels))
    by_user, groups = training.LabelPlan.of(pairs, labels, parts.repeats).rounds(pairs, labels)
    in_rounds = dict(training._in_rounds(engine_parts(engine_dedupes), columns, by_user, groups))

    def values(rows: Mapping[int, Sequence[str | bytes]]) -> dict[int, list[object]]:
        return {row: [msgspec.json.decode(v) for v in written] for row, written in rows.items()}

    assert len(in_core) == len(labels)
    assert values(in_core) == values(in_rounds)


def test_the_shards_balance_the_labelled_users() -> None:
    """No user outweighs the others here: each goes whole to the least loaded shard, the
    heaviest first; the same plan whatever the labels' order."""
    counts = {"a": 7, "b": 6, "c": 5, "d": 3, "e": 1}
    labels = labelled(counts)
    plan = plan_label_shards(labels, 2)
    assert plan == plan_label_shards(list(reversed(labels)), 2)
    assert set(plan.owner) == set(counts)
    assert plan.borrowed == [frozenset(), frozenset()]
    for user, shard in plan.owner.items():  # every label of a user on its owner's shard
        assert {label for label in labels if label[1] == user} <= set(plan.labels[shard])
    loads = [sum(work(counts[u]) for u, s in plan.owner.items() if s == i) for i in (0, 1)]
    assert sorted(loads) == [28 + 6 + 1, 21 + 15]


def test_one_shard_takes_every_label_in_row_order() -> None:
    counts = {"busy": 40, "b": 6, "c": 5}
    labels = labelled(counts)
    plan = plan_label_shards(list(reversed(labels)), 1)
    assert plan.owner == dict.fromkeys(counts, 0)
    assert plan.labels == [sorted(labels)]
    assert plan.borrowed == [frozenset()]


def test_a_user_who_outweighs_the_rest_is_cut_by_label_time() -> None:
    """The busiest user's labels are cut into one run per shard, of about equal work (later
    labels cost more: the state has grown), each run on its own shard; the first run's shard
    owns the user's records and the other borrows them. Every label lands exactly once."""
    counts = {"busy": 40, "b": 6, "c": 5}
    labels = labelled(counts)
    plan = plan_label_shards(labels, 2)
    assert sorted(label for shard in plan.labels for label in shard) == sorted(labels)
    busy = [sorted(label[2] for label in shard if label[1] == "busy") for shard in plan.labels]
    first, second = sorted(busy)
    assert first
    assert second
    assert max(first) < min(second)  # runs in time order
    assert abs(len(first) - 40 / math.sqrt(2)) <= 1  # equal work: k(k+1)/2 = half of the whole
    owned = plan.labels[plan.owner["busy"]]
    assert min(first) in {label[2] for label in owned if label[1] == "busy"}
    assert plan.borrowed[1 - plan.owner["busy"]] == frozenset({"busy"})
    assert plan.borrowed[plan.owner["busy"]] == frozenset()


def labelled(counts: dict[str, int]) -> list[tuple[int, str, int]]:
    """Label rows (row, user, time): each user's at times 0, 1, 2..."""
    rows = [(user, k) for user, n in counts.items() for k in range(n)]
    return [(row, user, k) for row, (user, k) in enumerate(rows)]


def work(count: int) -> int:
    return count * (count + 1) // 2
