"""Real ``usersignals serve`` / ``usersignals run`` processes for the accepted-write tests.

Signals: one ``Count`` (``clicks``), so "applied exactly once" is a number to compare.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgspec

from stopping import sigterm_and_wait
from usersignals import Event
from usersignals.devtools.broker import free_port
from usersignals.state import RocksStore
from waiting import wait_for

BIN = Path(sys.executable).parent
ADMIN = "accepted-admin-token"
_encode = msgspec.json.Encoder().encode


def signals_module(root: Path) -> Path:
    module = root / "accepted_signals.py"
    module.write_text(
        "from usersignals import Count, Signal\n"
        "clicks = Signal(name='clicks', version=1, aggregate=Count())\n"
    )
    return module


def environment(root: Path, **extra: str) -> dict[str, str]:
    store = root / "store"
    if not (store / "CURRENT").exists():
        RocksStore(store).close()  # serve reads a store the processor writes
    return {
        **os.environ,
        "USERSIGNALS_SIGNALS": str(signals_module(root)),
        "USERSIGNALS_STORE__PATH": str(store),
        "USERSIGNALS_SPOOL__PATH": str(root / "spool"),
        "USERSIGNALS_SERVING__ADMIN_TOKEN": ADMIN,
        "USERSIGNALS_SERVING__REFRESH_INTERVAL_MS": "50",
        **extra,
    }


def status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return 0


def start_server(env: dict[str, str], *args: str) -> tuple[str, subprocess.Popen[bytes]]:
    port = free_port()
    server = subprocess.Popen(
        [str(BIN / "usersignals"), "serve", "--port", str(port), *args], env=env
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: status(f"{url}/healthz") == 200, 60, "the server to start")
    except AssertionError:
        stop(server)
        raise
    return url, server


def start_processor(env: dict[str, str], *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(BIN / "usersignals"), "run", *args], env=env)


def stop(process: subprocess.Popen[bytes]) -> int:
    return sigterm_and_wait(process, timeout_s=30)


def event_body(user: str, prefix: str, count: int) -> bytes:
    now = time.time_ns() // 1_000_000
    return _encode([Event(f"{prefix}-{i}", user, "i1", "click", "home", now) for i in range(count)])


def post(url: str, body: bytes) -> httpx.Response:
    # A new connection per request, so the kernel spreads them over every worker.
    return httpx.post(
        f"{url}/v1/events", content=body, headers={"content-type": "application/json"},
        timeout=30,
    )  # fmt: skip


def clicks(url: str, user: str) -> int:
    answer = httpx.get(
        f"{url}/v1/users/{user}/signals", params={"names": "clicks", "window": "7d"}, timeout=10
    ).json()
    total: int = answer["signals"]["clicks"]["value"]["total"]
    return total
