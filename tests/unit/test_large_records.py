"""Records grown large are named: a user whose events within the dedupe horizon number in the
hundreds of thousands (a bot) makes a record of that many fingerprints, written whole in every
batch. Found in the freshness feed of bench/ingest.py: its top user's record reached 1 MB in a
minute, and the processor's rate fell with it, without a word (docs/performance.md, the stop
from 03:50 UTC on 2026-11-28)."""

from __future__ import annotations

import logging

import pytest
from prometheus_client import CollectorRegistry
from test_native_pipeline import open_engine, stream

from usersignals import MicroBatch
from usersignals.processing.large_records import LargeRecords
from usersignals.processing.metrics import ProcessorMetrics


@pytest.mark.parametrize("native", [True, False])
def test_records_over_the_limit_are_counted_and_the_largest_named_once_a_minute(
    native: bool, caplog: pytest.LogCaptureFixture
) -> None:
    engine = open_engine(native, 3_600_000)
    pairs = stream(3, 200)
    events, positions = [e for e, _ in pairs], [p for _, p in pairs]
    engine.large_records = LargeRecords(limit_bytes=1)  # every record is over it
    with caplog.at_level(logging.WARNING, logger="usersignals.processing.large_records"):
        first = engine.process(MicroBatch(events[:100], positions[:100]))
        written = {key: len(value) for key, value in engine.store.scan(b"u:")}
        second = engine.process(MicroBatch(events[100:], positions[100:]))
    assert first.large_records == first.users > 0
    assert second.large_records == second.users > 0
    assert first.largest_record is not None
    user, size = first.largest_record
    assert size == max(written.values()) == written[f"u:{user}".encode()]
    (said,) = [r.getMessage() for r in caplog.records]  # the second batch within the minute
    assert f"user {user!r}" in said
    assert "processing.large_record_bytes" in said
    metrics = ProcessorMetrics(CollectorRegistry())
    metrics.observe_report(first)
    assert metrics.large_records._value.get() == first.large_records


def test_records_under_the_limit_say_nothing(caplog: pytest.LogCaptureFixture) -> None:
    engine = open_engine(True, 3_600_000)
    pairs = stream(4, 100)
    with caplog.at_level(logging.WARNING, logger="usersignals.processing.large_records"):
        report = engine.process(MicroBatch([e for e, _ in pairs], [p for _, p in pairs]))
    assert (report.large_records, report.largest_record) == (0, None)
    assert caplog.records == []
