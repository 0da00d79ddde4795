"""``usersignals.Client``: a typed Python client of the HTTP API, with connection reuse."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
import msgspec

from usersignals.closing import Closing
from usersignals.errors import ApiError, ContextError, ServiceUnreachableError
from usersignals.events.model import Event
from usersignals.serving.reader import UserSignals
from usersignals.serving.schemas import ContextValue, DeleteResponse, IngestResponse

#: A context parameter as the client takes it: as the API does, or a ``timedelta`` (a
#: duration: ``window``) or a ``datetime`` (a time: ``as_of``, ``since``, ``until``).
ContextArgument = ContextValue | timedelta | datetime | None

_user_signals = msgspec.json.Decoder(UserSignals)
_batch = msgspec.json.Decoder(dict[str, list[UserSignals]])
_ingest = msgspec.json.Decoder(IngestResponse)
_delete = msgspec.json.Decoder(DeleteResponse)
_any = msgspec.json.Decoder()
_encode = msgspec.json.Encoder().encode


class Client(Closing):
    """``Client("http://127.0.0.1:8080").signals("u1", ["recent_engagements"], window="1h")``.

    One pooled HTTP/1.1 connection set per client; ``timeout`` (seconds) bounds each call.
    Errors come back as :class:`usersignals.ApiError` with the server's code and parameter,
    a service it cannot reach as :class:`usersignals.ServiceUnreachableError`.
    The tokens are the server's (``serving.read_token``, ``ingest_token``, ``admin_token``):
    each is sent as a bearer token with the calls it guards, none when not given.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float = 2.0,
        admin_token: str | None = None,
        max_connections: int = 16,
        read_token: str | None = None,
        ingest_token: str | None = None,
    ) -> None:
        self._base_url = base_url
        try:
            self._http = httpx.Client(
                base_url=base_url,
                timeout=timeout,
                limits=httpx.Limits(
                    max_connections=max_connections, max_keepalive_connections=max_connections
                ),
            )
        except httpx.InvalidURL as exc:  # a port that is not a number, say
            raise ServiceUnreachableError(base_url, str(exc), sent=False) from exc
        port = self._http.base_url.port
        if port is not None and not 0 < port < 65_536:  # httpx takes it; connects would fail
            self._http.close()
            raise ServiceUnreachableError(
                base_url, f"port {port} is out of range (1-65535)", sent=False
            )
        self._read = _bearer(read_token)
        self._ingest = {**_JSON_HEADERS, **_bearer(ingest_token)}
        self._admin = _bearer(admin_token)

    def signals(
        self, user_id: str, names: str | Sequence[str] | None = None, **context: ContextArgument
    ) -> UserSignals:
        params = _query(context)
        if names is not None:  # an empty list is sent, and refused: None asks for every signal
            params["names"] = ",".join(_several(names))
        response = self._send(
            "GET", f"/v1/users/{_path(user_id)}/signals", params=params, headers=self._read
        )
        return _decoded(_user_signals, response)

    def batch(
        self,
        users: str | Sequence[str],
        names: str | Sequence[str] | None = None,
        context: Mapping[str, ContextArgument] | None = None,
        contexts: Mapping[str, Mapping[str, ContextArgument]] | None = None,
    ) -> list[UserSignals]:
        body = {
            "users": _several(users),
            "signals": _several(names) if names is not None else None,
            "context": _given(context or {}),
            "contexts": {name: _given(c) for name, c in (contexts or {}).items()},
        }
        response = self._send(
            "POST", "/v1/signals/batch", content=_encode(body),
            headers={**_JSON_HEADERS, **self._read},
        )  # fmt: skip
        return _decoded(_batch, response)["results"]

    def ingest(
        self, events: Event | Mapping[str, Any] | Iterable[Event | Mapping[str, Any]]
    ) -> IngestResponse:
        """Send events (or one); the answer lists the rejected ones, also when none was
        valid (the API's 422: ``accepted`` is then 0). Raises :class:`ApiError` when the API
        takes none for another reason (a missing token, a 503 with the backlog full)."""
        # One event as one: a dict iterates over its keys.
        batch = [events] if isinstance(events, Event | Mapping) else list(events)
        response = self._send("POST", "/v1/events", content=_encode(batch), headers=self._ingest)
        if response.status_code == 422:
            try:
                return _ingest.decode(response.content)  # none valid: the rejections
            except (msgspec.DecodeError, msgspec.ValidationError):
                pass  # another 422 (a body refused whole): an ApiError below
        return _decoded(_ingest, response)

    def delete_user(self, user_id: str) -> DeleteResponse:
        response = self._send("DELETE", f"/v1/users/{_path(user_id)}", headers=self._admin)
        return _decoded(_delete, response)

    def definitions(self) -> dict[str, Any]:
        answer = self._send("GET", "/v1/signals", headers=self._read)
        result: dict[str, Any] = _decoded(_any, answer)
        return result

    def ready(self) -> bool:
        try:
            return self._send("GET", "/readyz").status_code == 200
        except (ServiceUnreachableError, httpx.HTTPError):
            return False

    def _send(self, method: str, path: str, **request: Any) -> httpx.Response:
        """One request; not reaching the service, or no answer to it, is a
        :class:`ServiceUnreachableError` (in the project's error tree), saying whether the
        request was sent (an ingest or a deletion then may have been carried out)."""
        try:
            return self._http.request(method, path, **request)
        except (httpx.TransportError, httpx.InvalidURL) as exc:
            detail = str(exc) or type(exc).__name__
            raise ServiceUnreachableError(self._base_url, detail, _sent(exc)) from exc

    def close(self) -> None:
        self._http.close()


_JSON_HEADERS = {"content-type": "application/json"}


def _sent(error: Exception) -> bool:
    """Whether the request may have reached the service: not for a refused connection, a
    connect or pool timeout, a URL or proxy httpx cannot use."""
    unsent = (
        httpx.ConnectError,
        httpx.ConnectTimeout,
        httpx.PoolTimeout,
        httpx.UnsupportedProtocol,
        httpx.ProxyError,
        httpx.InvalidURL,
    )
    return not isinstance(error, unsent)


def _several(value: str | Sequence[str]) -> list[str]:
    """One user id or signal name as one, not as its letters: a ``str`` is a
    ``Sequence[str]`` to the type checker, so ``batch("u1", ...)`` would ask for users "u"
    and "1", and be answered (as the DSL takes ``Count(by="surface")``)."""
    return [value] if isinstance(value, str) else list(value)


def _bearer(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


def _path(user_id: str) -> str:
    # Every reserved character escaped, "/" included: a user id is one path segment. So are
    # the dots of "." and "..", which would otherwise be normalised away as dot segments.
    if user_id in (".", ".."):
        return user_id.replace(".", "%2E")
    return quote(user_id, safe="")


def _given(context: Mapping[str, ContextArgument]) -> dict[str, ContextValue]:
    """``context`` as the API takes it: the parameters given as ``None`` left out, as a
    notebook means ``limit=None`` (sent, it was the text "None", a 400); a ``timedelta`` as
    whole milliseconds and a ``datetime`` as ISO 8601, as signal definitions take them
    (``str()`` of them sent '1:00:00' and a space for the ``T``)."""
    out: dict[str, ContextValue] = {}
    for name, value in context.items():
        if isinstance(value, timedelta):
            ms, rest = divmod(value, timedelta(milliseconds=1))
            if rest:
                raise ContextError(name, f"{value!r} is not a whole number of milliseconds")
            out[name] = f"{ms}ms"
        elif isinstance(value, datetime):
            if value.tzinfo is None:  # the API refuses it: which zone it meant is a guess
                raise ContextError(name, f"{value!r} has no time zone; use tz=UTC")
            out[name] = value.isoformat()
        elif value is not None:
            out[name] = value
    return out


def _query(context: Mapping[str, ContextArgument]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in _given(context).items():
        if isinstance(value, bool):
            out[name] = "true" if value else "false"
        elif isinstance(value, list | tuple | set | frozenset):
            out[name] = ",".join(sorted(value) if isinstance(value, set | frozenset) else value)
        else:
            out[name] = str(value)
    return out


T = TypeVar("T")


def _decoded(decoder: msgspec.json.Decoder[T], response: httpx.Response) -> T:
    """The answer decoded, or an :class:`ApiError` (an error answer, or one that is not the
    API's JSON: another service on the port, a proxy's page)."""
    content = _checked(response)
    try:
        return decoder.decode(content)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ApiError(
            response.status_code,
            "invalid_answer",
            f"the answer is not the API's JSON (another service, or a proxy?): {exc}; "
            f"it began {response.text[:80]!r}",
        ) from exc


def _checked(response: httpx.Response) -> bytes:
    if response.status_code < 400:
        return response.content
    try:
        body = msgspec.json.decode(response.content)
    except msgspec.DecodeError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    retry_after = response.headers.get("retry-after", "")
    raise ApiError(
        response.status_code,
        str(body.get("error", "http_error")),
        str(body.get("message", response.text[:200])),
        body.get("parameter"),
        known=body.get("known"),
        signal=body.get("signal"),
        user=body.get("user"),
        earliest_as_of_ms=body.get("earliest_as_of_ms"),
        retry_after_s=int(retry_after) if retry_after.isdigit() else None,
    )
