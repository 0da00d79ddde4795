"""Tokens, work caps, stalled and abandoned uploads, /metrics on its own port (issue 9,
items 9, 10 and 11), against real granian workers on loopback."""

from __future__ import annotations

import gzip
import json
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
from service_helpers import Service, free_port, start_service, stop_service

from usersignals import ApiError, Client

READ_TOKEN = "test-read-token"
INGEST_TOKEN = "test-ingest-token"
BODY_TIMEOUT_MS = 1_000
HEADER_TIMEOUT_MS = 1_000


@pytest.fixture(scope="module")
def guarded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Service, int]]:
    metrics_port = free_port()
    running = start_service(
        tmp_path_factory.mktemp("guarded"),
        events=2_000,
        env_extra={
            "USERSIGNALS_SERVING__READ_TOKEN": READ_TOKEN,
            "USERSIGNALS_SERVING__INGEST_TOKEN": INGEST_TOKEN,
            "USERSIGNALS_SERVING__METRICS_PORT": str(metrics_port),
            "USERSIGNALS_SERVING__BODY_TIMEOUT_MS": str(BODY_TIMEOUT_MS),
            "USERSIGNALS_SERVING__HEADER_TIMEOUT_MS": str(HEADER_TIMEOUT_MS),
        },
    )
    yield running, metrics_port
    stop_service(running)


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def event(event_id: str) -> dict[str, object]:
    return {"event_id": event_id, "user_id": "u-guard", "item_id": "i1", "action": "save",
            "surface": "home", "ts": time.time_ns() // 1_000_000}  # fmt: skip


def metrics(port: int) -> str:
    return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text


def test_reads_need_the_read_token(guarded: tuple[Service, int]) -> None:
    service, _ = guarded
    url = f"{service.base_url}/v1/users/{service.busiest_user}/signals"
    missing = httpx.get(url, timeout=5)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert httpx.get(url, headers=auth(INGEST_TOKEN), timeout=5).status_code == 403
    assert httpx.get(url, headers=auth(READ_TOKEN), timeout=5).status_code == 200
    batch = f"{service.base_url}/v1/signals/batch"
    body = {"users": [service.busiest_user]}
    assert httpx.post(batch, json=body, timeout=5).status_code == 401
    assert httpx.post(batch, json=body, headers=auth(READ_TOKEN), timeout=5).status_code == 200
    assert httpx.get(f"{service.base_url}/v1/signals", timeout=5).status_code == 401
    assert httpx.get(f"{service.base_url}/healthz", timeout=5).status_code == 200


def test_ingest_needs_the_ingest_token_not_the_read_token(guarded: tuple[Service, int]) -> None:
    service, _ = guarded
    url = f"{service.base_url}/v1/events"
    assert httpx.post(url, json=event("g1"), timeout=5).status_code == 401
    assert httpx.post(url, json=event("g1"), headers=auth(READ_TOKEN), timeout=5).status_code == 403
    accepted = httpx.post(url, json=event("g1"), headers=auth(INGEST_TOKEN), timeout=5)
    assert accepted.status_code == 202, accepted.text


def test_a_compressed_body_is_a_415_naming_its_encoding(guarded: tuple[Service, int]) -> None:
    """Found in a ranking engineer's trial: a gzipped batch of events was read as JSON and
    refused as malformed ("invalid character (byte 0)"), which sent the caller looking for a
    bad event. A body in an encoding the service does not decode is a 415 saying so."""
    service, _ = guarded
    body = gzip.compress(json.dumps([event("gz1")]).encode())
    headers = {**auth(INGEST_TOKEN), "Content-Encoding": "gzip", "Content-Type": "application/json"}
    refused = httpx.post(f"{service.base_url}/v1/events", content=body, headers=headers, timeout=5)
    assert refused.status_code == 415, refused.text
    assert "gzip" in refused.json()["message"]
    plain = {**auth(INGEST_TOKEN), "Content-Encoding": "identity"}
    accepted = httpx.post(f"{service.base_url}/v1/events", json=event("gz2"), headers=plain)
    assert accepted.status_code == 202, accepted.text


def test_the_python_client_sends_the_read_and_ingest_tokens(
    guarded: tuple[Service, int],
) -> None:
    service, _ = guarded
    with Client(service.base_url, timeout=10) as anonymous:
        with pytest.raises(ApiError) as refused:
            anonymous.signals(service.busiest_user, ["action_counts"])
        assert refused.value.status == 401
    with Client(
        service.base_url, timeout=10, read_token=READ_TOKEN, ingest_token=INGEST_TOKEN
    ) as client:
        answer = client.signals(service.busiest_user, ["action_counts"])
        assert answer.signals["action_counts"].value["total"] > 0
        assert len(client.batch([service.busiest_user], ["action_counts"])) == 1
        assert "signals" in client.definitions()
        assert client.ingest([event("client-token-1")]).accepted == 1


def test_metrics_are_served_on_their_own_port_only(guarded: tuple[Service, int]) -> None:
    service, metrics_port = guarded
    assert httpx.get(f"{service.base_url}/metrics", timeout=5).status_code == 404
    assert "usersignals_http_requests_total" in metrics(metrics_port)


def test_a_batch_repeating_one_name_is_capped_and_deduplicated(
    guarded: tuple[Service, int],
) -> None:
    service, _ = guarded
    url = f"{service.base_url}/v1/signals/batch"
    users = [f"u{n}" for n in range(1_000)]
    hostile = {"users": users, "signals": ["action_counts"] * 1_000}
    refused = httpx.post(url, json=hostile, headers=auth(READ_TOKEN), timeout=10)
    assert refused.status_code == 400
    assert refused.json()["parameter"] == "signals"
    repeated = {"users": users, "signals": ["action_counts"] * 50}
    answer = httpx.post(url, json=repeated, headers=auth(READ_TOKEN), timeout=30)
    assert answer.status_code == 200
    assert all(list(r["signals"]) == ["action_counts"] for r in answer.json()["results"])
    names = ",".join(["action_counts"] * 101)
    single = httpx.get(
        f"{service.base_url}/v1/users/u1/signals",
        params={"names": names},
        headers=auth(READ_TOKEN),
        timeout=10,
    )
    assert single.status_code == 400
    assert single.json()["parameter"] == "names"


def raw_connection(service: Service) -> socket.socket:
    host, port = service.base_url.removeprefix("http://").split(":")
    connection = socket.create_connection((host, int(port)), timeout=15)
    return connection


def read_until_closed(connection: socket.socket, limit_s: float) -> bytes:
    deadline = time.monotonic() + limit_s
    received = b""
    while time.monotonic() < deadline:
        try:
            chunk = connection.recv(65536)
        except (ConnectionResetError, TimeoutError):
            break
        if not chunk:
            break
        received += chunk
    return received


def test_a_stalled_upload_gets_408_and_is_closed(guarded: tuple[Service, int]) -> None:
    service, _ = guarded
    with raw_connection(service) as connection:
        connection.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Authorization: Bearer " + INGEST_TOKEN.encode() + b"\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"event_id":'
        )
        started = time.monotonic()
        answer = read_until_closed(connection, limit_s=15)
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert BODY_TIMEOUT_MS / 1000 * 0.5 < waited < 14


def test_stalled_headers_are_closed(guarded: tuple[Service, int]) -> None:
    service, _ = guarded
    with raw_connection(service) as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never finished
        started = time.monotonic()
        read_until_closed(connection, limit_s=15)
        waited = time.monotonic() - started
    assert waited < 14, "the server kept a connection with stalled headers open"


def test_a_client_that_disconnects_mid_upload_is_counted_apart_not_as_a_500(
    guarded: tuple[Service, int],
) -> None:
    service, metrics_port = guarded
    with raw_connection(service) as connection:
        connection.sendall(
            b"POST /v1/events HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + INGEST_TOKEN.encode() + b"\r\n"
            b"Content-Length: 1000\r\n\r\n" + b'{"event_id":'
        )
    counted = 'usersignals_http_client_disconnects_total{route="events"} 1.0'
    deadline = time.monotonic() + 15
    text = metrics(metrics_port)
    while counted not in text and time.monotonic() < deadline:
        time.sleep(0.1)
        text = metrics(metrics_port)
    assert counted in text
    assert 'status="500"' not in text
