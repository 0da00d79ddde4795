"""The Materializer's record cache (entries in the core) against its reference model: the
``OrderedDict`` version it replaced, for random sequences of lookups, puts and clock ticks."""

from __future__ import annotations

import gc
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usersignals.enrich.cache import RecordCache

_MISSING: Any = object()


class ReferenceCache:
    """The cache as it was written in Python: the model."""

    def __init__(self, capacity: int, ttl_s: float, negative_ttl_s: float) -> None:
        self.capacity, self.ttl_s, self.negative_ttl_s = capacity, ttl_s, negative_ttl_s
        self.entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def get_many(
        self, keys: Iterable[str], now: float
    ) -> tuple[dict[str, Any], set[str], list[str]]:
        found: dict[str, Any] = {}
        known_missing: set[str] = set()
        fetch: list[str] = []
        for key in keys:
            entry = self.entries.get(key)
            if entry is None or entry[0] <= now:
                fetch.append(key)
                continue
            self.entries.move_to_end(key)
            if entry[1] is _MISSING:
                known_missing.add(key)
            else:
                found[key] = entry[1]
        return found, known_missing, fetch

    def put_many(self, records: Mapping[str, Any], missing: Iterable[str], now: float) -> None:
        for key, record in records.items():
            self.entries[key] = (now + self.ttl_s, record)
            self.entries.move_to_end(key)
        for key in missing:
            self.entries[key] = (now + self.negative_ttl_s, _MISSING)
            self.entries.move_to_end(key)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


keys = st.lists(st.sampled_from([f"k{i}" for i in range(10)] + ["", "é", "k\x00"]), max_size=8)
records = st.dictionaries(st.sampled_from(["k1", "k2", "k3", "é"]), st.integers(0, 9), max_size=3)
ops = st.lists(
    st.one_of(
        st.tuples(st.just("get"), keys),
        st.tuples(st.just("put"), records, keys),
        st.tuples(st.just("tick"), st.floats(0, 40)),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(capacity=st.integers(0, 6), operations=ops)
def test_the_cache_answers_as_its_reference_model(
    capacity: int, operations: list[tuple[str, Any, Any] | tuple[str, Any]]
) -> None:
    clock = Clock()
    cache = RecordCache(capacity, ttl_s=30, negative_ttl_s=10, clock=clock)
    model = ReferenceCache(capacity, ttl_s=30, negative_ttl_s=10)
    for operation in operations:
        if operation[0] == "get":
            got, expected = cache.get_many(operation[1]), model.get_many(operation[1], clock.now)
            assert got == expected
            # The very objects that were put, not copies.
            assert all(got[0][key] is expected[0][key] for key in got[0])
        elif operation[0] == "put":
            records = {key: [value] for key, value in operation[1].items()}
            missing = [key for key in operation[2] if key not in records]
            cache.put_many(records, missing)
            model.put_many(records, missing, clock.now)
        else:
            clock.now += operation[1]
        assert len(cache) == len(model.entries)


def test_a_key_must_be_text() -> None:
    cache = RecordCache(4)
    with pytest.raises(TypeError):
        cache.get_many([1])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        cache.put_many({b"a": 1}, [])  # type: ignore[dict-item]


def test_records_from_any_mapping_are_cached() -> None:
    clock = Clock()
    cache = RecordCache(4, clock=clock)
    cache.put_many(OrderedDict(a=1), ["b"])
    assert cache.get_many(["a", "b", "c"]) == ({"a": 1}, {"b"}, ["c"])


def test_records_are_put_in_their_mapping_s_own_order() -> None:
    """A dict subclass is read through its ``items()``, as the model reads it: that order
    decides what a full cache evicts first."""
    records: OrderedDict[str, int] = OrderedDict(a=1, b=2)
    records.move_to_end("a")
    clock = Clock()
    cache, model = RecordCache(1, clock=clock), ReferenceCache(1, 300.0, 60.0)
    cache.put_many(records, [])
    model.put_many(records, [], clock.now)
    assert (
        cache.get_many(["a", "b"])
        == model.get_many(["a", "b"], clock.now)
        == ({"a": 1}, set(), ["b"])
    )


def test_a_cycle_through_a_cached_record_is_collected() -> None:
    """The core's entries take part in garbage collection: a record that refers back to the
    cache holding it (a record object kept with its source, say) does not leak the pair."""

    class Held:
        cache: RecordCache

    cache = RecordCache(4)
    record = Held()
    record.cache = cache
    cache.put_many({"a": record}, [])
    alive = weakref.ref(record)
    del cache, record
    gc.collect()
    assert alive() is None
