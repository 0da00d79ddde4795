"""The hot read route's fast path (serving/fast_read.py) answers as the full Starlette stack;
the store's refresh beside it runs where it stalls the worker least.

A serving worker's app, built as ``usersignals serve`` builds it (``worker.create``) over a
real RocksDB written with the reference signals' states, is called in-process as a server
calls it. Each request is answered twice: by the app (the fast path first) and by the full
stack alone (``Starlette.__call__``). The two answers must be the same, with the fast path
answering only 200s and handing everything else over untouched.
"""

from __future__ import annotations

import asyncio
import gc
import random
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from native_batching import native_states
from usersignals import Event, RocksStore
from usersignals.examples import reference
from usersignals.serving.feature_log import FeatureLog, read_feature_log
from usersignals.serving.feature_sinks import JsonlSink
from usersignals.serving.http import ServingApp
from usersignals.serving.refresh import refresh_forever
from usersignals.state.codec import UserRecord, encode_record
from usersignals.state.keys import user_key

USERS = ["u1", "u2", "ü/3"]
TABLE = {
    f"i{n}": {"category": f"c{n % 3}", "creator_id": f"k{n % 4}", "embedding": [n / 8] * 32}
    for n in range(6)
}
# The view's time is fixed (``as_of``): decayed scores move with the clock. A constant, not
# the clock: the parameters below name it, and xdist's workers must collect the same tests.
NOW = 1_767_225_600_000
AS_OF = f"as_of={NOW}".encode()
QUERY = b"names=recent_engagements,action_counts,category_interest&window=1d&actions=click,save&"
QUERY += AS_OF
Answer = tuple[int, list[tuple[bytes, bytes]], Any]


@pytest.fixture
def collector() -> Iterator[None]:
    """The worker's GC policy changes process-wide state: restored after the test."""
    thresholds, callbacks = gc.get_threshold(), list(gc.callbacks)
    yield
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.callbacks[:] = callbacks


def write_store(path: Path) -> None:
    rng = random.Random(5)
    events = [
        Event(
            event_id=f"e{i}",
            user_id=rng.choice(USERS[:2]),
            item_id=f"i{rng.randrange(7)}",  # i6 has no record in the table
            action=rng.choice(["click", "save", "hide"]),
            surface=rng.choice(["home", "search"]),
            ts=NOW - rng.randrange(3_600_000 * 30),
        )
        for i in range(80)
    ]
    records: dict[str, UserRecord] = {}
    for signal in reference.SIGNALS:
        for user, stored in native_states(signal, [events], USERS, TABLE).items():
            records.setdefault(user, UserRecord({}, {})).states[signal.key] = msgspec.Raw(stored)
    store = RocksStore(path)
    store.write({user_key(user): encode_record(record) for user, record in records.items()})
    store.close()


@pytest.fixture
def make_app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, collector: None) -> Iterator[Any]:
    write_store(tmp_path / "store")
    monkeypatch.setenv("USERSIGNALS_STORE__PATH", str(tmp_path / "store"))
    monkeypatch.setenv("USERSIGNALS_SPOOL__PATH", str(tmp_path / "spool"))
    monkeypatch.setenv("USERSIGNALS_SIGNALS", "usersignals.examples.reference")
    apps: list[ServingApp] = []

    def make(read_token: str = "") -> ServingApp:
        monkeypatch.setenv("USERSIGNALS_SERVING__READ_TOKEN", read_token)
        from usersignals.worker import create

        apps.append(create())
        return apps[-1]

    yield make
    for app in apps:
        app.state.serving.reads.close()
        app.state.serving.reader.store.close()


def scope_of(path: str, query: bytes = QUERY, method: str = "GET", token: str = "") -> Any:
    headers = [(b"host", b"127.0.0.1")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


async def call(app: Any, scope: Any) -> Answer:
    """(status, headers, JSON body without its ages, which move with the clock)."""
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"], out["headers"] = message["status"], message["headers"]
        else:
            out["body"] += message.get("body", b"")

    await app(scope, receive, send)
    headers = [(k, v) for k, v in out["headers"] if k != b"content-length"]
    lengths = [int(v) for k, v in out["headers"] if k == b"content-length"]
    assert lengths in ([], [len(out["body"])])
    return out["status"], headers, without_ages(msgspec.json.decode(out["body"] or b"null"))


def without_ages(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: without_ages(v) for k, v in value.items() if k != "age_ms"}
    return value


def both(app: ServingApp, scope: Any) -> tuple[bool, Answer, Answer]:
    """Whether the fast path answers ``scope``; the app's answer; the full stack's."""

    async def run() -> tuple[bool, Answer, Answer]:
        async def ignore(message: Any) -> None:
            pass

        answered = await app.fast_read.answer(dict(scope), ignore)
        return (
            answered,
            await call(app, dict(scope)),
            await call(lambda *a: Starlette.__call__(app, *a), dict(scope)),
        )

    return asyncio.run(run())


@pytest.mark.parametrize(
    ("path", "query", "method", "status"),
    [
        ("/v1/users/u1/signals", QUERY, "GET", 200),
        ("/v1/users/u2/signals", AS_OF, "GET", 200),
        ("/v1/users/ü/3/signals", b"names=distinct_creators&limit=3&" + AS_OF, "GET", 200),
        ("/v1/users/nobody/signals", QUERY, "GET", 200),
        ("/v1/users/u1/signals", b"names=nope", "GET", 404),
        ("/v1/users/u1/signals", b"window=abc", "GET", 400),
        ("/v1/users/u1/signals", b"colour=red", "GET", 400),
        ("/v1/users/" + "x" * 300 + "/signals", QUERY, "GET", 400),
        ("/v1/users/u1/signals", QUERY, "HEAD", 200),
        ("/v1/users/u1/signals", QUERY, "POST", 405),
        ("/v1/users/u1/signals/", QUERY, "GET", 404),  # the DELETE route's path: no read
        ("/v1/signals", b"", "GET", 200),
        ("/healthz", b"", "GET", 200),
    ],
)
def test_the_fast_path_answers_only_get_200s_and_as_the_full_stack(
    make_app: Any, path: str, query: bytes, method: str, status: int
) -> None:
    app = make_app()
    answered, by_app, by_stack = both(app, scope_of(path, query, method))
    assert by_app == by_stack
    assert by_app[0] == status
    assert answered is (method == "GET" and status == 200 and "/users/" in path)


@pytest.mark.parametrize(("token", "status"), [("", 401), ("wrong", 403), ("secret", 200)])
def test_a_read_token_is_checked_as_the_full_stack_checks_it(
    make_app: Any, token: str, status: int
) -> None:
    app = make_app(read_token="secret")
    answered, by_app, by_stack = both(app, scope_of("/v1/users/u1/signals", token=token))
    assert answered is (status == 200)
    assert by_app == by_stack
    assert by_app[0] == status


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_user_id_whose_escapes_are_not_utf8_is_a_400_not_another_users_answer(
    make_app: Any, method: str
) -> None:
    # granian decodes %FF%FE with replacement characters: without a look at the raw path,
    # the request read (or deleted) the user "\ufffd\ufffd", whom ingest accepts.
    app = make_app()
    scope = scope_of("/v1/users/\ufffd\ufffd/signals", method=method)
    scope["raw_path"] = b"/v1/users/%FF%FE/signals"
    if method == "DELETE":
        scope["path"] = scope["path"].removesuffix("/signals")
        scope["raw_path"] = scope["raw_path"].removesuffix(b"/signals")
    answered, by_app, by_stack = both(app, scope)
    assert not answered
    assert by_app == by_stack
    assert by_app[0] == 400
    assert by_app[2]["parameter"] == "user_id"
    assert "UTF-8" in by_app[2]["message"]


def test_a_replacement_character_sent_as_utf8_is_an_ordinary_user_id(make_app: Any) -> None:
    app = make_app()
    scope = scope_of("/v1/users/\ufffd/signals")
    scope["raw_path"] = b"/v1/users/%EF%BF%BD/signals"
    answered, by_app, by_stack = both(app, scope)
    assert answered
    assert by_app == by_stack
    assert by_app[0] == 200
    assert by_app[2]["user_id"] == "\ufffd"


def samples(text: str, family: str, labels: dict[str, str]) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for metric in text_string_to_metric_families(text):
        for sample in metric.samples:
            if sample.name == family and sample.labels == labels:
                return float(sample.value)
    return 0.0


def test_fast_answers_are_counted_and_timed_and_keep_the_gc_policy_books(make_app: Any) -> None:
    from prometheus_client import generate_latest

    app = make_app()
    policy = app.fast_read.policy
    assert policy is not None

    async def run() -> None:
        for user in USERS * 3:
            assert (await call(app, scope_of(f"/v1/users/{user}/signals")))[0] == 200
        assert (await call(app, scope_of("/v1/users/u1/signals", b"limit=0")))[0] == 400

    asyncio.run(run())
    registry: CollectorRegistry = app.state.serving.metrics
    text = generate_latest(registry).decode()
    route = {"route": "user_signals"}
    assert samples(text, "usersignals_http_requests_total", {**route, "status": "200"}) == 9
    assert samples(text, "usersignals_http_requests_total", {**route, "status": "400"}) == 1
    assert samples(text, "usersignals_http_request_seconds_count", route) == 10
    # The handler's own part of each (answer built, before the server sends it): the fast
    # path's answers and the full stack's alike.
    assert samples(text, "usersignals_http_answer_built_seconds_count", route) == 10
    built = samples(text, "usersignals_http_answer_built_seconds_sum", route)
    assert 0 < built <= samples(text, "usersignals_http_request_seconds_sum", route)
    assert policy.in_flight == 0


def test_the_feature_log_draws_once_per_request(make_app: Any, tmp_path: Path) -> None:
    """A sampled request is answered by the route's object path, which logs it: each request
    is drawn once (the fast path's draw travels with the request), at the rate set."""
    app = make_app()
    app.state.serving.feature_log = FeatureLog(JsonlSink(tmp_path / "log"), 0.5, seed=11)
    draws = random.Random(11)
    expected = sum(draws.random() < 0.5 for _ in range(40))

    async def run() -> None:
        for n in range(40):
            answer = await call(app, scope_of(f"/v1/users/{USERS[n % 3]}/signals"))
            assert answer[0] == 200
            # A request the route refuses before its draw is not drawn either.
            refused = await call(app, scope_of(f"/v1/users/{USERS[n % 3]}/signals", b"limit=0"))
            assert refused[0] == 400

    asyncio.run(run())
    app.state.serving.feature_log.close()
    assert 0 < expected < 40
    assert len(read_feature_log(tmp_path / "log")) == expected


def test_the_embedded_stores_refresh_runs_on_the_event_loop(make_app: Any) -> None:
    """rocksdict holds the GIL through a catch-up: on a thread it would stall the event loop
    as long, plus the GIL's hand-offs (up to the 5 ms switch interval each) — so the
    embedded store is refreshed on the loop itself."""
    app = make_app()
    state = app.state.serving
    threads: list[int] = []
    catch_up = state.reader.refresh

    def refresh() -> None:
        threads.append(threading.get_ident())
        catch_up()

    state.reader.refresh = refresh

    async def run() -> None:
        task = asyncio.create_task(refresh_forever(state))
        try:
            await wait_until(lambda: len(threads) >= 2)
        finally:
            task.cancel()

    asyncio.run(run())
    assert set(threads) == {threading.get_ident()}


async def wait_until(condition: Any, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "not within the timeout"
        await asyncio.sleep(0.01)
