"""The processor's collector tuning: the start-up heap frozen, young collections rarer."""

from __future__ import annotations

import gc
import warnings

from usersignals.processing.gc_tuning import YOUNG_THRESHOLD, tune_collector


def test_tuning_freezes_the_heap_and_raises_only_the_young_threshold() -> None:
    before = gc.get_threshold()
    built = [[n] for n in range(3)]  # tracked containers built before the processor runs
    with warnings.catch_warnings():
        # Garbage other tests of this worker left (an unclosed client, say) is finalized by
        # the first full collection, wherever it runs: not this test's subject.
        warnings.simplefilter("ignore", ResourceWarning)
        gc.collect()
    try:
        tune_collector()
        walked = {id(o) for o in gc.get_objects()}  # the permanent generation is not walked
        assert not any(id(b) in walked for b in built)
        assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
