"""Prometheus metrics of the processor (served by ``usersignals run --metrics-port``)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from usersignals.events.model import BadEvent, Event
from usersignals.processing.batch import BatchReport

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

_FRESHNESS_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0)
_SAMPLE_EVERY = 8  # freshness is observed on every 8th event: cheap, and plenty for p99


class ProcessorMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # Imported here: prometheus_client takes 50 ms to import, and only a process that
        # keeps metrics needs it (not the engine's users: replay, a notebook, a test).
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry or CollectorRegistry()
        self.events = Counter(
            "usersignals_events_processed", "Events applied or skipped as replays",
            registry=self.registry,
        )  # fmt: skip
        self.batches = Histogram(
            "usersignals_batch_events", "Events per micro-batch",
            buckets=(1, 10, 100, 1_000, 5_000, 20_000, 50_000, 100_000), registry=self.registry,
        )  # fmt: skip
        self.freshness = Histogram(
            "usersignals_freshness_seconds", "State write time minus event time",
            buckets=_FRESHNESS_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.dead_letters = Counter(
            "usersignals_dead_letters", "Rejected events, by reason", ["reason"],
            registry=self.registry,
        )  # fmt: skip
        self._consumer()
        self._engine_reports()
        self.store_available = Gauge(
            "usersignals_store_available",
            "1 while state store writes succeed, 0 while they fail and are being retried",
            registry=self.registry,
        )
        self.store_up = True
        self.store_available.set(1)
        self.store_failures = Counter(
            "usersignals_store_failures", "Failed state store operations (each retried)",
            registry=self.registry,
        )  # fmt: skip
        self.spool_retired = Counter(
            "usersignals_spool_files_retired", "Spool files applied in full and deleted",
            registry=self.registry,
        )  # fmt: skip
        self._timings()

    def _engine_reports(self) -> None:
        """What the engine reports of each batch (:meth:`observe_report`)."""
        from prometheus_client import Counter

        self.repeats = Counter(
            "usersignals_repeated_event_ids",
            "Events dropped because the user applied their event_id within the dedupe horizon",
            registry=self.registry,
        )
        self.already_applied = Counter(
            "usersignals_already_applied_events",
            "Events skipped because their user's progress for the partition is at or past "
            "their offset: replays after a restart (on Kafka, those whose event_id the user's "
            "record keeps, or older than what it keeps); rising with no restart, a partition "
            "whose offsets went backwards had events older than the ids kept",
            registry=self.registry,
        )
        self.rewound = Counter(
            "usersignals_rewound_events",
            "Events at or below their user's progress for the partition whose event_id was "
            "never met, so applied now: the partition's offsets went backwards (a topic "
            "made again, a broker that lost its log)",
            registry=self.registry,
        )
        self.missing_enrichment = Counter(
            "usersignals_events_missing_enrichment",
            "Events applied with no record of their lookup key in the source (its fields "
            "missing for them: a table not loaded, or loaded from another workload?)",
            ["source"],
            registry=self.registry,
        )
        self.large_records = Counter(
            "usersignals_large_records",
            "User records written larger than processing.large_record_bytes (a user with "
            "that many events within the dedupe horizon, a bot?): the largest is named in "
            "the log, once a minute",
            registry=self.registry,
        )

    def _consumer(self) -> None:
        """The consumer group's: partitions held, positions and lag."""
        from prometheus_client import Gauge

        self.lag = Gauge(
            "usersignals_consumer_lag",
            "Events behind the partition's high watermark (a lower bound where the broker "
            "reports the watermark low)", ["partition"], registry=self.registry,
        )  # fmt: skip
        self.assigned = Gauge(
            "usersignals_consumer_assigned_partitions",
            "Partitions assigned to this processor by its consumer group",
            registry=self.registry,
        )
        self._exported: set[str] = set()  # partitions with position and lag series
        self.unassigned = Gauge(
            "usersignals_consumer_unassigned_seconds",
            "Seconds this processor has held no partition (0 while it holds one): a group "
            "holding fewer partitions than the topic has, for minutes, is stuck",
            registry=self.registry,
        )
        self._unassigned_since: float | None = None
        self.position = Gauge(
            "usersignals_consumer_position", "Next offset to consume", ["partition"],
            registry=self.registry,
        )  # fmt: skip

    def _timings(self) -> None:
        from prometheus_client import Counter, Histogram

        self.write_seconds = Histogram(
            "usersignals_batch_seconds", "Time to process and write one micro-batch",
            registry=self.registry,
        )  # fmt: skip
        self.signal_seconds = Counter(
            "usersignals_signal_seconds",
            "Seconds in each signal's own code (decoding, applying and encoding its states): "
            "by key for signals written in Python, signal=\"native\" for the native core's "
            "batch call that runs all the others", ["signal"], registry=self.registry,
        )  # fmt: skip

    def set_store_available(self, available: bool) -> None:
        """Store writes succeed (True) or fail and are being retried (False): /readyz."""
        self.store_up = available
        self.store_available.set(1 if available else 0)

    def observe_positions(self, positions: dict[str, tuple[int, int]]) -> None:
        """The assigned partitions' positions and lag; a partition no longer assigned (a
        rebalance gave it to another processor) has its series removed, so that a sum over
        the processors counts each partition once."""
        self.assigned.set(len(positions))
        if positions:
            self._unassigned_since = None
            self.unassigned.set(0)
        else:
            now = time.monotonic()
            if self._unassigned_since is None:
                self._unassigned_since = now
            self.unassigned.set(now - self._unassigned_since)
        for partition in self._exported - positions.keys():
            for gauge in (self.position, self.lag):
                with contextlib.suppress(KeyError):  # never set: its position was unknown
                    gauge.remove(partition)
        self._exported = set(positions)
        for partition, (position, high) in positions.items():
            if position >= 0:
                self.position.labels(partition).set(position)
                if high >= 0:
                    self.lag.labels(partition).set(max(0, high - position))

    def name_sources(self, sources: Iterable[str]) -> None:
        """The lookup sources' series of events missing enrichment, exported at 0 from the
        start (as ``EnrichmentMetrics.name_sources`` does the sources' own)."""
        for source in sources:
            self.missing_enrichment.labels(source)

    def observe_report(self, report: BatchReport) -> None:
        """What the engine reports of a batch: events already applied and repeated event ids
        dropped, events taken though below their user's progress, events with no record of
        their lookup key, the events a signal's own
        code failed on (dead-lettered as ``signal_failed``), and the time in each signal's
        code."""
        if report.repeats:
            self.repeats.inc(report.repeats)
        if report.duplicates:
            self.already_applied.inc(report.duplicates)
        if report.rewound:
            self.rewound.inc(report.rewound)
        if report.large_records:
            self.large_records.inc(report.large_records)
        for source, count in report.missing_enrichment.items():
            self.missing_enrichment.labels(source).inc(count)
        for rejected in report.rejected:
            self.dead_letters.labels(rejected.reason).inc()
        for key, seconds in report.signal_seconds.items():
            self.signal_seconds.labels(key).inc(seconds)

    def observe_batch(
        self, events: Sequence[Event], bad: Sequence[BadEvent], seconds: float
    ) -> None:
        self.events.inc(len(events))
        self.batches.observe(len(events) + len(bad))
        self.write_seconds.observe(seconds)
        now = time.time()
        for event in events[::_SAMPLE_EVERY]:
            self.freshness.observe(max(0.0, now - event.ts / 1000))
        for rejected in bad:
            self.dead_letters.labels(rejected.reason).inc()
