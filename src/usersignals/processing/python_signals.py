"""A Python signal's own code applied so that its failure never stops a batch.

The built-in aggregations run in the native core; a user-defined one runs its ``decode``,
``apply`` and ``encode`` here, for one user's new events at a time. Such code can raise on an
event its author did not foresee, return something that is not bytes, or meet a stored state
another layout wrote. Stopping the processor for it would stop every signal, and at the
restart the same event would stop it again. So once a signal fails on a user's events, they
are applied one by one from the stored bytes, each step checked (the state encodes to bytes
that decode again); the events it fails on are handed back for the dead-letter destination
(reason ``signal_failed``) and the others applied. The other signals never see the failure.
Where a failure must be seen at once (the testing helpers), it raises
:class:`SignalFailedError` from the signal's own error instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from usersignals.aggregations.base import AggregationRuntime, ApplyOut
from usersignals.aggregations.rows import Row
from usersignals.errors import SignalFailedError

SIGNAL_FAILED = "signal_failed"
#: A dead letter's detail keeps this much of the error's text.
_DETAIL_CHARS = 500


@dataclass
class Applied:
    """One signal's step for one user: the new state, or the failures."""

    #: The new state's bytes, ``None`` where the stored state stays as it was.
    encoded: bytes | None
    #: ``encoded`` decoded (what the engine's cache keeps), when ``encoded`` is set.
    state: Any
    applied: int = 0
    expired: int = 0
    #: ``(index in rows, what failed)`` of the events the signal failed on.
    failed: list[tuple[int, str]] = field(default_factory=list)


def apply_signal(
    key: str,
    runtime: AggregationRuntime[Any],
    stored: bytes | None,
    state: Any,
    rows: Sequence[Row],
    contain: bool = True,
) -> Applied:
    """``rows`` applied to ``state`` (``stored`` decoded, or ``None`` to decode it here).

    Not ``contain``: the first failure raises :class:`SignalFailedError` naming ``key`` and
    the event, from the signal's own error.
    """
    try:
        if state is None and stored is not None:
            state = runtime.decode(stored)
        outcome = _checked_outcome(runtime.apply(state, rows), len(rows))
        encoded = _checked_bytes(runtime.encode(outcome.state))
        # Bytes its own decode refuses would make every later batch of this user fail:
        # checked here, and the decoded copy is what the engine's cache keeps.
        decoded = runtime.decode(encoded)
    except Exception:  # the signal's own code: find the events it fails on
        return _one_by_one(key, runtime, stored, rows, contain)
    return Applied(encoded, decoded, len(rows) - outcome.expired, outcome.expired)


def _one_by_one(
    key: str,
    runtime: AggregationRuntime[Any],
    stored: bytes | None,
    rows: Sequence[Row],
    contain: bool,
) -> Applied:
    # Every step starts from bytes: a failed step may have changed its state in place.
    out = Applied(None, None)
    if stored is not None:
        try:
            runtime.decode(stored)
        except Exception as exc:
            _raise_unless(contain, key, rows[0], exc, "decoding its stored state: ")
            out.failed = [(i, "decoding its stored state: " + _text(exc)) for i in range(len(rows))]
            return out
    last = stored
    for index, row in enumerate(rows):
        try:
            state = None if last is None else runtime.decode(last)
            outcome = _checked_outcome(runtime.apply(state, [row]), 1)
            encoded = _checked_bytes(runtime.encode(outcome.state))
            state = runtime.decode(encoded)  # what the next step and the cache start from
        except Exception as exc:
            _raise_unless(contain, key, row, exc)
            out.failed.append((index, _text(exc)))
            continue
        last, out.encoded, out.state = encoded, encoded, state
        out.applied += 1 - outcome.expired
        out.expired += outcome.expired
    return out


def _checked_outcome(outcome: object, rows: int) -> ApplyOut[Any]:
    """``apply``'s answer, if it is one: the bare state (a common slip) would otherwise fail
    as an ``AttributeError`` that names neither ``apply`` nor ``ApplyOut``, and an expired
    count out of range would be added to the counts as it is."""
    if not isinstance(outcome, ApplyOut):
        raise TypeError(f"apply returned {type(outcome).__name__}, not ApplyOut(state, expired)")
    expired = outcome.expired
    if not isinstance(expired, int) or isinstance(expired, bool) or not 0 <= expired <= rows:
        raise ValueError(
            f"apply returned expired {expired!r}: it counts the events given that were too "
            f"old for the retention, 0 to {rows}"
        )
    return outcome


def _checked_bytes(encoded: object) -> bytes:
    if not isinstance(encoded, bytes):
        raise TypeError(f"encode returned {type(encoded).__name__}, not bytes")
    return encoded


def _raise_unless(contain: bool, key: str, row: Row, error: Exception, what: str = "") -> None:
    if not contain:
        raise SignalFailedError(key, row[0].event_id, what + _text(error)) from error


def _text(error: Exception) -> str:
    return f"{type(error).__name__}: {error}"[:_DETAIL_CHARS]
