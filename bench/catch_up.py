"""What a serving worker's catch-up with the processor's writes costs (RocksDB secondary).

Method: replay the reference workload into a store (as bench/serving.py does), start the
processor (``usersignals run``) and a steady ingest into its spool, then open the store as a
serving worker does (a secondary instance) and call ``try_catch_up_with_primary`` every
INTERVAL ms for S seconds, timing each call. rocksdict holds the GIL through the call, so
each call's duration is how long a worker's event loop stands still. A ticker thread
measures that directly: the longest gap between its 1 ms ticks. Prints, per interval, the
calls' mean/p50/p99/max and the total time held per second.

    .venv/bin/python bench/catch_up.py [--intervals 50,100,250] [--seconds 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from serving import BIN, replay_workload, stop  # bench/serving.py, beside this script
from usersignals.config import Settings, SpoolSettings, StoreSettings
from usersignals.ingest.live import feed_spool
from usersignals.state.rocks import RocksStore


def ticker(stop_flag: threading.Event, gaps: list[float]) -> None:
    """The longest wait for the GIL: gaps between 1 ms sleeps, beyond the 1 ms."""
    last = time.perf_counter()
    while not stop_flag.is_set():
        time.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last - 0.001)
        last = now


def measure(store: Path, interval_s: float, seconds: float) -> list[float]:
    reader = RocksStore(store, read_only=True)
    held: list[float] = []
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            started = time.perf_counter()
            reader.refresh()
            held.append(time.perf_counter() - started)
            time.sleep(interval_s)
    finally:
        reader.close()
    return held


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--ingest-rate", type=int, default=2_000)
    parser.add_argument("--intervals", default="50,100,250,500", help="ms, comma-separated")
    parser.add_argument("--seconds", type=float, default=15)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="usersignals-catch-up-"))
    store, spool = root / "store", root / "spool"
    settings = Settings(store=StoreSettings(path=str(store)), spool=SpoolSettings(path=str(spool)))
    replay_workload(settings, args.events, root)
    env = {
        **os.environ,
        "USERSIGNALS_STORE__PATH": str(store),
        "USERSIGNALS_SPOOL__PATH": str(spool),
    }
    processor = subprocess.Popen(
        [str(BIN / "usersignals"), "run"], env=env, stderr=subprocess.DEVNULL
    )
    stop_flag = threading.Event()
    feeder = threading.Thread(
        target=feed_spool, args=(spool, args.ingest_rate, 99, stop_flag, [0]), daemon=True
    )
    print(f"workload: {args.events:,} events replayed; ingest {args.ingest_rate:,} events/s")
    try:
        feeder.start()
        time.sleep(3)  # the processor picks up the spool
        for interval_ms in (int(x) for x in args.intervals.split(",")):
            gaps: list[float] = []
            ticking = threading.Event()
            tick = threading.Thread(target=ticker, args=(ticking, gaps), daemon=True)
            tick.start()
            held = measure(store, interval_ms / 1000, args.seconds)
            ticking.set()
            tick.join()
            q = statistics.quantiles(held, n=100)
            per_s = sum(held) / args.seconds * 1000
            print(
                f"every {interval_ms:>4} ms: {len(held):>4} calls, mean "
                f"{statistics.fmean(held) * 1e3:.2f} ms, p50 {q[49] * 1e3:.2f}, p99 "
                f"{q[98] * 1e3:.2f}, max {max(held) * 1e3:.2f} ms; held {per_s:.1f} ms/s; "
                f"longest tick gap {max(gaps) * 1e3:.2f} ms"
            )
    finally:
        stop_flag.set()
        stop(processor)
        shutil.rmtree(root, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
