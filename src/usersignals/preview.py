"""``usersignals signals preview``: a module's signals over a sample of events, in memory.

A signal author sees what a change does before it is deployed: the events of an archive as
backfill reads it (a JSONL or Parquet file, a directory or a glob; bad ones counted, not
fatal) go through the real engine into a memory store, and each user's answers are read
back as of the newest event, with an optional request context.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from usersignals.aggregations.context import ReadContext
from usersignals.enrich.tables import load_table
from usersignals.errors import ConfigurationError, SignalReadError
from usersignals.events.decode import EventDecoder
from usersignals.events.model import Event
from usersignals.ingest.archive import EventArchive
from usersignals.serving.reader import SignalResult
from usersignals.signals.registry import SignalRegistry
from usersignals.state.memory import MemoryStore
from usersignals.state.store import KeyValueTable
from usersignals.testing import Answers, as_served, run_signals


@dataclass
class Preview:
    """Each shown user's answers, and what was read to get them."""

    users: dict[str, dict[str, SignalResult]]
    events: int
    bad: dict[str, int] = field(default_factory=dict)


def preview(
    module: str,
    events_path: Path,
    tables: Mapping[str, Path],
    users: Sequence[str] = (),
    context: Mapping[str, str] | None = None,
    max_events: int = 100_000,
    top_users: int = 5,
) -> Preview:
    """Run ``module``'s signals over the first ``max_events`` events of ``events_path``.

    Shows ``users`` when given, else the ``top_users`` users with the most events.
    """
    ReadContext.parse(dict(context or {}), now_ms=0)  # a bad parameter fails before any work
    registry = SignalRegistry.from_module(module)
    events, bad = _read_events(events_path, max_events)
    store = MemoryStore()
    busiest = Counter(event.user_id for event in events).most_common(top_users)
    shown = list(users) or [user for user, _ in busiest]
    with_events = {event.user_id for event in events}
    try:
        loaded = _load_tables(registry, tables, store)
        # Only the users shown are read: another's answer may be one the API refuses (a 422
        # at this as_of), which would fail the whole preview.
        answers = run_signals(
            list(registry),
            events,
            tables=loaded,
            context=context,
            read_users=[user for user in shown if user in with_events],
        )
    finally:
        store.close()
    results = {
        user: {name: _servable(registry, user, name, answers) for name in registry.names}
        if user in answers
        else {}
        for user in shown
    }
    return Preview(results, len(events), bad)


def _servable(registry: SignalRegistry, user: str, name: str, answers: Answers) -> SignalResult:
    """``user``'s answer of ``name``, refused as the read's failure (one line, naming the
    signal and the user) when the API could not serve it: not JSON, say."""
    result = answers.result(user, name)
    try:
        as_served(name, result.value)
    except TypeError as exc:
        key = registry.get(name).key
        raise SignalReadError(key, user, answers.at_ms, str(exc)) from exc
    return result


def _read_events(path: Path, max_events: int) -> tuple[list[Event], dict[str, int]]:
    decoder = EventDecoder()
    events: list[Event] = []
    bad: Counter[str] = Counter()
    for block in EventArchive(path).blocks():
        room = max_events - len(events)
        result = decoder.decode_block(block.lines[:room], block.positions[:room])
        events += result.events
        bad.update(item.reason for item in result.bad + block.bad)
        if len(events) >= max_events:
            break
    return events, dict(bad)


def _load_tables(
    registry: SignalRegistry, tables: Mapping[str, Path], store: MemoryStore
) -> dict[str, KeyValueTable]:
    keys = {lookup.name: lookup.key for signal in registry.computed for lookup in signal.lookups}
    missing = sorted(set(keys) - set(tables))
    if missing:
        raise ConfigurationError(
            f"the signals look up {', '.join(missing)}: give the records with "
            f"--table {missing[0]}=FILE (.jsonl, .csv or .parquet)"
        )
    loaded: dict[str, KeyValueTable] = {}
    for name, key in keys.items():
        loaded[name] = store.table(name)
        load_table(loaded[name], tables[name], key)
    return loaded


def parse_pairs(pairs: Sequence[str], option: str) -> dict[str, str]:
    """``["window=1h", "limit=5"]`` → ``{"window": "1h", "limit": "5"}``."""
    parsed: dict[str, str] = {}
    for pair in pairs:
        name, equals, value = pair.partition("=")
        if not equals or not name:
            raise ConfigurationError(f"{option} takes NAME=VALUE, not {pair!r}")
        parsed[name.strip()] = value.strip()
    return parsed
