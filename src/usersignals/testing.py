"""Test a signal in a few lines: events in, every user's answers out, all in memory.

In the spirit of Bytewax's ``TestingSource`` / ``run_main``::

    from usersignals.testing import assert_signal, event, run_signals

    answers = run_signals([clicks], [event("u1", "i1", "click", ts=now)])
    assert answers["u1"]["clicks"] == {"total": 1, "by": {"home": 1}}
    assert_signal(clicks, [event("u1", "i1", "click", ts=now)], {"total": 1, "by": {"home": 1}})

The events go through the real engine (filters, the Materializer, aggregations, the record
codec) into a :class:`MemoryStore`, and are read back by the real reader: only the store is
in memory. Unless told otherwise, answers are read as of the newest event's time, so a test
gives the same result whenever it runs. An event the service would dead-letter (a time in
seconds, an empty id: :meth:`EventDecoder.check`'s rules, with the default policy) raises
:class:`InvalidEventError`, so a test cannot pass on events production never applies.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

import msgspec

from usersignals.aggregations.context import ReadContext
from usersignals.enrich.materializer import Materializer
from usersignals.enrich.sources import LookupSource, TableSource, encode_table_record
from usersignals.errors import ConfigurationError, InvalidEventError
from usersignals.events.decode import EventDecoder, EventPolicy
from usersignals.events.model import AttrValue, Event, Position
from usersignals.processing.batch import BatchReport, MicroBatch
from usersignals.processing.engine import Engine
from usersignals.serving.reader import SignalReader, SignalResult
from usersignals.serving.schemas import ContextValue, context_strings
from usersignals.signals.definition import Signal
from usersignals.signals.registry import SignalRegistry
from usersignals.state.memory import MemoryStore
from usersignals.state.store import KeyValueTable

__all__ = ["Answers", "MemoryStore", "assert_signal", "event", "run_signals"]

_PARTITION = "testing"
_json_encode = msgspec.json.Encoder().encode
_json_decode = msgspec.json.Decoder().decode
#: The prefix of the ids ``event()`` makes.
_MADE = "test:"

#: Records of an enrichment table by key: ``{"i1": {"category": "cats"}}``.
Table = Mapping[str, Mapping[str, Any]]


def event(
    user_id: str,
    item_id: str,
    action: str,
    ts: int | datetime,
    surface: str = "home",
    attrs: Mapping[str, AttrValue] | None = None,
    event_id: str | None = None,
) -> Event:
    """An engagement event; ``ts`` in ms since the epoch or a time-zone-aware datetime."""
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            raise ConfigurationError(f"event time {ts!r} has no time zone; use tz=UTC")
        ts = round(ts.timestamp() * 1000)
    if isinstance(ts, bool) or not isinstance(ts, int):
        raise ConfigurationError(
            f"event time ts={ts!r}: give whole milliseconds since the epoch (an int) or an "
            "aware datetime"
        )
    return Event(
        event_id=event_id
        if event_id is not None
        else _event_id(user_id, item_id, action, surface, ts),
        user_id=user_id,
        item_id=item_id,
        action=action,
        surface=surface,
        ts=ts,
        attrs=dict(attrs) if attrs is not None else None,
    )


def _event_id(user_id: str, item_id: str, action: str, surface: str, ts: int) -> str:
    """A digest of the event's content (bounded in length whatever the ids): an answer that
    orders equal times by the id's CRC depends on the test alone. Events of equal content
    are told apart by ``run_signals``, by their order in its call (:func:`_numbered`)."""
    content = json.dumps([user_id, item_id, action, surface, ts]).encode()
    return f"{_MADE}{hashlib.sha256(content).hexdigest()[:24]}"


def _numbered(events: Sequence[Event]) -> list[Event]:
    """``events`` with the ids ``event()`` made numbered among equal ones (``#2``, ``#3``),
    in the order of this call: two events of equal content stay two events."""
    seen: Counter[str] = Counter()
    out = []
    for one in events:
        if one.event_id.startswith(_MADE):
            seen[one.event_id] += 1
            if seen[one.event_id] > 1:
                one = msgspec.structs.replace(one, event_id=f"{one.event_id}#{seen[one.event_id]}")
        out.append(one)
    return out


class Answers(Mapping[str, Mapping[str, Any]]):
    """Every user's answers: ``answers[user][signal]`` is the signal's value.

    ``answers.result(user, signal)`` is the whole result as served (freshness, ignored
    context parameters); ``answers.report`` is what the engine did with the events.
    """

    def __init__(
        self,
        results: Mapping[str, Mapping[str, SignalResult]],
        report: BatchReport,
        at_ms: int = 0,
    ):
        self._results = results
        self.report = report
        #: The time the answers were read as of (the context's ``as_of``, else its now).
        self.at_ms = at_ms

    def __getitem__(self, user_id: str) -> Mapping[str, Any]:
        return {
            name: as_served(name, result.value) for name, result in self._results[user_id].items()
        }

    def __contains__(self, user_id: object) -> bool:
        return user_id in self._results  # without encoding the user's answers

    def __iter__(self) -> Iterator[str]:
        return iter(self._results)

    def __len__(self) -> int:
        return len(self._results)

    def result(self, user_id: str, signal: str) -> SignalResult:
        return self._results[user_id][signal]


def as_served(name: str, value: Any) -> Any:
    """``value`` as the API serves it: through its JSON encoder (integer keys become
    strings; a value the encoder refuses, a numpy scalar say, fails here as in the API)."""
    try:
        return _json_decode(_json_encode(value))
    except TypeError as exc:
        raise TypeError(f"signal {name!r} answered a value the API cannot serve: {exc}") from exc


def _check(events: Sequence[Event]) -> None:
    """Refuse an event the service would dead-letter, as the HTTP and Kafka paths judge it.
    Its one rule on the clock, no more than a day ahead of now, can only let a refused test
    pass later, never refuse one that passed: events grow older, not younger."""
    checker = EventDecoder(EventPolicy())
    now_ms = time.time_ns() // 1_000_000
    for one in events:
        problem = checker.check(one, now_ms)
        if problem is not None:
            reason, detail = problem
            shown = f"event {one.event_id!r} of user {one.user_id!r}"
            raise InvalidEventError(reason, f"{detail} ({shown})")


def _check_batch_size(batch_size: object) -> None:
    """A micro-batch size is a whole number of events, at least 1 (``None``: one batch).
    A negative one made no batch at all, and every user was answered as having no events:
    a test of an empty answer passed on events never applied."""
    if batch_size is None:
        return
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigurationError(
            f"batch_size={batch_size!r}: give a whole number of events, at least 1 "
            "(or None: one batch)"
        )


def run_signals(
    signals: Sequence[Signal],
    events: Sequence[Event],
    tables: Mapping[str, Table | KeyValueTable] | None = None,
    context: ReadContext | Mapping[str, ContextValue] | None = None,
    batch_size: int | None = None,
    users: Sequence[str] = (),
    read_users: Sequence[str] | None = None,
) -> Answers:
    """Process ``events`` for ``signals`` in memory and read back every user's answers.

    ``tables`` holds the enrichment tables the signals' lookups name, by source name: the
    records by key, or a table already loaded (``usersignals.enrich.tables.load_table``).
    ``context`` is the API's parameters (``{"window": "1h"}``, ``{"limit": 5, "actions":
    ["save"]}``), read as of the newest event unless they set ``as_of``; or a
    :class:`ReadContext`, read as it is: its ``now_ms`` is the wall clock unless set, as in
    the API (so give ``now_ms`` or ``as_of_ms`` for events of another day). ``batch_size`` splits
    the events into micro-batches (default: one), as a processor would. ``users`` are
    answered too, events or not (as the API answers a user it has none of). ``read_users``,
    when given, are the only users read (every event is applied all the same): a view one
    of the others cannot answer (a 422 of the API) then fails nothing.
    """
    _check_batch_size(batch_size)
    if read_users is not None and users:
        raise ConfigurationError(
            "give users (answered besides those with events) or read_users (the only ones "
            "read), not both"
        )
    events = _numbered(events)
    _check(events)
    registry = SignalRegistry(list(signals))
    store = MemoryStore()
    try:
        # A signal's own failure raises here (SignalFailedError), where the service would
        # dead-letter the event: a test shows it, with the signal's traceback.
        materializer = _materializer(registry, store, tables or {})
        engine = Engine(registry, store, materializer, contain_signal_failures=False)
        report = BatchReport()
        size = batch_size or max(len(events), 1)
        for start in range(0, len(events), size):
            chunk = list(events[start : start + size])
            positions = [Position(_PARTITION, start + i + 1) for i in range(len(chunk))]
            report.add(engine.process(MicroBatch(chunk, positions)))
        if read_users is None:
            users = list(dict.fromkeys([*(e.user_id for e in events), *users]))
        else:
            users = list(dict.fromkeys(read_users))
        newest = max((e.ts for e in events), default=0)
        read = _context(context, newest)
        # Every version, shadow ones too (by name@version), as a request naming them reads.
        every = [registry.label(signal) for signal in registry.computed]
        reader = SignalReader(registry, store, contain_failures=False)
        answers = reader.read_many(users, every, read)
    finally:
        store.close()
    at = read.as_of_ms if read.as_of_ms is not None else read.now_ms
    return Answers({answer.user_id: answer.signals for answer in answers}, report, at)


def assert_signal(
    signal: Signal,
    events: Sequence[Event],
    expected: Any,
    user_id: str | None = None,
    tables: Mapping[str, Table | KeyValueTable] | None = None,
    context: ReadContext | Mapping[str, ContextValue] | None = None,
) -> None:
    """Assert that ``signal``'s answer for ``user_id`` is ``expected``.

    ``user_id`` may be left out when the events are all one user's. ``expected`` is compared
    with ``==`` (so ``pytest.approx`` works for numbers); a mismatch shows both as JSON.
    """
    users = list(dict.fromkeys(e.user_id for e in events))
    if user_id is None:
        if len(users) != 1:
            raise ConfigurationError(
                f"the events are of {len(users)} users ({', '.join(users[:5])}); "
                "say which with user_id="
            )
        user_id = users[0]
    answers = run_signals([signal], events, tables=tables, context=context, users=[user_id])
    label = SignalRegistry([signal]).label(signal)  # name@version for a shadow version
    got = answers[user_id][label] if user_id in answers else None
    if not got == expected:
        raise AssertionError(
            f"signal {signal.name!r} for user {user_id!r}:\n"
            f"  expected: {_show(expected)}\n"
            f"  got:      {_show(got)}"
        )


def _materializer(
    registry: SignalRegistry, store: MemoryStore, tables: Mapping[str, Table | KeyValueTable]
) -> Materializer | None:
    needed = registry.lookup_sources
    missing = [name for name in needed if name not in tables]
    if missing:
        raise ConfigurationError(
            f"the signals look up {', '.join(missing)}: pass its records as "
            f"tables={{{missing[0]!r}: {{key: {{field: value}}}}}}"
        )
    if not needed:
        return None
    sources: dict[str, LookupSource] = {}
    for name in needed:
        given = tables[name]
        if isinstance(given, KeyValueTable):
            sources[name] = TableSource(name, given)
            continue
        if not isinstance(given, Mapping):
            raise ConfigurationError(
                f"table {name!r} must be its records by key, {{key: {{field: value}}}}, "
                f"not a {type(given).__name__}"
            )
        table = store.table(name)
        table.write({key.encode(): encode_table_record(record) for key, record in given.items()})
        sources[name] = TableSource(name, table)
    return Materializer(sources)


def _context(context: ReadContext | Mapping[str, ContextValue] | None, newest: int) -> ReadContext:
    if isinstance(context, ReadContext):
        return context
    # The values a client call or a batch request's JSON takes (``{"limit": 5}``), as the
    # API reads them: the parser reads strings. As the client does, a tuple or a set is a
    # list, and a parameter given as None is left out.
    given: dict[str, Any] = {}
    for name, value in (context or {}).items():
        if isinstance(value, tuple | set | frozenset):
            value = sorted(value) if isinstance(value, set | frozenset) else list(value)
        if value is not None:
            given[name] = value
    return ReadContext.parse(context_strings(given), now_ms=newest)


def _show(value: Any) -> str:
    try:
        return json.dumps(value, sort_keys=True, default=repr)
    except (TypeError, ValueError):
        return repr(value)
