"""The whole micro-batch in the core, for a registry whose signals all run natively.

The engine's per-user steps — decode each record, drop what its progress shows as applied
and the repeats of applied event ids, order by event time, apply, forget stale versions,
encode — are the Python reference model (``processing/engine.py``); here the core does them
in two calls per batch (``usersignals._core.BatchSession``), with the Materializer's lookups
in between. Python keeps the edges: grouping the events into columns, the store, the
lookups, and migrating states an older release wrote in the Python codec.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from usersignals._core import BatchSession, CoreError, CoreStateError, label_rows
from usersignals.enrich.sources import Record
from usersignals.errors import NativeCoreError, StateCodecError
from usersignals.events.model import Event
from usersignals.processing.batch import NATIVE_TIMING_KEY, BatchReport, MicroBatch
from usersignals.processing.dedupe import horizon_hours
from usersignals.processing.native import NativeSignals
from usersignals.processing.read_ahead import ReadRecords
from usersignals.state.keys import USER_PREFIX, user_key

if TYPE_CHECKING:
    from usersignals._core import LabelColumn, PlannedLabels, TextBuffer


class Lookups(Protocol):
    """The engine's lookups: the live events in (and, per source, their distinct keys when
    read already), per source the records of their keys out."""

    def __call__(
        self,
        live: list[Event],
        keys: Mapping[str, list[str]] | None = None,
        *,
        missing: dict[str, int] | None = None,
    ) -> dict[str, dict[str, Record]]: ...


class NativeBatches:
    """Runs micro-batches through the core's pipeline; one instance per engine."""

    def __init__(self, native: NativeSignals, horizon_ms: int | None, counts_misses: bool) -> None:
        self._native = native
        self._horizon_hours = horizon_hours(horizon_ms) if horizon_ms else None
        self._counts_misses = counts_misses

    def process(
        self,
        batch: MicroBatch,
        read: ReadRecords,
        lookups: Lookups,
        versions: tuple[set[str], set[str], set[str]],
        report: BatchReport,
        rewinds: bool = False,
    ) -> dict[bytes, bytes]:
        """The records to write for ``batch`` (counts go into ``report``); ``read`` reads the
        users' records; ``versions`` is (declared keys, expired keys, signal names), for
        dropping stale versions; ``rewinds``: see ``Engine.process``."""
        events = batch.events
        try:
            # The core reads the events and positions itself, and asks for the records.
            session, keys = BatchSession.select(
                self._native.plans,
                events,
                batch.positions,
                USER_PREFIX,
                read,
                self._horizon_hours,
                rewinds,
            )
            report.duplicates, report.repeats, report.rewound = session.dropped()
            self._migrate(session, keys)
            live = session.live(events)
            # The lookup keys read once, for the lookups and the columns alike.
            joined, distinct = self._native.join_keys(live) if live else (None, None)
            missing = report.missing_enrichment if self._counts_misses else None
            records = lookups(live, distinct, missing=missing) if live else {}
            columns = self._native.live_columns(live, records, missing, joined)
            started = time.perf_counter()
            puts, (applied, expired, newest) = session.apply(columns, *versions)
            report.signal_seconds[NATIVE_TIMING_KEY] = time.perf_counter() - started
        except CoreStateError as exc:
            user_index, plan, message = exc.args
            detail = f"{plan}: {message}" if plan else message
            raise StateCodecError(_batch_user_key(events, user_index), detail) from exc
        except CoreError as exc:
            raise NativeCoreError("batch", str(exc)) from exc
        if live:
            report.applied = dict(zip(self._native.keys, applied, strict=True))
            report.expired = dict(zip(self._native.keys, expired, strict=True))
            report.newest_event_ms = newest
        # In the keys' order, as the core hands them: the store's sort of them is one pass.
        return puts

    def label_rows(
        self,
        events: list[Event],
        lookups: Lookups,
        planned: PlannedLabels,
        columns: Sequence[LabelColumn],
    ) -> list[tuple[bytes, TextBuffer]] | None:
        """A training set's labels (``usersignals.offline.training``), computed and read in
        one core call: ``events`` are the plan's (``usersignals._core.plan_labels``) in its
        feeding order, which holds their times, event ids and label groups; ``columns`` as
        ``NativeSignals.label_columns`` gives them. The lookups run once, for all the
        events. Per column, the values' buffers (see ``usersignals._core.label_rows``);
        ``None`` when a label is for the object path."""
        records = lookups(events) if events else {}
        fields = self._native.live_columns(events, records)
        try:
            return label_rows(self._native.plans, planned, fields, self._horizon_hours, columns)
        except CoreError as exc:
            raise NativeCoreError("training", str(exc)) from exc

    def _migrate(self, session: BatchSession, keys: Sequence[bytes]) -> None:
        """States the Python codec wrote (before the native form existed), re-encoded."""
        for user_index, plan, value in session.foreign_states():
            session.set_migrated(
                user_index, plan, self._native.migrate(keys[user_index], value, plan)
            )


def _batch_user_key(events: Sequence[Event], index: int) -> bytes:
    """The key of the batch's ``index``-th distinct user, as the core numbers them (in order
    of first appearance); for naming a record the core refused."""
    return user_key(list(dict.fromkeys(event.user_id for event in events))[index])
