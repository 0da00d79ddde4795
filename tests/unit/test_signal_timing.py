"""Which signal the processor spends its time in: a slow user-defined aggregation shows by
name, in the batch report, the processor's metrics and the replay's summary.

Noticed by the signal author's trial: a UDA that took most of a batch's time was visible
only as a slower processor; nothing said which signal it was."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from test_signal_failures import Dwell, DwellRuntime, dwell_event

from usersignals import Count, Engine, MicroBatch, Position, Signal, SignalRegistry
from usersignals.aggregations import ApplyOut
from usersignals.offline import MemoryStore
from usersignals.processing.batch import BatchReport
from usersignals.processing.metrics import ProcessorMetrics

PAUSE_S = 0.02


@dataclass(frozen=True)
class SlowDwell(Dwell):
    kind = "slow_dwell"

    def compile(self, resolve: Any, retention_ms: int) -> SlowDwellRuntime:
        return SlowDwellRuntime(resolve("attrs.dwell_ms"), self.fail)


class SlowDwellRuntime(DwellRuntime):
    def apply(self, state: list[int] | None, rows: Sequence[Any]) -> ApplyOut[list[int]]:
        time.sleep(PAUSE_S)  # a model call, say
        return super().apply(state, rows)


def slow_registry() -> SignalRegistry:
    return SignalRegistry(
        [
            Signal(name="clicks", version=1, aggregate=Count(by="action")),
            Signal(name="slow", version=1, aggregate=SlowDwell("never")),
        ]
    )


def test_the_report_times_each_python_signal_and_the_native_core() -> None:
    events = [dwell_event(f"u{n}", n, 100) for n in range(3)]
    batch = MicroBatch(events, [Position("p", n) for n in range(3)])
    report = Engine(slow_registry(), MemoryStore()).process(batch)
    # Applied once per user: three pauses at least.
    assert report.signal_seconds["slow@1"] >= 3 * PAUSE_S
    assert 0 < report.signal_seconds["native"] < PAUSE_S


def test_the_processor_metrics_count_the_seconds_by_signal() -> None:
    events = [dwell_event("u1", 1, 100)]
    report = Engine(slow_registry(), MemoryStore()).process(MicroBatch(events, [Position("p", 0)]))
    metrics = ProcessorMetrics()
    metrics.observe_report(report)
    metrics.observe_report(report)
    seconds = metrics.registry.get_sample_value(
        "usersignals_signal_seconds_total", {"signal": "slow@1"}
    )
    assert seconds is not None
    assert seconds == 2 * report.signal_seconds["slow@1"] >= 2 * PAUSE_S


def test_the_replay_summary_names_the_slowest_signals_first() -> None:
    report = BatchReport(signal_seconds={"slow@1": 2.5, "native": 0.25, "other@2": 0.5})
    assert report.time_in_signals() == "slow@1 2.50 s, other@2 0.50 s, native core 0.25 s"
    assert BatchReport().time_in_signals() == ""
