"""The state store interface: bytes in, bytes out, in batches.

The engine reads every user of a micro-batch with one ``get_many`` and writes every changed
user with one atomic ``write``; the store knows nothing of signals. A backend also offers named
*tables* (for enrichment data) and, for readers in other processes, ``refresh`` to catch up
with what the writer has committed.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Protocol, runtime_checkable


@runtime_checkable
class KeyValueTable(Protocol):
    """A named bytes-to-bytes table (user states, or an enrichment table)."""

    def get_many(self, keys: Sequence[bytes]) -> list[bytes | None]:
        """Values for ``keys``, in order; ``None`` where a key is absent."""

    def write(self, puts: Mapping[bytes, bytes], deletes: Sequence[bytes] = ()) -> None:
        """Apply all ``puts`` and ``deletes`` atomically: all of them or none."""

    def scan(self, prefix: bytes = b"") -> Iterator[tuple[bytes, bytes]]:
        """Every entry whose key starts with ``prefix``, in key order."""


@runtime_checkable
class StateStore(KeyValueTable, Protocol):
    """Where per-user states live. The engine is its only writer of user states."""

    backend: str

    def table(self, name: str) -> KeyValueTable:
        """A named side table in the same store (created when first written)."""

    def refresh(self) -> None:
        """For a reader: make the writer's latest committed writes visible."""

    def close(self) -> None: ...
