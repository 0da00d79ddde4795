"""The HTTP API's request series expose what prometheus_client's Counter and Histogram would.

``serving/route_series.py`` records the request counts and latencies more cheaply than
prometheus_client does; ``/metrics`` must not change. The same observations go to both, and
both registries are written out in the text and the OpenMetrics formats, byte for byte.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from usersignals.serving.route_series import RequestCounter, RequestHistogram

BUCKETS = (1e-5, 2e-5, 3e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 0.001, 0.005, 0.025, 0.1)
ROUTES = ("user_signals", "batch", "events")
STATUSES = ("200", "400", "503")

#: A duration, or a bucket's bound exactly (where `<=` decides the bucket).
durations = st.one_of(st.floats(0, 0.5, allow_nan=False), st.sampled_from(BUCKETS))
observations = st.lists(
    st.tuples(st.sampled_from(ROUTES), st.sampled_from(STATUSES), durations), max_size=40
)


def written(registry: CollectorRegistry) -> tuple[bytes, bytes]:
    return generate_latest(registry), generate_openmetrics(registry)


@settings(max_examples=200, deadline=None)
@given(observations)
def test_the_series_write_what_prometheus_client_writes(
    seen: list[tuple[str, str, float]],
) -> None:
    theirs, ours = CollectorRegistry(), CollectorRegistry()
    labels = ["route", "status"]
    counts = (
        Counter("requests", "Requests", labels, registry=theirs),
        RequestCounter("requests", "Requests", labels, registry=ours),
    )
    latencies = (
        Histogram("seconds", "Latency", ["route"], buckets=BUCKETS, registry=theirs),
        RequestHistogram("seconds", "Latency", ["route"], BUCKETS, registry=ours),
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("time.time", lambda: 1_700_000_000.25)  # the `_created` samples
        for route, status, seconds in seen:
            for count, latency in zip(counts, latencies, strict=True):
                count.labels(route, status).inc()
                latency.labels(route).observe(seconds)
    assert written(ours) == written(theirs)


def test_a_registry_refuses_a_second_series_of_the_same_name() -> None:
    registry = CollectorRegistry()
    RequestCounter("requests", "Requests", ["route"], registry=registry)
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        Counter("requests", "Requests", ["route"], registry=registry)


def test_a_wrong_label_count_is_refused_at_the_call_not_at_every_scrape() -> None:
    """Found by the review: a series made with too few label values was kept, and every
    later scrape of /metrics failed on it; prometheus_client refuses it at the call."""
    registry = CollectorRegistry()
    counter = RequestCounter("requests", "Requests.", ["route", "status"], registry)
    histogram = RequestHistogram("latency", "Latency.", ["route"], [0.1, 1.0], registry)
    with pytest.raises(ValueError, match="incorrect label count"):
        counter.labels("read")
    with pytest.raises(ValueError, match="incorrect label count"):
        histogram.labels("read", "200")
    counter.labels("read", "200").inc()
    histogram.labels("read").observe(0.5)
    assert b'requests_total{route="read",status="200"} 1.0' in generate_latest(registry)
