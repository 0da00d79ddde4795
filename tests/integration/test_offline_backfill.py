"""Backfill: the same states as streaming the same events, and a hand-over without gap or double."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import pytest
from offline_helpers import (
    BAD,
    REFERENCE,
    History,
    load_items,
    new_store,
    random_history,
    redelivered,
    retried_elsewhere,
    settings_for,
    stream,
    user_states,
    write_jsonl_archive,
    write_parquet_archive,
)

from usersignals import Engine, MicroBatch, Position, SignalRegistry
from usersignals.assembly import open_store
from usersignals.config import Settings
from usersignals.enrich import Materializer, TableSource
from usersignals.offline import BackfillJob, backfill
from usersignals.state.codec import decode_record
from usersignals.state.keys import user_key
from usersignals.state.rocks import RocksStore
from usersignals.state.versions import load_backfilled, read_backfill_offsets


@pytest.fixture(scope="module", params=[11, 12])
def history(request: pytest.FixtureRequest) -> History:
    return random_history(request.param)


def streamed(
    path: Path, history: History, batch: int = 97, horizon_ms: int = 86_400_000
) -> dict[bytes, bytes]:
    store = new_store(path, history)
    try:
        stream(store, history, batch, horizon_ms=horizon_ms)
        return user_states(store)
    finally:
        store.close()


def test_backfill_equals_streaming_byte_for_byte(tmp_path: Path, history: History) -> None:
    expected = streamed(tmp_path / "streamed", history)
    archive = write_parquet_archive(tmp_path / "archive", history, BAD)
    new_store(tmp_path / "store", history).close()
    dead = tmp_path / "dead.jsonl"
    summary = backfill(
        # Micro-batches of 500: the backfill's batch boundaries differ from the stream's.
        BackfillJob(
            str(archive), settings_for(tmp_path / "store"), dead_letter=dead, batch_size=500
        )
    )
    store = RocksStore(tmp_path / "store")
    try:
        assert user_states(store) == expected  # states and per-user progress, byte for byte
        offsets = read_backfill_offsets(store)
    finally:
        store.close()
    assert summary.events == len(history.events)
    assert summary.bad == len(BAD)
    reasons = [json.loads(line)["reason"] for line in dead.read_text().splitlines()]
    assert sorted(reasons) == ["invalid_value", "malformed_json", "missing_field"]
    ends = {}
    for position in history.positions:
        ends[position.partition] = max(ends.get(position.partition, 0), position.offset + 1)
    assert offsets == ends


def assert_backfill_equals_streaming(root: Path, history: History, horizon_ms: int) -> None:
    """Streaming ``history`` and backfilling it from an event-day archive (with Kafka
    coordinates), both with the dedupe horizon ``horizon_ms``, store the same bytes."""
    expected = streamed(root / "streamed", history, horizon_ms=horizon_ms)
    archive = write_parquet_archive(root / "archive", history)
    new_store(root / "store", history).close()
    backfill(BackfillJob(str(archive), settings_for(root / "store", dedupe_horizon_ms=horizon_ms)))
    store = RocksStore(root / "store")
    try:
        assert user_states(store) == expected
    finally:
        store.close()


def test_backfill_takes_the_deployments_dedupe_horizon(tmp_path: Path, history: History) -> None:
    """A deployment with event-id dedupe off applies a redelivered event again; so does its
    backfill (it used the default horizon of 24 h, whatever the deployment's was)."""
    assert_backfill_equals_streaming(tmp_path, redelivered(history, 40), horizon_ms=0)


def test_backfill_judges_a_retry_on_another_partition_beside_its_original(
    tmp_path: Path, history: History
) -> None:
    """The stream drops a retry written to another partition right after its original; the
    backfill too, though the archive's partitions put it after the user's later events."""
    assert_backfill_equals_streaming(tmp_path, retried_elsewhere(history.items), 86_400_000)


def test_backfill_judges_repeats_in_the_streams_order(tmp_path: Path, history: History) -> None:
    """Redeliveries long after their originals with a 3-day horizon: the stream applies those
    whose original fell out of the horizon behind newer arrivals, and drops the others. An
    archive laid out by event day puts each one beside its original; the backfill still
    judges them in offset order, as the stream."""
    assert_backfill_equals_streaming(tmp_path, redelivered(history, 25), 3 * 86_400_000)


def test_backfill_in_two_processes_equals_one(tmp_path: Path, history: History) -> None:
    archive = write_jsonl_archive(tmp_path / "archive", history)
    results = []
    for workers in (1, 2):
        path = tmp_path / f"store-{workers}"
        new_store(path, history).close()
        backfill(BackfillJob(str(archive) + "/*.jsonl", settings_for(path), workers=workers))
        store = RocksStore(path)
        results.append(user_states(store))
        store.close()
    assert results[0] == results[1]
    assert len(results[0]) == len({event.user_id for event in history.events})


def test_shards_without_users_hand_over_as_one_process_does(
    tmp_path: Path, history: History
) -> None:
    """One user's events in 3 processes: two shards have nothing to write, and the states and
    the hand-over offsets are those of one process."""
    one_user = history.events[0].user_id
    picked = [
        (event, position)
        for event, position in zip(history.events, history.positions, strict=True)
        if event.user_id == one_user
    ]
    alone = History(history.spec, [e for e, _ in picked], [p for _, p in picked], history.items)
    archive = write_parquet_archive(tmp_path / "archive", alone)
    results = []
    for workers in (1, 3):
        path = tmp_path / f"store-{workers}"
        new_store(path, alone).close()
        summary = backfill(BackfillJob(str(archive), settings_for(path), workers=workers))
        assert summary.users == 1
        store = RocksStore(path)
        try:
            results.append((user_states(store), read_backfill_offsets(store)))
        finally:
            store.close()
    assert results[0] == results[1]
    assert list(results[0][0]) == [user_key(one_user)]
    assert results[0][1]


def test_shards_work_beside_the_store_and_leave_nothing(
    tmp_path: Path, history: History, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shards' scratch stores and table files go beside a RocksDB store (a hard link
    moves the files in; a tmpfs would hold them in memory), and go away afterwards."""
    made: list[tuple[str | None, str | None]] = []
    real = tempfile.TemporaryDirectory

    def recording(*args: Any, **kwargs: Any) -> tempfile.TemporaryDirectory[str]:
        made.append((kwargs.get("prefix"), kwargs.get("dir")))
        return real(*args, **kwargs)

    monkeypatch.setattr(tempfile, "TemporaryDirectory", recording)
    archive = write_jsonl_archive(tmp_path / "archive", history)
    store = tmp_path / "deploy" / "store"
    new_store(store, history).close()
    backfill(BackfillJob(str(archive), settings_for(store), workers=2))
    assert (".usersignals-backfill-", store.parent) in [(p, d and Path(d)) for p, d in made]
    assert sorted(path.name for path in store.parent.iterdir()) == ["store"]


def test_backfill_until_hands_over_to_the_stream(tmp_path: Path, history: History) -> None:
    """Backfill up to T, then the processor reads the topic from the start: the result is the
    same as streaming everything once (no gap, no double count)."""
    expected = streamed(tmp_path / "streamed", history)
    archive = write_parquet_archive(tmp_path / "archive", history)
    times = sorted(event.ts for event in history.events)
    until = times[len(times) // 2]
    store = new_store(tmp_path / "store", history)
    store.close()
    summary = backfill(BackfillJob(str(archive), settings_for(tmp_path / "store"), until_ms=until))
    assert 0 < summary.events < len(history.events)
    assert summary.after_boundary == len(history.events) - summary.events
    store = RocksStore(tmp_path / "store")
    try:
        stream(store, history, 131)  # from offset 0: what was backfilled is dropped per user
        assert user_states(store) == expected
    finally:
        store.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_only_adds_one_signal_to_a_running_deployment(
    tmp_path: Path, history: History, workers: int
) -> None:
    """The stream computed four signals up to some offset; ``--only`` backfills the fifth up to
    exactly where each user stands; the stream continues with all five: same as all along.
    With two processes, each merges its users' stored records itself."""
    expected = streamed(tmp_path / "streamed", history)
    full = SignalRegistry.from_module(REFERENCE)
    four = SignalRegistry([s for s in full if s.name != "category_interest"])
    store = new_store(tmp_path / "store", history)
    middle = len(history.events) // 2
    try:
        stream(store, history, 89, registry=four, upto=middle)
        before = user_states(store)
    finally:
        store.close()
    archive = write_parquet_archive(tmp_path / "archive", history)
    # An --until below where the stream stands does not apply to users it has reached: their
    # new state must cover exactly what their record says was applied.
    early = min(event.ts for event in history.events) + 86_400_000
    summary = backfill(
        BackfillJob(
            str(archive), settings_for(tmp_path / "store"), only=("category_interest@1",),
            until_ms=early, workers=workers,
        )
    )  # fmt: skip
    assert summary.left_to_stream > 0
    assert summary.behind_stream == 0
    assert summary.uncovered_partitions == {}  # the whole topic is in the archive
    assert set(backfilled(tmp_path / "store")) == {"category_interest@1"}
    store = RocksStore(tmp_path / "store")
    try:
        after = user_states(store)
        for key, raw in before.items():
            old, new = decode_record(key, raw), decode_record(key, after[key])
            # The other signals' states, the progress and the event-id fingerprints are
            # untouched (the backfill covered the same events).
            assert {k: v for k, v in new.states.items() if k != "category_interest@1"} == old.states
            assert new.progress == old.progress
            assert new.seen == old.seen
        stream(store, history, 89)
        assert user_states(store) == expected
    finally:
        store.close()


def stream_four_signals(path: Path, history: History) -> None:
    """A store at ``path`` the stream wrote ``history`` into with four of the reference
    signals, ``category_interest`` not deployed yet (an ``--only`` backfill adds it)."""
    registry = SignalRegistry.from_module(REFERENCE)
    four = SignalRegistry([s for s in registry if s.name != "category_interest"])
    store = new_store(path, history)
    try:
        stream(store, history, 89, registry=four)
    finally:
        store.close()


def test_a_repeat_after_a_backfill_is_still_dropped(tmp_path: Path, history: History) -> None:
    """A backfill merged into users the stream has records of keeps their event-id
    fingerprints: an event redelivered afterwards (the same id at a new offset, as a producer
    retry writes it) is a repeat, applied to no state a second time."""
    registry = SignalRegistry.from_module(REFERENCE)
    four = SignalRegistry([s for s in registry if s.name != "category_interest"])
    store = new_store(tmp_path / "store", history)
    try:
        stream(store, history, 89, registry=four)
        before = user_states(store)
    finally:
        store.close()
    archive = write_parquet_archive(tmp_path / "archive", history)
    job = BackfillJob(str(archive), settings_for(tmp_path / "store"), only=("category_interest@1",))
    backfill(job)
    store = RocksStore(tmp_path / "store")
    try:
        merged = user_states(store)
        last = history.events[-1]
        partition = history.positions[-1].partition
        next_offset = max(p.offset for p in history.positions if p.partition == partition) + 1
        engine = Engine(
            registry, store, Materializer({"items": TableSource("items", store.table("items"))})
        )
        report = engine.process(MicroBatch([last], [Position(partition, next_offset)]))
        assert report.repeats == 1
        after = user_states(store)
        key = user_key(last.user_id)
        assert decode_record(key, after[key]).states == decode_record(key, merged[key]).states
        assert set(after) == set(before)
    finally:
        store.close()


def test_backfill_into_redis_cluster_equals_streaming(
    tmp_path: Path, history: History, redis_cluster_url: str
) -> None:
    """The distributed store: shards bulk-load into Redis Cluster, the item table read there."""
    expected = streamed(tmp_path / "streamed", history)
    namespace = f"offline{history.spec.seed}"
    settings = Settings.load(
        environ={},
        overrides={
            "signals": REFERENCE,
            "store": {
                "backend": "redis-cluster",
                "redis_url": redis_cluster_url,
                "redis_namespace": namespace,
            },
        },
    )
    store = open_store(settings)
    try:
        load_items(store, history.items)
    finally:
        store.close()
    archive = write_parquet_archive(tmp_path / "archive", history)
    backfill(BackfillJob(str(archive), settings, workers=2))
    store = open_store(settings)
    try:
        assert user_states(store) == expected
    finally:
        store.close()


def backfilled(path: Path) -> dict[str, str]:
    """The versions recorded as backfilled in the store at ``path`` (``signals plan``)."""
    store = RocksStore(path)
    try:
        return load_backfilled(store)
    finally:
        store.close()


def test_an_archive_that_ends_before_the_stream_is_reported(
    tmp_path: Path, history: History
) -> None:
    """The stream has applied everything; the archive holds only the first half: the users
    whose progress is beyond the archive's end are counted, not silently left short."""
    store = new_store(tmp_path / "store", history)
    try:
        stream(store, history, 200)
    finally:
        store.close()
    half = len(history.events) // 2
    short = History(history.spec, history.events[:half], history.positions[:half], history.items)
    archive = write_parquet_archive(tmp_path / "archive", short)
    summary = backfill(
        BackfillJob(str(archive), settings_for(tmp_path / "store"), only=("category_interest@1",))
    )
    late_users = {
        (event.user_id, position.partition)
        for event, position in zip(history.events[half:], history.positions[half:], strict=True)
    }
    early_users = {event.user_id for event in short.events}
    assert summary.behind_stream == len({(u, p) for u, p in late_users if u in early_users})
    assert summary.behind_stream > 0
    # Short of the stream: not recorded as the version's history (found in review).
    assert backfilled(tmp_path / "store") == {}


def test_two_processes_decode_each_record_once_and_give_what_one_gives(
    tmp_path: Path, history: History
) -> None:
    """Each shard reads and decodes only its users' records (each record once in all), and
    two processes give what one gives: the states, the counts, the offsets, and the dead
    letters in archive order (bad records fall to different shards: some have a user id)."""
    half = len(history.events) // 2
    short = History(history.spec, history.events[:half], history.positions[:half], history.items)
    archive = write_parquet_archive(tmp_path / "archive", short, BAD)
    results = []
    for workers in (1, 2):
        path = tmp_path / f"store-{workers}"
        store = new_store(path, history)
        try:
            # The stream stands beyond the archive for some users: counted as behind it.
            stream(store, history, 200, upto=len(history.events) * 3 // 4)
        finally:
            store.close()
        dead = tmp_path / f"dead-{workers}.jsonl"
        job = BackfillJob(
            str(archive), settings_for(path), only=("category_interest@1",), workers=workers,
            dead_letter=dead, until_ms=max(event.ts for event in short.events) - 86_400_000,
        )  # fmt: skip
        summary = backfill(job)
        assert summary.decoded == half + len(BAD)
        store = RocksStore(path)
        try:
            states = user_states(store)
        finally:
            store.close()
        counts = (summary.events, summary.bad, summary.after_boundary, summary.left_to_stream)
        results.append((states, counts, summary.behind_stream, summary.offsets, dead.read_bytes()))
    assert results[0] == results[1]
    _, counts, behind, _, dead_letters = results[1]
    assert counts[1] == len(BAD)
    assert len(dead_letters.splitlines()) == len(BAD)
    assert behind > 0


def test_a_store_with_only_its_tables_holds_no_users(tmp_path: Path) -> None:
    """A first backfill into a store that holds only its lookup tables reads no user's
    record (RocksDB: one seek says so); one user record anywhere, and every user is read."""
    from usersignals.offline.backfill import _may_hold_users

    store = RocksStore(tmp_path / "store")
    try:
        store.table("items").write({b"i1": b"{}"})
        assert not _may_hold_users(store)
        store.write({user_key("u1"): b"record"})
        assert _may_hold_users(store)
    finally:
        store.close()


def test_an_archive_missing_a_partition_the_store_has_progress_on_is_said(
    tmp_path: Path, history: History
) -> None:
    """Found by the operator's trial: an --only backfill from an export that lacked one
    partition left that partition's users without the new version, silently (exit 0, no
    warning): the stream never fills it in, their events being below their stored
    progress. The users whose stored progress names a partition the archive holds nothing
    of are now counted, with the partitions, and the command warns."""
    stream_four_signals(tmp_path / "store", history)
    kept = [i for i, p in enumerate(history.positions) if p.partition != "engagements/1"]
    partial = History(
        history.spec,
        [history.events[i] for i in kept],
        [history.positions[i] for i in kept],
        history.items,
    )
    archive = write_parquet_archive(tmp_path / "archive", partial)
    job = BackfillJob(str(archive), settings_for(tmp_path / "store"), only=("category_interest@1",))
    summary = backfill(job)
    missing = {e.user_id for e, p in zip(history.events, history.positions, strict=True)
               if p.partition == "engagements/1"}  # fmt: skip
    assert summary.uncovered_partitions == {"engagements/1": len(missing)}
    assert backfilled(tmp_path / "store") == {}  # a partition short: not the history


@pytest.mark.parametrize("workers", [1, 2])
def test_an_archive_without_coordinates_that_ends_before_the_stream_is_said(
    tmp_path: Path, history: History, workers: int
) -> None:
    """Found by an author's trial: a new version backfilled from an export without Kafka
    coordinates, into a store whose stream had applied later events, missed those events
    silently (the summary said nothing, ``signals plan`` called it warm, the cut-over served
    it). With no offsets to compare, a user's newest event-id fingerprint hour tells: one
    that starts after the user's newest archived event is an event the stream applied and
    the backfill never saw. Those users are counted, and the backfill is not recorded as the
    version's history."""
    hour = 3_600_000
    stream_four_signals(tmp_path / "store", history)
    cut = sorted(event.ts for event in history.events)[len(history.events) // 2]
    kept = [i for i, event in enumerate(history.events) if event.ts <= cut]
    short = History(
        history.spec,
        [history.events[i] for i in kept],
        [history.positions[i] for i in kept],
        history.items,
    )
    archived: dict[str, int] = {}
    for event in short.events:
        archived[event.user_id] = max(archived.get(event.user_id, event.ts), event.ts)
    ahead = {
        event.user_id
        for event in history.events
        if event.user_id in archived and event.ts // hour * hour > archived[event.user_id]
    }
    assert ahead  # the stream is past the archive for some of its users
    job = BackfillJob(
        str(write_jsonl_archive(tmp_path / "short", short)),
        settings_for(tmp_path / "store"),
        only=("category_interest@1",),
        workers=workers,
    )
    summary = backfill(job)
    assert summary.stream_ahead == len(ahead)
    assert not summary.complete
    assert backfilled(tmp_path / "store") == {}
    # The whole history exported: nothing said, and the version's history is in the store.
    whole = write_jsonl_archive(tmp_path / "whole", history)
    summary = backfill(BackfillJob(str(whole), job.settings, only=job.only, workers=workers))
    assert summary.stream_ahead == 0
    assert set(backfilled(tmp_path / "store")) == {"category_interest@1"}
