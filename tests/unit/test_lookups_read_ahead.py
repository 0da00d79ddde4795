"""Lookups read ahead: the Kafka processor's fetch thread fetches the next block's lookup keys
that the cache lacks (``Materializer.read_ahead``), so that the main thread's lookup of them
(``Materializer.lookup(..., ahead=...)``) asks the source for nothing: in a processor keeping
up with bench/ingest.py's freshness feed, the item table's reads were about 11 % of the main
thread's samples (py-spy, 60,000 events/s). What a lookup answers, caches and counts is the
same with or without."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from test_materializer import Clock, CountingSource
from test_native_pipeline import open_engine, stream

from usersignals import MicroBatch
from usersignals.enrich import Materializer
from usersignals.enrich.cache import RecordCache
from usersignals.enrich.materializer import SourcePolicy
from usersignals.errors import EnrichmentError

RECORDS = {key: {"c": n} for n, key in enumerate("abcdef")}


class AheadSource(CountingSource):
    """A source whose fetch may be called from another thread (as the embedded table's);
    while ``fail``, it cannot answer."""

    reads_ahead = True

    def fetch(self, keys: Sequence[str]) -> dict[str, dict[str, Any]]:
        if self.fail:
            raise EnrichmentError("items", "source timed out", kind="TimeoutError")
        return super().fetch(keys)


def materializers(
    clock: Clock, policy: SourcePolicy | None = None
) -> tuple[Materializer, AheadSource]:
    source = AheadSource(RECORDS)
    cache = RecordCache(100, ttl_s=60, negative_ttl_s=10, clock=clock)
    policies = {"items": policy} if policy else None
    return Materializer({"items": source}, caches={"items": cache}, policies=policies), source


def test_keys_read_ahead_are_not_fetched_again_and_the_answers_are_the_same() -> None:
    clock = Clock()
    (ahead_m, ahead_source), (plain_m, _) = materializers(clock), materializers(clock)
    for m in (ahead_m, plain_m):
        m.lookup("items", ["a", "b"])  # cached: not read ahead
    ahead = ahead_m.read_ahead({"items": ["b", "a", "c", "zz", "c"]})
    assert ahead_source.calls[-1] == ["c", "zz"]  # only what the cache lacks, once
    calls = len(ahead_source.calls)
    keys = ["a", "c", "zz", "d"]
    got = ahead_m.lookup("items", keys, ahead=ahead)
    assert got == plain_m.lookup("items", keys)
    assert ahead_source.calls[calls:] == [["d"]]  # the one key not read ahead
    assert ahead_m.stats == plain_m.stats
    assert ahead_m.lookup("items", keys) == plain_m.lookup("items", keys)  # cached alike
    assert ahead_source.calls[calls + 1 :] == []


def test_reading_ahead_leaves_the_caches_use_order_as_it_is() -> None:
    clock = Clock()
    source = AheadSource(RECORDS)
    m = Materializer({"items": source}, caches={"items": RecordCache(2, clock=clock)})
    m.lookup("items", ["a"])
    m.lookup("items", ["b"])
    m.read_ahead({"items": ["a", "c"]})  # "a" is not used by it: still the oldest
    m.lookup("items", ["c"])  # evicts "a"
    source.calls.clear()
    m.lookup("items", ["a", "b"])
    assert source.calls == [["a"]]


def test_a_failed_read_ahead_leaves_the_keys_to_the_lookup() -> None:
    m, source = materializers(Clock())
    source.fail = True
    ahead = m.read_ahead({"items": ["a"]})  # never raises: the lookup will fetch them
    source.fail = False
    assert m.lookup("items", ["a"], ahead=ahead) == {"a": RECORDS["a"]}
    assert source.calls == [["a"]]


def test_what_was_read_ahead_is_used_when_the_rest_fails_under_the_missing_policy() -> None:
    m, source = materializers(Clock(), SourcePolicy(on_failure="missing", retries=0))
    ahead = m.read_ahead({"items": ["a"]})
    source.fail = True
    assert m.lookup("items", ["a", "b"], ahead=ahead) == {"a": RECORDS["a"]}
    assert m.stats.keys_failed == 1


def test_a_source_that_does_not_say_it_reads_ahead_is_not_called_ahead() -> None:
    source = CountingSource(RECORDS)
    m = Materializer({"items": source})
    ahead = m.read_ahead({"items": ["a"]})
    assert source.calls == []
    assert m.lookup("items", ["a"], ahead=ahead) == {"a": RECORDS["a"]}


@pytest.mark.parametrize("keys", [["a"], []])
def test_an_unknown_source_is_not_read_ahead(keys: Sequence[Any]) -> None:
    m, source = materializers(Clock())
    assert m.read_ahead({"other": keys}).records == {}
    assert source.calls == []


def test_a_block_read_ahead_brings_its_items_and_the_batch_fetches_none() -> None:
    engine = open_engine(True, 3_600_000)
    pairs = stream(8, 60)
    events, positions = [e for e, _ in pairs], [p for _, p in pairs]
    table = engine.store.table("items")
    reads: list[list[bytes]] = []
    get_many = table.get_many

    def counted(keys: Sequence[bytes]) -> list[bytes | None]:
        reads.append(list(keys))
        return get_many(keys)

    table.get_many = counted  # type: ignore[method-assign]
    source = engine.materializer._sources["items"]  # type: ignore[union-attr]
    source._table = table  # type: ignore[attr-defined]
    ahead = engine.read_block_ahead(events)
    assert ahead.lookups is not None
    assert len(reads) == 1  # the block's items, fetched ahead
    expected = open_engine(True, 3_600_000)
    report = engine.process(MicroBatch(events, positions), ahead=ahead)
    assert len(reads) == 1  # none fetched when the batch was applied
    assert report == expected.process(MicroBatch(events, positions))
    assert dict(engine.store.scan(b"u:")) == dict(expected.store.scan(b"u:"))
