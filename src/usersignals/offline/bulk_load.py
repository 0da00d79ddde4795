"""Loading computed states into the store without clobbering the states already there.

A backfill computes some signals of some users; the store may already hold other signals of
the same users (a running deployment, a backfill of one new version with ``--only``). Each
computed record is merged into the stored one: the computed signals' states replace theirs,
every other state is kept, the progress keeps, per partition, the higher offset, and the
event-id fingerprints are united (:func:`~usersignals.processing.dedupe.merge_seen`), so a
repeat of an event either side applied is still dropped afterwards.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from itertools import islice
from pathlib import Path

import msgspec

from usersignals.processing.dedupe import merge_seen
from usersignals.state.codec import UserRecord, decode_record, encode_record
from usersignals.state.keys import BACKFILL_OFFSETS_KEY, USER_PREFIX
from usersignals.state.store import StateStore

#: Per Kafka partition, the next offset after what the last backfill covered.
_CHUNK = 5_000


def merge_record(
    key: bytes, stored: bytes | None, computed: bytes, horizon_ms: int | None
) -> bytes:
    """``computed`` merged into ``stored`` (see the module's note); ``horizon_ms``: the
    deployment's ``processing.dedupe_horizon_ms``."""
    if not stored:
        return computed
    old = decode_record(key, stored)
    new = decode_record(key, computed)
    states = dict(old.states)
    states.update(new.states)
    progress = dict(old.progress)
    for partition, offset in new.progress.items():
        progress[partition] = max(progress.get(partition, -1), offset)
    return encode_record(UserRecord(progress, states, merge_seen(old.seen, new.seen, horizon_ms)))


def load_states(
    records: Iterable[tuple[bytes, bytes]],
    store: StateStore,
    horizon_ms: int | None,
    offsets: Mapping[str, int] | None = None,
) -> int:
    """Merge ``(user key, record)`` pairs into ``store`` in batches; returns the user count.

    ``horizon_ms`` is the deployment's dedupe horizon (:func:`merge_record`); ``offsets``
    (the backfill's hand-over offsets) are written with the last batch.
    """
    count = 0
    puts: dict[bytes, bytes] = {}
    for key, value in merged(records, store, horizon_ms):
        puts[key] = value
        count += 1
        if len(puts) >= _CHUNK:
            store.write(puts)
            puts = {}
    if offsets:
        puts[BACKFILL_OFFSETS_KEY] = _offsets_value(offsets)
    if puts:
        store.write(puts)
    return count


def merged(
    records: Iterable[tuple[bytes, bytes]], store: StateStore | None, horizon_ms: int | None
) -> Iterator[tuple[bytes, bytes]]:
    """Each computed ``(user key, record)`` merged into what ``store`` holds for the user
    (read a chunk of users at a time), in the order given."""
    if store is None:  # nothing stored to merge with: the records as they are
        yield from records
        return
    pending = iter(records)
    while chunk := list(islice(pending, _CHUNK)):
        keys = [key for key, _ in chunk]
        stored = store.get_many(keys) if store is not None else [None] * len(keys)
        for (key, new), old in zip(chunk, stored, strict=True):
            yield key, merge_record(key, old, new, horizon_ms)


def write_backfill_offsets(store: StateStore, offsets: Mapping[str, int]) -> None:
    """The backfill's hand-over offsets, written alone (read by
    :func:`~usersignals.state.versions.read_backfill_offsets`): after the last shard's table
    file is in (:func:`load_states` writes them with its last batch)."""
    store.write({BACKFILL_OFFSETS_KEY: _offsets_value(offsets)})


def _offsets_value(offsets: Mapping[str, int]) -> bytes:
    return msgspec.json.encode(dict(sorted(offsets.items())))


def user_records(store: StateStore) -> Iterator[tuple[bytes, bytes]]:
    """Every user record of a (computed) store."""
    return store.scan(USER_PREFIX)


def state_files(directory: Path) -> Iterator[tuple[bytes, bytes]]:
    """The ``(key, value)`` rows of the Parquet state files a Spark backfill writes."""
    import pyarrow.parquet as pq

    for path in sorted(directory.glob("*.parquet")):
        table = pq.read_table(path, columns=["key", "value"])
        yield from zip(
            table.column("key").to_pylist(), table.column("value").to_pylist(), strict=True
        )
