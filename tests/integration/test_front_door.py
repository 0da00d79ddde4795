"""The API front door given ordinary hostile inputs: a 4xx naming the problem, never a 500
(issue 9, items 1 and 8). Real granian + Starlette workers on a loopback port."""

from __future__ import annotations

import json

import httpx
import pytest
from service_helpers import Service

EVENT = {
    "event_id": "fd-1",
    "user_id": "u-front-door",
    "item_id": "i1",
    "action": "save",
    "surface": "home",
}


def event_bytes(ts_ms: int, **changes: str) -> bytes:
    return json.dumps({**EVENT, **changes, "ts": ts_ms}).encode()


def now_ms() -> int:
    import time

    return time.time_ns() // 1_000_000


def test_an_ingested_event_that_is_not_utf8_is_rejected_as_invalid_utf8(service: Service) -> None:
    bad = event_bytes(now_ms()).replace(b'"fd-1"', b'"fd-\xff"')
    good = event_bytes(now_ms(), event_id="fd-2")
    alone = httpx.post(f"{service.base_url}/v1/events", content=bad, timeout=10)
    assert alone.status_code == 422, alone.text
    assert alone.json()["rejected"][0]["reason"] == "invalid_utf8"
    mixed = httpx.post(f"{service.base_url}/v1/events", content=b"[" + bad + b"," + good + b"]")
    assert mixed.status_code == 202, mixed.text
    body = mixed.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["reason"]) for r in body["rejected"]] == [(0, "invalid_utf8")]


def test_an_ingest_body_nested_200k_levels_deep_is_a_400_naming_the_body(
    service: Service,
) -> None:
    # Under the 1 MiB body limit: 200,000 levels are 400,000 bytes.
    body = b"[" * 200_000 + b"]" * 200_000
    response = httpx.post(f"{service.base_url}/v1/events", content=body, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == "body"
    assert "nested too deeply" in response.json()["message"]


def test_a_batch_body_that_is_not_utf8_is_a_400_naming_the_body(service: Service) -> None:
    body = b'{"users": ["u\xff1"], "signals": ["action_counts"]}'
    response = httpx.post(f"{service.base_url}/v1/signals/batch", content=body, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json() == {
        "error": "invalid_utf8",
        "message": response.json()["message"],
        "parameter": "body",
    }


@pytest.mark.parametrize(
    ("parameter", "value"),
    [
        ("as_of", "0"),
        ("as_of", "1999-12-31T23:59:59Z"),
        ("as_of", "99999999999999999"),
        ("until", "-99999999999999999"),
        ("until", "99999999999999999"),
        ("since", "-1"),
        ("until", "9" * 5000),  # longer than Python converts to an int
        ("since", "1795780000"),  # seconds, not ms: 1970, before any event taken
        ("until", "1795780000"),
        ("window", "99999999999999999999d"),  # beyond a 64-bit count of milliseconds
        ("window", "106751991168d"),
        ("window", "9223372036854775808ms"),
        ("window", ""),  # empty: refused, never read as "no window"
        ("actions", ""),  # an empty exclude excludes nothing: answered (test_context.py)
    ],
)
def test_times_out_of_range_are_a_400_naming_the_parameter(
    service: Service, parameter: str, value: str
) -> None:
    url = f"{service.base_url}/v1/users/{service.busiest_user}/signals"
    response = httpx.get(url, params={parameter: value}, timeout=10)
    assert response.status_code == 400, response.text
    assert response.json()["parameter"] == parameter
    batch = httpx.post(
        f"{service.base_url}/v1/signals/batch",
        json={"users": [service.busiest_user], "context": {parameter: value}},
        timeout=10,
    )
    assert batch.status_code == 400, batch.text
    assert batch.json()["parameter"] == parameter


def test_decayed_signals_read_long_before_their_events_are_a_422_naming_the_signal(
    service: Service,
) -> None:
    url = f"{service.base_url}/v1/users/{service.busiest_user}/signals"
    names = "category_interest,taste_embedding"
    response = httpx.get(url, params={"names": names, "as_of": "2000-01-01T00:00:00Z"}, timeout=10)
    # Decayed sums cannot take back the events after 2000: refused, never an overflow or a 500.
    assert response.status_code == 422, response.text
    body = response.json()
    assert (body["error"], body["parameter"]) == ("as_of_unavailable", "as_of")
    assert body["signal"] in {"category_interest", "taste_embedding"}
    assert body["earliest_as_of_ms"] > 946_684_800_000


def test_decayed_signals_read_far_in_the_future_answer_without_overflow(service: Service) -> None:
    url = f"{service.base_url}/v1/users/{service.busiest_user}/signals"
    names = "category_interest,taste_embedding"
    response = httpx.get(url, params={"names": names, "as_of": "9999-12-31T23:59:59Z"}, timeout=10)
    assert response.status_code == 200, response.text
    signals = response.json()["signals"]
    # By 9999 every event is far past the retention: nothing counts.
    assert signals["category_interest"]["value"] == []
    assert signals["taste_embedding"]["value"]["vector"] is None
