"""An LRU cache of looked-up records with a time to live, for the Materializer.

Misses are cached too (negative caching, with their own, shorter TTL), so an item unknown to
the source is not asked for again on every micro-batch. The clock is injectable: tests freeze
it to check expiry exactly.

The entries live in the core (``usersignals._core.RecordCache``), one call per batch each
way: kept in an ``OrderedDict``, they cost about 3 µs a key, 0.6 s of the lookups over 1 M
reference events in batches of 100,000 (bench/engine.py). That ``OrderedDict`` version is
the reference model the tests hold the core's to (tests/unit/test_record_cache.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from usersignals._core import RecordCache as _Entries


class RecordCache:
    def __init__(
        self,
        capacity: int = 200_000,
        ttl_s: float = 300.0,
        negative_ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.clock = clock
        self._entries = _Entries(capacity)

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, keys: Iterable[str]) -> tuple[dict[str, Any], set[str], list[str]]:
        """(records found, keys known to be missing, keys to fetch)."""
        return self._entries.get_many(keys, self.clock())

    def missing(self, keys: Iterable[str]) -> list[str]:
        """The keys a lookup would fetch now, leaving the use order as it is (for reading
        ahead from another thread: processing/read_ahead.py)."""
        return self._entries.missing(keys, self.clock())

    def put_many(self, records: Mapping[str, Any], missing: Iterable[str]) -> None:
        now = self.clock()
        self._entries.put_many(records, missing, now + self.ttl_s, now + self.negative_ttl_s)
