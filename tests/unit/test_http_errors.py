"""The error tree carries each error's HTTP status and code, and the API answers with them
from one exception handler: the request's problem named, no internal message in a 503."""

from __future__ import annotations

import asyncio

import msgspec
import pytest
from starlette.requests import Request

from usersignals import errors
from usersignals.errors import (
    AsOfError,
    ContextError,
    IngestUnavailableError,
    NativeCoreError,
    SignalNotFoundError,
    SignalRetiredError,
    SignalsMismatchError,
    StoreError,
    UserSignalsError,
)
from usersignals.serving.error_handlers import EXCEPTION_HANDLERS, package_error

INTERNAL = "Error 111 connecting to 10.1.2.3:6379. Connection refused."


@pytest.mark.parametrize(
    ("error", "status", "code"),
    [
        (ContextError("window", "bad"), 400, "invalid_parameter"),
        (AsOfError("s", 5, 9, "newer events"), 422, "as_of_unavailable"),
        (SignalNotFoundError("x", ["a"]), 404, "unknown_signal"),
        (
            SignalRetiredError("x@1", "2026-01-01T00:00:00Z", "read 'x' (x@2) instead", ["x"]),
            410,
            "retired_signal",
        ),
        (StoreError("redis", "read", INTERNAL), 503, "unavailable"),
        (IngestUnavailableError("disk_full", f"spool /var/lib/x: {INTERNAL}"), 503, "unavailable"),
        (SignalsMismatchError("the store is written by signals of m.py"), 503, "unavailable"),
        (NativeCoreError("plan", INTERNAL), 503, "unavailable"),
    ],
)
def test_each_error_carries_its_status_and_code(
    error: UserSignalsError, status: int, code: str
) -> None:
    assert (error.http_status, error.http_code) == (status, code)


def test_the_request_errors_are_4xx_and_everything_else_is_503() -> None:
    classes = [
        obj
        for obj in vars(errors).values()
        if isinstance(obj, type) and issubclass(obj, UserSignalsError)
    ]
    client_side = {c.__name__ for c in classes if c.http_status < 500}
    assert client_side == {"ContextError", "AsOfError", "SignalNotFoundError", "SignalRetiredError"}
    assert {c.http_status for c in classes if c.__name__ not in client_side} == {503}


def answer(error: Exception) -> tuple[int, dict[str, object]]:
    request = Request({"type": "http", "method": "GET", "path": "/", "headers": []})
    response = asyncio.run(package_error(request, error))
    return response.status_code, msgspec.json.decode(bytes(response.body))


def test_a_store_failure_is_a_503_without_the_internal_message() -> None:
    status, body = answer(StoreError("redis", "read", INTERNAL))
    assert status == 503
    assert body == {
        "error": "unavailable",
        "message": "the state store read failed; try again later",
    }


def test_an_unexpected_package_error_is_a_503_saying_nothing_internal() -> None:
    status, body = answer(NativeCoreError("plan", INTERNAL))
    assert (status, body["error"]) == (503, "unavailable")
    assert "10.1.2.3" not in str(body)
    assert "native" not in str(body)


def test_an_ingest_refusal_names_its_reason_not_the_spool_path() -> None:
    message = IngestUnavailableError(
        "disk_full", f"spool /var/lib/x: {INTERNAL}", 7
    ).public_message()
    assert message == "the events were not accepted (disk full); retry after 7 s"


def test_request_errors_name_the_problem_and_its_fields() -> None:
    status, body = answer(AsOfError("", 5, 9, "newer events").for_signal("interests"))
    assert status == 422
    assert body["parameter"] == "as_of"
    assert (body["signal"], body["earliest_as_of_ms"]) == ("interests", 9)
    assert "interests" in str(body["message"])
    status, body = answer(SignalNotFoundError("nope", ["a", "b"]))
    assert (status, body["error"], body["known"]) == (404, "unknown_signal", ["a", "b"])
    status, body = answer(ContextError("window", "must be a duration"))
    assert (status, body["parameter"], body["message"]) == (
        400,
        "window",
        "window: must be a duration",
    )


def test_an_as_of_refusal_says_its_times_as_dates_too() -> None:
    """Found in a newcomer's trial: the 422 said "the earliest as_of it answers is
    1795902195541", a time to convert before it could be read (or sent as an ISO time)."""
    refusal = AsOfError("interests", 1_767_225_600_000, 1_767_229_200_000, "newer events")
    assert str(refusal) == (
        "as_of: signal 'interests' cannot answer exactly as of 1767225600000 "
        "(2026-01-01T00:00:00.000+00:00): newer events; the earliest as_of it answers is "
        "1767229200000 (2026-01-01T01:00:00.000+00:00)"
    )


def test_the_mismatch_message_is_for_clients_too() -> None:
    status, body = answer(SignalsMismatchError("the store is written by signals of next.py"))
    assert (status, body["message"]) == (503, "the store is written by signals of next.py")


def test_the_package_errors_are_mapped_by_one_handler() -> None:
    assert EXCEPTION_HANDLERS[UserSignalsError] is package_error
    assert Exception in EXCEPTION_HANDLERS  # anything else: a 500 without a trace
