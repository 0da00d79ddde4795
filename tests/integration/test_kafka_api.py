"""The API in Kafka mode: accepted events and deletions travel on the topic, in order.

Real Tansu broker, real ``usersignals serve --kafka`` (two workers) and
``usersignals run --kafka`` processes, real RocksDB, all on loopback.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
from accepted_helpers import (
    ADMIN,
    clicks,
    environment,
    event_body,
    post,
    start_processor,
    start_server,
    status,
    stop,
)
from kafka_groups import QUICK_GROUP_ENV

from usersignals.devtools.broker import LocalBroker, free_port
from usersignals.ingest.kafka import create_topic
from waiting import wait_for


def test_events_and_deletions_posted_in_kafka_mode_are_applied_in_order(
    broker: LocalBroker, tmp_path: Path
) -> None:
    topic = "api-events"
    create_topic(broker.bootstrap, topic, 3)
    env = environment(
        tmp_path,
        USERSIGNALS_KAFKA__GROUP_ID="g-api",
        **QUICK_GROUP_ENV,
        USERSIGNALS_KAFKA__DEAD_LETTER_TOPIC=f"{topic}.dead",
    )
    processor = start_processor(env, "--kafka", broker.bootstrap, "--topic", topic)
    # Kafka set in the environment (as a config file would): the API takes it from settings.
    serving_env = {
        **env,
        "USERSIGNALS_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        "USERSIGNALS_KAFKA__TOPIC": topic,
    }
    url, server = start_server(serving_env, "--workers", "2")
    try:
        users = [f"d{k}" for k in range(20)]
        for user in users:
            # Before the delete: must never survive it, whichever worker takes which request.
            assert post(url, event_body(user, f"{user}-before", 5)).status_code == 202
            deleted = httpx.delete(
                f"{url}/v1/users/{user}", headers={"authorization": f"Bearer {ADMIN}"}, timeout=30
            )
            assert deleted.status_code == 202
            assert post(url, event_body(user, f"{user}-after", 1)).status_code == 202
        assert post(url, event_body("keep", "keep", 10)).status_code == 202

        def all_applied() -> bool:
            return clicks(url, "keep") == 10 and all(clicks(url, u) == 1 for u in users)

        wait_for(all_applied, 120, "every posted event and deletion to be applied")
        assert stop(processor) == 0
        assert [clicks(url, user) for user in users] == [1] * len(users)
    finally:
        stop(server)
        stop(processor)
    assert not list((tmp_path / "spool").glob("*.jsonl")), "nothing may go to the spool"


def test_a_broker_that_does_not_acknowledge_makes_the_request_a_503(tmp_path: Path) -> None:
    with api_on_a_broker_of_its_own(tmp_path, "api-down") as (own, url):
        assert post(url, event_body("u1", "ok", 3)).status_code == 202
        own.stop()
        refused = post(url, event_body("u1", "lost", 3))
        assert refused.status_code == 503
        assert refused.json()["error"] == "broker_unavailable"
        assert int(refused.headers["retry-after"]) > 0
        assert status(f"{url}/readyz") == 503


def test_the_api_produces_again_once_a_restarted_broker_is_back(tmp_path: Path) -> None:
    """A broker restarted without its state makes the idempotent producer's id unknown to
    it: librdkafka raises a fatal error and that producer can never produce again. The API
    answers 503 meanwhile (never 500), and a new producer takes over: once the broker is
    back, posts are acknowledged again (before: 500, then 503 for good)."""
    own = LocalBroker().start()
    topic = "api-restart"
    try:
        create_topic(own.bootstrap, topic, 1)
        env = environment(tmp_path, USERSIGNALS_KAFKA__PRODUCE_TIMEOUT_MS="2000")
        url, server = start_server(env, "--kafka", own.bootstrap, "--topic", topic)
        try:
            assert post(url, event_body("u1", "first", 3)).status_code == 202
            own.stop()
            assert post(url, event_body("u1", "down", 3)).status_code == 503
            own = LocalBroker(own.port).start()
            create_topic(own.bootstrap, topic, 1)
            posts_accepted_again(url, 60, "the restarted broker")
            assert status(f"{url}/readyz") == 200
        finally:
            stop(server)
    finally:
        own.stop()


def test_the_api_produces_again_to_a_restarted_broker_that_lost_its_topic(
    tmp_path: Path,
) -> None:
    """Found by the operator's trial: after a broker restarted without its state (the
    topic gone with it), every post was a 503 for as long as it was tried (10 minutes, and
    235 s in a probe), each message timing out in the producer, while a new `serve`
    was acknowledged at once (its producer's first request makes the broker create the
    topic). A producer that has delivered nothing for a while is replaced now."""
    with api_on_a_broker_of_its_own(tmp_path, "api-lost-topic") as (own, url):
        assert post(url, event_body("u1", "first", 3)).status_code == 202
        own.stop()
        restarted = LocalBroker(own.port).start()
        try:
            posts_accepted_again(url, 90, "the broker restarted without the topic")
        finally:
            restarted.stop()


def test_the_api_produces_again_after_a_broker_that_hung(tmp_path: Path) -> None:
    """Found by the operator's trial: a broker frozen (SIGSTOP) while a post was in flight,
    then resumed, fenced the API's idempotent producer. librdkafka reports that per message
    (PRODUCER_FENCED in each delivery report), not as a fatal error from poll(), so the
    producer was never replaced: every post was a 503 until the server was restarted, while
    a fresh producer on the same broker was acknowledged at once."""
    with api_on_a_broker_of_its_own(tmp_path, "api-hung") as (own, url):
        assert post(url, event_body("u1", "first", 3)).status_code == 202
        os.kill(own.pid, signal.SIGSTOP)
        try:
            assert post(url, event_body("u1", "hung", 3)).status_code == 503
            time.sleep(3)
        finally:
            os.kill(own.pid, signal.SIGCONT)
        posts_accepted_again(url, 30, "the broker that hung")


@contextlib.contextmanager
def api_on_a_broker_of_its_own(root: Path, topic: str) -> Iterator[tuple[LocalBroker, str]]:
    """`serve --kafka` producing to ``topic`` on a broker only this test uses (it stops or
    freezes it), a short produce timeout; the broker and the API's URL."""
    own = LocalBroker().start()
    try:
        create_topic(own.bootstrap, topic, 1)
        env = environment(root, USERSIGNALS_KAFKA__PRODUCE_TIMEOUT_MS="2000")
        url, server = start_server(env, "--kafka", own.bootstrap, "--topic", topic)
        try:
            yield own, url
        finally:
            stop(server)
    finally:
        own.stop()


def posts_accepted_again(url: str, timeout_s: float, broker: str) -> None:
    """Post until one is acknowledged; every answer meanwhile a 503 (never a 500)."""
    codes: list[int] = []

    def accepted() -> bool:
        codes.append(post(url, event_body("u1", f"back-{len(codes)}", 3)).status_code)
        return codes[-1] == 202

    wait_for(accepted, timeout_s, f"a post to be acknowledged by {broker}")
    assert set(codes) <= {202, 503}, codes


def test_the_processor_waits_for_a_topic_that_does_not_exist_yet(
    broker: LocalBroker, tmp_path: Path
) -> None:
    """`run --kafka` started before its topic exists (the API's first post creates it)
    waits for it, then applies what is posted. Before: it exited at once, "Subscribed
    topic not available"."""
    topic = "api-later"
    env, processor, ready = start_watched_processor(tmp_path, broker.bootstrap, topic)
    url, server = start_server(env, "--kafka", broker.bootstrap, "--topic", topic)
    try:
        wait_for(lambda: status(ready) == 503, 30, "/readyz to say the topic is missing")
        assert httpx.get(ready, timeout=10).json() == {"status": "topic_missing"}
        assert processor.poll() is None, "the processor exited"
        create_topic(broker.bootstrap, topic, 2)
        assert post(url, event_body("late", "late", 4)).status_code == 202
        wait_for(lambda: clicks(url, "late") == 4, 120, "the posted events to be applied")
        assert status(ready) == 200
        assert processor.poll() is None
    finally:
        stop(server)
        stop(processor)


def test_the_processor_is_not_ready_while_its_broker_is_down(tmp_path: Path) -> None:
    """`run --kafka --metrics-port`: /readyz answers 503 broker_unavailable while no broker
    answers, and 200 again once it is back (before: "ready" throughout)."""
    own = LocalBroker().start()
    topic = "ready-broker"
    processor = None
    try:
        create_topic(own.bootstrap, topic, 1)
        _, processor, ready = start_watched_processor(tmp_path, own.bootstrap, topic)
        wait_for(lambda: status(ready) == 200, 60, "the processor to be ready")
        own.stop()
        wait_for(lambda: status(ready) == 503, 30, "/readyz to say the broker is down")
        assert httpx.get(ready, timeout=10).json() == {"status": "broker_unavailable"}
        own = LocalBroker(own.port).start()
        wait_for(lambda: status(ready) == 200, 60, "/readyz to say ready again")
        assert processor.poll() is None
    finally:
        if processor is not None:
            stop(processor)
        own.stop()


def start_watched_processor(
    root: Path, bootstrap: str, topic: str
) -> tuple[dict[str, str], subprocess.Popen[bytes], str]:
    """`run --kafka` on ``topic`` with its health endpoint: the environment, the process,
    and its /readyz URL."""
    env = environment(
        root,
        USERSIGNALS_KAFKA__GROUP_ID=f"g-{topic}",
        **QUICK_GROUP_ENV,
        USERSIGNALS_KAFKA__DEAD_LETTER_TOPIC=f"{topic}.dead",
    )
    port = free_port()
    processor = start_processor(
        env, "--kafka", bootstrap, "--topic", topic, "--metrics-port", str(port)
    )
    return env, processor, f"http://127.0.0.1:{port}/readyz"
