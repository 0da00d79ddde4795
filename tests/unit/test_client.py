"""The Python client's requests, as the server receives them (no server: httpx's mock
transport answers)."""

from __future__ import annotations

import json
import socket

import httpx
import pytest

from usersignals import Client, ServiceUnreachableError, UserSignalsError
from usersignals.devtools.broker import free_port

EMPTY = {"user_id": "u1", "signals": {}}


def recording_client(seen: list[httpx.Request]) -> Client:
    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/signals/batch":
            users = json.loads(request.content)["users"]
            return httpx.Response(200, json={"results": [{**EMPTY, "user_id": u} for u in users]})
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
