"""Events skipped as already applied are counted on ``/metrics``, not only in the exit line.

An event whose offset is at or below its user's progress for the partition is skipped: a
replay after a restart. When a topic's offsets go backwards (the topic deleted and made
again, a broker restarted without its log), every new event below the users' progress is
skipped the same way, and the operator's only sign was the summary printed at exit
(found trying the service as an operator). The counter makes it visible while it happens.
"""

from __future__ import annotations

from prometheus_client import generate_latest

from usersignals.processing.batch import BatchReport
from usersignals.processing.metrics import ProcessorMetrics


def test_already_applied_events_are_counted() -> None:
    metrics = ProcessorMetrics()
    metrics.observe_report(BatchReport(duplicates=7))
    metrics.observe_report(BatchReport(duplicates=0))
    metrics.observe_report(BatchReport(duplicates=3))
    text = generate_latest(metrics.registry).decode()
    assert "usersignals_already_applied_events_total 10.0" in text
