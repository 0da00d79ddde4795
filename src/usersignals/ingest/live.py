"""A live feed of the reference workload: fresh events, stamped with the wall clock.

The demo and the serving benchmark use it to keep events flowing into the HTTP spool while
requests are served, as production traffic would.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import msgspec

from usersignals.ingest.spool import SpoolWriter
from usersignals.ingest.synthetic import WorkloadSpec, iter_event_chunks


def feed_spool(
    spool: Path, rate: int, seed: int, stop: threading.Event, produced: list[int]
) -> None:
    """Append reference events to ``spool`` at ``rate`` events/s until ``stop`` is set.

    ``produced[0]`` counts the events written (a one-cell list, readable from other threads).
    """
    writer = SpoolWriter(spool, f"live-feed-{seed}")
    encoder = msgspec.json.Encoder()
    spec = WorkloadSpec(events=10**12, seed=seed)
    started = time.monotonic()
    try:
        for chunk in iter_event_chunks(spec, chunk_size=max(rate // 20, 1)):
            if stop.is_set():
                return
            now = time.time_ns() // 1_000_000
            lines = [
                encoder.encode({**event, "ts": now, "event_id": f"live-{seed}-{produced[0] + i}"})
                for i, event in enumerate(chunk)
            ]
            writer.append(lines)
            produced[0] += len(lines)
            delay = started + produced[0] / rate - time.monotonic()
            if delay > 0 and stop.wait(delay):
                return
    finally:
        writer.close()
