"""The read handler's own cost, without HTTP: the serving app called in-process.

Method: build the store bench/serving.py builds (the reference workload of N events replayed
with the five reference signals; kept in ``--store`` and reused when it exists), build a
serving worker's app exactly as ``usersignals serve`` does (settings, state, app, GC policy),
then call the ASGI app directly — no socket, no server — with
``GET /v1/users/{user}/signals`` and bench/serving.py's query (five signals, window=1d,
actions=click,save,closeup, limit=50), rotating over the most active users. Each request
runs the app as a server calls it (the route's fast path, serving/fast_read.py, or the whole
Starlette stack), so the mean here is the figure bench/serving.py reads from /metrics, minus
the server and the load. Prints the mean and p50/p99 per request, in wall-clock time and in
the thread's CPU time (which leaves out waits for a core on a shared machine);
``--profile`` writes a pyinstrument profile of the loop instead.

    .venv/bin/python bench/serving_handler.py [--store DIR] [--profile FILE.html]
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from serving import QUERY, replay_workload  # bench/serving.py, beside this script
from usersignals.config import Settings, SpoolSettings, StoreSettings


def build_store(root: Path, events: int) -> list[str]:
    """Replay the workload into ``root/store`` (once); the users, most active first."""
    users_file = root / "users.txt"
    if users_file.exists():
        return users_file.read_text().split()
    settings = Settings(
        store=StoreSettings(path=str(root / "store")), spool=SpoolSettings(path=str(root / "sp"))
    )
    counts = replay_workload(settings, events, root)
    users = sorted(counts, key=counts.__getitem__, reverse=True)
    users_file.write_text("\n".join(users))
    return users


async def call(app: Any, user: str) -> tuple[int, bytes]:
    """One GET through the ASGI app, as a server would make it: (status, body)."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": f"/v1/users/{user}/signals",
        "raw_path": f"/v1/users/{user}/signals".encode(),
        "query_string": QUERY.encode(),
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    out: dict[str, Any] = {"body": b""}

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        else:
            out["body"] += message.get("body", b"")

    await app(scope, receive, send)
    return out["status"], out["body"]


async def run(app: Any, users: list[str], requests: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of each request (the CPU time leaves out the time this
    process waited for a core: the machine may be shared)."""
    async with app.router.lifespan_context(app):
        for user in users[:50]:  # warm-up
            status, body = await call(app, user)
            assert status == 200, body
        wall, cpu = [], []
        for i in range(requests):
            started, started_cpu = time.perf_counter(), time.thread_time()
            await call(app, users[i % len(users)])
            wall.append(time.perf_counter() - started)
            cpu.append(time.thread_time() - started_cpu)
        return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=1_000, help="distinct users requested")
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--store", type=Path, help="where the store is kept (reused)")
    parser.add_argument("--profile", type=Path, help="write a pyinstrument HTML profile here")
    args = parser.parse_args()
    root = args.store or Path(tempfile.mkdtemp(prefix="usersignals-handler-"))
    if args.store is None:  # made here: gone when this run ends (a given one is reused)
        atexit.register(shutil.rmtree, root, ignore_errors=True)
    root.mkdir(parents=True, exist_ok=True)
    users = build_store(root, args.events)[: args.users]
    os.environ["USERSIGNALS_STORE__PATH"] = str(root / "store")
    os.environ["USERSIGNALS_SPOOL__PATH"] = str(root / "sp")
    from usersignals.worker import create  # after the environment is set

    app = create()
    print(f"workload: {args.events:,} events; the {len(users):,} most active users, in turn")
    print(f"request: GET /v1/users/{{user}}/signals?{QUERY} (in-process ASGI call)")
    if args.profile:
        from pyinstrument import Profiler

        with Profiler(interval=0.0001) as profiler:
            asyncio.run(run(app, users, args.requests))
        args.profile.write_text(profiler.output_html())
        print(profiler.output_text(unicode=False, color=False, show_all=False))
        return
    wall, cpu = asyncio.run(run(app, users, args.requests))
    for name, times in (("wall clock", wall), ("CPU time", cpu)):
        quantiles = statistics.quantiles(times, n=100)
        print(
            f"{args.requests:,} requests, {name}: mean {statistics.fmean(times) * 1e6:,.1f} us, "
            f"p50 {quantiles[49] * 1e6:,.1f} us, p99 {quantiles[98] * 1e6:,.1f} us per request"
        )


if __name__ == "__main__":
    main()
