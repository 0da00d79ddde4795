"""The order the stream delivered an archive's events in, as far as the archive tells it.

The event-id dedupe judges a repeat by the events delivered before it, so the offline jobs
judge repeats in this order, not by event time (an archive laid out by event day puts a
late redelivery beside its original).

Within a Kafka partition the order is the offsets'. Across partitions the archive does not
say how the processor's reads interleaved: they are merged by event time, each partition's
events kept in offset order. A producer keyed by user puts each user's events on one
partition, and this is exact; a retry written to another partition is placed beside its
original (it carries the original's time), where the processor, reading both partitions at
once, met it soon after. Rows without coordinates (``archive:<file>``, row) are in the
archive's order: files by their relative name, then row.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from operator import itemgetter

_TIME = itemgetter(0)


def arrival_order(times: Sequence[int], places: Sequence[tuple[str, int]]) -> list[int]:
    """The indices of events (event ``times``, and ``places``: partition and offset) in the
    order the stream delivered them."""
    runs: dict[str, list[tuple[int, int]]] = {}  # partition -> (offset, index)
    for index, (partition, offset) in enumerate(places):
        runs.setdefault(partition, []).append((offset, index))
    if len(runs) == 1:
        (run,) = runs.values()
        return [index for _, index in sorted(run)]
    merged = heapq.merge(
        *(
            [(times[index], index) for _, index in sorted(runs[partition])]
            for partition in sorted(runs)
        ),
        key=_TIME,
    )
    return [index for _, index in merged]
