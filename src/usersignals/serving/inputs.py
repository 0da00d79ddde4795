"""Reading a request's inputs: path parameters, signal names, a bounded body.

Each refuses what it cannot use with an error naming the parameter (a 4xx once the app's
exception handlers map it), never by answering itself.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any
from urllib.parse import unquote_to_bytes

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.types import Scope

from usersignals.errors import ContextError
from usersignals.events.model import Event
from usersignals.serving.reader import check_user_id, valid_user_id
from usersignals.signals.registry import listed_names

MAX_BODY_BYTES = 1 << 20
MAX_EVENTS_PER_REQUEST = 10_000
MAX_BATCH_USERS = 1_000


def user_id_of(request: Request, max_chars: int) -> str:
    """The ``user_id`` path parameter, refused as ingest refuses it (in code points)."""
    user_id: str = request.path_params["user_id"]
    if not path_is_utf8(request.scope, user_id):
        raise ContextError("user_id", "is not valid UTF-8 (its percent-escapes hold other bytes)")
    check_user_id(user_id, max_chars)
    return user_id


def path_is_utf8(scope: Scope, decoded: str) -> bool:
    """Whether the path's percent-escapes, of which ``decoded`` is a part, are UTF-8.

    The server decodes them with replacement characters: ``%FF`` arrives as ``"\ufffd"``,
    an id ingest accepts (it refuses the byte), so a read or a deletion would reach
    another user. Only a path holding one is looked at again, in its raw bytes.
    """
    raw = scope.get("raw_path")
    if "\ufffd" not in decoded or raw is None:
        return True
    try:
        unquote_to_bytes(raw).decode()
    except UnicodeDecodeError:
        return False
    return True


def check_users(users: list[str], max_chars: int) -> None:
    """A batch's ``users``: some, not too many, each an id ingest would accept."""
    if not users:
        raise ContextError("users", "must list at least one user id")
    if len(users) > MAX_BATCH_USERS:
        raise ContextError("users", f"at most {MAX_BATCH_USERS} users per request")
    for user in users:
        if not valid_user_id(user, max_chars):
            raise ContextError("users", f"ids must be 1 to {max_chars} characters")


def names_of(text: str | None) -> list[str] | None:
    """The comma-separated ``names`` parameter; ``None`` (every signal) when absent. Given
    empty, it is refused as any empty parameter is: a caller whose list came out empty
    would otherwise read every signal."""
    if text is None:
        return None
    names = listed_names([text])
    if not names:
        raise ContextError("names", "must list at least one signal name, comma-separated")
    return names


async def body_of(request: Request, timeout_s: float = 10.0) -> bytes:
    """The whole body: at most :data:`MAX_BODY_BYTES`, arrived within ``timeout_s``, not
    compressed (a gzipped body was read as JSON, and refused as malformed)."""
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise HTTPException(415, f"Content-Encoding {encoding!r} is not accepted: send the body "
                            "uncompressed")  # fmt: skip
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise HTTPException(413, f"body larger than {MAX_BODY_BYTES} bytes")
    chunks: list[bytes] = []
    size = 0
    try:
        # A stalled upload would hold its connection (and memory) for ever.
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:  # stop reading: never buffer more than the limit
                    raise HTTPException(413, f"body larger than {MAX_BODY_BYTES} bytes")
                chunks.append(chunk)
    except TimeoutError:
        raise HTTPException(408, f"the body did not arrive within {timeout_s:g} s") from None
    body = b"".join(chunks)
    if not body.strip():
        raise ContextError("body", "is empty")
    return body


class _Repeated(dict[str, Any]):
    """A JSON object of a body that gave ``key`` twice (the decoder keeps the last)."""

    key = ""


def check_unrepeated_keys(body: bytes) -> None:
    """Refuse a JSON body (already decoded, so valid) that gives a key twice in an object,
    naming its path (``context.window``): as a GET refuses a repeated parameter, rather
    than answer with the last of two values the client may not have meant."""
    path = repeated_key_path(body)
    if path is not None:
        raise ContextError(path or "body", "given more than once")


def repeated_key_path(body: bytes) -> str | None:
    """Where a valid JSON ``body`` first gives a key twice in an object (``context.window``;
    ``""`` at the top), or ``None``. The standard library's decoder, the only one that shows
    each pair: a tenth of a millisecond for a batch of 1,000 users, whose reads take
    hundreds."""
    repeats = False

    def pairs(given: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal repeats
        built = dict(given)
        if len(built) == len(given):
            return built
        repeats = True
        repeated = _Repeated(built)
        seen: set[str] = set()
        for key, _ in given:
            if key in seen:
                repeated.key = key
                break
            seen.add(key)
        return repeated

    found = json.loads(body, object_pairs_hook=pairs)
    return (_repeated_path(found) or "") if repeats else None


#: A key of a JSON object: a closing quote, then the colon (a string value holding one
#: counts too, which only costs the full check).
_KEY_END = re.compile(rb'"\s*:')


def event_repeated_key(raw: bytes, event: Event) -> str | None:
    """The path of a key the JSON of ``event`` (decoded, valid) gives twice, or ``None``.
    Counted first: with no more key ends in ``raw`` than the event has keys, none is given
    twice, and the full check (:func:`repeated_key_path`, about 10 µs) is left out."""
    if len(_KEY_END.findall(raw)) <= _EVENT_KEYS + _count_keys(event.attrs, 1):
        return None
    return repeated_key_path(raw)


#: The keys every valid event has (``Event``'s required fields).
_EVENT_KEYS = 6


def _count_keys(value: Any, own: int = 0) -> int:
    """How many object keys ``value`` holds, nested ones too; ``own`` for its own key."""
    if isinstance(value, dict):
        return own + sum(1 + _count_keys(inner) for inner in value.values())
    if isinstance(value, list):
        return own + sum(_count_keys(inner) for inner in value)
    return own if value is not None else 0


def _repeated_path(value: Any) -> str | None:
    """Where the first repeated key is, as ``outer.inner.key``."""
    if isinstance(value, _Repeated):
        return value.key
    inner = value.items() if isinstance(value, dict) else ()
    for key, below in inner:
        path = _repeated_path(below)
        if path is not None:
            return f"{key}.{path}"
    return None
