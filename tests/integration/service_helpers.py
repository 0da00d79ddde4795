"""Starting a usersignals service for the HTTP tests: processor + granian on a loopback port.

The store is written by the real engine from a small reference workload; the processor and
the server are the real commands, started as subprocesses and stopped after the module.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from stopping import sigterm_and_wait
from usersignals.app import build_processor
from usersignals.config import Settings, SpoolSettings, StoreSettings
from usersignals.demo import workload_spec
from usersignals.enrich.tables import load_table
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.files import JsonlSource
from usersignals.ingest.synthetic import write_workload
from usersignals.processing.replay import replay_file

BIN = Path(sys.executable).parent
ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class Service:
    base_url: str
    root: Path
    store: Path
    spool: Path
    busiest_user: str
    processor: subprocess.Popen[bytes]
    server: subprocess.Popen[bytes]


def _stop(process: subprocess.Popen[bytes]) -> int:
    return sigterm_and_wait(process, timeout_s=15)


def start_service(
    root: Path, events: int = 5_000, mode: str = "stateful", env_extra: dict[str, str] | None = None
) -> Service:
    store, spool = root / "store", root / "spool"
    settings = Settings(
        store=StoreSettings(path=str(store)),
        spool=SpoolSettings(path=str(spool)),
    )
    settings.processing.keep_raw_events = True
    workload = write_workload(workload_spec(events, seed=11), root / "workload")
    processor = build_processor(settings)
    try:
        load_table(processor.store.table("items"), workload.items_path, key="item_id")
        with DeadLetterFile(root / "dead.jsonl") as dead:
            replay_file(
                JsonlSource(workload.events_path), processor.decoder, processor.engine, dead
            )
    finally:
        processor.close()
    counts: dict[str, int] = {}
    for line in workload.events_path.read_bytes().splitlines():
        user = line.split(b'"user_id":"', 1)[1].split(b'"', 1)[0].decode()
        counts[user] = counts.get(user, 0) + 1
    port = free_port()
    env = {
        **os.environ,
        "USERSIGNALS_STORE__PATH": str(store),
        "USERSIGNALS_SPOOL__PATH": str(spool),
        "USERSIGNALS_PROCESSING__KEEP_RAW_EVENTS": "true",
        "USERSIGNALS_SERVING__ADMIN_TOKEN": ADMIN_TOKEN,
        "USERSIGNALS_SERVING__REFRESH_INTERVAL_MS": "50",
        **(env_extra or {}),
    }
    run = subprocess.Popen([str(BIN / "usersignals"), "run"], env=env, cwd=root)
    serve = subprocess.Popen(
        [str(BIN / "usersignals"), "serve", "--port", str(port), "--mode", mode],
        env=env,
        cwd=root,
    )
    service = Service(
        f"http://127.0.0.1:{port}",
        root,
        store,
        spool,
        max(counts, key=counts.__getitem__),
        run,
        serve,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if serve.poll() is not None or run.poll() is not None:
            break
        try:
            if httpx.get(f"{service.base_url}/readyz", timeout=1).status_code == 200:
                return service
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    stop_service(service)
    raise RuntimeError("the service did not become ready within 30 s")


def start_server(service: Service, mode: str) -> tuple[str, subprocess.Popen[bytes]]:
    """Another server over the same store (a second reader, e.g. in raw mode)."""
    port = free_port()
    env = {
        **os.environ,
        "USERSIGNALS_STORE__PATH": str(service.store),
        "USERSIGNALS_SPOOL__PATH": str(service.spool),
    }
    command = [str(BIN / "usersignals"), "serve", "--port", str(port), "--mode", mode]
    server = subprocess.Popen(command, env=env, cwd=service.root)
    return wait_ready(port, server)


def wait_ready(port: int, server: subprocess.Popen[bytes]) -> tuple[str, subprocess.Popen[bytes]]:
    """The server's URL once its /readyz answers 200 (within 30 s; else it is stopped)."""
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and server.poll() is None:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return url, server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    _stop(server)
    raise RuntimeError("the server did not become ready within 30 s")


def stop_process(process: subprocess.Popen[bytes]) -> int:
    return _stop(process)


def stop_service(service: Service) -> tuple[int, int]:
    return _stop(service.server), _stop(service.processor)
