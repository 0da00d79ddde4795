"""The collector tuning of the processor and the offline shards: the start-up heap frozen,
young collections rarer."""

from __future__ import annotations

import gc
import warnings

from usersignals.processing.gc_tuning import YOUNG_THRESHOLD, collector_tuned, tune_collector


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


def test_a_tuned_job_gives_the_collector_back_as_it_was() -> None:
    before = gc.get_threshold()
    built = [[n] for n in range(3)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)  # as above
        with collector_tuned():
            assert gc.get_threshold() == (YOUNG_THRESHOLD, before[1], before[2])
            assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
    walked = {id(o) for o in gc.get_objects()}
    assert all(id(b) in walked for b in built)
