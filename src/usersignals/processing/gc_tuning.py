"""The processor's garbage-collection tuning: fewer collections, none over the start-up heap.

A micro-batch allocates tens of thousands of short-lived containers (events, columns, the
Materializer's records), nearly all acyclic and freed by reference counting. CPython's
default young threshold (700) still runs a collection every few hundred of them, and every
tenth of those walks the older generations too — the signal registry, imported modules, the
lookup cache. Measured with ``bench/engine.py``: about a tenth of a batch's CPU time. So,
once the processor is built: freeze what exists (``gc.freeze``: the permanent generation,
never walked again) and raise the young threshold. Cycles stay collected, only less often.
(The serving workers have their own policy, ``serving/gc_policy.py``, which also keeps
pauses out of requests.)
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

#: Young-generation threshold for the processor (CPython's default is 700).
YOUNG_THRESHOLD = 50_000


def tune_collector() -> None:
    """Collect once, freeze the heap, and raise the young threshold (older ones kept)."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)


@contextmanager
def collector_tuned() -> Iterator[None]:
    """:func:`tune_collector` for a bounded job in a process that may go on afterwards (an
    offline job's shard: in a notebook's process, say), which gets its collector back as it
    was: the frozen objects return to the oldest generation, the thresholds are restored."""
    thresholds = gc.get_threshold()
    tune_collector()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)
