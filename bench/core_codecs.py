"""The native core's state steps, plan by plan: decode + apply + encode of one micro-batch.

Method: generate the seeded reference workload, run the engine over its first ``--events``
events (batches of ``--batch``) into RocksDB, then take the next batch and, for each of the
five reference signals alone, time the core's batch call (``NativePlans.apply``: decode each
touched user's stored state, apply the batch's events, encode) with the columns and stored
states prepared beforehand, so only the core's work (and its argument conversion) is timed.
Each plan is timed ``--repeat`` times on the same inputs (the call is pure); the best and
the median are printed, with the state bytes read and written per call and their rate.
``--busiest K`` restricts the timed batch to the events of the K users whose stored records
are largest, where the codecs' cost per user is highest.

    .venv/bin/python bench/core_codecs.py                      # 300k events, then one batch
    .venv/bin/python bench/core_codecs.py --busiest 500 --repeat 20
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
from pathlib import Path

import msgspec

from engine import load_items
from usersignals.enrich import Materializer, TableSource
from usersignals.events import Event, EventDecoder, EventPolicy, Position
from usersignals.ingest.synthetic import WorkloadSpec, iter_event_json_lines
from usersignals.processing import Engine, MicroBatch
from usersignals.processing.gc_tuning import tune_collector
from usersignals.processing.native import NativeSignals
from usersignals.signals import SignalRegistry
from usersignals.state import RocksStore, decode_record
from usersignals.state.keys import user_key

_unbin = msgspec.msgpack.Decoder(bytes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=300_000, help="events before the batch")
    parser.add_argument("--batch", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--busiest", type=int, default=0, help="only the K largest records")
    parser.add_argument("--only", default="", help="time only this signal (e.g. for perf)")
    args = parser.parse_args()

    spec = WorkloadSpec(events=args.events + args.batch)
    lines = [line for block in iter_event_json_lines(spec) for line in block.splitlines() if line]
    events = EventDecoder(EventPolicy()).decode_block(lines, now_ms=spec.start_ms + spec.span_ms)
    history, timed = events.events[: args.events], events.events[args.events :]
    registry = SignalRegistry.from_module("usersignals.examples.reference")
    with tempfile.TemporaryDirectory(prefix="usersignals-bench-") as directory:
        store = RocksStore(Path(directory) / "store")
        load_items(spec, sorted({event.item_id for event in events.events}), store)
        materializer = Materializer({"items": TableSource("items", store.table("items"))})
        engine = Engine(registry, store, materializer)
        positions = [Position("bench/0", offset) for offset in range(len(history))]
        started = time.perf_counter()
        for i in range(0, len(history), args.batch):
            engine.process(MicroBatch(history[i : i + args.batch], positions[i : i + args.batch]))
        print(
            f"history: {len(history):,} reference events through the engine "
            f"({time.perf_counter() - started:.1f} s); timed: the next batch"
        )
        # A codec change that must not change one stored byte compares these across builds.
        digest = hashlib.sha256()
        for key, value in store.scan(b"u:"):
            digest.update(key + b"\0" + value)
        print(f"stored records' sha256: {digest.hexdigest()}")
        # As the processor does once built: the harness's own objects leave the collector's
        # way, so a collection does not land in a timed call.
        tune_collector()
        user_ids = list(dict.fromkeys(event.user_id for event in timed))
        stored = dict(zip(user_ids, store.get_many([user_key(u) for u in user_ids]), strict=True))
        if args.busiest:
            sizes = sorted(stored, key=lambda u: len(stored[u] or b""), reverse=True)
            kept = set(sizes[: args.busiest])
            timed = [event for event in timed if event.user_id in kept]
        records = {"items": materializer.lookup("items", {event.item_id for event in timed})}
        print(
            f"batch: {len(timed):,} events of {len({e.user_id for e in timed}):,} users; "
            f"best and median of {args.repeat} calls per plan"
        )
        print(f"{'plan':24s} {'best ms':>8s} {'median':>8s} {'state in':>10s} {'out':>10s} "
              f"{'MB/s':>6s}")  # fmt: skip
        for signal in registry:
            if args.only and signal.name != args.only:
                continue
            time_plan(NativeSignals([signal]), timed, stored, records, args.repeat)
        print(f"the timed batch's new states' sha256: {_outputs.hexdigest()}")
        store.close()


#: Every plan's new states of the timed batch, hashed (compared across builds, as above).
_outputs = hashlib.sha256()


def time_plan(
    native: NativeSignals,
    timed: list[Event],
    stored: dict[str, bytes | None],
    records: dict[str, dict[str, dict[str, object]]],
    repeat: int,
) -> None:
    """Time one plan's core call over the batch; prints one row."""
    if not native:
        return
    key = native.keys[0]
    users: dict[str, int] = {}
    user = [users.setdefault(event.user_id, len(users)) for event in timed]
    states: list[list[bytes | None]] = []
    for user_id in users:
        data = stored[user_id]
        raw = None if data is None else decode_record(b"", data).states.get(key)
        states.append([None if raw is None else _unbin.decode(bytes(raw))])
    ts = [event.ts for event in timed]
    ids = [event.event_id for event in timed]
    seconds = []
    for _ in range(repeat):
        started = time.perf_counter()
        # The core reads the columns from the events and records (each read is applied once).
        columns = native.live_columns(timed, records)
        new, _, _ = native.plans.apply(len(users), user, ts, ids, columns, states)
        seconds.append(time.perf_counter() - started)
    for state in new:
        _outputs.update(state[0] or b"-")
    read = sum(len(s[0] or b"") for s in states)
    written = sum(len(s[0] or b"") for s in new)
    best = min(seconds)
    print(
        f"{key:24s} {best * 1e3:8.1f} {statistics.median(seconds) * 1e3:8.1f} "
        f"{read / 1e6:9.2f}M {written / 1e6:9.2f}M {(read + written) / 1e6 / best:6.0f}"
    )


if __name__ == "__main__":
    main()
