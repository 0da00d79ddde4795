"""Fault bench: acknowledged writes under crashes, a store outage, and hostile requests.

Method (one run, real processes on loopback, this 2-core machine):

1. **Crashes.** ``usersignals run`` (spool processor, RocksDB) and ``usersignals serve
   --workers 2``. A client posts batches of events (unique ``event_id``s, 50 users) and, on
   any failure (connection error, 5xx, 503), posts the *same* batch again until it gets a 202.
   Every 1-3 s (seeded) the processor or one API worker is SIGKILLed; the processor is
   restarted at once, granian respawns the worker. Afterwards the server is stopped, the
   processor drains the spool, and each user's stored ``Count`` is compared with the events
   acknowledged for that user: **lost** = acknowledged but not counted, **doubled** = counted
   more than once (a retried request whose first attempt was written but not acknowledged
   counts twice unless the engine drops repeated ``event_id``s).
2. **Redis outage.** The same, over a Redis store (append-only, fsync always): the client posts
   for 5 s, redis-server is SIGKILLed for ``--outage`` seconds (10) and started again, posting
   goes on for 5 s. Reported: whether the processor stayed up, whether its ``/readyz`` said
   503 during the outage, and acknowledged vs applied events.
3. **Hostile requests.** ``--fuzz`` (10,000) seeded requests built to break the API (extreme
   or malformed times, windows and limits, unknown names, odd user ids, non-UTF-8 and deeply
   nested bodies, wrong types, bad tokens, unknown paths and methods) against a service with the
   five reference signals; reported: responses by status class, and every 5xx.

    .venv/bin/python bench/faults.py                    # about 3 minutes
    .venv/bin/python bench/faults.py --seconds 60 --outage 10 --fuzz 20000
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import msgspec
import redis

from usersignals import ReadContext, SignalRegistry
from usersignals.devtools.broker import free_port
from usersignals.serving.reader import SignalReader
from usersignals.state import RocksStore
from usersignals.state.redis import RedisStore
from usersignals.state.store import StateStore

BIN = Path(sys.executable).parent
USERS = [f"u{i}" for i in range(50)]
ADMIN = "bench-admin"
COUNT_SIGNALS = (
    "from usersignals import Count, Signal\n"
    "clicks = Signal(name='clicks', version=1, aggregate=Count())\n"
)
_encode = msgspec.json.Encoder().encode


class RedisNode:
    """One persistent redis-server (AOF, fsync always) that can be killed and restarted."""

    def __init__(self, root: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = root / "redis"
        self.dir.mkdir()
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        self.process = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port)
        wait_for(lambda: _pings(client), 20, "redis-server")
        client.close()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def wait_for(condition: object, timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if callable(condition) and condition():
            return time.monotonic() - started
        time.sleep(0.1)
    raise RuntimeError(f"timed out after {timeout_s} s waiting for {what}")


def http_status(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return 0


class Service:
    """The processor and the API as a deployment runs them, restartable one by one."""

    def __init__(self, root: Path, env: dict[str, str], workers: int) -> None:
        self.root, self.env, self.workers = root, env, workers
        self.port, self.metrics_port = free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (root / "service.log").open("ab")
        self.processor = self.start_processor()
        self.server: subprocess.Popen[bytes] | None = None

    def start_processor(self) -> subprocess.Popen[bytes]:
        command = [str(BIN / "usersignals"), "run", "--metrics-port", str(self.metrics_port)]
        return subprocess.Popen(command, env=self.env, stdout=self.log, stderr=self.log)

    def start_server(self) -> None:
        command = [str(BIN / "usersignals"), "serve", "--port", str(self.port),
                   "--workers", str(self.workers)]  # fmt: skip
        self.server = subprocess.Popen(command, env=self.env, stdout=self.log, stderr=self.log)
        wait_for(lambda: http_status(f"{self.url}/readyz") == 200, 60, "the API")

    def worker_pids(self) -> list[int]:
        if self.server is None:
            return []
        children = Path(f"/proc/{self.server.pid}/task/{self.server.pid}/children")
        try:
            return [int(pid) for pid in children.read_text().split()]
        except OSError:
            return []

    def drain(self, spool: Path) -> None:
        """Stop the API, let the processor apply every spooled line, then stop it."""
        if self.server is not None:
            stop(self.server)
        wait_for(lambda: not list(spool.glob("*.jsonl")), 180, "the spool to drain")
        stop(self.processor)


def stop(process: subprocess.Popen[bytes]) -> int:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


class PostingClient(threading.Thread):
    """Posts batches and retries each until a 202; counts what was acknowledged, per user."""

    def __init__(self, url: str, seed: int) -> None:
        super().__init__(name="posting-client", daemon=True)
        self.url = url
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.acknowledged: Counter[str] = Counter()
        self.failures: Counter[str] = Counter()
        self.requests = 0

    def run(self) -> None:
        batch = 0
        with httpx.Client(timeout=10) as client:
            while not self.stop.is_set():
                users = [self.rng.choice(USERS) for _ in range(20)]
                now = time.time_ns() // 1_000_000
                body = _encode(
                    [{"event_id": f"c{batch}-{i}", "user_id": user, "item_id": "i1",
                      "action": "click", "surface": "home", "ts": now}
                     for i, user in enumerate(users)]
                )  # fmt: skip
                self._post_until_accepted(client, body)
                self.acknowledged.update(users)
                batch += 1

    def _post_until_accepted(self, client: httpx.Client, body: bytes) -> None:
        while True:  # even after stop: a batch in hand is retried until acknowledged
            self.requests += 1
            try:
                response = client.post(
                    f"{self.url}/v1/events", content=body,
                    headers={"content-type": "application/json"},
                )  # fmt: skip
                if response.status_code == 202:
                    return
                self.failures[f"HTTP {response.status_code}"] += 1
            except httpx.HTTPError as exc:
                self.failures[type(exc).__name__] += 1
            time.sleep(self.rng.uniform(0.05, 0.2))


def compare(
    store: StateStore, registry: SignalRegistry, acknowledged: Counter[str]
) -> tuple[int, int, int, int]:
    reader = SignalReader(registry, store)
    context = ReadContext(window_ms=7 * 86_400_000, now_ms=time.time_ns() // 1_000_000 + 1)
    answers = reader.read_many(USERS, ["clicks"], context)
    counted = {a.user_id: int(a.signals["clicks"].value["total"]) for a in answers}
    lost = sum(max(0, acknowledged[u] - counted[u]) for u in USERS)
    doubled = sum(max(0, counted[u] - acknowledged[u]) for u in USERS)
    return sum(acknowledged.values()), sum(counted.values()), lost, doubled


def base_env(root: Path, **extra: str) -> dict[str, str]:
    module = root / "bench_signals.py"
    module.write_text(COUNT_SIGNALS)
    return {
        **os.environ,
        "USERSIGNALS_SIGNALS": str(module),
        "USERSIGNALS_STORE__PATH": str(root / "store"),
        "USERSIGNALS_SPOOL__PATH": str(root / "spool"),
        "USERSIGNALS_SERVING__ADMIN_TOKEN": ADMIN,
        **extra,
    }


def crashes(root: Path, seconds: float, seed: int) -> None:
    env = base_env(root)
    service = Service(root, env, workers=2)
    wait_for(lambda: (root / "store" / "CURRENT").exists(), 30, "the store")
    service.start_server()
    client = PostingClient(service.url, seed)
    client.start()
    rng = random.Random(seed)
    kills: Counter[str] = Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(rng.uniform(1.0, 3.0))
        workers = service.worker_pids()
        if rng.random() < 0.5 or not workers:
            service.processor.kill()
            service.processor.wait()
            service.processor = service.start_processor()
            kills["processor"] += 1
        else:
            os.kill(rng.choice(workers), signal.SIGKILL)
            kills["API worker"] += 1
    client.stop.set()
    client.join(timeout=120)
    service.drain(root / "spool")
    registry = SignalRegistry.from_module(env["USERSIGNALS_SIGNALS"])
    store = RocksStore(root / "store")
    try:
        acked, counted, lost, doubled = compare(store, registry, client.acknowledged)
    finally:
        store.close()
    print(f"\n1. SIGKILL every 1-3 s for {seconds:.0f} s: {kills['processor']} processor kills, "
          f"{kills['API worker']} API worker kills")  # fmt: skip
    print(f"   client: {client.requests:,} requests, failures {dict(client.failures)}")
    print(f"   acknowledged events {acked:,}; counted {counted:,}")
    print(f"   LOST {lost:,}   DOUBLED {doubled:,}   (target 0 and 0)")


def redis_outage(root: Path, outage_s: float, seed: int) -> None:
    node = RedisNode(root)
    node.start()
    env = base_env(
        root, USERSIGNALS_STORE__BACKEND="redis", USERSIGNALS_STORE__REDIS_URL=node.url,
        USERSIGNALS_STORE__REDIS_NAMESPACE="bench",
    )  # fmt: skip
    try:
        service = Service(root, env, workers=1)
        ready = f"http://127.0.0.1:{service.metrics_port}/readyz"
        wait_for(lambda: http_status(ready) == 200, 30, "the processor")
        service.start_server()
        client = PostingClient(service.url, seed)
        client.start()
        time.sleep(5)
        node.kill()
        seen_503 = _watch(ready, outage_s)
        stayed_up = service.processor.poll() is None
        node.start()
        recovered_s = wait_for(lambda: http_status(ready) == 200, 120, "the processor to recover")
        time.sleep(5)
        client.stop.set()
        client.join(timeout=120)
        service.drain(root / "spool")
        registry = SignalRegistry.from_module(env["USERSIGNALS_SIGNALS"])
        store = RedisStore(node.url, namespace="bench")
        try:
            acked, counted, lost, doubled = compare(store, registry, client.acknowledged)
        finally:
            store.close()
    finally:
        node.kill()
    print(f"\n2. Redis SIGKILLed for {outage_s:.0f} s mid-stream, then restarted")
    print(
        f"   processor stayed up: {'yes' if stayed_up else 'NO'}; /readyz 503 during the "
        f"outage: {'yes' if seen_503 else 'NO'}; ready again {recovered_s:.1f} s after restart"
    )
    print(f"   client: {client.requests:,} requests, failures {dict(client.failures)}")
    print(f"   acknowledged events {acked:,}; applied {counted:,}: LOST {lost:,}, "
          f"DOUBLED {doubled:,}   (target: all, once)")  # fmt: skip


def _watch(ready: str, seconds: float) -> bool:
    seen = False
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        seen = seen or http_status(ready) == 503
        time.sleep(0.2)
    return seen


HOSTILE_TIMES = [
    "0", "-1", "2000-01-01", "1970-01-01T00:00:00Z", "9999-12-31", "99999999999999999999",
    "1e308", "nan", "inf", "", "now", "2026-13-45", "-9223372036854775809", "\u00f8",
]  # fmt: skip
HOSTILE_WINDOWS = ["0s", "-1h", "1000000d", "1e9d", "abc", "", "7d", "1h", "99999999999999999999s"]
HOSTILE_INTS = ["-1", "0", "10", "100000000000000000000", "x", "", "1.5", "nan"]
HOSTILE_IDS = ["u1", "%00", "..%2F..%2Fetc", "x" * 300, "\u2603", "%FF%FE", "a b", "u1/extra"]
SIGNAL_NAMES = [
    "recent_engagements",
    "action_counts",
    "category_interest",
    "taste_embedding",
    "distinct_creators",
    "nope",
    "",
    ",,,",
    "action_counts,action_counts",
]


def _signals_request(rng: random.Random) -> tuple[str, str, dict[str, str], bytes | None]:
    params: dict[str, str] = {}
    for name, pool in (("as_of", HOSTILE_TIMES), ("until", HOSTILE_TIMES),
                       ("since", HOSTILE_TIMES), ("window", HOSTILE_WINDOWS),
                       ("limit", HOSTILE_INTS), ("names", SIGNAL_NAMES),
                       ("dedupe", ["true", "maybe", ""]), ("actions", ["click", "", "?,?"]),
                       ("exclude", ["i1", "," * 500])):  # fmt: skip
        if rng.random() < 0.35:
            params[name] = rng.choice(pool)
    return "GET", f"/v1/users/{rng.choice(HOSTILE_IDS)}/signals", params, None


def _hostile_body(rng: random.Random) -> bytes:
    choice = rng.randrange(9)
    if choice == 0:
        return b'{"user_id": "u1\xff\xfe", "event_id": "e"}'
    if choice == 1:
        depth = 200_000 if rng.random() < 0.1 else rng.choice([100, 10_000])
        return b"[" * depth + b"]" * depth
    if choice == 2:
        return b'{"users": ["u1"], "signals": 7, "context": []}'
    if choice == 3:
        return b'{"event_id": 1, "user_id": null, "ts": 1e400, "action": [], "surface": {}}'
    if choice == 4:
        return _encode({"users": ["u1"] * rng.choice([1, 1001]),
                        "signals": [rng.choice(SIGNAL_NAMES)] * rng.choice([1, 50]),
                        "context": {"as_of": rng.choice(HOSTILE_TIMES),
                                    "window": rng.choice(HOSTILE_WINDOWS)}})  # fmt: skip
    if choice == 5:
        return b"" if rng.random() < 0.5 else b"   "
    if choice == 6:
        return b"null"
    if choice == 7:
        return _encode(
            [
                {
                    "event_id": "e",
                    "user_id": "u1",
                    "item_id": "i",
                    "action": "click",
                    "surface": "home",
                    "ts": rng.choice([0, -1, 2**63, 10**30]),
                }
            ]
        )
    return bytes(rng.randrange(256) for _ in range(rng.randrange(1, 200)))


def hostile_request(rng: random.Random) -> tuple[str, str, dict[str, str], bytes | None]:
    kind = rng.randrange(6)
    if kind <= 1:
        return _signals_request(rng)
    if kind == 2:
        return "POST", "/v1/signals/batch", {}, _hostile_body(rng)
    if kind == 3:
        return "POST", "/v1/events", {}, _hostile_body(rng)
    if kind == 4:
        return "DELETE", f"/v1/users/{rng.choice(HOSTILE_IDS)}", {}, None
    method = rng.choice(["GET", "PUT", "PATCH", "OPTIONS", "POST"])
    path = rng.choice(["/", "/v1", "/v1/users", "/v1/signals/x", "/metrics/x", "/%ff", "/readyz"])
    return method, path, {}, None


def fuzz(root: Path, requests: int, seed: int) -> None:
    env = {**base_env(root)}
    del env["USERSIGNALS_SIGNALS"]  # the five reference signals
    service = Service(root, env, workers=2)
    wait_for(lambda: (root / "store" / "CURRENT").exists(), 30, "the store")
    service.start_server()
    statuses: Counter[int] = Counter()
    server_errors: list[str] = []
    rngs = [random.Random(seed * 1000 + i) for i in range(4)]

    client = httpx.Client(timeout=30)

    def one(index: int) -> None:
        rng = rngs[index % 4]
        method, path, params, body = hostile_request(rng)
        headers = {"content-type": "application/json"}
        if method == "DELETE" and rng.random() < 0.5:
            headers["authorization"] = rng.choice([f"Bearer {ADMIN}", "Bearer x", "Basic y", ""])
        try:
            response = client.request(
                method, service.url + path, params=params, content=body, headers=headers
            )
            code = response.status_code
        except httpx.HTTPError as exc:
            code = 0
            server_errors.append(f"{method} {path[:60]}: {type(exc).__name__}")
        statuses[code] += 1
        if code >= 500:
            server_errors.append(f"{code} {method} {path[:60]} {str(params)[:80]} "
                                 f"{(body or b'')[:40]!r}")  # fmt: skip

    started = time.monotonic()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(one, range(requests)))
    elapsed = time.monotonic() - started
    client.close()
    if service.server is not None:
        stop(service.server)
    stop(service.processor)
    classes = Counter(f"{code // 100}xx" if code else "no answer" for code in statuses.elements())
    fives = sum(n for code, n in statuses.items() if code >= 500)
    print(f"\n3. {requests:,} hostile requests in {elapsed:.0f} s (4 concurrent): {dict(classes)}")
    print(f"   5xx: {fives:,}   (target 0)")
    for line, n in Counter(server_errors).most_common(8):
        print(f"     {n:5,} x {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="crash phase length")
    parser.add_argument("--outage", type=float, default=10.0, help="Redis outage length, s")
    parser.add_argument("--fuzz", type=int, default=10_000, help="hostile requests")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    print(__doc__.split("\n\n    .venv")[0])
    parts: list[tuple[str, Callable[[Path], None]]] = [
        ("crashes", lambda r: crashes(r, args.seconds, args.seed)),
        ("outage", lambda r: redis_outage(r, args.outage, args.seed)),
        ("fuzz", lambda r: fuzz(r, args.fuzz, args.seed)),
    ]
    for name, part in parts:
        root = Path(tempfile.mkdtemp(prefix=f"usersignals-faults-{name}-"))
        try:
            part(root)
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
