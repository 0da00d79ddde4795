"""Reading a user's signals: one store read, then each signal's ``read`` with the context.

Used by the HTTP API and by ``usersignals get``. Each result carries its freshness — the
newest event time it includes and its age at read time — and names the context parameters
that do not apply to that signal's aggregation (they are ignored, not an error, so that one
context can be sent for many signals at once).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

import msgspec

from usersignals._core import BodyQuery, NativePlans, read_record_body
from usersignals.aggregations.base import ReadOut
from usersignals.aggregations.context import MAX_TIME_MS, ReadContext
from usersignals.durations import iso_utc
from usersignals.errors import AsOfError, ContextError, SignalReadError, UserSignalsError
from usersignals.processing.native import NativeSignals, plan_json
from usersignals.processing.python_signals import SIGNAL_FAILED
from usersignals.signals.definition import Signal
from usersignals.signals.registry import SignalRegistry
from usersignals.state.cache import DecodedStateCache
from usersignals.state.codec import UserRecord, decode_record
from usersignals.state.keys import user_key, user_of
from usersignals.state.store import StateStore
from usersignals.state.versions import load_versions

if TYPE_CHECKING:
    from usersignals.serving.queries import Query

#: Distinct queries a worker keeps (its query cache, ``serving/queries.py``, and the
#: bodies prepared here for them); past it a cache starts again: a client varying its query
#: string must not grow a worker's memory. Here rather than with the queries: those import
#: the HTTP layer (starlette, asyncio: 60 ms), which an offline job's reader never uses.
MAX_QUERIES = 256

_encode = msgspec.json.encode
logger = logging.getLogger(__name__)


def valid_user_id(user_id: str, max_chars: int) -> bool:
    """An id ingest would accept: 1 to ``max_chars`` code points (``events.max_user_id_chars``),
    no NUL (a user's raw events are keyed by the id and a NUL)."""
    return 0 < len(user_id) <= max_chars and "\x00" not in user_id


def check_user_id(user_id: str, max_chars: int) -> None:
    """Refuses, naming ``user_id``, an id ingest would refuse: every read path (HTTP, the
    ``get`` command) answers such an id the same way."""
    if "\x00" in user_id:
        raise ContextError("user_id", "must not hold a NUL character (U+0000)")
    if not valid_user_id(user_id, max_chars):
        raise ContextError("user_id", f"must be 1 to {max_chars} characters")
    if not user_id.isascii():
        try:
            user_id.encode()
        except UnicodeEncodeError:  # a byte that is not UTF-8, as Python hands over argv
            raise ContextError("user_id", "is not valid UTF-8") from None


class SignalResult(msgspec.Struct, omit_defaults=True):
    """One signal of one user, as served."""

    name: str
    version: int
    kind: str
    value: Any
    newest_event_ms: int | None
    newest_event_time: str | None
    age_ms: int | None
    ignored: list[str] = []
    #: ``signal_failed`` when a user-defined aggregation's read raised or answered what JSON
    #: cannot carry (``value`` is then null; the other signals are answered as usual).
    error: str | None = None


class UserSignals(msgspec.Struct):
    user_id: str
    signals: dict[str, SignalResult]


#: What to read for each user: each signal with its own context.
ReadPlan = Sequence[tuple[Signal, ReadContext]]


class Reader(Protocol):
    """What the HTTP API reads through: the stateful :class:`SignalReader`, or the raw mode's
    recomputer (:mod:`usersignals.serving.raw`). Answers are keyed as
    :meth:`SignalRegistry.label` names them."""

    registry: SignalRegistry
    store: StateStore

    def refresh(self) -> None:
        """Catch up with the store, and with the served versions a cut-over set there."""

    def read(
        self, user_id: str, names: Sequence[str] | None, context: ReadContext
    ) -> UserSignals: ...

    def read_each(
        self, user_ids: Sequence[str], plan: ReadPlan, labels: Sequence[str] | None = None
    ) -> list[UserSignals]:
        """Many users, a context per signal; answers under ``labels`` (as the request named
        the signals: :meth:`SignalRegistry.labels`), else each signal's default label."""
        ...

    def read_body(self, user_id: str, query: Query, now_ms: int) -> bytes | None:
        """``read``'s answer (with ``query.at(now_ms)``) as its JSON body, written without
        building it (the GET route's path), or ``None``: answer with ``read``."""
        ...


def serve_stored_versions(registry: SignalRegistry, store: StateStore) -> None:
    """Serve by default the versions a cut-over recorded in the store, and refuse the ones
    it retired whose grace period is over (their state is dropped user by user)."""
    table = load_versions(store)
    registry.serve(table.served)
    expired = table.expired(time.time_ns() // 1_000_000)
    registry.retire(
        {key: at for key, at in table.retired.items() if key in expired},
        {key: at for key, at in table.retired.items() if key not in expired},
    )


def plan_of(
    registry: SignalRegistry, names: Sequence[str] | None, context: ReadContext
) -> list[tuple[Signal, ReadContext]]:
    """The named signals (all of them without names), each read with ``context``."""
    signals = [registry.get(name) for name in names] if names else list(registry)
    return [(signal, context) for signal in signals]


class SignalReader:
    def __init__(
        self,
        registry: SignalRegistry,
        store: StateStore,
        cache_bytes: int = 256 << 20,
        contain_failures: bool = True,
    ) -> None:
        """``contain_failures=False``: a user-defined read's failure raises, unanswered
        (the testing helpers, where the author wants its traceback)."""
        self.registry = registry
        self.store = store
        self.cache = DecodedStateCache(min_bytes=512, max_bytes=cache_bytes)
        # Native signals are read by the core straight from the stored bytes.
        self.native = NativeSignals(registry.computed)
        # The signals whose reads run their author's code: contained unless told otherwise.
        self._python = frozenset(s.key for s in registry.computed) - frozenset(self.native.keys)
        self._contained = self._python if contain_failures else frozenset()
        # The GET route's bodies (read_body): the same plans, and each query prepared once.
        self._plans = NativePlans([plan_json(signal) for signal in self.native.signals])
        self._plan_index = {signal.key: i for i, signal in enumerate(self.native.signals)}
        self._bodies: dict[int, tuple[Query, BodyQuery | None]] = {}
        serve_stored_versions(registry, store)

    def refresh(self) -> None:
        """Catch up with the store, and with the served versions a cut-over set there."""
        self.store.refresh()
        serve_stored_versions(self.registry, self.store)

    def read(self, user_id: str, names: Sequence[str] | None, context: ReadContext) -> UserSignals:
        return self.read_many([user_id], names, context)[0]

    def read_many(
        self, user_ids: Sequence[str], names: Sequence[str] | None, context: ReadContext
    ) -> list[UserSignals]:
        """Many users, one context, one batched store read."""
        plan = plan_of(self.registry, names, context)
        labels = self.registry.labels(names or None, [signal for signal, _ in plan])
        return self.read_each(user_ids, plan, labels)

    def read_each(
        self, user_ids: Sequence[str], plan: ReadPlan, labels: Sequence[str] | None = None
    ) -> list[UserSignals]:
        """Many users, a context per signal, one batched store read."""
        named = labels or [self.registry.label(signal) for signal, _ in plan]
        keys = [user_key(user_id) for user_id in user_ids]
        stored = self.store.get_many(keys)
        out = []
        for user_id, key, raw in zip(user_ids, keys, stored, strict=True):
            record = decode_record(key, raw) if raw else None
            try:
                answers = {
                    label: self._read(s, record, c, key)
                    for label, (s, c) in zip(named, plan, strict=True)
                }
            except AsOfError as exc:  # of many users, the one to look at (or leave out)
                raise exc.for_user(user_id) from None
            out.append(UserSignals(user_id, answers))
        return out

    def read_body(self, user_id: str, query: Query, now_ms: int) -> bytes | None:
        """The core writes the body when every signal asked is native, in one call from the
        user's stored record (``read_record_body``); its JSON equals ``read``'s, encoded."""
        prepared = self._body_query(query)
        if prepared is None:
            return None
        raw = self.store.get_many([user_key(user_id)])[0]
        out = read_record_body(self._plans, prepared, _encode(user_id), raw or None, now_ms)
        if out is None or isinstance(out, bytes):
            return out
        slot, (view_ms, earliest_ms, why) = out
        signal = query.signals[slot]
        parameter = query.context.refused_parameter(signal.aggregate.context_parameters())
        raise AsOfError(signal.name, view_ms, earliest_ms, why, parameter, user_id)

    def _body_query(self, query: Query) -> BodyQuery | None:
        """``query`` as the core keeps it between requests (``None``: a signal asked is not
        native); made once per query, whose context is the same but for the clock."""
        cached = self._bodies.get(id(query))
        if cached is not None and cached[0] is query:  # the query is held: its id is its own
            return cached[1]
        plans = [self._plan_index.get(signal.key) for signal in query.signals]
        prepared = None
        if None not in plans:
            c = query.context
            slots = zip(plans, query.heads, query.tails, query.signals, strict=True)
            prepared = BodyQuery(
                [(cast(int, plan), head, tail, signal.key) for plan, head, tail, signal in slots],
                (c.as_of_ms, 0, c.until_ms, c.window_ms, c.since_ms),
                (c.actions, c.surfaces, c.exclude, c.dedupe, c.limit),  # as NativeSignals reads
            )
        if len(self._bodies) >= MAX_QUERIES:
            self._bodies.clear()
        self._bodies[id(query)] = (query, prepared)
        return prepared

    def _read(
        self, signal: Signal, record: UserRecord | None, context: ReadContext, key: bytes
    ) -> SignalResult:
        if signal.key not in self._contained:
            return result_of(signal, self._uncontained(signal, record, context, key), context)
        # A user-defined aggregation's own code: its failure fails its answer, not the others.
        try:
            answer = self.answer(signal, record, context, key)
            _encode(answer.value)  # what the response's encoder will meet
        except UserSignalsError:  # ours: a refused as_of, a state no codec reads...
            raise
        except Exception as exc:
            logger.warning(
                "signal %s failed to read user %r: %s: %s",
                signal.key, user_of(key), type(exc).__name__, exc,
            )  # fmt: skip
            failed = result_of(signal, ReadOut(None, None), context)
            failed.error = SIGNAL_FAILED
            return failed
        return result_of(signal, answer, context)

    def _uncontained(
        self, signal: Signal, record: UserRecord | None, context: ReadContext, key: bytes
    ) -> ReadOut:
        """The answer, where a user-defined read's failure is raised (the testing helpers,
        ``signals preview``): as a :class:`SignalReadError` naming it, from its own error."""
        if signal.key not in self._python:
            return self.answer(signal, record, context, key)
        try:
            return self.answer(signal, record, context, key)
        except UserSignalsError:
            raise
        except Exception as exc:
            at = context.as_of_ms if context.as_of_ms is not None else context.now_ms
            detail = f"{type(exc).__name__}: {exc}"
            raise SignalReadError(signal.key, user_of(key), at, detail) from exc

    def answer(
        self, signal: Signal, record: UserRecord | None, context: ReadContext, key: bytes
    ) -> ReadOut:
        """One signal's answer from a user's decoded record (``None``: the user has none),
        without the freshness a served result adds: what a training set reads."""
        raw = record.states.get(signal.key) if record is not None else None
        answer = self.native.read(signal, raw, context, key)
        if answer is None:
            return _check_answer(signal, read_answer(signal, record, context, key, self.cache))
        return answer

    def is_native(self, signal: Signal) -> bool:
        """Whether ``signal`` is read by the core: else by its Python runtime (a
        user-defined aggregation's own code, whose failures are the author's)."""
        return signal.key not in self._python


def read_answer(
    signal: Signal,
    record: UserRecord | None,
    context: ReadContext,
    key: bytes = b"",
    cache: DecodedStateCache | None = None,
) -> ReadOut:
    """A signal's answer by its Python runtime (the reference path)."""
    runtime = signal.compiled.runtime
    raw = record.states.get(signal.key) if record is not None else None
    state = None
    if raw is not None:
        state = cache.get(key, signal.key, raw) if cache is not None else None
        if state is None:
            state = runtime.decode(raw)
            if cache is not None:
                cache.put(key, signal.key, raw, state)
    try:
        return runtime.read(state, context)
    except AsOfError as exc:
        parameter = context.refused_parameter(signal.aggregate.context_parameters())
        raise exc.for_signal(signal.name, parameter) from None


def _check_answer(signal: Signal, answer: object) -> ReadOut:
    """``answer`` if it is what a read must return; a user-defined read's mistake (the value
    alone, the newest time as text or a datetime) would otherwise fail later, in the
    freshness the reader adds, where nothing contains it."""
    if isinstance(answer, ReadOut) and _is_time(answer.newest_ms):
        return answer
    raise TypeError(
        f"{signal.key}: read() must return ReadOut(value, newest_ms), newest_ms the newest "
        f"event's time in ms (an int, 1970 to 9999) or None; it returned {answer!r}"
    )


def _is_time(ms: object) -> bool:
    """None, or ms since the epoch within the years a context names (the freshness shown
    with the answer is written as a date)."""
    if ms is None:
        return True
    return isinstance(ms, int) and not isinstance(ms, bool) and 0 <= ms <= MAX_TIME_MS


def result_of(signal: Signal, answer: ReadOut, context: ReadContext) -> SignalResult:
    """A signal's answer as served, with its freshness and the ignored context parameters."""
    newest = answer.newest_ms
    given = context.given()
    ignored = sorted(given - signal.aggregate.context_parameters()) if given else []
    return SignalResult(
        name=signal.name,
        version=signal.version,
        kind=signal.aggregate.kind,
        value=answer.value,
        newest_event_ms=newest,
        newest_event_time=_iso(newest),
        age_ms=None if newest is None else max(0, context.now_ms - newest),
        ignored=ignored,
    )


def _iso(ms: int | None) -> str | None:
    return None if ms is None else iso_utc(ms)
