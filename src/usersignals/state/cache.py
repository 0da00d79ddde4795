"""A cache of decoded states keyed by their exact stored bytes, bounded in bytes."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import msgspec

#: A decoded state takes many times its stored size in memory (Python objects). Measured with
#: tracemalloc on the busiest users of 100,000 reference events (median of each signal):
#: LastN 10x, DecayedScores 15x, Count tiles 28x, Distinct 2x. The budget counts this
#: estimate, so ``max_bytes`` is of the order of the memory the cache holds.
DECODED_BYTES_PER_STORED_BYTE = 16


class DecodedStateCache:
    """Decoded states of busy users, reused while their stored bytes are unchanged.

    A busy user is in every micro-batch and in many requests, and decoding a large state (a
    full LastN, a month of tiles) costs far more than the events it absorbs or the answer it
    gives. The engine keeps the state object it just encoded, a serving worker the one it just
    decoded; either reuses it only if the stored bytes are still exactly those bytes — so
    another writer, a restart or a rebalance can never make it stale. Aggregation functions
    never mutate their input state, which is what makes sharing it safe.

    Bounded by an estimate of the memory it holds (``max_bytes``: the stored size of every
    entry times :data:`DECODED_BYTES_PER_STORED_BYTE`), not by a number of entries: a few
    thousand large users would otherwise hold hundreds of megabytes. Least recently used
    entries go first; a state larger than the whole budget is not cached.
    """

    def __init__(self, min_bytes: int = 2_048, max_bytes: int = 64 << 20) -> None:
        self.min_bytes = min_bytes
        self.max_bytes = max_bytes
        self.bytes = 0  # the estimate of what the entries hold now
        self._entries: OrderedDict[tuple[bytes, str], tuple[msgspec.Raw, Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, user: bytes, signal: str, stored: msgspec.Raw | None) -> Any:
        if stored is None or len(stored) < self.min_bytes:
            return None
        entry = self._entries.get((user, signal))
        if entry is None or entry[0] != stored:
            return None
        self._entries.move_to_end((user, signal))
        return entry[1]

    def put(self, user: bytes, signal: str, encoded: msgspec.Raw, state: Any) -> None:
        # Raw on both sides: msgspec.Raw compares equal to a Raw of the same bytes, never to
        # a bytes object.
        size = _cost(encoded)
        if len(encoded) < self.min_bytes or size > self.max_bytes:
            return
        old = self._entries.pop((user, signal), None)
        if old is not None:
            self.bytes -= _cost(old[0])
        self._entries[(user, signal)] = (encoded, state)
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, (evicted, _) = self._entries.popitem(last=False)
            self.bytes -= _cost(evicted)

    def discard(self, user: bytes, signal: str) -> None:
        """Forget a user's state of ``signal``: its object may no longer match its bytes (a
        user-defined aggregation that failed may have changed it in place)."""
        old = self._entries.pop((user, signal), None)
        if old is not None:
            self.bytes -= _cost(old[0])


def _cost(encoded: msgspec.Raw) -> int:
    return len(encoded) * DECODED_BYTES_PER_STORED_BYTE
