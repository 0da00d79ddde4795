"""An LRU cache of looked-up records with a time to live, for the Materializer.

Misses are cached too (negative caching, with their own, shorter TTL), so an item unknown to
the source is not asked for again on every micro-batch. The clock is injectable: tests freeze
it to check expiry exactly.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

_MISSING: Any = object()


class RecordCache:
    def __init__(
        self,
        capacity: int = 200_000,
        ttl_s: float = 300.0,
        negative_ttl_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.clock = clock
        self._entries: OrderedDict[str, tuple[float, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get_many(self, keys: Iterable[str]) -> tuple[dict[str, Any], set[str], list[str]]:
        """(records found, keys known to be missing, keys to fetch)."""
        now = self.clock()
        found: dict[str, Any] = {}
        known_missing: set[str] = set()
        fetch: list[str] = []
        entries = self._entries
        for key in keys:
            entry = entries.get(key)
            if entry is None or entry[0] <= now:
                fetch.append(key)
                continue
            entries.move_to_end(key)
            if entry[1] is _MISSING:
                known_missing.add(key)
            else:
                found[key] = entry[1]
        return found, known_missing, fetch

    def put_many(self, records: Mapping[str, Any], missing: Iterable[str]) -> None:
        now = self.clock()
        entries = self._entries
        expires = now + self.ttl_s
        for key, record in records.items():
            entries[key] = (expires, record)
            entries.move_to_end(key)
        negative = now + self.negative_ttl_s
        for key in missing:
            entries[key] = (negative, _MISSING)
            entries.move_to_end(key)
        while len(entries) > self.capacity:
            entries.popitem(last=False)
