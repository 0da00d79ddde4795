"""The HTTP API over real HTTP on loopback, against a store written by the engine."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from service_helpers import ADMIN_TOKEN, Service

from usersignals import ApiError, Client, Event
from usersignals.signals import SignalRegistry
from waiting import wait_for

REFERENCE = SignalRegistry.from_module("usersignals.examples.reference")


def get(service: Service, path: str, **params: Any) -> httpx.Response:
    return httpx.get(service.base_url + path, params=params, timeout=5)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def test_one_user_all_signals_with_freshness(service: Service) -> None:
    response = get(service, f"/v1/users/{service.busiest_user}/signals")
    assert response.status_code == 200
    body = response.json()
    assert body["user_id"] == service.busiest_user
    assert set(body["signals"]) == set(REFERENCE.names)
    for result in body["signals"].values():
        assert result["newest_event_ms"] is not None
        assert result["age_ms"] >= 0
        assert result["newest_event_time"].endswith("+00:00")


def test_request_time_context_filters_the_view(service: Service) -> None:
    user = service.busiest_user
    everything = get(service, f"/v1/users/{user}/signals", names="recent_engagements").json()
    saves = get(
        service,
        f"/v1/users/{user}/signals",
        names="recent_engagements,action_counts",
        actions="save",
        limit="3",
        window="14d",
    ).json()["signals"]
    entries = saves["recent_engagements"]["value"]
    assert 0 < len(entries) <= 3
    assert all(entry["action"] == "save" for entry in entries)
    assert set(saves["action_counts"]["value"]["by"]) <= {"save"}
    assert saves["action_counts"]["ignored"] == ["limit"]
    all_entries = everything["signals"]["recent_engagements"]["value"]
    first = all_entries[0]["item_id"]
    excluded = get(
        service, f"/v1/users/{user}/signals", names="recent_engagements", exclude=first
    ).json()["signals"]["recent_engagements"]["value"]
    assert first not in [entry["item_id"] for entry in excluded]


def test_a_user_with_no_events_gets_an_empty_well_formed_result(service: Service) -> None:
    body = get(service, "/v1/users/nobody-at-all/signals").json()
    assert body["signals"]["recent_engagements"]["value"] == []
    assert body["signals"]["action_counts"]["value"] == {"total": 0, "by": {}}
    assert body["signals"]["recent_engagements"]["newest_event_ms"] is None


@pytest.mark.parametrize(
    ("params", "parameter"),
    [
        ({"window": "abc"}, "window"),
        ({"limit": "0"}, "limit"),
        ({"since": "2026-01-01T00:00:00"}, "since"),
        ({"colour": "red"}, "colour"),
        ({"dedupe": "perhaps"}, "dedupe"),
    ],
)
def test_bad_parameters_get_a_400_naming_them(
    service: Service, params: dict[str, str], parameter: str
) -> None:
    response = get(service, "/v1/users/u1/signals", **params)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "invalid_parameter"
    assert body["parameter"] == parameter
    assert parameter in body["message"]


@pytest.mark.parametrize("parameter", ["window", "names", "limit"])
def test_a_parameter_given_twice_gets_a_400_naming_it(service: Service, parameter: str) -> None:
    """The last value used to win silently (window=1h&window=2h answered for 2 h)."""
    values = {"window": ["1h", "2h"], "names": ["action_counts", "action_counts"]}
    response = httpx.get(
        service.base_url + "/v1/users/u1/signals",
        params=[(parameter, value) for value in values.get(parameter, ["5", "6"])],
        timeout=5,
    )
    assert response.status_code == 400
    body = response.json()
    assert (body["error"], body["parameter"]) == ("invalid_parameter", parameter)
    assert "more than once" in body["message"]


def test_unknown_signal_is_a_404_listing_the_known_ones(service: Service) -> None:
    response = get(service, "/v1/users/u1/signals", names="recent_engagements,nope")
    assert response.status_code == 404
    assert response.json()["error"] == "unknown_signal"
    assert "recent_engagements" in response.json()["known"]


def test_batch_with_a_context_per_signal(service: Service) -> None:
    response = httpx.post(
        service.base_url + "/v1/signals/batch",
        json={
            "users": [service.busiest_user, "nobody"],
            "signals": ["action_counts", "recent_engagements"],
            "context": {"window": "14d"},
            "contexts": {"recent_engagements": {"limit": 2, "actions": ["click"]}},
        },
        timeout=5,
    )
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["user_id"] for r in results] == [service.busiest_user, "nobody"]
    entries = results[0]["signals"]["recent_engagements"]["value"]
    assert len(entries) <= 2
    assert all(e["action"] == "click" for e in entries)
    assert results[0]["signals"]["action_counts"]["value"]["total"] > 0


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b'{"users": "u1"}', 422),
        (b'{"users": []}', 400),
        (b'{"users": ["u1"], "signals": ["nope"]}', 404),
        (b'{"users": ["u1"], "context": {"window": "x"}}', 400),
        (b'{"users": ["u1"], "surprise": 1}', 422),
    ],
)
def test_bad_batch_bodies_get_a_4xx(service: Service, body: bytes, status: int) -> None:
    response = httpx.post(service.base_url + "/v1/signals/batch", content=body, timeout=5)
    assert response.status_code == status
    assert response.json()["error"]


@pytest.mark.parametrize(
    ("context", "parameter"),
    [
        (b'"context": {"window": null}', "context.window"),
        (b'"context": {"limit": {"a": 1}}', "context.limit"),
        (b'"contexts": {"action_counts": {"actions": [1]}}', "contexts.action_counts.actions"),
    ],
)
def test_a_batch_context_value_of_a_wrong_type_is_named(
    service: Service, context: bytes, parameter: str
) -> None:
    """Found in a ranking engineer's trial: `"context": {"window": null}` was a 422 saying
    "Expected `bool | int | float | str | array`, got `null` - at `$.context[...]`": no key,
    no `parameter`. It is a 400 naming the parameter, as a bad value of the right type is."""
    body = b'{"users": ["u1"], ' + context + b"}"
    response = httpx.post(service.base_url + "/v1/signals/batch", content=body, timeout=5)
    assert response.status_code == 400, response.text
    assert (response.json()["error"], response.json()["parameter"]) == (
        "invalid_parameter",
        parameter,
    )


@pytest.mark.parametrize("path", ["/v1/users/u1/signals/", "/v1/users/u1"])
def test_a_read_path_gone_astray_is_a_404_saying_where_reads_are(
    service: Service, path: str
) -> None:
    """Found in a ranking engineer's trial: a trailing slash got `405 method_not_allowed`
    (the admin DELETE route takes every path under /v1/users/)."""
    response = get(service, path)
    assert response.status_code == 404, response.text
    assert "GET /v1/users/{user_id}/signals" in response.json()["message"]


def test_reads_refuse_a_user_id_that_ingest_would_refuse_naming_it(service: Service) -> None:
    # events.max_user_id_chars (128 code points by default) bounds reads as it bounds ingest.
    longest, too_long = "é" * 128, "é" * 129
    event = {"event_id": f"long-{now_ms()}", "user_id": too_long, "item_id": "i1",
             "action": "click", "surface": "home", "ts": now_ms()}  # fmt: skip
    refused = httpx.post(service.base_url + "/v1/events", json=event, timeout=5)
    assert refused.json()["rejected"][0]["reason"] == "invalid_value"
    assert get(service, f"/v1/users/{longest}/signals").status_code == 200
    read = get(service, f"/v1/users/{too_long}/signals")
    assert read.status_code == 400
    assert (read.json()["error"], read.json()["parameter"]) == ("invalid_parameter", "user_id")
    assert "128" in read.json()["message"]
    batch = httpx.post(
        service.base_url + "/v1/signals/batch", json={"users": ["u1", too_long]}, timeout=5
    )
    assert batch.status_code == 400
    assert (batch.json()["parameter"], "128" in batch.json()["message"]) == ("users", True)
    # Nor a NUL, which ingest refuses too (a user's raw events are keyed by the id and a NUL).
    nul = get(service, "/v1/users/ua%00x/signals")
    assert nul.status_code == 400
    assert nul.json()["parameter"] == "user_id"
    assert "NUL" in nul.json()["message"]


def test_ingested_events_are_visible_within_the_freshness_budget(service: Service) -> None:
    user = f"fresh-{now_ms()}"
    sent = now_ms()
    response = httpx.post(
        service.base_url + "/v1/events",
        json=[
            {"event_id": f"{user}-1", "user_id": user, "item_id": "i1", "action": "save",
             "surface": "home", "ts": sent},
            {"event_id": f"{user}-2", "user_id": user, "action": "save"},
        ],
        timeout=5,
    )  # fmt: skip
    assert response.status_code == 202
    assert response.json() == {
        "accepted": 1,
        "rejected": [
            {
                "index": 1,
                "reason": "missing_field",
                "detail": "Object missing required field `item_id`",
            }
        ],
    }
    deadline = time.monotonic() + 1.0
    total = 0
    while time.monotonic() < deadline and total == 0:
        body = get(service, f"/v1/users/{user}/signals", names="action_counts").json()
        total = body["signals"]["action_counts"]["value"]["total"]
    assert total == 1, "not visible within 1 s"
    dead = list((service.spool / "dead-letter").glob("worker-*.jsonl"))
    assert any(
        f"{user}" in path.read_text() or "missing_field" in path.read_text() for path in dead
    )


def test_all_bad_events_get_a_422_and_bodies_are_bounded(service: Service) -> None:
    response = httpx.post(service.base_url + "/v1/events", json={"user_id": "x"}, timeout=5)
    assert response.status_code == 422
    assert response.json()["rejected"][0]["reason"] == "missing_field"
    huge = httpx.post(service.base_url + "/v1/events", content=b"[" + b" " * (2 << 20) + b"]")
    assert huge.status_code == 413


def test_an_event_giving_a_key_twice_is_rejected_naming_it(service: Service) -> None:
    """Found in a new-user trial: ``{"user_id": "a", ..., "user_id": "b"}`` was accepted as
    user b (the JSON decoder keeps the last), an event the client may have meant for a. A
    GET refuses a parameter given twice and the batch route a key given twice; an event
    now is rejected (``malformed_json``), naming the key, and the others in the request
    are taken."""
    ts = now_ms()
    twice = (
        b'{"event_id": "twice-%d", "user_id": "a", "item_id": "i1", "action": "click", '
        b'"surface": "home", "ts": %d, "user_id": "b"}' % (ts, ts)
    )
    nested = (
        b'{"event_id": "n-%d", "user_id": "a", "item_id": "i1", "action": "click", '
        b'"surface": "home", "ts": %d, "attrs": {"dwell_ms": 1, "dwell_ms": 2}}' % (ts, ts)
    )
    good = (
        b'{"event_id": "once-%d", "user_id": "a", "item_id": "i1", "action": "click", '
        b'"surface": "home", "ts": %d}' % (ts, ts)
    )
    body = b"[" + b", ".join([twice, nested, good]) + b"]"
    response = httpx.post(service.base_url + "/v1/events", content=body, timeout=5)
    assert response.status_code == 202
    rejected = response.json()["rejected"]
    assert [(r["index"], r["reason"]) for r in rejected] == [
        (0, "malformed_json"),
        (1, "malformed_json"),
    ]
    assert "user_id" in rejected[0]["detail"]
    assert "attrs.dwell_ms" in rejected[1]["detail"]


def test_delete_needs_the_admin_token_and_forgets_the_user(service: Service) -> None:
    user = f"forget-{now_ms()}"
    event = {"event_id": f"{user}-1", "user_id": user, "item_id": "i1", "action": "click",
             "surface": "home", "ts": now_ms()}  # fmt: skip
    assert httpx.post(service.base_url + "/v1/events", json=event).status_code == 202
    url = f"{service.base_url}/v1/users/{user}"
    assert httpx.delete(url).status_code == 401
    wrong = httpx.delete(url, headers={"authorization": "Bearer nope"})
    assert wrong.status_code == 403
    # The token without its scheme: a malformed header (401 saying so), not a wrong token.
    bare = httpx.delete(url, headers={"authorization": ADMIN_TOKEN})
    assert bare.status_code == 401
    assert "Bearer" in bare.json()["message"]
    assert bare.headers["www-authenticate"] == "Bearer"
    ok = httpx.delete(url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
    assert ok.status_code == 202

    def forgotten() -> bool:
        body = get(service, f"/v1/users/{user}/signals", names="action_counts").json()
        return body["signals"]["action_counts"]["value"]["total"] == 0

    wait_for(forgotten, 30, f"{user} to be forgotten")


def test_definitions_health_metrics_and_docs(service: Service) -> None:
    definitions = get(service, "/v1/signals").json()
    assert [s["name"] for s in definitions["signals"]] == REFERENCE.names
    assert get(service, "/healthz").json() == {"status": "ok"}
    assert get(service, "/readyz").json()["status"] == "ready"
    metrics = get(service, "/metrics").text
    assert "usersignals_http_requests_total" in metrics
    assert "usersignals_http_request_seconds_bucket" in metrics
    document = get(service, "/openapi.json").json()
    assert document["openapi"].startswith("3.")
    assert "/v1/users/{user_id}/signals" in document["paths"]
    docs = get(service, "/docs")
    assert docs.status_code == 200
    assert "/openapi.json" in docs.text
    missing = get(service, "/nowhere")
    assert missing.status_code == 404
    assert missing.json()["error"] == "not_found"


def test_the_python_client(service: Service) -> None:
    with Client(service.base_url, timeout=5, admin_token=ADMIN_TOKEN) as client:
        assert client.ready()
        one = client.signals(service.busiest_user, ["action_counts"], window="14d")
        assert one.signals["action_counts"].value["total"] > 0
        many = client.batch([service.busiest_user, "nobody"], ["recent_engagements"],
                            context={"limit": 1})  # fmt: skip
        assert len(many) == 2
        assert len(many[0].signals["recent_engagements"].value) == 1
        user = f"client-{now_ms()}"
        answer = client.ingest(
            [Event(f"{user}-1", user, "i1", "save", "home", now_ms()), {"user_id": user}]
        )
        assert answer.accepted == 1
        assert answer.rejected[0].reason == "missing_field"
        with pytest.raises(ApiError) as error:
            client.signals("u1", window="forever")
        assert error.value.status == 400
        assert error.value.parameter == "window"
        with pytest.raises(ApiError) as missing:
            client.signals("u1", ["nope"])
        assert missing.value.status == 404
        assert client.delete_user(user).status == "deletion queued"
        assert "signals" in client.definitions()
        odd = client.signals("a user/with?odd#chars", ["action_counts"])
        assert odd.user_id == "a user/with?odd#chars"
        # Dot segments, which an HTTP client would otherwise normalise out of the path
        # (`/v1/users/../signals` is `/v1/signals`): ids the ingest accepts.
        for dots in (".", ".."):
            assert client.signals(dots, ["action_counts"]).user_id == dots


def test_the_client_takes_a_timedelta_and_a_datetime_as_the_definitions_do(
    service: Service,
) -> None:
    """Found in a ranking engineer's trial: `window=timedelta(hours=1)` was sent as
    '1:00:00' (a 400), while signal definitions take a timedelta and `as_of` a datetime."""
    user, now = service.busiest_user, datetime.now(UTC)
    with Client(service.base_url, timeout=5) as client:
        for read in (
            lambda **c: client.signals(user, ["action_counts"], **c).signals["action_counts"],
            lambda **c: client.batch([user], ["action_counts"], context=c)[0].signals[
                "action_counts"
            ],
        ):
            by_text = read(window="14d", as_of=now.isoformat())
            by_objects = read(window=timedelta(days=14), as_of=now)
            assert by_objects.value == by_text.value
            assert by_objects.value["total"] > 0


def test_a_client_retrying_a_post_counts_once(service: Service) -> None:
    user = f"retry-{now_ms()}"
    event = {"event_id": f"{user}-1", "user_id": user, "item_id": "i1", "action": "click",
             "surface": "home", "ts": now_ms()}  # fmt: skip
    for _ in range(3):  # the first answer was lost; the client tried again, twice
        assert httpx.post(service.base_url + "/v1/events", json=event, timeout=5).status_code == 202
    marker = {**event, "event_id": f"{user}-2", "item_id": "marker", "ts": event["ts"] + 1}
    assert httpx.post(service.base_url + "/v1/events", json=marker, timeout=5).status_code == 202
    # The spool is applied in order: once the marker is visible, so are the retries.
    deadline = time.monotonic() + 10.0
    body: dict[str, Any] = {}
    items: list[str] = []
    while time.monotonic() < deadline and "marker" not in items:
        body = get(
            service, f"/v1/users/{user}/signals", names="action_counts,recent_engagements"
        ).json()
        items = [entry["item_id"] for entry in body["signals"]["recent_engagements"]["value"]]
        time.sleep(0.05)
    assert items == ["marker", "i1"]
    assert body["signals"]["action_counts"]["value"]["total"] == 2


def test_an_as_of_a_signal_cannot_answer_is_a_422_naming_it(service: Service) -> None:
    user = f"as-of-{now_ms()}"
    ts = now_ms()
    event = {"event_id": f"{user}-1", "user_id": user, "item_id": "i1", "action": "click",
             "surface": "home", "ts": ts}  # fmt: skip
    assert httpx.post(service.base_url + "/v1/events", json=event, timeout=5).status_code == 202
    deadline = time.monotonic() + 10.0
    total = 0
    while time.monotonic() < deadline and total == 0:
        body = get(service, f"/v1/users/{user}/signals", names="action_counts").json()
        total = body["signals"]["action_counts"]["value"]["total"]
        time.sleep(0.05)
    assert total == 1
    # Ten days before its newest event, the retention reaches past what the state keeps.
    response = get(
        service, f"/v1/users/{user}/signals", names="action_counts", as_of=str(ts - 10 * 86_400_000)
    )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "as_of_unavailable"
    assert body["parameter"] == "as_of"
    assert body["signal"] == "action_counts"
    assert ts - 3 * 86_400_000 <= body["earliest_as_of_ms"] <= ts
    # At the earliest as_of it names, it answers.
    again = get(
        service,
        f"/v1/users/{user}/signals",
        names="action_counts",
        as_of=str(body["earliest_as_of_ms"]),
    )
    assert again.status_code == 200


def test_a_started_worker_has_frozen_its_heap(service: Service) -> None:
    """The worker froze its start-up heap (gc.freeze) and reports its collection pauses."""
    metrics = get(service, "/metrics").text
    frozen = re.search(r"^usersignals_gc_frozen_objects (\S+)$", metrics, re.MULTILINE)
    assert frozen is not None, "no usersignals_gc_frozen_objects metric"
    # The registry, the app, the imported modules: tens of thousands of objects, not a few.
    assert float(frozen.group(1)) > 10_000
    assert "# TYPE usersignals_gc_pause_seconds histogram" in metrics


def test_a_delete_on_a_server_without_an_admin_token_says_the_endpoint_is_disabled(
    service: Service,
) -> None:
    """Found by the operator's trial: with no admin token configured, a DELETE without a
    token was a 401 "missing bearer token", inviting a token no token could satisfy; only
    a request with one learned that the endpoint is disabled."""
    from service_helpers import start_server, stop_process

    url, server = start_server(service, "stateful")  # no admin token in its environment
    try:
        for headers in ({}, {"authorization": "Bearer anything"}):
            answer = httpx.delete(f"{url}/v1/users/u1", headers=headers, timeout=10)
            assert answer.status_code == 403, answer.text
            assert "disabled (no admin token)" in answer.json()["message"]
    finally:
        stop_process(server)
