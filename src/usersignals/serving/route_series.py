"""The HTTP API's request counts and latency histograms, cheap to record.

Why not prometheus_client's ``Counter`` and ``Histogram``: each GET records three
observations (its count, its latency, its time to the answer built), and through them those
cost about 2 µs of a ~24 µs request in-process (bench/serving_handler.py; an ``inc`` 0.4 µs,
an ``observe`` 0.75-0.8 µs: a lock per value touched, a label check and a Python loop over
the buckets per call). Here an observation is one method call and one lock. The series are
exposed through prometheus_client's public collector interface, with the samples its own
``Counter`` and ``Histogram`` expose (names, labels, order, float values, ``_created``), so
``/metrics`` reads as before (``tests/unit/test_route_series.py`` compares the two).
"""

from __future__ import annotations

import math
import os
import threading
import time
from abc import abstractmethod
from bisect import bisect_left
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

#: prometheus_client's text of a bucket bound (its own function; untyped there).
_go_float: Callable[[float], str] = floatToGoString


def _use_created() -> bool:
    """Whether ``_created`` samples are exposed, as prometheus_client decides it."""
    disabled = os.environ.get("PROMETHEUS_DISABLE_CREATED_SERIES", "False")
    return disabled.lower() not in ("true", "1", "t")


class CounterSeries:
    """One label set's count."""

    __slots__ = ("created", "lock", "value")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.value = 0.0
        self.created = time.time()

    def inc(self) -> None:
        with self.lock:  # `+=` is not atomic if another thread ever records too
            self.value += 1.0


class HistogramSeries:
    """One label set's bucket counts (not cumulative) and sum."""

    __slots__ = ("_bounds", "counts", "created", "lock", "sum")

    def __init__(self, bounds: list[float]) -> None:
        self.lock = threading.Lock()
        self._bounds = bounds
        self.counts = [0.0] * len(bounds)
        self.sum = 0.0
        self.created = time.time()

    def observe(self, amount: float) -> None:
        """Count ``amount`` (a duration: never NaN) in the first bucket whose bound is at
        least it, as ``Histogram.observe`` does."""
        with self.lock:
            self.counts[bisect_left(self._bounds, amount)] += 1.0
            self.sum += amount


_Series = TypeVar("_Series", "CounterSeries", "HistogramSeries")


class _Family(Collector, Generic[_Series]):
    """What a counter and a histogram share: a name, labels and series by label values."""

    kind = ""

    def __init__(
        self, name: str, documentation: str, labelnames: Sequence[str], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self._lock = threading.Lock()
        self._series: dict[tuple[str, ...], _Series] = {}
        registry.register(self)

    def labels(self, *values: str) -> _Series:
        series = self._series.get(values)
        if series is None:
            values = self._checked(values)
            with self._lock:
                series = self._series.setdefault(values, self._new_series())
        return series

    @abstractmethod
    def _new_series(self) -> _Series:
        """An empty series of this family's kind."""

    def describe(self) -> Iterable[Metric]:
        return [Metric(self.name, self.documentation, self.kind)]

    def _checked(self, values: tuple[object, ...]) -> tuple[str, ...]:
        """A new series' label values, refused at the call as prometheus_client refuses
        them (a wrong count would otherwise fail every later scrape of ``/metrics``)."""
        if len(values) != len(self.labelnames):
            raise ValueError(f"{self.name}: incorrect label count")
        return tuple(str(value) for value in values)

    def _labelled_series(self) -> list[tuple[dict[str, str], _Series]]:
        """Each series with its labels by name, as they stand (a copy: scrapes do not hold
        the lock while they write)."""
        with self._lock:
            series = list(self._series.items())
        return [(dict(zip(self.labelnames, values, strict=True)), one) for values, one in series]


class RequestCounter(_Family[CounterSeries]):
    """A counter by label values (``Counter(name, documentation, labelnames)``)."""

    kind = "counter"

    def _new_series(self) -> CounterSeries:
        return CounterSeries()

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self.name, self.documentation, self.kind)
        created = _use_created()
        for labels, one in self._labelled_series():
            metric.add_sample(self.name + "_total", labels, one.value)
            if created:
                metric.add_sample(self.name + "_created", labels, one.created)
        return [metric]


class RequestHistogram(_Family[HistogramSeries]):
    """A histogram by label values (``Histogram(name, documentation, labelnames, buckets)``;
    buckets ascending, ``+Inf`` added as prometheus_client adds it)."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        buckets: Sequence[float],
        registry: CollectorRegistry,
    ) -> None:
        bounds = [float(b) for b in buckets]
        if bounds != sorted(bounds) or not bounds or bounds[0] < 0:
            raise ValueError("buckets must be ascending and not negative")
        if bounds[-1] != math.inf:
            bounds.append(math.inf)
        self._bounds = bounds
        # Each bound's `le` label, as prometheus_client writes it (written once).
        self._les = [_go_float(bound) for bound in bounds]
        super().__init__(name, documentation, labelnames, registry)

    def _new_series(self) -> HistogramSeries:
        return HistogramSeries(self._bounds)

    def collect(self) -> Iterable[Metric]:
        metric = Metric(self.name, self.documentation, self.kind)
        created = _use_created()
        for labels, one in self._labelled_series():
            with one.lock:  # one observation's bucket and sum together
                counts, total = list(one.counts), one.sum
            cumulative = 0.0
            for le, count in zip(self._les, counts, strict=True):
                cumulative += count
                metric.add_sample(self.name + "_bucket", {**labels, "le": le}, cumulative)
            metric.add_sample(self.name + "_count", labels, cumulative)
            metric.add_sample(self.name + "_sum", labels, total)
            if created:
                metric.add_sample(self.name + "_created", labels, one.created)
        return [metric]
