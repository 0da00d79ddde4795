"""The Materializer: one de-duplicated fetch per source, an LRU cache with TTLs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from usersignals.enrich import Materializer
from usersignals.enrich.cache import RecordCache
from usersignals.errors import ConfigurationError, EnrichmentError


class CountingSource:
    """An in-memory lookup source that records every fetch it serves."""

    def __init__(self, records: dict[str, dict[str, Any]]) -> None:
        self.name = "items"
        self.records = records
        self.calls: list[list[str]] = []
        self.fail = False

    def fetch(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        if self.fail:
            raise TimeoutError("source down")
        self.calls.append(list(keys))
        return {key: self.records[key] for key in keys if key in self.records}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def materializer(source: CountingSource, clock: Clock, capacity: int = 100) -> Materializer:
    return Materializer(
        {"items": source},
        cache_factory=lambda: RecordCache(capacity, ttl_s=60, negative_ttl_s=10, clock=clock),
    )


def test_keys_are_deduplicated_into_one_fetch() -> None:
    source = CountingSource({"a": {"c": 1}, "b": {"c": 2}})
    got = materializer(source, Clock()).lookup("items", ["a", "b", "a", "a", "zz"])
    assert got == {"a": {"c": 1}, "b": {"c": 2}}
    assert source.calls == [["a", "b", "zz"]]


def test_cached_records_are_not_fetched_again_until_their_ttl_expires() -> None:
    source, clock = CountingSource({"a": {"c": 1}}), Clock()
    m = materializer(source, clock)
    m.lookup("items", ["a"])
    clock.now += 59.9
    assert m.lookup("items", ["a"]) == {"a": {"c": 1}}
    assert len(source.calls) == 1
    assert m.stats.cache_hits == 1
    clock.now += 0.2  # past the 60 s TTL
    m.lookup("items", ["a"])
    assert len(source.calls) == 2


def test_misses_are_cached_for_the_negative_ttl() -> None:
    source, clock = CountingSource({}), Clock()
    m = materializer(source, clock)
    assert m.lookup("items", ["ghost"]) == {}
    clock.now += 9
    assert m.lookup("items", ["ghost"]) == {}
    assert len(source.calls) == 1
    clock.now += 2
    m.lookup("items", ["ghost"])
    assert len(source.calls) == 2
    assert m.stats.keys_missing == 2


def test_the_least_recently_used_records_leave_a_full_cache() -> None:
    source = CountingSource({k: {"v": k} for k in "abc"})
    m = materializer(source, Clock(), capacity=2)
    m.lookup("items", ["a", "b"])
    m.lookup("items", ["a"])  # a is now the most recent
    m.lookup("items", ["c"])  # evicts b
    source.calls.clear()
    m.lookup("items", ["a", "b"])
    assert source.calls == [["b"]]


def test_a_failing_source_raises_a_typed_error_and_an_unknown_one_a_configuration_error() -> None:
    source = CountingSource({})
    source.fail = True
    m = materializer(source, Clock())
    with pytest.raises(EnrichmentError, match="source down"):
        m.lookup("items", ["a"])
    with pytest.raises(ConfigurationError, match="no lookup source named 'nope'"):
        m.lookup("nope", ["a"])
    with pytest.raises(ConfigurationError, match="no lookup source configured for other"):
        m.require(["items", "other"])
