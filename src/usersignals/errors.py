"""The one error tree of usersignals.

Every error the package raises on purpose derives from :class:`UserSignalsError` and carries
structured fields, so callers (the CLI, the HTTP layer, tests) can react to the kind of problem
without parsing messages. Third-party errors are wrapped where they enter the package.
"""

from __future__ import annotations

from collections.abc import Sequence


class UserSignalsError(Exception):
    """Base of every error usersignals raises on purpose."""


class ConfigurationError(UserSignalsError):
    """A setting, a flag or a module given to usersignals is not usable."""


class SignalDefinitionError(UserSignalsError):
    """One or more signal definitions are invalid.

    Validation collects every problem before raising, so a developer fixes them in one pass.
    """

    def __init__(self, signal: str, problems: Sequence[str]) -> None:
        self.signal = signal
        self.problems = tuple(problems)
        listing = "; ".join(self.problems)
        super().__init__(f"signal {signal!r} is invalid: {listing}")


class SignalNotFoundError(UserSignalsError):
    """A caller asked for a signal that is not registered."""

    def __init__(self, name: str, known: Sequence[str]) -> None:
        self.name = name
        self.known = tuple(known)
        super().__init__(f"unknown signal {name!r}; known signals: {', '.join(self.known)}")


class ContextError(UserSignalsError):
    """A request-time context parameter is invalid; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str) -> None:
        self.parameter = parameter
        super().__init__(f"{parameter}: {message}")


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


class EnrichmentError(UserSignalsError):
    """An enrichment lookup source failed and its failure policy says to stop."""

    def __init__(self, source: str, message: str) -> None:
        self.source = source
        super().__init__(f"enrichment source {source!r}: {message}")


class ApiError(UserSignalsError):
    """The HTTP API answered with an error (raised by :class:`usersignals.Client`)."""

    def __init__(self, status: int, code: str, message: str, parameter: str | None = None) -> None:
        self.status = status
        self.code = code
        self.parameter = parameter
        super().__init__(f"HTTP {status} {code}: {message}")


class HandoverError(UserSignalsError):
    """A backfill's offsets could not be handed to the processor's consumer group."""

    def __init__(self, group: str, message: str) -> None:
        self.group = group
        super().__init__(f"consumer group {group!r}: {message}")
