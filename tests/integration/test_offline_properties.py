"""Property tests: for random histories (ties, late events, retention edges), random micro-batch
splits, random label times and random contexts, streaming, backfill and the training set agree."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from offline_helpers import REFERENCE, applied_by_the_stream, load_items, settings_for, user_states

from usersignals import Engine, Event, MicroBatch, Position, ReadContext, SignalRegistry
from usersignals.enrich import Materializer, TableSource
from usersignals.ingest.synthetic import (
    REFERENCE_ACTIONS,
    REFERENCE_SURFACES,
    WorkloadSpec,
    item_records,
)
from usersignals.offline import BackfillJob, MemoryStore, backfill
from usersignals.offline.training import TrainingJob, parse_context_option, training_set
from usersignals.serving import SignalReader
from usersignals.state.codec import decode_record
from usersignals.state.rocks import RocksStore

BASE = 1_767_225_600_000
HOUR = 3_600_000
ITEMS = [f"i{n:08d}" for n in range(1, 25)]
TABLE = list(item_records(WorkloadSpec(seed=3, users=10, items=100), ITEMS))
# The reference signals, and windowed counts that reach their cap of exact entries with a few
# events (the state's exact boundary moves off two days before the newest event).
MODULES = {"reference": REFERENCE, "capped": str(Path(__file__).with_name("capped_signals.py"))}
REGISTRIES = {name: SignalRegistry.from_module(module) for name, module in MODULES.items()}
CONTEXTS = st.sampled_from(
    ["", "window=1h", "window=2d,actions=save,click", "limit=3,dedupe=true", "surfaces=home",
     "since=1767225600000,exclude=i00000001"]
)  # fmt: skip


@st.composite
def histories(draw: st.DrawFn) -> list[Event]:
    clock = BASE
    events = []
    for number in range(draw(st.integers(1, 60))):
        if events and draw(st.integers(0, 7)) == 0:
            # A producer's retry: an earlier event delivered again (a repeat, or not, by the
            # dedupe horizon behind the newest event before it).
            events.append(draw(st.sampled_from(events)))
            continue
        clock += draw(st.sampled_from([0, 0, 1, 60_000, HOUR, 20 * HOUR, 9 * 24 * HOUR]))
        late = draw(st.sampled_from([0, 0, 0, 1])) * draw(st.integers(0, 4 * 24 * HOUR))
        events.append(
            Event(
                event_id=f"e{number}",
                user_id=draw(st.sampled_from(["u1", "u2", "u3"])),
                item_id=draw(st.sampled_from(ITEMS)),
                action=draw(st.sampled_from(REFERENCE_ACTIONS)),
                surface=draw(st.sampled_from(REFERENCE_SURFACES)),
                ts=clock - late,
            )
        )
    return events


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("properties")


def streamed(
    registry: SignalRegistry,
    events: list[Event],
    sizes: list[int],
    upto: int | None = None,
    horizon_ms: int = 86_400_000,
) -> MemoryStore:
    """The live path: stream order, the given micro-batch sizes, every event ≤ ``upto``, the
    event-id dedupe horizon ``horizon_ms`` (0: off)."""
    store = MemoryStore()
    load_items(store, TABLE)
    materializer = Materializer({"items": TableSource("items", store.table("items"))})
    engine = Engine(registry, store, materializer, dedupe_horizon_ms=horizon_ms)
    chosen = [(e, Position("t/0", i)) for i, e in enumerate(events) if upto is None or e.ts <= upto]
    start, turn = 0, 0
    while start < len(chosen):
        size = sizes[turn % len(sizes)]
        part = chosen[start : start + size]
        engine.process(MicroBatch([e for e, _ in part], [p for _, p in part]))
        start, turn = start + size, turn + 1
    return store


def states_of(key: bytes, raw: bytes) -> dict[str, bytes]:
    return {name: bytes(state) for name, state in decode_record(key, raw).states.items()}


def fresh(root: Path, name: str) -> Path:
    path = root / name
    store = RocksStore(path)
    load_items(store, TABLE)
    store.close()
    return path


@pytest.mark.parametrize("signals", sorted(MODULES))
@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    events=histories(),
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=4),
    backfill_batch=st.integers(1, 30),
    data=st.data(),
)
def test_streaming_backfill_and_training_agree(
    root: Path,
    signals: str,
    events: list[Event],
    sizes: list[int],
    backfill_batch: int,
    data: st.DataObject,
) -> None:
    registry, module = REGISTRIES[signals], MODULES[signals]
    case = root / f"case-{len(list(root.iterdir()))}"
    case.mkdir()
    archive = case / "events.jsonl"
    archive.write_bytes(b"".join(msgspec.json.encode(e) + b"\n" for e in events))
    # (a) streaming vs (b) backfill: the same records, byte for byte.
    store_path = fresh(case, "store")
    job = BackfillJob(str(archive), settings_for(store_path, module), batch_size=backfill_batch)
    backfill(job)
    stored = RocksStore(store_path)
    backfilled = user_states(stored)
    stored.close()
    expected = user_states(streamed(registry, events, sizes))
    # States only: a JSONL archive has no Kafka coordinates, so no progress is kept.
    assert {k: states_of(k, v) for k, v in backfilled.items()} == {
        k: states_of(k, v) for k, v in expected.items()
    }
    # (c) the training set at random label times, with a random context.
    times = [e.ts for e in events]
    label_times = data.draw(
        st.lists(
            st.one_of(
                st.sampled_from(times), st.integers(min(times) - HOUR, max(times) + 3 * 24 * HOUR)
            ),
            min_size=1,
            max_size=6,
        )
    )
    users = data.draw(
        st.lists(
            st.sampled_from(["u1", "u2", "u3"]),
            min_size=len(label_times),
            max_size=len(label_times),
        )
    )
    context = data.draw(CONTEXTS)
    pq.write_table(pa.table({"user_id": users, "ts": label_times}), case / "labels.parquet")
    training_set(
        TrainingJob(
            case / "labels.parquet",
            str(archive),
            settings_for(store_path, module),
            case / "f.parquet",
            contexts=(context,),
        )
    )
    rows = pq.read_table(case / "f.parquet").to_pylist()
    parsed = ReadContext.parse(parse_context_option(context), now_ms=0)
    # What the API serves at t with as_of=t after the replay: the events the stream applied
    # (a repeat is judged by the events delivered before it, whatever their times), up to t.
    positions = [Position("t/0", i) for i in range(len(events))]
    applied = [events[i] for i in applied_by_the_stream(events, positions, TABLE, 86_400_000)]
    for row, user, ts in zip(rows, users, label_times, strict=True):
        at = dataclasses.replace(parsed, as_of_ms=ts, now_ms=ts)
        served = streamed(registry, applied, sizes, upto=ts, horizon_ms=0)
        answer = SignalReader(registry, served).read(user, None, at)
        for signal in registry:
            assert json.loads(row[signal.name]) == answer.signals[signal.name].value, signal.name
