"""A cache of decoded states keyed by their exact stored bytes."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import msgspec


class DecodedStateCache:
    """Decoded states of busy users, reused while their stored bytes are unchanged.

    A busy user is in every micro-batch and in many requests, and decoding a large state (a
    full LastN, a month of tiles) costs far more than the events it absorbs or the answer it
    gives. The engine keeps the state object it just encoded, a serving worker the one it just
    decoded; either reuses it only if the stored bytes are still exactly those bytes — so
    another writer, a restart or a rebalance can never make it stale. Aggregation functions
    never mutate their input state, which is what makes sharing it safe.
    """

    def __init__(self, min_bytes: int = 2_048, capacity: int = 2_000) -> None:
        self.min_bytes = min_bytes
        self.capacity = capacity
        self._entries: OrderedDict[tuple[bytes, str], tuple[msgspec.Raw, Any]] = OrderedDict()

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
        if len(encoded) < self.min_bytes:
            return
        self._entries[(user, signal)] = (encoded, state)
        self._entries.move_to_end((user, signal))
        if len(self._entries) > self.capacity:
            self._entries.popitem(last=False)
