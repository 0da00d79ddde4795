"""The processor over the spool: graceful shutdown, resuming, and the raw mode's equivalence."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec
from service_helpers import Service, start_server, stop_process

from stopping import sigterm_and_communicate
from usersignals import Event, ReadContext, RocksStore, SignalRegistry
from usersignals.devtools.broker import free_port
from usersignals.ingest.spool import SpoolWriter
from usersignals.serving.reader import SignalReader
from waiting import wait_for

BIN = Path(sys.executable).parent


def events_applied(store: Path, users: list[str], now_ms: int) -> int:
    """All-time event counts of ``users``, read as a serving worker would (a secondary)."""
    if not (store / "CURRENT").exists():
        return 0  # the processor has not created the store yet
    reader = SignalReader(
        SignalRegistry.from_module("usersignals.examples.reference"),
        RocksStore(store, read_only=True),
    )
    try:
        answers = reader.read_many(users, ["action_counts"], ReadContext(now_ms=now_ms))
    finally:
        reader.store.close()
    return sum(answer.signals["action_counts"].value["total"] for answer in answers)


def test_raw_mode_answers_the_same_as_stateful(service: Service) -> None:
    raw_url, raw_server = start_server(service, "raw")
    try:
        params = {"as_of": str(time.time_ns() // 1_000_000), "window": "14d", "limit": "50"}
        path = f"/v1/users/{service.busiest_user}/signals"
        stateful = httpx.get(service.base_url + path, params=params, timeout=10).json()
        raw = httpx.get(raw_url + path, params=params, timeout=10).json()
        for name, result in stateful["signals"].items():
            assert raw["signals"][name]["value"] == result["value"], name
            assert raw["signals"][name]["newest_event_ms"] == result["newest_event_ms"]
        # The batch reads through the same reader interface: same answers, same keys.
        body = {"users": [service.busiest_user, "nobody"], "context": params,
                "contexts": {"recent_engagements": {"limit": 3}}}  # fmt: skip
        batches = [
            httpx.post(url + "/v1/signals/batch", json=body, timeout=10).json()["results"]
            for url in (service.base_url, raw_url)
        ]
        for stateful_user, raw_user in zip(*batches, strict=True):
            assert raw_user["user_id"] == stateful_user["user_id"]
            assert raw_user["signals"].keys() == stateful_user["signals"].keys()
            for name, result in stateful_user["signals"].items():
                assert raw_user["signals"][name]["value"] == result["value"], name
    finally:
        assert stop_process(raw_server) in (0, -signal.SIGTERM)


def test_sigterm_finishes_writes_exits_zero_and_a_restart_resumes(tmp_path: Path) -> None:
    store, spool = tmp_path / "store", tmp_path / "spool"
    env = {
        **os.environ,
        "USERSIGNALS_STORE__PATH": str(store),
        "USERSIGNALS_SPOOL__PATH": str(spool),
    }
    writer = SpoolWriter(spool, "w1")
    now = time.time_ns() // 1_000_000
    encoder = msgspec.json.Encoder()
    writer.append(
        [
            encoder.encode(Event(f"e{i}", f"u{i % 7}", "i1", "click", "home", now))
            for i in range(500)
        ]
    )

    users = [f"u{i}" for i in range(7)]

    def run_until_idle(expected_total: int) -> str:
        process = subprocess.Popen(
            [str(BIN / "usersignals"), "run"], env=env, stderr=subprocess.PIPE, text=True
        )
        wait_for(
            lambda: events_applied(store, users, now + 1) == expected_total,
            60,
            f"{expected_total} events applied",
            poll_s=0.1,
            alive=process,
        )
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=20)
        assert process.returncode == 0, err
        return err

    first = run_until_idle(500)
    assert "500 lines, 500 events applied" in first
    writer.append([encoder.encode(Event("late", "u1", "i1", "save", "home", now))])
    writer.close()
    second = run_until_idle(501)
    assert "1 lines, 1 events applied (0 already applied" in second


def test_sigusr1_prints_every_threads_stack_and_the_processor_goes_on(tmp_path: Path) -> None:
    """A processor that seems stuck is asked where it is: SIGUSR1 prints each thread's
    stack to stderr (Python's faulthandler) and the processor keeps running; SIGTERM still
    stops it cleanly. Before, SIGUSR1's default action killed it."""
    store, spool = tmp_path / "store", tmp_path / "spool"
    env = {
        **os.environ,
        "USERSIGNALS_STORE__PATH": str(store),
        "USERSIGNALS_SPOOL__PATH": str(spool),
    }
    now = time.time_ns() // 1_000_000
    writer = SpoolWriter(spool, "w1")
    writer.append([msgspec.json.encode(Event("e1", "u1", "i1", "click", "home", now))])
    writer.close()
    with subprocess.Popen(
        [str(BIN / "usersignals"), "run"], env=env, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            wait_for(lambda: events_applied(store, ["u1"], now + 1) == 1, 60, "the event applied",
                     poll_s=0.1, alive=process)  # fmt: skip
            process.send_signal(signal.SIGUSR1)
            time.sleep(0.5)
            assert process.poll() is None, "SIGUSR1 ended the processor"
            code, err = sigterm_and_communicate(process, timeout_s=20)
        finally:
            if process.poll() is None:
                process.kill()
    assert code == 0, err
    assert "Current thread" in err, err
    assert "cli_run.py" in err, err
    assert "1 lines, 1 events applied" in err


def test_the_processors_metrics_listen_on_the_host_asked_for(tmp_path: Path) -> None:
    """Found by the operator's trial: `run --metrics-port` listened on 127.0.0.1 alone, with
    no way to change it, so no scraper or probe on another machine could reach it. The
    host is `--metrics-host` now (127.0.0.1 unless given; this test stays on loopback by
    naming it `localhost`)."""
    port = free_port()
    env = {
        **os.environ,
        "USERSIGNALS_STORE__PATH": str(tmp_path / "store"),
        "USERSIGNALS_SPOOL__PATH": str(tmp_path / "spool"),
    }
    with subprocess.Popen(
        [str(BIN / "usersignals"), "run", "--metrics-host", "localhost",
         "--metrics-port", str(port)],
        env=env, stderr=subprocess.PIPE, text=True,
    ) as process:  # fmt: skip
        try:
            wait_for(lambda: _answers(f"http://localhost:{port}/healthz"), 30, "/healthz",
                     alive=process)  # fmt: skip
            code, err = sigterm_and_communicate(process, timeout_s=20)
        finally:
            if process.poll() is None:
                process.kill()
    assert code == 0, err
    # The host is the one asked for, not loopback whatever is asked: an address of no
    # interface here cannot be bound (nothing is sent anywhere; TEST-NET-3, RFC 5737).
    refused = subprocess.run(
        [str(BIN / "usersignals"), "run", "--metrics-host", "203.0.113.1",
         "--metrics-port", str(port)],
        env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert f"--metrics-port {port}: cannot listen on 203.0.113.1" in refused.stderr


def _answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.TransportError:
        return False
