"""A state store outage mid-stream: the processor waits it out and loses or doubles nothing.

A real redis-server (append-only, fsync always) is SIGKILLed while the real
``usersignals run --kafka`` processor writes to it, and started again on the same port a few
seconds later. The processor must stay up, answer 503 on ``/readyz`` during the outage, and
end with exactly the state of one clean replay.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import msgspec
import pytest
import redis
from accepted_helpers import BIN, status
from test_kafka import (
    CleanReplay,
    committed,
    failed_store_operations,
    metric,
    produce,
    reference_values,
    start_processor,
    stop,
    wait_caught_up,
)

from redis_server import RedisServer
from stopping import sigterm_and_communicate, sigterm_and_wait
from usersignals import Event, ReadContext, SignalRegistry
from usersignals.devtools.broker import LocalBroker, free_port
from usersignals.enrich.tables import load_table
from usersignals.events.decode import EventDecoder
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.spool import SpoolReader, SpoolWriter
from usersignals.processing.engine import Engine
from usersignals.processing.runner import SpoolRunner
from usersignals.serving.reader import SignalReader
from usersignals.state.redis import RedisStore
from waiting import wait_for

# Failed store operations the processor must ride out before the store comes back: with the
# retry's capped backoff (50 ms doubling) that is several seconds of outage, each attempt a
# real failure the old bounded client retries ended the process on. A paused server fails
# each only after the client's 2 s socket timeout: half as many are as long an outage.
FAILURES_TO_SURVIVE = {"kill": 8, "pause": 4}


@pytest.mark.parametrize("fault", ["kill", "pause"])
def test_kafka_processor_survives_a_redis_outage_with_nothing_lost_or_doubled(
    broker: LocalBroker, tmp_path: Path, fault: str
) -> None:
    """``kill``: SIGKILL, then a restart from its append-only file; ``pause``: SIGSTOP (a hung
    server: connections stay open, nothing answers), then SIGCONT."""
    topic = f"outage-{fault}"
    values, items = reference_values(60_000, seed=31)
    # The last events arrive during the outage: the lag must count them.
    first, during = values[:55_000], values[55_000:]
    ends = produce(broker.bootstrap, topic, first)
    # The reference runs beside the outage (a group and a store of its own), not after it.
    clean = CleanReplay(broker, topic, f"g-clean-{topic}", tmp_path / "clean", items)

    server = RedisServer(persistent=True)
    process = None
    try:
        store = RedisStore(server.url, namespace="outage")
        jsonl = tmp_path / "items.jsonl"
        jsonl.write_bytes(msgspec.json.Encoder().encode_lines(items))
        load_table(store.table("items"), jsonl, key="item_id")
        store.close()
        env = {
            "USERSIGNALS_STORE__BACKEND": "redis",
            "USERSIGNALS_STORE__REDIS_URL": server.url,
            "USERSIGNALS_STORE__REDIS_NAMESPACE": "outage",
            "USERSIGNALS_KAFKA__BATCH_MAX_EVENTS": "1000",
        }
        port = free_port()
        readyz = f"http://127.0.0.1:{port}/readyz"
        process = start_processor(
            broker.bootstrap, topic, f"g-{topic}", tmp_path / "unused",
            "--metrics-port", str(port), env_extra=env,
        )  # fmt: skip
        wait_for(
            lambda: sum(committed(broker.bootstrap, f"g-{topic}", topic).values()) > 5_000,
            120, "the processor to be mid-stream",
        )  # fmt: skip
        assert status(readyz) == 200
        if fault == "kill":
            server.kill()
        else:
            server.pause()
        wait_for(lambda: status(readyz) == 503, 60, "/readyz to report the outage", alive=process)
        # Found by the operator's trial: the lag metrics froze while the writes were held
        # up, so an alert on the lag never fired during a store outage.
        # From once the position has settled (the last batches before the outage were still
        # being fetched): read earlier, the lag was that of a position already passed.
        seen: list[float] = []

        def settled() -> bool:
            seen.append(metric(port, "usersignals_consumer_position"))
            return len(seen) >= 3 and seen[-1] == seen[-3]

        wait_for(settled, 30, "the position to settle", poll_s=1.0, alive=process)
        lag_before = metric(port, "usersignals_consumer_lag")
        for partition, end in produce(broker.bootstrap, topic, during).items():
            ends[partition] = max(ends.get(partition, 0), end)
        # It grows (before, it stayed at its last value): by how much is a lower bound, the
        # watermarks coming from the consumer's background fetches, which this broker
        # answers for some partitions only while nothing is consumed (a third to two thirds
        # of the events produced, measured).
        wait_for(
            lambda: metric(port, "usersignals_consumer_lag") > lag_before,
            30, "the lag to count the events that arrived during the outage", alive=process,
        )  # fmt: skip
        wait_for(
            lambda: failed_store_operations(port) >= FAILURES_TO_SURVIVE[fault],
            120, "the processor to retry through several failed writes", alive=process,
        )  # fmt: skip
        assert process.poll() is None, "the processor exited during the outage"
        if fault == "kill":
            server.start()
        else:
            server.resume()
        wait_for(lambda: status(readyz) == 200, 60, "/readyz to recover")
        wait_caught_up(broker.bootstrap, f"g-{topic}", topic, ends, timeout_s=300)
        code, err = stop(process)
        assert code == 0, err
        store = RedisStore(server.url, namespace="outage")
        got = dict(store.scan(b"u:"))
        store.close()
    finally:
        if process is not None and process.poll() is None:
            process.kill()  # only on a failure above: the happy path stopped it
            process.communicate(timeout=30)
        server.stop()
    expected = clean.records(ends)
    assert got.keys() == expected.keys()
    different = [key for key in expected if got[key] != expected[key]]
    assert different == [], f"{len(different)} users differ, e.g. {different[:3]}"


def test_spool_processor_waits_out_a_redis_outage(tmp_path: Path) -> None:
    module = tmp_path / "outage_signals.py"
    module.write_text(
        "from usersignals import Count, Signal\n"
        "clicks = Signal(name='clicks', version=1, aggregate=Count())\n"
    )
    registry = SignalRegistry.from_module(str(module))
    encode = msgspec.json.Encoder().encode
    now = time.time_ns() // 1_000_000
    server = RedisServer(persistent=True)
    stop_event = threading.Event()
    try:
        store = RedisStore(server.url, namespace="spool-outage")
        runner = SpoolRunner(
            Engine(registry, store), EventDecoder(), SpoolReader(tmp_path / "spool"),
            DeadLetterFile(tmp_path / "dead.jsonl"), idle_sleep_s=0.01,
        )  # fmt: skip
        failures: list[BaseException] = []

        def run() -> None:
            try:
                runner.run(stop_event)
            except BaseException as exc:  # surfaced by the assertion below
                failures.append(exc)

        thread = threading.Thread(target=run)
        thread.start()
        writer = SpoolWriter(tmp_path / "spool", "w")
        writer.append([encode(Event(f"a{i}", "u1", "i", "click", "home", now)) for i in range(50)])
        wait_for(lambda: runner.stats.lines == 50, 30, "the first lines")
        server.kill()
        writer.append([encode(Event(f"b{i}", "u1", "i", "click", "home", now)) for i in range(50)])
        wait_for(lambda: runner.retry.failures >= 4, 30, "several failed writes")
        assert not runner.retry.available
        assert thread.is_alive()
        assert not failures
        server.start()
        wait_for(lambda: runner.stats.lines == 100, 60, "the lines written during the outage")
        assert runner.retry.available
        writer.close()
        stop_event.set()
        thread.join(timeout=30)
        assert failures == []
        context = ReadContext(window_ms=86_400_000, now_ms=now + 1)
        answer = SignalReader(registry, store).read("u1", ["clicks"], context)
        store.close()
    finally:
        stop_event.set()
        server.stop()
    assert answer.signals["clicks"].value["total"] == 100  # every event, once


def test_a_processor_started_while_redis_is_down_waits_for_it(tmp_path: Path) -> None:
    """helper-32: `run` on Redis exited at start when Redis was down ("redis store open
    failed"), so a processor restarted during an outage stayed down. It now waits, as for
    an outage later, and applies what was accepted meanwhile."""
    module = tmp_path / "outage_signals.py"
    module.write_text(
        "from usersignals import Count, Signal\n"
        "clicks = Signal(name='clicks', version=1, aggregate=Count())\n"
    )
    now = time.time_ns() // 1_000_000
    encode = msgspec.json.Encoder().encode
    writer = SpoolWriter(tmp_path / "spool", "w")
    writer.append([encode(Event(f"a{i}", "u1", "i", "click", "home", now)) for i in range(20)])
    writer.close()
    server = RedisServer(persistent=True)
    server.kill()  # its port, free: Redis is down (and `start` brings it back)
    env = {
        **os.environ,
        "USERSIGNALS_SIGNALS": str(module),
        "USERSIGNALS_STORE__BACKEND": "redis",
        "USERSIGNALS_STORE__REDIS_URL": server.url,
        "USERSIGNALS_SPOOL__PATH": str(tmp_path / "spool"),
    }
    port = free_port()
    processor = subprocess.Popen(
        [str(BIN / "usersignals"), "run", "--metrics-port", str(port)], env=env
    )
    health = f"http://127.0.0.1:{port}"
    try:
        # Alive, not ready, while it waits: a liveness probe must not restart it.
        wait_for(lambda: status(f"{health}/healthz") == 200, 30, "/healthz while it waits")
        assert status(f"{health}/readyz") == 503
        assert processor.poll() is None, "the processor exited"
        server.start()
        registry = SignalRegistry.from_module(str(module))
        store = RedisStore(server.url)
        context = ReadContext(window_ms=86_400_000, now_ms=now + 1)

        def applied() -> int:
            answer = SignalReader(registry, store).read("u1", ["clicks"], context)
            return int(answer.signals["clicks"].value["total"])

        wait_for(lambda: applied() == 20, 60, "the spooled events to be applied")
        assert status(f"{health}/readyz") == 200
        store.close()
        assert sigterm_and_wait(processor, timeout_s=30) == 0
    finally:
        if processor.poll() is None:
            processor.kill()
            processor.wait()
        server.stop()


def test_a_processor_started_on_a_redis_that_refuses_writes_waits_for_it(
    tmp_path: Path,
) -> None:
    """Redis answers the ping but refuses the first write (a read-only replica here; a
    server still loading its data does the same): the processor waits, and starts once
    writes go through. Before, its second try registered the Materializer's metrics twice
    and ended in a traceback (DuplicateTimeseries)."""
    module = tmp_path / "outage_signals.py"
    module.write_text(
        "from usersignals import Count, Signal, Lookup\n"
        "items = Lookup('items', key='item_id', provides=('category',))\n"
        "clicks = Signal(name='clicks', version=1, aggregate=Count(),\n"
        "                enrich=[items.fields('category')])\n"
    )
    server = RedisServer()
    client = redis.Redis(port=server.port)
    client.replicaof("127.0.0.1", free_port())  # read-only: writes answer READONLY
    env = {
        **os.environ,
        "USERSIGNALS_SIGNALS": str(module),
        "USERSIGNALS_STORE__BACKEND": "redis",
        "USERSIGNALS_STORE__REDIS_URL": server.url,
        "USERSIGNALS_SPOOL__PATH": str(tmp_path / "spool"),
    }
    processor = subprocess.Popen(
        [str(BIN / "usersignals"), "run"], env=env, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(3)
        assert processor.poll() is None, "the processor exited"
        client.replicaof("NO", "ONE")  # writable again
        wait_for(lambda: client.exists(b"m:signals") or bool(client.keys("*signals*")), 60,
                 "the processor to start and record its signals")  # fmt: skip
        code, stderr = sigterm_and_communicate(processor, timeout_s=30)  # closes the pipe
        assert code == 0, stderr
        assert "Traceback" not in stderr
    finally:
        if processor.poll() is None:
            processor.kill()
            processor.communicate()
        client.close()
        server.stop()


def test_a_processor_refused_by_redis_ends_in_one_line(tmp_path: Path) -> None:
    """A wrong password is not an outage: `run` ends at once (exit 2, one line) rather than
    waiting for a store that will never let it in."""
    binary = shutil.which("redis-server")
    assert binary is not None
    port = free_port()
    server = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
         "--requirepass", "right"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(lambda: _listening(port), 10, "redis-server to listen")
        env = {
            **os.environ,
            "USERSIGNALS_STORE__BACKEND": "redis",
            "USERSIGNALS_STORE__REDIS_URL": f"redis://:wrong@127.0.0.1:{port}/0",
            "USERSIGNALS_SPOOL__PATH": str(tmp_path / "spool"),
        }
        result = subprocess.run(
            [str(BIN / "usersignals"), "run"], env=env, capture_output=True, text=True, timeout=30
        )
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, result.stderr
    finally:
        server.terminate()
        server.wait()


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0
