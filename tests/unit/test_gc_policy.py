"""The serving worker's garbage-collection policy (serving/gc_policy.py), in this process.

Each test restores the interpreter's collector as it found it (thresholds, frozen objects,
callbacks), since the policy changes process-wide state.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry

from usersignals.config import GcSettings, Settings
from usersignals.serving.gc_policy import NEVER, PYTHON_DEFAULT_OLDER, GcPolicy


@pytest.fixture
def collector() -> Iterator[None]:
    thresholds = gc.get_threshold()
    callbacks = list(gc.callbacks)
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.callbacks[:] = callbacks


def frozen_gauge(registry: CollectorRegistry) -> float | None:
    return registry.get_sample_value("usersignals_gc_frozen_objects")


@pytest.mark.usefixtures("collector")
def test_start_freezes_the_heap_and_turns_off_automatic_old_collections() -> None:
    registry = CollectorRegistry()
    policy = GcPolicy(GcSettings(young_threshold=12_345, full_interval_ms=1_000), registry)
    policy.start()
    assert gc.get_freeze_count() > 10_000
    # The gauge reads the count when scraped. Frozen objects another thread lets go of
    # leave the count between two reads (once 2 of 213,133, under load): it lies between.
    before = gc.get_freeze_count()
    gauge = frozen_gauge(registry)
    assert gauge is not None
    assert before >= gauge >= gc.get_freeze_count()
    assert gc.get_threshold() == (12_345, NEVER, NEVER)
    policy.stop()


@pytest.mark.usefixtures("collector")
def test_without_a_timed_collection_python_collects_old_generations_itself() -> None:
    policy = GcPolicy(GcSettings(freeze=False, full_interval_ms=0), CollectorRegistry())
    policy.start()
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == (50_000, *PYTHON_DEFAULT_OLDER)
    policy.after_request()  # never collects: nothing recorded
    policy.stop()


@pytest.mark.usefixtures("collector")
def test_a_due_full_collection_waits_for_an_idle_worker_up_to_twice_the_interval() -> None:
    registry = CollectorRegistry()
    policy = GcPolicy(GcSettings(freeze=False, full_interval_ms=1_000), registry)
    policy.start()

    def full_collections(in_request: str) -> float:
        value = registry.get_sample_value(
            "usersignals_gc_pause_seconds_count", {"generation": "2", "in_request": in_request}
        )
        return value or 0.0

    policy.after_request()  # not due yet
    assert full_collections("no") == 0
    policy.last_full = time.monotonic() - 1.5  # due, but another request is in flight
    policy.in_flight = 1
    policy.after_request()
    assert full_collections("yes") == 0
    policy.in_flight = 0  # due and idle: collects, between requests
    policy.after_request()
    assert full_collections("no") == 1
    assert gc.get_freeze_count() == 0  # freeze off: nothing moved to the permanent generation
    policy.last_full = time.monotonic() - 2.5  # never idle: collects anyway past twice
    policy.in_flight = 3
    policy.after_request()
    assert full_collections("yes") == 1
    policy.stop()


def test_gc_settings_come_from_the_environment() -> None:
    settings = Settings.load(
        environ={
            "USERSIGNALS_SERVING__GC__FREEZE": "false",
            "USERSIGNALS_SERVING__GC__YOUNG_THRESHOLD": "700",
            "USERSIGNALS_SERVING__GC__FULL_INTERVAL_MS": "0",
        }
    )
    assert settings.serving.gc == GcSettings(freeze=False, young_threshold=700, full_interval_ms=0)


@pytest.mark.usefixtures("collector")
def test_what_survives_a_timed_full_collection_is_frozen_too() -> None:
    policy = GcPolicy(GcSettings(full_interval_ms=1_000), CollectorRegistry())
    policy.start()
    frozen_at_start = gc.get_freeze_count()
    survivors = [[index] for index in range(5_000)]  # long-lived containers, made after start
    policy.last_full = time.monotonic() - 1.5
    policy.after_request()
    assert gc.get_freeze_count() >= frozen_at_start + len(survivors)
    policy.stop()
