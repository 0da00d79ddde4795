"""The batch route reads many users without holding the event loop for the whole request.

Found by a hostile-client trial: a batch of 1,000 users (within the documented caps) took
0.6 s of CPU on the event loop, its answer encoded in one piece; 40 of them in parallel kept
``/healthz`` waiting up to 23 s, past a probe's timeout. The route now reads and encodes
slices of users, giving the loop a turn between them, a worker runs a few batches at once
(the rest wait their turn off the loop's critical path), and a user repeated in a request is
read once.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
from test_fast_read import USERS, collector, make_app, scope_of  # noqa: F401 (fixtures)


async def post(app: Any, path: str, body: bytes, done: list[str], name: str) -> Any:
    out: dict[str, Any] = {"body": b""}
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)  # a client that says nothing more
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        else:
            out["body"] += message.get("body", b"")

    scope = scope_of(path, b"", method="POST" if body else "GET")
    await app(scope, receive, send)
    done.append(name)
    return out["status"], msgspec.json.decode(out["body"])


def test_a_repeated_user_is_answered_at_each_place(make_app: Any) -> None:  # noqa: F811
    app = make_app()
    users = [USERS[0], USERS[1], USERS[0]]
    body = msgspec.json.encode({"users": users, "signals": ["action_counts"]})
    status, answer = asyncio.run(post(app, "/v1/signals/batch", body, [], "batch"))
    assert status == 200
    results = answer["results"]
    assert [result["user_id"] for result in results] == users
    assert results[0]["signals"] == results[2]["signals"]


def test_health_is_answered_while_a_large_batch_is_read(make_app: Any) -> None:  # noqa: F811
    app = make_app()
    users = [f"nobody-{n}" for n in range(1_000)]
    body = msgspec.json.encode({"users": users})
    done: list[str] = []

    async def run() -> Any:
        batch = asyncio.create_task(post(app, "/v1/signals/batch", body, done, "batch"))
        await asyncio.sleep(0)  # the batch starts first
        health = asyncio.create_task(post(app, "/healthz", b"", done, "health"))
        return await batch, await health

    (status, answer), (health_status, _) = asyncio.run(run())
    assert (status, health_status) == (200, 200)
    assert len(answer["results"]) == 1_000
    assert done == ["health", "batch"]


def test_a_cut_over_between_slices_leaves_the_labels_of_the_first(make_app: Any) -> None:  # noqa: F811
    """Found by the review: with the reads in slices, a cut-over (the store's refresh runs on
    the loop between them) could rename a signal half-way through one answer. Every slice is
    labelled as the first was."""
    app = make_app()
    state = app.state.serving
    registry, read_each = state.registry, state.reader.read_each
    calls = []

    def cut_over_after_the_first(users: Any, plan: Any, labels: Any = None) -> Any:
        calls.append(len(users))
        if len(calls) == 1:  # the refresh met a cut-over: the served mapping is replaced
            registry.serve({name: s.version for name, s in registry.served.items()})
        return read_each(users, plan, labels)

    state.reader.read_each = cut_over_after_the_first
    users = [USERS[n % 2] for n in range(120)] + [f"nobody-{n}" for n in range(60)]
    body = msgspec.json.encode({"users": users, "signals": ["action_counts"]})
    status, answer = asyncio.run(post(app, "/v1/signals/batch", body, [], "batch"))
    assert status == 200
    assert len(calls) > 1
    assert {name for result in answer["results"] for name in result["signals"]} == {"action_counts"}


def test_a_key_given_twice_in_the_body_is_a_400_naming_it(make_app: Any) -> None:  # noqa: F811
    """A GET refuses a parameter given twice; the batch body kept the last of two
    ``window`` keys without a word (the JSON decoder's rule), answering a window the
    client may not have meant."""
    app = make_app()
    bodies = {
        "context.window": b'{"users": ["%s"], "context": {"window": "1d", "window": "7d"}}',
        "users": b'{"users": ["%s"], "users": ["nobody"]}',
        "contexts.action_counts.limit": (
            b'{"users": ["%s"], "contexts": {"action_counts": {"limit": 1, "limit": 2}}}'
        ),
    }
    for where, body in bodies.items():
        status, answer = asyncio.run(
            post(app, "/v1/signals/batch", body % USERS[0].encode(), [], "batch")
        )
        assert status == 400, where
        assert answer["parameter"] == where
        assert "given more than once" in answer["message"]


def test_a_list_for_a_single_valued_parameter_is_a_400_naming_it(make_app: Any) -> None:  # noqa: F811
    """Found by a new-user trial: ``"window": ["1h"]`` was read as ``"1h"`` (a list joined
    with commas), and ``"limit": ["1", "0"]`` was refused as the limit ``1,0``. Only
    ``actions``, ``surfaces`` and ``exclude`` take several values; a list for any other
    parameter is refused naming it, in the shared context and in a signal's own."""
    app = make_app()
    bodies = {
        "window": {"context": {"window": ["1h"]}},
        "limit": {"contexts": {"recent_engagements": {"limit": ["5"]}}},
        "as_of": {"context": {"as_of": []}},
    }
    for name, extra in bodies.items():
        body = msgspec.json.encode({"users": [USERS[0]], **extra})
        status, answer = asyncio.run(post(app, "/v1/signals/batch", body, [], "batch"))
        assert status == 400, name
        assert answer["parameter"] == name
        assert "one value, not a list" in answer["message"]
    listed = {"context": {"actions": ["save"], "exclude": [], "surfaces": ["home", "search"]}}
    body = msgspec.json.encode({"users": [USERS[0]], **listed})
    status, answer = asyncio.run(post(app, "/v1/signals/batch", body, [], "batch"))
    assert status == 200, answer
