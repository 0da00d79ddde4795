"""A live feed of the reference workload: fresh events, stamped with the wall clock.

The demo and the serving benchmark use it to keep events flowing into the HTTP spool while
requests are served, as production traffic would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgspec

from usersignals.enrich.sources import encode_table_record
from usersignals.ingest.spool import SpoolWriter
from usersignals.ingest.synthetic import WorkloadSpec, item_records, iter_event_chunks
from usersignals.state.store import KeyValueTable


def feed_spool(
    spool: Path,
    rate: int,
    seed: int,
    stop: threading.Event,
    produced: list[int],
    items: KeyValueTable | None = None,
) -> None:
    """Append reference events to ``spool`` at ``rate`` events/s until ``stop`` is set.

    ``produced[0]`` counts the events written (a one-cell list, readable from other threads).
    With an ``items`` table, the items the table lacks are written to it before their events
    (:func:`add_new_items`), as a catalogue grows with new items.
    """
    writer = SpoolWriter(spool, f"live-feed-{seed}")
    encoder = msgspec.json.Encoder()
    spec = WorkloadSpec(events=10**12, seed=seed)
    known: set[str] = set()
    started = time.monotonic()
    try:
        for chunk in iter_event_chunks(spec, chunk_size=max(rate // 20, 1)):
            if stop.is_set():
                return
            if items is not None:
                add_new_items(items, spec, chunk, known)
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


#: The item ids a feed remembers as in the table before it forgets them (then looked up
#: again): a long demo draws from the workload's 10 M items.
KNOWN_ITEMS = 1_000_000


def add_new_items(
    items: KeyValueTable, spec: WorkloadSpec, events: Sequence[dict[str, Any]], known: set[str]
) -> None:
    """The item records of ``events`` that ``items`` lacks, written to it (``known``: the ids
    seen so far, not looked up again). The live feed draws from the workload's 10 M items, of
    which a replay's table holds those of its own events: the others' events went
    unenriched (the demo showed a third of its busiest user's live engagements without a
    category after three minutes)."""
    fresh = list(dict.fromkeys(str(event["item_id"]) for event in events))
    fresh = [item_id for item_id in fresh if item_id not in known]
    if not fresh:
        return
    stored = items.get_many([item_id.encode() for item_id in fresh])
    missing = [item_id for item_id, value in zip(fresh, stored, strict=True) if value is None]
    if missing:
        records = item_records(spec, missing)
        items.write(
            {str(record["item_id"]).encode(): encode_table_record(record) for record in records}
        )
    if len(known) > KNOWN_ITEMS:  # a long feed meets millions: the table decides anyway
        known.clear()
    known.update(fresh)
