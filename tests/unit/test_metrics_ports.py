"""The metrics ports answer ``/metrics`` (and the processor's its health checks), nothing else.

Both answered any path with the metrics and a 200: a health probe pointed by mistake at the
serving metrics port (``/healthz``, ``/readyz``) always passed, whatever the API's state,
and a typo in a scrape path went unnoticed. Other paths are now a 404 naming what is there.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter

from usersignals.processing.health import HealthServer
from usersignals.processing.metrics import ProcessorMetrics
from usersignals.serving.metrics_port import MetricsServer


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def serving_port() -> Iterator[int]:
    registry = CollectorRegistry()
    Counter("demo_requests", "Requests.", registry=registry).inc()
    port = free_port()
    server = MetricsServer(registry, "127.0.0.1", port)
    try:
        yield port
    finally:
        server.close()


@pytest.fixture
def processor_port() -> Iterator[int]:
    port = free_port()
    server = HealthServer(ProcessorMetrics(), "127.0.0.1", port).start()
    try:
        yield port
    finally:
        server.close()


def get(port: int, path: str) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", timeout=5)


def test_the_serving_metrics_port_answers_metrics_only(serving_port: int) -> None:
    assert "demo_requests_total 1.0" in get(serving_port, "/metrics").text
    assert get(serving_port, "/metrics?name[]=demo_requests_total").status_code == 200
    for path in ("/healthz", "/readyz", "/v1/users/u1/signals", "/", "/metricz"):
        answer = get(serving_port, path)
        assert answer.status_code == 404, path
        assert "/metrics" in answer.text


def test_the_processor_port_answers_metrics_and_health_only(processor_port: int) -> None:
    assert get(processor_port, "/metrics").status_code == 200
    assert "usersignals_" in get(processor_port, "/metrics").text
    assert get(processor_port, "/healthz").json() == {"status": "ok"}
    assert get(processor_port, "/readyz").status_code in (200, 503)
    for path in ("/", "/metricz", "/v1/users/u1/signals"):
        answer = get(processor_port, path)
        assert answer.status_code == 404, path
        assert "/metrics" in answer.text
