"""Every error a request can end with, mapped once to a JSON answer naming the problem.

The app registers :data:`EXCEPTION_HANDLERS` with Starlette. Errors of the package carry their
own status and code (:class:`~usersignals.errors.UserSignalsError`); third-party errors a
request can raise (bodies msgspec refuses, Starlette's HTTP errors) are mapped here. Nothing
unexpected ever leaves as a stack trace, and a 503 never carries an internal message.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import ExceptionHandler

from usersignals.errors import (
    AsOfError,
    ContextError,
    IngestUnavailableError,
    SignalNotFoundError,
    UserSignalsError,
)
from usersignals.serving.schemas import ErrorBody
from usersignals.serving.state import serving_state

logger = logging.getLogger(__name__)

#: The status an answer gets when its client went away first (nginx's convention).
CLIENT_CLOSED = 499

_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "too_large",
}
_encode = msgspec.json.Encoder().encode


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        _encode(body), status_code=status, media_type="application/json", headers=headers
    )


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    return json_response(ErrorBody(error=code, message=message, **extra), status, headers)


def error_body(exc: UserSignalsError) -> ErrorBody:
    """The JSON body of one of the package's errors: its code, what a client may read, and
    the structured fields that tell a client what to change."""
    body = ErrorBody(error=exc.http_code, message=exc.public_message())
    if isinstance(exc, ContextError):
        body.parameter = exc.parameter
    if isinstance(exc, AsOfError):
        body.signal = exc.signal
        body.earliest_as_of_ms = exc.earliest_ms
        body.user = exc.user
    if isinstance(exc, SignalNotFoundError):
        body.known = list(exc.known)
    return body


async def package_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, UserSignalsError)
    if exc.http_status >= 500:  # not the request's fault: the whole message, for operators
        logger.warning("request failed: %s", exc)
    return json_response(error_body(exc), exc.http_status)


async def ingest_unavailable(request: Request, exc: Exception) -> Response:
    """Not accepted, not kept: the client retries after the pause it is told."""
    assert isinstance(exc, IngestUnavailableError)
    serving_state(request).http.events_refused.labels(exc.reason).inc()
    headers = {"Retry-After": str(exc.retry_after_s)}
    return error_response(exc.http_status, exc.reason, exc.public_message(), headers)


async def invalid_body(request: Request, exc: Exception) -> Response:
    return error_response(422, "invalid_body", str(exc))


async def malformed_json(request: Request, exc: Exception) -> Response:
    return error_response(400, "malformed_json", f"the body is not valid JSON: {exc}")


async def invalid_utf8(request: Request, exc: Exception) -> Response:
    # msgspec raises this (not a DecodeError) for a string that is not UTF-8.
    message = f"the body holds a string that is not valid UTF-8: {exc}"
    return error_response(400, "invalid_utf8", message, parameter="body")


async def nested_too_deeply(request: Request, exc: Exception) -> Response:
    return error_response(
        400, "malformed_json", "the body's JSON is nested too deeply", parameter="body"
    )


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return error_response(exc.status_code, code, str(exc.detail), dict(exc.headers or {}))


async def client_disconnected(request: Request, exc: Exception) -> Response:
    # The client went away mid-upload: nothing to answer, nothing wrong with us (counted by
    # the request metrics, not logged as an error).
    return Response(status_code=CLIENT_CLOSED)


async def internal_error(request: Request, exc: Exception) -> Response:
    # Starlette re-raises the error after this answer, so the server logs its traceback.
    return error_response(500, "internal", "internal error; see the server log")


EXCEPTION_HANDLERS: dict[Any, ExceptionHandler] = {
    UserSignalsError: package_error,
    IngestUnavailableError: ingest_unavailable,
    msgspec.ValidationError: invalid_body,
    msgspec.DecodeError: malformed_json,
    UnicodeDecodeError: invalid_utf8,
    RecursionError: nested_too_deeply,
    HTTPException: http_error,
    ClientDisconnect: client_disconnected,
    Exception: internal_error,
}
