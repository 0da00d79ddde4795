"""Reading the next batch's user records ahead (processing/read_ahead.py) changes nothing
that is written: a record read ahead and written since by this engine is taken from the write
(another writer's never reaches it: a revocation drops every read-ahead).

The Kafka runner reads block N+1's records on its fetch thread while block N is applied and
written; here that interleaving is played in one thread, the read-ahead of each batch taken
before the batch before it is written (so every user in both is stale), with deletions
between batches, and the stores compared byte for byte with batches applied without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_native_pipeline import SIGNALS, open_engine, stream

from native_batching import batches as split_at
from usersignals import (
    Engine,
    Event,
    EventDecoder,
    Materializer,
    MicroBatch,
    Position,
    SignalRegistry,
    TableSource,
)
from usersignals.errors import StoreError
from usersignals.events.decode import DecodeResult
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.processing.pipeline import PipelineStep
from usersignals.processing.read_ahead import ReadAhead


def batches(
    pairs: list[tuple[Event, Position]], cuts: list[int]
) -> list[tuple[list[Event], list[Position]]]:
    """The (events, positions) of each batch of ``pairs`` split at ``cuts``."""
    return [([e for e, _ in part], [p for _, p in part]) for part in split_at(pairs, cuts)]


def play(
    engine: Engine,
    parts: Sequence[tuple[list[Event], list[Position]]],
    deleted: set[int],
    read_ahead: bool,
) -> None:
    """Each batch applied (the user ``u0`` deleted after the batches in ``deleted``); with
    ``read_ahead``, the next batch's records read before this one is written."""
    ahead: ReadAhead | None = engine.read_block_ahead(parts[0][0]) if read_ahead else None
    for index, (events, positions) in enumerate(parts):
        following = None
        if read_ahead and index + 1 < len(parts):
            following = engine.read_block_ahead(parts[index + 1][0])
        engine.process(MicroBatch(events, positions), ahead=ahead)
        if index in deleted:
            engine.delete_users(["u0"])
        engine.read_ahead.done(ahead)
        ahead = following


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    size=st.integers(1, 120),
    cuts=st.lists(st.integers(1, 150), max_size=6),
    deleted=st.sets(st.integers(0, 6), max_size=2),
    native=st.booleans(),
)
def test_what_is_written_is_the_same_with_and_without_reading_ahead(
    seed: int, size: int, cuts: list[int], deleted: set[int], native: bool
) -> None:
    parts = batches(stream(seed, size), cuts)
    with_ahead, without = open_engine(native, 3_600_000), open_engine(native, 3_600_000)
    play(with_ahead, parts, deleted, read_ahead=True)
    play(without, parts, deleted, read_ahead=False)
    assert dict(with_ahead.store.scan(b"u:")) == dict(without.store.scan(b"u:"))


def test_records_read_ahead_and_not_written_since_are_not_read_again() -> None:
    engine = open_engine(True, 3_600_000)
    parts = batches(stream(5, 80), [40])
    engine.process(MicroBatch(*parts[0]))
    reads: list[bytes] = []
    get_many = engine.store.get_many

    def counted(keys: Sequence[bytes]) -> list[bytes | None]:
        reads.extend(key for key in keys if key.startswith(b"u:"))
        return get_many(keys)

    ahead = engine.read_ahead.read(parts[1][0])
    engine.store.get_many = counted  # type: ignore[method-assign]
    engine.process(MicroBatch(*parts[1]), ahead=ahead)
    assert reads == []  # every user's record came from the read-ahead

    engine.store.get_many = get_many  # type: ignore[method-assign]
    ahead = engine.read_ahead.read(parts[1][0])
    write = engine.store.write

    def failing(*args: object, **kwargs: object) -> None:
        raise StoreError("memory", "write", "down")

    engine.store.write = failing  # type: ignore[method-assign]
    with pytest.raises(StoreError):  # may have written it (a Redis Cluster): read again
        engine.delete_users(["u1"])
    engine.store.write = write  # type: ignore[method-assign]
    engine.store.get_many = counted  # type: ignore[method-assign]
    engine.process(MicroBatch(*parts[1]), ahead=ahead)
    assert reads == [b"u:u1"]


def test_records_written_since_the_read_began_come_from_the_write() -> None:
    """In a processor keeping up, the users of one batch are mostly those of the next, whose
    records were read ahead while that batch was written: each of them was read again on the
    main thread (3 % of its samples at 60,000 events/s). What this engine wrote is what the
    store holds, so the read-ahead takes the written bytes (and a deletion's absence)."""
    engine = open_engine(True, 3_600_000)
    first, second, third = batches(stream(5, 90), [30, 60])
    engine.process(MicroBatch(*first))
    reads: list[bytes] = []
    get_many = engine.store.get_many

    def counted(keys: Sequence[bytes]) -> list[bytes | None]:
        reads.extend(key for key in keys if key.startswith(b"u:"))
        return get_many(keys)

    ahead = engine.read_ahead.read(third[0])
    engine.process(MicroBatch(*second))  # written after the read of the third began
    engine.delete_users(["u1"])
    engine.store.get_many = counted  # type: ignore[method-assign]
    engine.process(MicroBatch(*third), ahead=ahead)
    assert reads == []
    engine.store.get_many = get_many  # type: ignore[method-assign]
    expected = open_engine(True, 3_600_000)
    for part in (first, second):
        expected.process(MicroBatch(*part))
    expected.delete_users(["u1"])
    expected.process(MicroBatch(*third))
    assert dict(engine.store.scan(b"u:")) == dict(expected.store.scan(b"u:"))


def test_a_revocation_drops_what_was_read_ahead() -> None:
    """From a review: only this engine's writes marked a read-ahead stale. After a
    revocation (a drain that gave up, a lost assignment) another processor may write the
    users of a block still in hand; written over a record read before that, the other's
    later events were undone, and it had committed past them. The runner now drops every
    open read-ahead on a revocation."""
    ours = open_engine(True, 3_600_000)
    theirs = Engine(
        SignalRegistry(SIGNALS),
        ours.store,
        Materializer({"items": TableSource("items", ours.store.table("items"))}),
        dedupe_horizon_ms=3_600_000,
    )
    first, held, later = batches(stream(11, 90), [30, 60])
    ours.process(MicroBatch(*first))
    ahead = ours.read_ahead.read(held[0])  # the block in hand
    theirs.process(MicroBatch(*held))  # the new owner, past the block and beyond
    theirs.process(MicroBatch(*later))
    expected = dict(ours.store.scan(b"u:"))
    ours.read_ahead.drop_all()  # the revocation
    ours.process(MicroBatch(*held), ahead=ahead)  # the old owner's block, late
    assert dict(ours.store.scan(b"u:")) == expected  # every event of it already applied


def test_a_failed_write_attempt_drops_the_blocks_read_ahead(tmp_path: Path) -> None:
    """The failure may be an outage long enough for another processor to take the
    partition over: the attempts after it read the records again."""
    engine = open_engine(True, 3_600_000)
    (events, positions), *_ = batches(stream(12, 20), [])
    ahead = engine.read_ahead.read(events)
    write = engine.store.write

    def failing(*args: object, **kwargs: object) -> None:
        raise StoreError("memory", "write", "down")

    engine.store.write = failing  # type: ignore[method-assign]
    step = PipelineStep(engine, EventDecoder(), DeadLetterFile(tmp_path / "dead.jsonl"))
    decoded = DecodeResult(events=events, positions=positions)
    with pytest.raises(StoreError):
        step.write(decoded, None, ahead)
    assert ahead.dropped
    engine.store.write = write  # type: ignore[method-assign]
