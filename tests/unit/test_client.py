"""The Python client's requests, as the server receives them (no server: httpx's mock
transport answers)."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from usersignals import Client, ContextError, ServiceUnreachableError, UserSignalsError
from usersignals.devtools.broker import free_port

EMPTY = {"user_id": "u1", "signals": {}}


def recording_client(seen: list[httpx.Request]) -> Client:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/signals/batch":
            users = json.loads(request.content)["users"]
            return httpx.Response(200, json={"results": [{**EMPTY, "user_id": u} for u in users]})
        if request.url.path == "/v1/events":
            events = json.loads(request.content)
            return httpx.Response(202, json={"accepted": len(events), "rejected": []})
        return httpx.Response(200, json=EMPTY)

    client = Client("http://api.test")
    client._http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(answer))
    return client


def test_one_signal_or_one_user_may_be_given_as_a_string() -> None:
    """Found in a newcomer's trial: a string is a Sequence[str] to the type checker, so
    ``batch("u1", ...)`` passed it and asked for users "u" and "1" (answered, empty: no
    error to notice), and ``signals("u1", "clicks")`` for signals c, l, i, c, k, s (a 404
    naming 'c'). One name is one name, as ``Count(by="surface")`` takes it."""
    seen: list[httpx.Request] = []
    with recording_client(seen) as client:
        client.signals("u1", "clicks", window="1h")
        answers = client.batch("u1", "clicks")
    assert seen[0].url.params["names"] == "clicks"
    assert json.loads(seen[1].content)["users"] == ["u1"]
    assert json.loads(seen[1].content)["signals"] == ["clicks"]
    assert [answer.user_id for answer in answers] == ["u1"]


def test_sequences_of_names_and_users_are_sent_as_they_are() -> None:
    seen: list[httpx.Request] = []
    with recording_client(seen) as client:
        client.signals("u1", ["clicks", "recent"])
        client.batch(("u1", "u2"), ["clicks"])
    assert seen[0].url.params["names"] == "clicks,recent"
    assert json.loads(seen[1].content)["users"] == ["u1", "u2"]


def test_a_service_it_cannot_reach_is_an_error_of_the_project_tree() -> None:
    """Found in a newcomer's trial: a refused connection raised ``httpx.ConnectError`` and a
    URL without a scheme ``httpx.UnsupportedProtocol``, so ``except UserSignalsError`` in a
    notebook or a job missed them. Both are now :class:`ServiceUnreachableError`, naming the
    URL (on loopback: a port nothing listens on)."""
    port = free_port()
    with Client(f"http://127.0.0.1:{port}", timeout=1.0) as client:
        with pytest.raises(ServiceUnreachableError, match=f"127.0.0.1:{port}") as caught:
            client.signals("u1")
        assert isinstance(caught.value, UserSignalsError)
        with pytest.raises(ServiceUnreachableError):
            client.batch(["u1"])
        assert client.ready() is False
    with Client(f"127.0.0.1:{port}") as client, pytest.raises(ServiceUnreachableError):
        client.definitions()


def test_a_context_parameter_given_as_none_is_left_out() -> None:
    """``limit=None`` went out as the string "None" and came back a 400; in a notebook it
    is the natural way to say "no limit"."""
    seen: list[httpx.Request] = []
    with recording_client(seen) as client:
        client.signals("u1", "clicks", limit=None, window="1h")  # type: ignore[arg-type]
        client.batch(["u1"], context={"limit": None, "window": "1h"})  # type: ignore[dict-item]
    assert "limit" not in seen[0].url.params
    assert json.loads(seen[1].content)["context"] == {"window": "1h"}


def test_a_timedelta_or_datetime_that_the_api_would_refuse_is_refused_here() -> None:
    """A review's find: a naive datetime went out without a zone (the API's 400), and a
    timedelta of 500 µs as "0ms"."""
    from datetime import datetime, timedelta

    seen: list[httpx.Request] = []
    with recording_client(seen) as client:
        with pytest.raises(ContextError, match="no time zone"):
            client.signals("u1", as_of=datetime(2026, 1, 1))
        with pytest.raises(ContextError, match="whole number of milliseconds"):
            client.signals("u1", window=timedelta(microseconds=500))
    assert seen == []


def test_no_answer_to_a_sent_request_says_it_may_have_been_carried_out() -> None:
    """From a review: a read timeout was reported as "cannot reach", which invites a blind
    retry of an ingest or a deletion that may have been carried out. On loopback: a server
    that accepts the connection and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with Client(f"http://127.0.0.1:{port}", timeout=0.3) as client:
            with pytest.raises(ServiceUnreachableError, match="may have been carried out") as e:
                client.ingest([{"event_id": "e1"}])
            assert e.value.sent
    with Client(f"http://127.0.0.1:{free_port()}", timeout=0.3) as client:
        with pytest.raises(ServiceUnreachableError, match="cannot reach") as refused:
            client.delete_user("u1")
        assert not refused.value.sent


def answering(status: int, content: bytes) -> Client:
    """A client whose every call is answered ``status`` with ``content``."""
    client = Client("http://api.test")
    transport = httpx.MockTransport(lambda request: httpx.Response(status, content=content))
    client._http = httpx.Client(base_url="http://api.test", transport=transport)
    return client


def test_a_url_httpx_cannot_use_is_an_error_of_the_project_tree() -> None:
    """Found in a newcomer's trial: a bad port raised httpx.InvalidURL from the constructor."""
    for url in ("http://127.0.0.1:abc", "http://[::1"):
        with pytest.raises(ServiceUnreachableError):
            Client(url)


def test_a_port_out_of_range_is_said_to_be_one() -> None:
    """Found in a newcomer's trial: `Client("http://127.0.0.1:99999")` was taken, and every
    call said "Connection refused", as if nothing listened there."""
    with pytest.raises(ServiceUnreachableError, match=r"port 99999 is out of range \(1-65535\)"):
        Client("http://127.0.0.1:99999")


@pytest.mark.parametrize("status", [200, 202, 422])
def test_an_answer_that_is_not_the_apis_json_is_an_api_error(status: int) -> None:
    """Found in a newcomer's trial: a 200 of HTML (a proxy, another service on the port)
    raised msgspec.DecodeError from every call, outside the project's error tree."""
    from usersignals import ApiError

    with answering(status, b"<html>hello</html>") as client:
        calls = [
            lambda: client.signals("u1"),
            lambda: client.batch("u1"),
            lambda: client.ingest([{"event_id": "e1"}]),
            lambda: client.delete_user("u1"),
            lambda: client.definitions(),
        ]
        for call in calls:
            with pytest.raises(ApiError) as caught:
                call()
            assert caught.value.status == status
            if status < 400:  # an error status is an ApiError of its own, HTML or not
                assert "not the API's JSON" in str(caught.value)


def test_one_event_given_alone_is_sent_as_one_event() -> None:
    """Found in a newcomer's trial: ``ingest({...})`` sent the dict's keys as six events
    (each rejected: wrong_type), where the API takes one object as one event."""
    from usersignals import Event

    seen: list[httpx.Request] = []
    one = {"event_id": "e1", "user_id": "u1", "item_id": "i1", "action": "click",
           "surface": "home", "ts": 1_767_225_600_000}  # fmt: skip
    with recording_client(seen) as client:
        answers = [client.ingest(single).accepted for single in (one, Event(**one))]
    assert [json.loads(request.content) for request in seen] == [[one], [{**one, "attrs": None}]]
    assert answers == [1, 1]


def test_an_api_error_keeps_what_the_answer_says_a_client_may_act_on() -> None:
    """Found in a newcomer's trial: the 422's signal, user and earliest as_of, a 404's known
    signals and a 503's Retry-After were dropped: a caller parsed the message again."""
    from usersignals import ApiError

    refused = {
        "error": "as_of_unavailable",
        "message": "...",
        "parameter": "as_of",
        "signal": "clicks",
        "user": "u2",
        "earliest_as_of_ms": 1_767_225_600_999,
    }
    with answering(422, json.dumps(refused).encode()) as client, pytest.raises(ApiError) as caught:
        client.signals("u2")
    error = caught.value
    assert (error.signal, error.user, error.earliest_as_of_ms) == (
        "clicks",
        "u2",
        1_767_225_600_999,
    )
    unknown = {"error": "signal_not_found", "message": "...", "known": ["a", "b"]}
    with answering(404, json.dumps(unknown).encode()) as client, pytest.raises(ApiError) as caught:
        client.signals("u1", "c")
    assert caught.value.known == ["a", "b"]
    full = httpx.Response(503, headers={"retry-after": "5"}, json={"error": "backlog_full"})
    client = Client("http://api.test")
    transport = httpx.MockTransport(lambda request: full)
    client._http = httpx.Client(base_url="http://api.test", transport=transport)
    with client, pytest.raises(ApiError) as caught:
        client.ingest([])
    assert caught.value.retry_after_s == 5
