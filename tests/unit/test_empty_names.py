"""An empty list of signal names is refused, not read as every signal."""

from __future__ import annotations

import pytest

from usersignals import SignalRegistry
from usersignals.errors import ContextError
from usersignals.serving.inputs import names_of
from usersignals.serving.read_routes import batch_plan
from usersignals.serving.schemas import BatchRequest


def test_an_empty_list_of_names_is_refused_not_read_as_every_signal() -> None:
    """Found in the same trial: `names=` (and a batch's `"signals": []`) read every signal,
    where every other empty parameter is a 400: a caller whose list came out empty read all
    five signals, silently."""
    assert names_of(None) is None  # absent: every signal
    for empty in ("", " , "):
        with pytest.raises(ContextError, match="names"):
            names_of(empty)
    registry = SignalRegistry.from_module("usersignals.examples.reference")
    with pytest.raises(ContextError, match="signals"):
        batch_plan(registry, BatchRequest(users=["u1"], signals=[]))
    assert len(batch_plan(registry, BatchRequest(users=["u1"]))[0]) == 5


def test_the_client_sends_an_empty_list_of_names_for_the_server_to_refuse() -> None:
    import httpx

    from usersignals import ApiError, Client

    def answer(request: httpx.Request) -> httpx.Response:
        said = request.url.params.get("names") if request.method == "GET" else request.content
        assert said in ("", b'{"users":["u1"],"signals":[],"context":{},"contexts":{}}')
        return httpx.Response(400, json={"error": "invalid_parameter", "message": "empty"})

    client = Client("http://api.test")
    client._http = httpx.Client(base_url="http://api.test", transport=httpx.MockTransport(answer))
    with client:
        for call in (lambda: client.signals("u1", []), lambda: client.batch("u1", [])):
            with pytest.raises(ApiError):
                call()
