"""The request-time user context: how a caller views stored state at read time.

The same stored state answers "saves on search in the last hour, without these items" and
"all engagements of the last 28 days": filters, windows and limits are applied when reading,
not when writing. Parsing from strings (query parameters, CLI options) lives here too, so the
CLI and the HTTP API reject bad input with the same message naming the parameter.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from usersignals.durations import parse_duration
from usersignals.errors import ContextError

CONTEXT_PARAMETERS = (
    "window",
    "actions",
    "surfaces",
    "since",
    "until",
    "limit",
    "dedupe",
    "exclude",
    "as_of",
)
#: The parameters that take several values (comma-separated in a query, a list in JSON).
LIST_PARAMETERS = frozenset({"actions", "surfaces", "exclude"})
MAX_LIMIT = 10_000
MAX_LIST_ITEMS = 1_000
#: A whole number in ASCII digits: int() also reads other scripts' digits and "1_0", which
#: a client that sent them meant as something else.
_WHOLE_NUMBER = re.compile(r"-?[0-9]+")

_T = TypeVar("_T")


#: How far before a user's newest event an ``as_of`` may lie and still be answered from the
#: stored state (exactly, or within the aggregation's stated bound): states keep this much
#: history beyond their retention. Earlier, an aggregation that would need it refuses
#: (:class:`usersignals.errors.AsOfError`, HTTP 422).
AS_OF_LOOKBACK_MS = 2 * 86_400_000


def retention_start(view_time: int, retention_ms: int, granule: int = 1) -> int:
    """The first event time an answer at ``view_time`` may include.

    Nothing older than the retention counts: the edge is ``view_time - retention``, rounded
    *up* to ``granule`` (the aggregation's bucket, 1 ms when it keeps exact times).
    """
    edge = view_time - retention_ms
    return -(-edge // granule) * granule


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Times a view may name. The last millisecond of year 9999 is the latest time a response can
# render; an as-of time before 2000-01-01 is before any accepted event (see EventPolicy).
MAX_TIME_MS = 253_402_300_799_999
MIN_AS_OF_MS = 946_684_800_000


@dataclass(frozen=True)
class ReadContext:
    """A view over stored state. Times are milliseconds since the epoch (UTC).

    ``as_of`` is the "now" of the view. Without it, the view's time is the wall clock at read
    time, or the newest event of the state read if that is later (a producer's clock ahead of
    ours, by at most ``events.max_future_ms``): see :meth:`view_time`. The view ends at
    ``until`` if given (and not after that time); a ``window`` ``W`` reaches back from the end
    ``E`` and includes both edges, ``[E - W, E]``; ``since`` bounds the start too. ``limit``
    caps list results; ``dedupe`` keeps one entry per item; ``exclude`` drops item ids (or
    keys, for scores).
    """

    window_ms: int | None = None
    actions: frozenset[str] | None = None
    surfaces: frozenset[str] | None = None
    since_ms: int | None = None
    until_ms: int | None = None
    limit: int | None = None
    dedupe: bool = False
    exclude: frozenset[str] = field(default_factory=frozenset)
    as_of_ms: int | None = None
    now_ms: int = field(default_factory=lambda: time.time_ns() // 1_000_000)

    def view_time(self, newest_ms: int = 0) -> int:
        """The "now" of the view over a state whose newest event is at ``newest_ms``."""
        if self.as_of_ms is not None:
            return self.as_of_ms
        return max(self.now_ms, newest_ms)

    def end(self, newest_ms: int = 0) -> int:
        """The last event time the view includes (inclusive)."""
        end = self.view_time(newest_ms)
        if self.until_ms is not None:
            end = min(end, self.until_ms)
        return end

    def start(self, newest_ms: int = 0) -> int | None:
        """The first event time the view includes (inclusive), or ``None`` for unbounded."""
        start = self.since_ms
        if self.window_ms is not None:
            window_start = self.end(newest_ms) - self.window_ms
            start = window_start if start is None else max(start, window_start)
        return start

    def refused_parameter(self, reads: frozenset[str]) -> str:
        """The parameter a refusal (:class:`AsOfError`) names, for a signal reading the
        parameters ``reads``: a state refuses only a view that ends before its newer events,
        and the view ends at ``until`` when the signal reads it and it is given and earlier
        than ``as_of`` (or without one), else at ``as_of``."""
        until, as_of = self.until_ms, self.as_of_ms
        if "until" in reads and until is not None and (as_of is None or until < as_of):
            return "until"
        return "as_of"

    @property
    def reference_ms(self) -> int:
        """:meth:`view_time` for a state with no events after the wall clock."""
        return self.view_time()

    @property
    def end_ms(self) -> int:
        """:meth:`end` for a state with no events after the wall clock."""
        return self.end()

    @property
    def start_ms(self) -> int | None:
        """:meth:`start` for a state with no events after the wall clock."""
        return self.start()

    def given(self) -> set[str]:
        """The names of the parameters this context sets (used to report ignored ones)."""
        names: set[str] = set()
        for name, value in (
            ("window", self.window_ms),
            ("actions", self.actions),
            ("surfaces", self.surfaces),
            ("since", self.since_ms),
            ("until", self.until_ms),
            ("limit", self.limit),
            ("as_of", self.as_of_ms),
        ):
            if value is not None:
                names.add(name)
        if self.dedupe:
            names.add("dedupe")
        if self.exclude:
            names.add("exclude")
        return names

    @classmethod
    def parse(cls, params: Mapping[str, str | None], now_ms: int | None = None) -> ReadContext:
        """Build a context from string parameters; unknown or bad ones raise ContextError."""
        for name in params:
            if name not in CONTEXT_PARAMETERS:
                raise ContextError(
                    name, f"unknown parameter; known: {', '.join(CONTEXT_PARAMETERS)}"
                )
        now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        window = _optional(params, "window", _parse_window)
        # A time in seconds read as ms lands in 1970: refused for all three alike (by
        # parse_time_option), never answered as "everything since 1970" or "nothing before
        # January 21st, 1970".
        since, until, as_of = (_view_time(params, name) for name in ("since", "until", "as_of"))
        if since is not None and until is not None and since > until:
            raise ContextError("since", "must not be after `until`")
        return cls(
            window_ms=window,
            actions=_optional(params, "actions", _parse_set),
            surfaces=_optional(params, "surfaces", _parse_set),
            since_ms=since,
            until_ms=until,
            limit=_optional(params, "limit", _parse_limit),
            dedupe=_optional(params, "dedupe", _parse_bool) or False,
            # An empty exclusion list excludes nothing, unlike an empty filter: no refusal.
            exclude=_optional(params, "exclude", _parse_set, nothing=frozenset()) or frozenset(),
            as_of_ms=as_of,
            now_ms=now,
        )


def _view_time(params: Mapping[str, str | None], name: str) -> int | None:
    """The time parameter ``name``, as a command's time option is read; ``None`` when not
    given (an empty one is refused, as any)."""
    text = _optional(params, name, str)
    return None if text is None else parse_time_option(name, text)


def check_view_time(name: str, ms: int) -> None:
    """Refuses, naming ``name``, a time no view can be read at: before 2000-01-01, before
    any event the service takes (where a time in seconds lands), or after the year 9999.
    An ``as_of``, ``since`` or ``until``, a label's time, a backfill's ``--until``."""
    if ms < MIN_AS_OF_MS:
        raise ContextError(
            name,
            f"must not be before 2000-01-01T00:00:00Z, before any event the service takes "
            f"({ms}: times are ms since the epoch)",
        )
    if ms > MAX_TIME_MS:
        raise ContextError(name, f"must not be after the year 9999 ({ms})")


def _optional(
    params: Mapping[str, str | None],
    name: str,
    parse: Callable[[str], _T],
    nothing: _T | None = None,
) -> _T | None:
    """``name``'s value parsed; ``None`` when not given. An empty value is refused, unless
    the parameter says what it means (``nothing``)."""
    raw = params.get(name)
    if raw is None:
        return None
    if not raw.strip() and nothing is not None:
        return nothing
    if not raw.strip():
        # `actions=` (or a JSON `[]`) taken as "not given" answered for every action: what
        # a client with an empty filter did not ask.
        raise ContextError(name, "is empty; give a value or leave the parameter out")
    try:
        return parse(raw)
    except ValueError as exc:
        raise ContextError(name, str(exc)) from None


def _parse_window(text: str) -> int:
    window = parse_duration(text)
    if window <= 0:
        raise ValueError("must be a positive duration")
    if window > MAX_TIME_MS:  # longer than any view reaches; the core counts in 64 bits
        days = MAX_TIME_MS // 86_400_000
        raise ValueError(f"must be at most {days}d, the span from 1970 to the year 9999")
    return window


def parse_time_option(name: str, text: str) -> int:
    """A command's time option (``name``) as ms since the epoch: ms as they are, or ISO 8601
    with a zone; a :class:`ContextError` naming the option otherwise, or for a time no view
    can be read at (:func:`check_view_time`: a time in seconds, say)."""
    try:
        ms = _parse_time(text)
    except ValueError as exc:
        raise ContextError(name, str(exc)) from None
    check_view_time(name, ms)
    return ms


def _parse_time(text: str) -> int:
    """Milliseconds since the epoch, or an ISO-8601 time that names its time zone."""
    if _WHOLE_NUMBER.fullmatch(text):
        return _in_range(int(text))
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time; use milliseconds since the epoch or ISO 8601 "
            "with a zone, e.g. 2026-11-25T10:00:00Z"
        ) from None
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone; add Z or an offset such as +01:00")
    # Integer arithmetic: float seconds lose a millisecond for some times after 2038.
    return _in_range((moment - _EPOCH) // timedelta(milliseconds=1))


def _in_range(ms: int) -> int:
    if not 0 <= ms <= MAX_TIME_MS:
        raise ValueError("must be between 1970-01-01T00:00:00Z and 9999-12-31T23:59:59.999Z")
    return ms


def _parse_set(text: str) -> frozenset[str]:
    values = frozenset(part.strip() for part in text.split(",") if part.strip())
    if not values:
        raise ValueError("must list at least one value, comma-separated")
    if len(values) > MAX_LIST_ITEMS:
        raise ValueError(f"at most {MAX_LIST_ITEMS} values")
    if not text.isascii():
        try:
            text.encode()
        except UnicodeEncodeError:  # a byte of argv that is not UTF-8: the core takes UTF-8
            raise ValueError("is not valid UTF-8") from None
    return values


def _parse_limit(text: str) -> int:
    if not _WHOLE_NUMBER.fullmatch(text.strip()):
        raise ValueError(f"{text!r} is not a whole number")
    limit = int(text)
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"must be between 1 and {MAX_LIMIT}")
    return limit


def _parse_bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{text!r} is not a boolean; use true or false")
