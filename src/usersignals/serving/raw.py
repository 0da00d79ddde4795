"""Raw mode: answer by recomputing every signal from the user's stored raw events.

This is how the original system answered before stateful aggregation, kept here only to
measure what stateful aggregation buys (``bench/serving.py``). It needs the processor to run
with ``processing.keep_raw_events = true``. It is a :class:`~usersignals.serving.reader.Reader`
like the stateful one, so the HTTP handlers do not know which mode they serve.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import msgspec

from usersignals.aggregations.context import ReadContext
from usersignals.enrich.sources import TableSource
from usersignals.errors import ConfigurationError, StoreError
from usersignals.events.model import Event
from usersignals.serving.reader import (
    ReadPlan,
    SignalResult,
    UserSignals,
    plan_of,
    result_of,
    serve_stored_versions,
)
from usersignals.signals.definition import Signal
from usersignals.signals.registry import SignalRegistry
from usersignals.state.keys import RAW_EVENTS_TABLE, raw_events_prefix
from usersignals.state.store import StateStore

if TYPE_CHECKING:
    from usersignals.serving.queries import Query

_decoder = msgspec.msgpack.Decoder(Event)


def check_raw_events(registry: SignalRegistry, store: StateStore) -> None:
    """Refuse raw mode over a store that keeps no raw events, in one line (``serve`` checks
    before its workers start: each failed on it, in a loop of tracebacks)."""
    try:
        RawRecomputer(registry, store)
    except StoreError as exc:
        raise ConfigurationError(
            f"serve --mode raw recomputes from the raw events, and the store has none ({exc}):"
            " run the processor with processing.keep_raw_events = true "
            "(USERSIGNALS_PROCESSING__KEEP_RAW_EVENTS=true) first"
        ) from exc


class RawRecomputer:
    def __init__(self, registry: SignalRegistry, store: StateStore) -> None:
        self.registry = registry
        self.store = store
        self._raw = store.table(RAW_EVENTS_TABLE)
        self._sources = {
            lookup.name: TableSource(lookup.name, store.table(lookup.name))
            for signal in registry
            for lookup in signal.lookups
        }
        serve_stored_versions(registry, store)

    def refresh(self) -> None:
        """Catch up with the store, and with the served versions a cut-over set there."""
        self.store.refresh()
        serve_stored_versions(self.registry, self.store)

    def read(self, user_id: str, names: Sequence[str] | None, context: ReadContext) -> UserSignals:
        plan = plan_of(self.registry, names, context)
        labels = self.registry.labels(names or None, [signal for signal, _ in plan])
        return self.read_each([user_id], plan, labels)[0]

    def read_body(self, user_id: str, query: Query, now_ms: int) -> bytes | None:
        """Always ``None``: raw mode recomputes on the object path."""
        return None

    def read_each(
        self, user_ids: Sequence[str], plan: ReadPlan, labels: Sequence[str] | None = None
    ) -> list[UserSignals]:
        """Each user's events read once, then every signal recomputed with its context."""
        named = labels or [self.registry.label(signal) for signal, _ in plan]
        out = []
        for user_id in user_ids:
            scan = self._raw.scan(raw_events_prefix(user_id))
            events = [_decoder.decode(value) for _, value in scan]
            answers = {
                label: self._recompute(s, events, c)
                for label, (s, c) in zip(named, plan, strict=True)
            }
            out.append(UserSignals(user_id, answers))
        return out

    def _recompute(self, signal: Signal, events: list[Event], context: ReadContext) -> SignalResult:
        compiled = signal.compiled
        lookups = signal.lookups
        records = {
            lookup.name: self._sources[lookup.name].fetch(
                list({str(getattr(event, lookup.key)) for event in events})
            )
            for lookup in lookups
        }
        rows = [
            (
                event,
                tuple(
                    records[lookup.name].get(str(getattr(event, lookup.key)), {})
                    for lookup in lookups
                ),
            )
            for event in events
        ]
        if compiled.accepts is not None:
            rows = [row for row in rows if compiled.accepts(row)]
        state = compiled.runtime.apply(None, rows).state if rows else None
        return result_of(signal, compiled.runtime.read(state, context), context)
