"""Fixtures of the integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from service_helpers import Service, start_service, stop_service

from usersignals.devtools.broker import LocalBroker


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    """A real Kafka-protocol broker (Tansu) on a loopback port, for one test module; what it
    says is in ``broker.log``, for a test to print when it fails."""
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    with LocalBroker(log=log) as running:
        yield running


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    running = start_service(tmp_path_factory.mktemp("service"))
    yield running
    stop_service(running)
