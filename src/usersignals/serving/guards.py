"""What protects a serving worker from its clients: tokens, work caps, timeouts.

One client must not be able to stall a worker or read what it should not: reads run on their
own thread with a timeout (a store outage answers 503 and the event loop, so ``/healthz``,
stays free); one request may ask for a bounded amount of work; a body must arrive in time;
reads and ingest can each require a bearer token, apart from the admin token.
"""

from __future__ import annotations

import asyncio
import hmac
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TypeVar

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from usersignals.errors import ContextError, StoreError
from usersignals.serving.schemas import ErrorBody

T = TypeVar("T")

#: Signal names one request may list (repeats included): a registry has tens, not thousands.
MAX_NAMES_PER_REQUEST = 100
#: Users x distinct signals one request may read: 1,000 users x 10 signals.
MAX_READS_PER_REQUEST = 10_000


@dataclass(frozen=True)
class Tokens:
    """Bearer tokens; an empty one leaves its endpoints open (the admin token is apart)."""

    read: str = ""
    ingest: str = ""


@dataclass(frozen=True)
class FrontDoor:
    """A worker's access and limit settings (from ``serving.*``)."""

    tokens: Tokens = Tokens()
    #: Run reads on the read thread (with the timeout) rather than inline on the event loop:
    #: for stores over the network, which can hang. Reads of the embedded RocksDB are local
    #: (page cache, microseconds) and run inline: the thread hand-off cost a quarter of the
    #: throughput and tripled the p99 (measured with bench/serving.py).
    offload_reads: bool = True
    read_timeout_s: float = 1.0
    body_timeout_s: float = 10.0
    #: 0: /metrics on the API port; else only on this port of ``metrics_host``.
    metrics_port: int = 0
    metrics_host: str = "127.0.0.1"


def bearer(request: Request) -> str | None:
    """The bearer token of ``request``; ``None`` without an Authorization header."""
    return bearer_of(request.headers.get("authorization"))


def bearer_of(header: str | None) -> str | None:
    """The bearer token of an Authorization header's value; ``None`` without the header."""
    if header is None:
        return None
    return header[7:] if header.lower().startswith("bearer ") else ""


def token_problem(request: Request, expected: str, scope: str) -> tuple[int, str] | None:
    """``None`` if ``request`` may use an endpoint guarded by ``expected``; else (status, why)."""
    if not expected:
        return None
    return given_token_problem(bearer(request), expected, scope)


def given_token_problem(given: str | None, expected: str, scope: str) -> tuple[int, str] | None:
    """As :func:`token_problem`, for the bearer token given (``None``: no header)."""
    if given is None:
        return 401, f"missing bearer token ({scope} token)"
    if not given:  # the header without its scheme (the bare token), or an empty token
        return 401, f"malformed authorization: expected 'Bearer <{scope} token>'"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        return 403, f"wrong {scope} token"
    return None


def distinct_names(names: Sequence[str], parameter: str) -> list[str]:
    """``names`` without repeats, refused if the request lists too many."""
    if len(names) > MAX_NAMES_PER_REQUEST:
        raise ContextError(parameter, f"at most {MAX_NAMES_PER_REQUEST} signal names per request")
    return list(dict.fromkeys(names))


def check_reads(users: int, signals: int) -> None:
    if users * signals > MAX_READS_PER_REQUEST:
        raise ContextError(
            "users",
            f"{users} users x {signals} signals is more than {MAX_READS_PER_REQUEST:,} reads "
            "per request; split the request",
        )


class StoreReads:
    """Blocking store reads off the event loop, one at a time, each bounded by a timeout.

    One thread: the reader's decoded-state cache is not thread-safe, and the work is Python
    (the GIL) anyway. A read that times out answers 503 at once; its thread finishes it in
    the background (the store clients have their own socket timeouts), and later reads queue
    behind it — during a store outage they time out too, while the event loop stays free for
    ``/healthz`` and everything that does not read the store. With ``offload=False`` (the
    embedded store) reads run inline.
    """

    def __init__(self, timeout_s: float, offload: bool = True) -> None:
        self.timeout_s = timeout_s
        self.offload = offload
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="store-read")

    async def run(self, call: Callable[[], T]) -> T:
        if not self.offload:
            return call()
        future = asyncio.get_running_loop().run_in_executor(self._executor, call)
        try:
            return await asyncio.wait_for(future, self.timeout_s)
        except TimeoutError:
            raise StoreError(
                "state", "read", f"no answer within {self.timeout_s:g} s; try again"
            ) from None

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def unauthorized(status: int, message: str) -> Response:
    code = "unauthorized" if status == 401 else "forbidden"
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return Response(
        msgspec.json.encode(ErrorBody(code, message)),
        status_code=status,
        media_type="application/json",
        headers=headers,
    )
