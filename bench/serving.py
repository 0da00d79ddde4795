"""Serving latency and throughput: stateful vs a bare hello vs recomputing from raw events.

Method, in one run on this machine:
1. generate the reference workload (N events ending now) and replay it into RocksDB with the
   five reference signals, keeping raw events too (for the raw mode);
2. start the processor (``usersignals run``) and a steady ingest of new reference events into
   the spool (R events/s), so requests are served while state is being written;
3. with wrk (1 thread, C connections, D seconds, after a warm-up), request
   ``GET /v1/users/{user}/signals`` for the five signals with a context
   (window=1d, actions=click,save,closeup, limit=50), rotating over the most active users
   (the ones whose states are largest) against, in turn:
   a. usersignals serve (granian + Starlette, 1 worker, stateful),
   b. the same with the GC policy off (``serving.gc``: no freeze, CPython's thresholds and
      automatic old-generation collection) — the before of issue 11's GC item,
   c. a bare Starlette hello app on the same granian flags (the ceiling),
   d. usersignals serve --mode raw (recompute from the user's raw events each request);
4. print p50/p99/requests/s of each and the ratios, and from each usersignals server's
   /metrics the handler's own time per request (the mean of its answer-built histogram:
   from the request reaching the app to its answer built, before the server sends it), the
   mean of its request-latency histogram (to the answer sent: it also counts the other
   requests' work the event loop runs while an answer is being sent), and the collection
   pauses that landed inside a request and between requests.

    .venv/bin/python bench/serving.py                  # needs wrk (apt-get install wrk)
    .venv/bin/python bench/serving.py --server stateful --server hello   # only those two
"""

from __future__ import annotations

import argparse
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

from usersignals.app import build_processor
from usersignals.config import Settings, SpoolSettings, StoreSettings
from usersignals.demo import workload_spec
from usersignals.enrich.tables import load_table
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.files import JsonlSource
from usersignals.ingest.live import feed_spool
from usersignals.ingest.synthetic import write_workload
from usersignals.processing.replay import replay_file

BIN = Path(sys.executable).parent
HERE = Path(__file__).resolve().parent
QUERY = (
    "names=recent_engagements,action_counts,category_interest,taste_embedding,"
    "distinct_creators&window=1d&actions=click,save,closeup&limit=50"
)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not become ready")


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()


def wrk(
    base: str, users: list[str], connections: int, seconds: int, root: Path
) -> dict[str, float]:
    script = root / "users.lua"
    listing = ",".join(f'"{u}"' for u in users)
    script.write_text(
        f"local users = {{{listing}}}\nlocal i = 0\n"
        "request = function()\n  i = i % #users + 1\n"
        f'  return wrk.format("GET", "/v1/users/" .. users[i] .. "/signals?{QUERY}")\nend\n'
    )
    command = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{seconds}s",
        "--latency",
        "-s",
        str(script),
        base,
    ]
    subprocess.run([*command[:3], "-d2s", *command[4:]], capture_output=True, check=True)  # warm-up
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50": _ms(re.search(r"50%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "p99": _ms(re.search(r"99%\s+([\d.]+\w+)", out).group(1)),  # type: ignore[union-attr]
        "non2xx": float(m.group(1)) if (m := re.search(r"Non-2xx.*?(\d+)", out)) else 0.0,
    }


def _ms(text: str) -> float:
    value, unit = re.match(r"([\d.]+)(\w+)", text).groups()  # type: ignore[union-attr]
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


# The GC policy of issue 11 off: CPython's collector as it comes, for the before/after.
GC_OFF = {
    "USERSIGNALS_SERVING__GC__FREEZE": "false",
    "USERSIGNALS_SERVING__GC__YOUNG_THRESHOLD": "700",
    "USERSIGNALS_SERVING__GC__FULL_INTERVAL_MS": "0",
}


def servers() -> list[tuple[str, list[str], dict[str, str]]]:
    """(name, command without --port, extra environment) of each server measured."""
    serve = str(BIN / "usersignals")
    hello = [str(BIN / "granian"), "--interface", "asgi", "--loop", "uvloop", "--workers", "1",
             "--log-level", "warning", "hello_app:app"]  # fmt: skip
    return [
        ("stateful", [serve, "serve", "--mode", "stateful"], {}),
        ("stateful, gc off", [serve, "serve", "--mode", "stateful"], GC_OFF),
        ("hello", hello, {}),
        ("raw", [serve, "serve", "--mode", "raw"], {}),
    ]


def server_figures(base: str) -> dict[str, float]:
    """From the server's /metrics, per signals request (means): the handler's own time (to
    the answer built) and the time to the answer sent; and the collection pauses inside
    requests and between them."""
    text = httpx.get(f"{base}/metrics", timeout=5).text
    figures = {"gc_in": 0.0, "gc_in_ms": 0.0, "gc_out": 0.0, "gc_out_ms": 0.0}
    sums = {"usersignals_http_answer_built_seconds": [0.0, 0.0],
            "usersignals_http_request_seconds": [0.0, 0.0]}  # fmt: skip
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if family.name in sums and labels.get("route") == "user_signals":
                if sample.name.endswith("_sum"):
                    sums[family.name][0] = sample.value
                elif sample.name.endswith("_count"):
                    sums[family.name][1] = sample.value
            elif family.name == "usersignals_gc_pause_seconds":
                where = "gc_in" if labels["in_request"] == "yes" else "gc_out"
                if sample.name.endswith("_count"):
                    figures[where] += sample.value
                elif sample.name.endswith("_sum"):
                    figures[f"{where}_ms"] += sample.value * 1000
    for key, family in (("handler_us", "usersignals_http_answer_built_seconds"),
                        ("sent_us", "usersignals_http_request_seconds")):  # fmt: skip
        total, count = sums[family]
        figures[key] = total / max(count, 1) * 1e6
    return figures


def replay_workload(settings: Settings, events: int, root: Path) -> dict[str, int]:
    """The reference workload of ``events`` events (in ``root``) replayed into the settings'
    store with its item table; each user's event count."""
    workload = write_workload(workload_spec(events, seed=7), root / "workload")
    processor = build_processor(settings)
    load_table(processor.store.table("items"), workload.items_path, key="item_id")
    with DeadLetterFile(root / "dead.jsonl") as dead:
        replay_file(JsonlSource(workload.events_path), processor.decoder, processor.engine, dead)
    processor.close()
    counts: dict[str, int] = {}
    for line in workload.events_path.read_bytes().splitlines():
        user = line.split(b'"user_id":"', 1)[1].split(b'"', 1)[0].decode()
        counts[user] = counts.get(user, 0) + 1
    return counts


def targets(results: dict[str, dict[str, float]]) -> None:
    """The issue's ratios, from the servers measured (``--server`` may leave some out)."""
    stateful, hello, raw = (results.get(name) for name in ("stateful", "hello", "raw"))
    if stateful is None:
        return
    uniform = results["stateful/uniform"]
    print(f"\nmost active users: stateful p99 {stateful['p99']:.2f} ms (target <= 5 ms)")
    print(
        f"  handler {stateful['handler_us']:,.1f} us/request in the server, to the answer "
        f"built (target <= 30 us); {stateful['sent_us']:,.1f} us to the answer sent"
    )
    if hello is not None:
        ratio = stateful["rps"] / hello["rps"]
        print(f"  stateful / hello throughput: {ratio:.0%} (target >= 70%)")
        print(f"  uniform users: {uniform['rps'] / hello['rps']:.0%} of hello's throughput")
    if raw is not None:
        print(f"  raw p99 / stateful p99: {raw['p99'] / stateful['p99']:.1f}x (target >= 10x)")
        raw_uniform = results["raw/uniform"]["p99"] / uniform["p99"]
        print(f"  uniform users: raw/stateful p99 {raw_uniform:.1f}x")
    print(f"uniform users: stateful p99 {uniform['p99']:.2f} ms")
    off = results.get("stateful, gc off")
    if off is not None:
        print(
            f"GC policy (most active users): p99 {stateful['p99']:.2f} ms with it, "
            f"{off['p99']:.2f} ms without; handler {stateful['handler_us']:,.0f} us with it, "
            f"{off['handler_us']:,.0f} us without"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--users", type=int, default=1_000, help="distinct users requested")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--ingest-rate", type=int, default=2_000)
    names = [name for name, _, _ in servers()]
    parser.add_argument(
        "--server", action="append", choices=names, help="measure this one (repeatable; all)"
    )
    args = parser.parse_args()
    chosen = args.server or names
    if shutil.which("wrk") is None:
        sys.exit("bench/serving.py needs wrk: apt-get install -y wrk")

    root = Path(tempfile.mkdtemp(prefix="usersignals-serving-"))
    store, spool = root / "store", root / "spool"
    settings = Settings(store=StoreSettings(path=str(store)), spool=SpoolSettings(path=str(spool)))
    settings.processing.keep_raw_events = True
    counts = replay_workload(settings, args.events, root)
    users = sorted(counts, key=counts.__getitem__, reverse=True)[: args.users]
    typical = random.Random(1).sample(sorted(counts), min(args.users, len(counts)))
    print(
        f"workload: {args.events:,} reference events replayed; requesting the {len(users):,} "
        f"most active users (the largest states), then {len(typical):,} users drawn uniformly"
    )
    print(f"request: GET /v1/users/{{user}}/signals?{QUERY}")

    env = {
        **os.environ,
        "USERSIGNALS_STORE__PATH": str(store),
        "USERSIGNALS_SPOOL__PATH": str(spool),
        "USERSIGNALS_PROCESSING__KEEP_RAW_EVENTS": "true",
    }
    running: list[subprocess.Popen[bytes]] = []
    stop_flag = threading.Event()
    try:
        running.append(
            subprocess.Popen([str(BIN / "usersignals"), "run"], env=env, stderr=subprocess.DEVNULL)
        )
        feeder = threading.Thread(
            target=feed_spool, args=(spool, args.ingest_rate, 99, stop_flag, [0]), daemon=True
        )
        feeder.start()
        results: dict[str, dict[str, float]] = {}
        for name, command, extra_env in servers():
            if name not in chosen:
                continue
            port = free_port()
            command += ["--port", str(port)]
            if name == "hello":
                server = subprocess.Popen(command, env=env, cwd=HERE)
                ready = f"http://127.0.0.1:{port}/v1/users/x/signals"
            else:
                server_env = {**env, **extra_env}
                server = subprocess.Popen(command, env=server_env, stderr=subprocess.DEVNULL)
                ready = f"http://127.0.0.1:{port}/readyz"
            running.append(server)
            wait_ready(ready, server)
            base = f"http://127.0.0.1:{port}"
            results[name] = wrk(base, users, args.connections, args.seconds, root)
            if name != "hello":
                results[name].update(server_figures(base))
                results[f"{name}/uniform"] = wrk(
                    base, typical, args.connections, args.seconds, root
                )
            stop(server)
        stop_flag.set()
    finally:
        stop_flag.set()
        for process in running:
            stop(process)
    print(
        f"\nwrk -t1 -c{args.connections} -d{args.seconds}s, ingest of {args.ingest_rate:,} "
        "events/s running, 1 server worker, 2 cores shared by all"
    )
    print(f"{'server/users':22s} {'req/s':>10s} {'p50 ms':>8s} {'p99 ms':>8s} {'non-2xx':>8s}")
    for name, f in results.items():
        print(
            f"{name:22s} {f['rps']:>10,.0f} {f['p50']:>8.2f} {f['p99']:>8.2f} {f['non2xx']:>8.0f}"
        )
    print("\nin the server (its /metrics after the most active users' run and its warm-up):")
    for name, f in results.items():
        if "handler_us" in f:
            print(
                f"  {name:18s} handler {f['handler_us']:,.1f} us/request to the answer built, "
                f"{f['sent_us']:,.1f} us to it sent; GC pauses in a request "
                f"{f['gc_in']:,.0f} ({f['gc_in_ms']:,.1f} ms), between requests "
                f"{f['gc_out']:,.0f} ({f['gc_out_ms']:,.1f} ms)"
            )
    targets(results)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
