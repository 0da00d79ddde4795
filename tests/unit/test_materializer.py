"""The Materializer: one de-duplicated fetch per source, an LRU cache with TTLs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from usersignals.enrich import Materializer
from usersignals.enrich.cache import RecordCache
from usersignals.enrich.materializer import SourcePolicy
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
        caches={"items": RecordCache(capacity, ttl_s=60, negative_ttl_s=10, clock=clock)},
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


def test_a_lookup_not_remembered_neither_reads_nor_fills_the_cache() -> None:
    source, clock = CountingSource({"a": {"c": 1}, "b": {"c": 2}}), Clock()
    cache = RecordCache(100, ttl_s=60, negative_ttl_s=10, clock=clock)
    m = Materializer({"items": source}, caches={"items": cache})
    m.lookup("items", ["a"])
    assert m.lookup("items", ["a", "b", "zz"], remember=False) == {"a": {"c": 1}, "b": {"c": 2}}
    assert source.calls == [["a"], ["a", "b", "zz"]]  # "a" fetched again, not read cached
    assert len(cache) == 1
    assert m.stats.keys_fetched == 4
    assert m.stats.keys_missing == 1


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


class FlakySource(CountingSource):
    """Fails its first ``failures`` fetches, then serves."""

    def __init__(self, records: dict[str, dict[str, Any]], failures: int) -> None:
        super().__init__(records)
        self.failures = failures

    def fetch(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        if self.failures > 0:
            self.failures -= 1
            raise EnrichmentError("items", "source timed out", kind="TimeoutError")
        return super().fetch(keys)


class BuggySource(CountingSource):
    """A source with a programming error: it raises something other than EnrichmentError."""

    def fetch(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        self.calls.append(list(keys))
        return {key: self.records[key] for key in keys}  # KeyError for an unknown key


@pytest.mark.parametrize("policy", ["hold", "missing"])
def test_a_programming_error_in_a_source_is_not_retried(policy: str) -> None:
    source = BuggySource({"a": {"c": 1}})
    slept: list[float] = []
    m = Materializer(
        {"items": source},
        policies={"items": SourcePolicy(policy, retries=3)},
        sleep=slept.append,
    )
    with pytest.raises(KeyError):
        m.lookup("items", ["a", "unknown"])
    assert source.calls == [["a", "unknown"]]  # once: not retried, under "hold" either
    assert slept == []
    assert m.stats.failures == {}


def test_hold_policy_retries_until_the_source_recovers_and_loses_nothing() -> None:
    source = FlakySource({"a": {"c": 1}}, failures=6)
    slept: list[float] = []
    m = Materializer(
        {"items": source},
        policies={"items": SourcePolicy("hold", retries=2, backoff_s=0.1, max_backoff_s=0.4)},
        sleep=slept.append,
    )
    assert m.lookup("items", ["a"]) == {"a": {"c": 1}}
    assert slept == [0.1, 0.2, 0.4, 0.4, 0.4, 0.4]  # exponential, capped
    assert m.stats.failures == {"TimeoutError": 6}
    assert m.stats.keys_failed == 0


def test_a_held_source_is_reported_until_it_recovers() -> None:
    """The processor's /readyz reads ``holding``: not-ready while a held source is down."""
    source = FlakySource({"a": {"c": 1}}, failures=4)
    seen: list[set[str]] = []
    m = Materializer(
        {"items": source},
        policies={"items": SourcePolicy("hold", retries=1, backoff_s=0.1, max_backoff_s=0.4)},
        sleep=lambda _: seen.append(set(m.holding)),
    )
    assert m.lookup("items", ["a"]) == {"a": {"c": 1}}
    assert seen == [set(), {"items"}, {"items"}, {"items"}]  # held after its retries ran out
    assert m.holding == set()


def test_missing_policy_goes_on_without_the_fields_and_asks_again_next_time() -> None:
    source = FlakySource({"a": {"c": 1}}, failures=3)
    m = Materializer(
        {"items": source},
        policies={"items": SourcePolicy("missing", retries=2, backoff_s=0.01)},
        sleep=lambda _: None,
    )
    assert m.lookup("items", ["a"]) == {}
    assert m.stats.keys_failed == 1
    assert m.stats.failures == {"TimeoutError": 3}
    assert m.lookup("items", ["a"]) == {"a": {"c": 1}}  # not negatively cached


def test_an_unknown_source_is_a_configuration_error() -> None:
    m = materializer(CountingSource({}), Clock())
    with pytest.raises(ConfigurationError, match="no lookup source named 'nope'"):
        m.lookup("nope", ["a"])
    with pytest.raises(ConfigurationError, match="no lookup source configured for other"):
        m.require(["items", "other"])


def test_a_field_no_fetched_record_has_is_warned_of_once(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by the signal-author trial: a Lookup providing `topic` over a table whose
    records say `category` answered nothing for everyone, without a word."""
    from usersignals.enrich import materializer as module
    from usersignals.values import SCALAR

    monkeypatch.setattr(module, "UNSEEN_FIELD_RECORDS", 25)
    records = {f"i{n}": {"category": "cats"} for n in range(30)}
    m = materializer(CountingSource(records), Clock())
    m.expect("items", {"topic": [SCALAR], "category": [SCALAR]})
    with caplog.at_level("WARNING", logger="usersignals.enrich.materializer"):
        for start in (0, 10, 20):
            m.lookup("items", [f"i{n}" for n in range(start, start + 10)])
    warnings = [r.getMessage() for r in caplog.records if "topic" in r.getMessage()]
    assert len(warnings) == 1
    assert "'items'" in warnings[0]
    assert "30 records" in warnings[0]
    assert not [r for r in caplog.records if "'category'" in r.getMessage()]
