"""Prometheus metrics of the Materializer, per lookup source."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


class EnrichmentMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        # Imported here, as in ProcessorMetrics: 50 ms only a process with metrics needs.
        from prometheus_client import Counter, Histogram

        self.keys_requested = Counter(
            "usersignals_lookup_keys_requested", "Distinct keys asked for, per micro-batch",
            ["source"], registry=registry,
        )  # fmt: skip
        self.keys_fetched = Counter(
            "usersignals_lookup_keys_fetched", "Keys fetched from the source (cache misses)",
            ["source"], registry=registry,
        )  # fmt: skip
        self.keys_missing = Counter(
            "usersignals_lookup_keys_missing",
            "Keys fetched that the source holds no record for (the events carrying them are "
            "applied with the source's fields missing)",
            ["source"], registry=registry,
        )  # fmt: skip
        self.cache_hits = Counter(
            "usersignals_lookup_cache_hits", "Keys served by the cache", ["source"],
            registry=registry,
        )  # fmt: skip
        self.fetch_seconds = Histogram(
            "usersignals_lookup_fetch_seconds", "Latency of one batched fetch", ["source"],
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0), registry=registry,
        )  # fmt: skip
        self.bad_fields = Counter(
            "usersignals_lookup_bad_fields",
            "Fetched fields that did not fit what the signals need (treated as missing), by "
            "field (* for a value that is not a record) and reason",
            ["source", "field", "reason"], registry=registry,
        )  # fmt: skip
        self.failures = Counter(
            "usersignals_lookup_failures", "Failed fetches, by kind", ["source", "kind"],
            registry=registry,
        )  # fmt: skip

    def name_sources(self, sources: Iterable[str]) -> None:
        """Each source's counted series exported at 0 from the start: one that appears only
        at its first count leaves an alert on its rate nothing to compute from until then."""
        names = list(sources)  # read once per counter
        for counter in (self.keys_requested, self.keys_fetched, self.keys_missing, self.cache_hits):
            for source in names:
                counter.labels(source)
