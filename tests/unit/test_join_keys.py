"""The lookup keys of a batch's live events, read once by the core's column reader
(``ColumnReader.join_keys``, crates/usersignals-py/src/join_keys.rs), against what they
replace: the engine's key set per source (``_key_set``, which the Materializer then
de-duplicated), and the reader reading each event's key and looking its record up itself.
Keys of text fields, of ``ts`` and of ``attrs`` paths holding anything JSON holds."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usersignals import Count, Distinct, Event, LastN, Lookup, Signal, days
from usersignals._core import CoreError
from usersignals.processing.engine import _key_set
from usersignals.processing.native import NativeSignals

by_item = Lookup("items", key="item_id", provides=("category",))
by_ref = Lookup("refs", key="attrs.ref.id", provides=("kind",))
by_ts = Lookup("times", key="ts", provides=("slot",))
SIGNALS = [
    Signal(name="recent", version=1, enrich=[by_item.fields("category")],
           aggregate=LastN(4, keep=("item_id", "category")), retention=days(3)),
    Signal(name="kinds", version=1, enrich=[by_ref.fields("kind")],
           aggregate=Distinct(of="kind", precision=6)),
    Signal(name="slots", version=1, enrich=[by_ts.fields("slot")],
           aggregate=Count(by=("slot",))),
]  # fmt: skip
FIELDS = {"items": "item_id", "refs": "attrs.ref.id", "times": "ts"}
_REF_VALUES = st.one_of(
    st.none(), st.just(""), st.sampled_from(["r1", "r2", "é"]), st.integers(-3, 3),
    st.floats(allow_nan=False, width=32), st.booleans(), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["id", "x"]), st.integers(0, 2), max_size=2),
)  # fmt: skip
_ATTRS = st.one_of(
    st.none(),
    st.fixed_dictionaries({}, optional={"ref": st.one_of(
        _REF_VALUES, st.fixed_dictionaries({}, optional={"id": _REF_VALUES}))}),
)  # fmt: skip


def events(draws: list[tuple[str, int, Any]]) -> list[Event]:
    return [
        Event(f"e{n}", f"u{n % 3}", item, "click", "home", 1_767_225_600_000 + ts, attrs)
        for n, (item, ts, attrs) in enumerate(draws)
    ]


def records(live: list[Event], seed: int) -> dict[str, dict[str, Any]]:
    """Some of each source's keys found, as the lookups would find them."""
    rng = random.Random(seed)
    return {
        source: {key: {"category": key, "kind": key, "slot": key}
                 for key in _key_set(live, field) if rng.random() < 0.7}
        for source, field in FIELDS.items()
    }  # fmt: skip


def applied(native: NativeSignals, live: list[Event], found: Any, keys: Any) -> Any:
    """What the core computes from the columns read, one user a live event."""
    missing: dict[str, int] = {}
    columns = native.live_columns(live, found, missing, keys)
    stored = [[None] * len(native.keys) for _ in live]
    out = native.plans.apply(
        len(live), list(range(len(live))), [e.ts for e in live], [e.event_id for e in live],
        columns, stored,
    )  # fmt: skip
    return out, missing


@settings(max_examples=80, deadline=None)
@given(
    draws=st.lists(
        st.tuples(st.sampled_from(["i1", "i2", "", "i3", "ï"]), st.integers(0, 4), _ATTRS),
        min_size=1, max_size=40,
    ),
    seed=st.integers(0, 1000),
)  # fmt: skip
def test_join_keys_are_the_distinct_keys_and_read_the_same_columns(
    draws: list[tuple[str, int, Any]], seed: int
) -> None:
    live = events(draws)
    native = NativeSignals(SIGNALS)
    keys, distinct = native.join_keys(live)
    assert keys is not None
    assert distinct is not None
    for source, field in FIELDS.items():
        # The set the engine built, in order of first appearance, each key once.
        assert set(distinct[source]) == _key_set(live, field)
        assert len(distinct[source]) == len(set(distinct[source]))
        firsts = [k for e in live if (k := next(iter(_key_set([e], field)), None))]
        assert distinct[source] == list(dict.fromkeys(firsts))
    found = records(live, seed)
    assert applied(native, live, found, keys) == applied(native, live, found, None)


def test_keys_of_other_events_are_refused() -> None:
    live = events([("i1", 0, None), ("i2", 1, None)])
    native = NativeSignals(SIGNALS)
    keys, _ = native.join_keys(live)
    with pytest.raises(CoreError, match="other events"):
        native.live_columns(list(live), {}, None, keys)


def test_a_text_key_that_is_not_text_is_left_to_the_lookups() -> None:
    live: list[Any] = events([("i1", 0, None)])
    live[0].item_id = 7  # not what msgspec decodes, but what an object may hold
    assert NativeSignals(SIGNALS).join_keys(live) == (None, None)
