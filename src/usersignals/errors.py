"""The one error tree of usersignals.

Every error the package raises on purpose derives from :class:`UserSignalsError` and carries
structured fields, so callers (the CLI, the HTTP layer, tests) can react to the kind of problem
without parsing messages. Third-party errors are wrapped where they enter the package.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from usersignals.durations import iso_utc

#: What a client reads of an error that is not about its request: the server log has the rest.
UNAVAILABLE_MESSAGE = "the service cannot answer now; try again later"


class UserSignalsError(Exception):
    """Base of every error usersignals raises on purpose.

    Each class carries the HTTP status and ``error`` code the API answers with when it ends a
    request (as Feast's ``http_status_code()``): 503 ``unavailable`` unless a class says the
    request itself is at fault. The serving layer maps the whole tree in one place.
    """

    http_status: ClassVar[int] = 503
    http_code: ClassVar[str] = "unavailable"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled as the error it is, fields and all: an offline job's worker process hands
        its errors to the parent. By default pickle calls the class with ``args`` (the
        message alone), which fails for every class whose ``__init__`` takes its fields."""
        return (_rebuilt, (type(self), self.args, self.__dict__))

    def public_message(self) -> str:
        """What a client may read. By default nothing of the message: it can hold a path, a
        host or a library's words, which are for the server log, not for clients."""
        return UNAVAILABLE_MESSAGE


def _rebuilt(
    kind: type[UserSignalsError], args: tuple[Any, ...], fields: dict[str, Any]
) -> UserSignalsError:
    error = kind.__new__(kind)
    error.args = args
    error.__dict__.update(fields)
    return error


class ConfigurationError(UserSignalsError):
    """A setting, a flag or a module given to usersignals is not usable."""


class InvalidSettingError(ConfigurationError):
    """One setting has a value it does not allow: names the setting, the value, what is allowed."""

    def __init__(self, setting: str, value: object, allowed: str) -> None:
        self.setting = setting
        self.value = value
        self.allowed = allowed
        super().__init__(f"setting {setting} = {value!r} is not allowed: expected {allowed}")


class SignalsMismatchError(ConfigurationError):
    """The store is written with other signals (module, definitions or versions) than the
    ones this reader was configured with: it is refused rather than misread. A processor
    refuses it too when a version it computes is defined otherwise than when its states
    were computed."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)

    def public_message(self) -> str:
        # Written by the identity check for operators and clients alike: names the module and
        # the versions, nothing internal.
        return self.problem


class SignalDefinitionError(UserSignalsError):
    """One or more signal definitions are invalid.

    Validation collects every problem before raising, so a developer fixes them in one pass.
    """

    def __init__(self, signal: str, problems: Sequence[str]) -> None:
        """``signal``: the one invalid signal's name; empty for problems of the set of
        signals (a key defined twice, say)."""
        self.signal = signal
        self.problems = tuple(problems)
        listing = "; ".join(self.problems)
        subject = f"signal {signal!r} is" if signal else "the signals are"
        super().__init__(f"{subject} invalid: {listing}")


class SignalNotFoundError(UserSignalsError):
    """A caller asked for a signal that is not registered."""

    http_status = 404
    http_code = "unknown_signal"

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = tuple(known)
        super().__init__(f"unknown signal {name!r}; known signals: {', '.join(self.known)}")

    def public_message(self) -> str:
        return str(self)


class SignalRetiredError(SignalNotFoundError):
    """A caller asked for a version whose grace period after a cut-over is over: its state
    is no longer computed and is dropped user by user, so an answer would mix stale and
    empty values. ``advice``: what to do instead (the version to read), if anything."""

    http_status = 410
    http_code = "retired_signal"

    def __init__(
        self, name: str, dropped_at: str, advice: str | None, known: Sequence[str]
    ) -> None:
        self.dropped_at = dropped_at
        super().__init__(name, known)
        then = f"; {advice}" if advice else ""
        self.args = (
            f"signal {name!r} was retired: its grace period was over at {dropped_at}, and its "
            f"state is no longer kept{then}",
        )


class ContextError(UserSignalsError):
    """A request-time context parameter is invalid; ``parameter`` names it."""

    http_status = 400
    http_code = "invalid_parameter"

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")

    def public_message(self) -> str:
        return str(self)


class AsOfError(ContextError):
    """A signal's stored state cannot answer exactly as of the requested time.

    ``earliest_ms`` is the earliest ``as_of`` at or after the requested one that this signal
    can answer exactly for this user (``None`` when no earlier answer is possible). The
    aggregation that raises it does not know the signal's name; the reader fills it in.
    """

    http_status = 422
    http_code = "as_of_unavailable"

    def __init__(
        self,
        signal: str,
        as_of_ms: int,
        earliest_ms: int | None,
        why: str,
        parameter: str = "as_of",
        user: str | None = None,
    ) -> None:
        """``parameter``: ``until`` when the view ends before newer events by an ``until``
        alone (no ``as_of``); ``as_of_ms`` is then the view's end. ``user``: whose state
        refuses, when a read of many users names them (the reader fills it in)."""
        self.signal = signal
        self.as_of_ms = as_of_ms
        self.earliest_ms = earliest_ms
        self.why = why
        self.user = user
        earliest = (
            ""
            if earliest_ms is None
            else f"; the earliest {parameter} it answers is {_with_date(earliest_ms)}"
        )
        at = "as of" if parameter == "as_of" else "until"
        whose = "" if user is None else f" for user {user!r}"
        super().__init__(
            parameter,
            f"signal {signal!r} cannot answer exactly {at} {_with_date(as_of_ms)}{whose}: "
            f"{why}{earliest}",
        )

    def for_signal(self, signal: str, parameter: str | None = None) -> AsOfError:
        """This refusal for ``signal`` (and for ``parameter``, when given)."""
        named = self.parameter if parameter is None else parameter
        return AsOfError(signal, self.as_of_ms, self.earliest_ms, self.why, named, self.user)

    def for_user(self, user: str) -> AsOfError:
        """This refusal, naming the user whose state refuses."""
        return AsOfError(
            self.signal, self.as_of_ms, self.earliest_ms, self.why, self.parameter, user
        )


class InvalidEventError(UserSignalsError):
    """An event the service would not apply (it would dead-letter it with ``reason``), met
    where events are applied directly: the testing helpers (``usersignals.testing``). Never
    raised while serving: the API answers a bad event itself, in its list of rejected ones."""

    def __init__(self, reason: str, detail: str) -> None:
        self.reason = reason
        self.detail = detail
        super().__init__(f"invalid event ({reason}): {detail}")


class SignalFailedError(UserSignalsError):
    """A signal's own code (a user-defined aggregation's ``apply``, ``encode`` or
    ``decode``) failed on an event. The service dead-letters such an event (reason
    ``signal_failed``) and goes on; the testing helpers raise this, from the signal's error,
    so the author sees it in a unit test."""

    def __init__(self, signal: str, event_id: str, detail: str) -> None:
        self.signal = signal
        self.event_id = event_id
        self.detail = detail
        super().__init__(f"signal {signal} failed on event {event_id!r}: {detail}")


class SignalReadError(UserSignalsError):
    """A user-defined aggregation's ``read`` failed where its answer cannot be left out: a
    training set's value. (The API answers that signal ``"error": "signal_failed"`` and the
    others as usual.)"""

    def __init__(self, signal: str, user_id: str, as_of_ms: int, detail: str) -> None:
        self.signal = signal
        self.user_id = user_id
        self.as_of_ms = as_of_ms
        self.detail = detail
        super().__init__(
            f"signal {signal} failed to read user {user_id!r} as of {as_of_ms}: {detail}"
        )


class StateCodecError(UserSignalsError):
    """Stored bytes could not be decoded into a state (corrupt or from an unknown codec)."""

    def __init__(self, key: bytes, message: str) -> None:
        self.key = key
        super().__init__(f"cannot decode state at key {key!r}: {message}")


class StoreError(UserSignalsError):
    """The state store failed (open, read or write); the underlying error is chained."""

    def __init__(self, backend: str, operation: str, message: str) -> None:
        self.backend = backend
        self.operation = operation
        super().__init__(f"{backend} store {operation} failed: {message}")

    def public_message(self) -> str:
        return f"the state store {self.operation} failed; try again later"


class EnrichmentError(UserSignalsError):
    """A lookup source could not answer (down, timed out, answered garbage).

    Sources raise only this for a failure of the source; the Materializer retries only this,
    so a programming error is never retried forever. ``kind`` names the underlying error
    (``ReadTimeout``, ``ConnectionError``...), which labels the failure metrics.
    """

    def __init__(self, source: str, message: str, kind: str = "EnrichmentError") -> None:
        self.source = source
        self.kind = kind
        super().__init__(f"enrichment source {source!r}: {message}")


class BrokerError(UserSignalsError):
    """The Kafka client (librdkafka) reported an error; ``code`` is librdkafka's name for it.

    ``retriable`` is librdkafka's own verdict: a retriable error may pass by itself (a broker
    restarting), a fatal one will not.
    """

    def __init__(self, operation: str, code: str, message: str, retriable: bool = False) -> None:
        self.operation = operation
        self.code = code
        self.retriable = retriable
        super().__init__(f"kafka {operation} failed ({code}): {message}")


class ApiError(UserSignalsError):
    """The HTTP API answered with an error (raised by :class:`usersignals.Client`): its
    status and code, and what the answer gives a client to act on — the ``parameter`` to
    change, the ``known`` signals (404), the ``signal``, ``user`` and ``earliest_as_of_ms``
    of an ``as_of`` refused (422), the seconds to wait before trying again (``Retry-After``
    of a 503)."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        parameter: str | None = None,
        *,
        known: list[str] | None = None,
        signal: str | None = None,
        user: str | None = None,
        earliest_as_of_ms: int | None = None,
        retry_after_s: int | None = None,
    ) -> None:
        self.status = status
        self.code = code
        self.parameter = parameter
        self.known = known
        self.signal = signal
        self.user = user
        self.earliest_as_of_ms = earliest_as_of_ms
        self.retry_after_s = retry_after_s
        super().__init__(f"HTTP {status} {code}: {message}")


class ServiceUnreachableError(UserSignalsError):
    """The HTTP API could not be reached or did not answer (raised by
    :class:`usersignals.Client`). ``sent``: False when the request never left (refused, a
    connect timeout, a URL it cannot use); True when it was sent and no answer came (a read
    timeout, a dropped connection): then an ingest or a deletion may have been carried out."""

    def __init__(self, url: str, detail: str, sent: bool = False) -> None:
        self.url = url
        self.sent = sent
        if sent:
            what = f"no answer from the usersignals API at {url} (the request may have been "
            message = what + f"carried out): {detail}"
        else:
            message = f"cannot reach the usersignals API at {url}: {detail}"
        super().__init__(message)


class SpoolWriteError(UserSignalsError):
    """Appending to the HTTP spool failed; the append was rolled back.

    ``reason`` is ``disk_full`` (no space, quota or file-size limit) or ``io_error``.
    """

    def __init__(self, path: str, reason: str, message: str) -> None:
        self.path = path
        self.reason = reason
        super().__init__(f"cannot append to spool file {path} ({reason}): {message}")


class IngestUnavailableError(UserSignalsError):
    """An accepted-write path cannot take more events now; the client should retry later.

    ``reason``: ``backlog_full``, ``disk_full``, ``spool_error`` or ``broker_unavailable``;
    ``retry_after_s`` is what the API sends as ``Retry-After``; the API's ``error`` code is
    the reason.
    """

    def __init__(self, reason: str, message: str, retry_after_s: int = 5) -> None:
        self.reason = reason
        self.retry_after_s = retry_after_s
        super().__init__(message)

    def public_message(self) -> str:
        # The message may name the spool's path or the broker's error: not for clients.
        why = self.reason.replace("_", " ")
        return f"the events were not accepted ({why}); retry after {self.retry_after_s} s"


class NativeCoreError(UserSignalsError):
    """The native core refused a plan or a batch: a bug in the glue, never bad input."""

    def __init__(self, operation: str, message: str) -> None:
        self.operation = operation
        super().__init__(f"native core {operation}: {message}")


class HandoverError(UserSignalsError):
    """A backfill's offsets could not be handed to the processor's consumer group."""

    def __init__(self, group: str, message: str) -> None:
        self.group = group
        super().__init__(f"consumer group {group!r}: {message}")


class SparkTaskError(UserSignalsError):
    """A Spark task of an offline job failed on one of the package's own errors (a bad
    archive file, say), raised in an executor: ``kind`` is its class name, the message its
    own, as the local runner would have said it."""

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


def _with_date(ms: int) -> str:
    """An epoch time in ms, and the date it is (as answers show times) when it has one."""
    try:
        return f"{ms} ({iso_utc(ms)})"
    except (OverflowError, OSError, ValueError):  # past what datetime holds
        return str(ms)
