"""The processing engine: micro-batch → filter → materialize → aggregate → one write.

Per micro-batch:

1. group the events by user, and read every user's record with one ``get_many``;
2. drop the events the user's progress shows as already applied (offset ≤ the highest
   applied offset of their partition) — this is what makes a replay change nothing — and
   the repeats of an ``event_id`` applied within the dedupe horizon (every ingest path comes
   through here, so every path gets it);
3. for each lookup source, fetch the distinct keys that interested events carry, once;
4. per user: sort the new events by event time, and for each signal whose filter accepts
   some of them, decode its state, apply, encode;
5. write every changed record — states and progress together — in one atomic batch.

Because progress and states are written in the same atomic write, a crash between batches
leaves them consistent, and the consumer may commit its offsets once ``process`` returns.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import msgspec

from usersignals.aggregations.context import ReadContext
from usersignals.aggregations.rows import Row
from usersignals.enrich.materializer import LookupsAhead, Materializer
from usersignals.enrich.sources import Record
from usersignals.errors import ConfigurationError
from usersignals.events.model import BadEvent, Event, Position
from usersignals.processing.batch import NATIVE_TIMING_KEY, BatchReport, MicroBatch
from usersignals.processing.dedupe import EventIdDedupe, Seen
from usersignals.processing.large_records import LargeRecords
from usersignals.processing.native import NativeSignals
from usersignals.processing.native_batch import NativeBatches
from usersignals.processing.python_signals import SIGNAL_FAILED, apply_signal
from usersignals.processing.read_ahead import ReadAhead, ReadRecords, RecordReadAhead
from usersignals.signals.definition import CompiledSignal, Signal
from usersignals.signals.fields import (
    ATTR_PREFIX,
    BASE_FIELDS,
    TEXT_FIELDS,
    RowPredicate,
    attrs_reader,
)
from usersignals.signals.registry import SignalRegistry
from usersignals.state.cache import DecodedStateCache
from usersignals.state.codec import UserRecord, decode_record, encode_record
from usersignals.state.keys import RAW_EVENTS_TABLE, raw_event_key, raw_events_prefix, user_key
from usersignals.state.store import StateStore
from usersignals.state.versions import load_versions
from usersignals.values import SCALAR, FieldKind

if TYPE_CHECKING:
    from usersignals._core import PlannedLabels, TextBuffer

logger = logging.getLogger(__name__)

_MISSING: Record = {}
DEFAULT_DEDUPE_HORIZON_MS = 86_400_000
_raw_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()


#: A user with new events: their key, their stored record, and the indices of the events
#: (in event-time order) that the batch applies to them.
_Work = tuple[bytes, UserRecord, list[int]]


@dataclass
class _Tally:
    """What the per-user loop reads and counts across one batch."""

    joins: dict[tuple[str, ...], list[tuple[str, dict[str, Record], str]]]
    missing: dict[str, int]  # events whose lookup found no record, per source
    applied: dict[str, int]  # events applied, per signal key
    expired: dict[str, int]  # events older than the retention, per signal key
    rejected: list[BadEvent] = field(default_factory=list)  # events a signal failed on
    seconds: dict[str, float] = field(default_factory=dict)  # in each signal's code


class _Plan:
    """What the engine precomputes once per signal."""

    def __init__(self, compiled: CompiledSignal) -> None:
        signal = compiled.signal
        self.compiled = compiled
        self.key = compiled.key
        self.runtime = compiled.runtime
        self.accepts = compiled.accepts
        self.layout: tuple[str, ...] = tuple(lookup.name for lookup in signal.lookups)
        self.lookup_keys = {lookup.name: lookup.key for lookup in signal.lookups}
        where_fields = signal.where.fields() if signal.where is not None else set()
        # A filter on event fields alone can run before the lookups, so only the events a
        # signal wants are enriched for it; a filter on enriched fields needs them first.
        self.prefilter = all(
            name in BASE_FIELDS or name.startswith(ATTR_PREFIX) for name in where_fields
        )


class Engine:
    """Applies micro-batches of decoded events to per-user states in a store."""

    def __init__(
        self,
        registry: SignalRegistry,
        store: StateStore,
        materializer: Materializer | None = None,
        keep_raw_events: bool = False,
        dedupe_horizon_ms: int | None = DEFAULT_DEDUPE_HORIZON_MS,
        native_pipeline: bool = True,
        contain_signal_failures: bool = True,
    ) -> None:
        """``native_pipeline=False`` keeps every batch on the per-user Python steps (the
        reference model the core's pipeline is tested against) even when all signals are
        native. ``contain_signal_failures=False``: a user-defined aggregation that fails
        raises :class:`SignalFailedError` instead of dead-lettering the event (the testing
        helpers)."""
        self._contain = contain_signal_failures
        self.registry = registry
        self._dedupe = EventIdDedupe(dedupe_horizon_ms) if dedupe_horizon_ms else None
        self.store = store
        self.materializer = materializer
        # Raw events per user, only for answering by recomputation (the serving raw mode
        # that stateful aggregation is measured against); off by default.
        self._raw = store.table(RAW_EVENTS_TABLE) if keep_raw_events else None
        # Every declared version, shadow versions included (signals/registry.py).
        self._plans = [_Plan(signal.compiled) for signal in registry.computed]
        # The lookup sources the signals join, and how each is joined.
        self._sources = sorted({name for plan in self._plans for name in plan.layout})
        self._joins = {source: _SourceJoin.of(source, self._plans) for source in self._sources}
        # A source looked up only for the events its signals' filters accept has its misses
        # counted at the lookup, among those events; the joins count the others' misses.
        self._filtered_sources = frozenset(
            source for source, join in self._joins.items() if join.filters is not None
        )
        # The signals the native core runs, one call per batch (processing/native.py); the
        # others, user-defined aggregations included, stay on the per-user Python path.
        self._native = NativeSignals(registry.computed, self._filtered_sources)
        self._python_plans = [plan for plan in self._plans if plan.key not in self._native.keys]
        python_layouts = {plan.layout for plan in self._python_plans}
        self._native_counts_misses = bool(self._native.layouts - python_layouts)
        # When every signal is native (and raw events are not kept), the core runs the
        # whole batch: records, progress, dedupe, apply, encode (processing/native_batch.py).
        self._batches: NativeBatches | None = None
        if native_pipeline and self._native and not self._python_plans and self._raw is None:
            self._batches = NativeBatches(
                self._native, dedupe_horizon_ms, self._native_counts_misses
            )
        # The processor's budget for busy users' decoded states (about what 2,000 large users
        # took when the cache counted entries); serving workers set their own.
        self._hot = DecodedStateCache(max_bytes=256 << 20)
        #: The fetch thread's reads of the next block's records (processing/read_ahead.py).
        self.read_ahead = RecordReadAhead(store)
        #: Records written over ``processing.large_record_bytes``, counted and named.
        self.large_records = LargeRecords()
        self._keys = {plan.key for plan in self._plans}
        self._names = {signal.name for signal in registry.computed}
        #: Retired versions past their grace period (state/versions.py), read per batch.
        self._expired: set[str] = set()
        self._require_lookups(registry, materializer)

    def _require_lookups(self, registry: SignalRegistry, materializer: Materializer | None) -> None:
        """The Materializer's promise to serve the lookup sources with the fields' kinds."""
        if not self._sources:
            return
        if materializer is None:
            raise ConfigurationError(
                f"signals need lookup sources {', '.join(self._sources)} but no "
                "materializer was given"
            )
        materializer.require(self._sources)
        for source, kinds in enriched_field_kinds(registry).items():
            materializer.expect(source, kinds)

    def read_block_ahead(self, events: list[Event]) -> ReadAhead:
        """What the Kafka processor's fetch thread reads of its next block while this engine
        applies the block before: the users' records (:attr:`read_ahead`) and, where the
        core runs the batch, the lookup keys its events carry that the cache lacks
        (``Materializer.read_ahead``; the keys of a source whose signals all filter events
        first are left to the lookup: which it needs, only the filters tell)."""
        ahead = self.read_ahead.read(events)
        if self._batches is None or self.materializer is None or not events:
            return ahead
        keys = {
            source: _key_set(events, join.field_name)
            for source, join in self._joins.items()
            if join.filters is None
        }
        ahead.lookups = self.materializer.read_ahead(keys)
        return ahead

    def process(
        self,
        batch: MicroBatch,
        marks: Mapping[bytes, bytes] | None = None,
        on_rejected: Callable[[list[BadEvent]], None] | None = None,
        ahead: ReadAhead | None = None,
        rewinds: bool = False,
    ) -> BatchReport:
        """Apply ``batch``; ``marks`` (source read positions) are written atomically with it.

        ``on_rejected`` gets the events a signal's own code failed on (``report.rejected``)
        before anything is written: once the batch's progress is written they are never met
        again, so their dead letters must be out first. ``ahead``: its users' records as
        :attr:`read_ahead` read them on another thread (those not written since are used).
        ``rewinds``: the positions' offsets may go backwards (Kafka: a topic made again, a
        broker that lost its log), so an event at or below its user's progress is applied
        unless its id was met; off, the progress alone decides, as the spool's must (a
        deletion keeps the progress of the events acknowledged before it, with no ids)."""
        report = BatchReport(events=len(batch.events))
        if not batch.events:
            if marks:
                self._write(dict(marks))
            return report
        self._expired = load_versions(self.store).expired(time.time_ns() // 1_000_000)
        read = partial(self.read_ahead.get_many, ahead=ahead)
        if self._batches is not None:
            versions = (self._keys, self._expired, self._names)
            lookups = self._lookups
            if ahead is not None and ahead.lookups is not None:
                lookups = partial(self._lookups, ahead=ahead.lookups)
            puts = self._batches.process(batch, read, lookups, versions, report, rewinds)
        else:
            puts = self._process_per_user(batch, read, report, rewinds)
        report.users = len(puts)
        report.large_records, report.largest_record = self.large_records.check(puts)
        if report.rejected and on_rejected is not None:
            on_rejected(report.rejected)
        if marks:
            puts.update(marks)
        if puts:
            self._write(puts)
        return report

    def _write(self, puts: dict[bytes, bytes], deletes: Sequence[bytes] = ()) -> None:
        """Every write of users' records: what was read ahead of them is replaced by what was
        written, or stale after a failed attempt (which may have written some on a Redis
        Cluster)."""
        try:
            self.store.write(puts, deletes=deletes)
        except BaseException:
            self.read_ahead.failed(chain(puts, deletes))  # a set only while one is open
            raise
        self.read_ahead.written(puts, deletes)

    def label_rows(
        self,
        events: list[Event],
        planned: PlannedLabels,
        columns: Sequence[tuple[Signal, ReadContext]],
    ) -> list[tuple[bytes, TextBuffer]] | None:
        """A training set's labels computed and read by the core's pipeline in one call
        (see ``NativeBatches.label_rows``; ``events`` in the plan's feeding order), or
        ``None`` when a signal runs in Python or a label is for the object path: then the
        training set feeds the engine round by round. The store is not touched."""
        specs = self._native.label_columns(columns)
        if self._batches is None or specs is None:
            return None
        # Once, for every event of the shard: no later batch reads a cached record. (When a
        # label is left to the object path, the rounds that follow look the keys up again.)
        return self._batches.label_rows(
            events, partial(self._lookups, remember=False), planned, specs
        )

    def _process_per_user(
        self, batch: MicroBatch, read: ReadRecords, report: BatchReport, rewinds: bool
    ) -> dict[bytes, bytes]:
        """The per-user Python steps (the reference model of the native pipeline): the
        records to write, counts into ``report``."""
        work, puts_only_progress = self._select(batch, read, report, rewinds)
        puts = {key: encode_record(record) for key, record in puts_only_progress}
        if work:
            self._keep_raw(batch.events, work)
            self._apply_users(batch, work, puts, report)
        return puts

    def _keep_raw(self, events: list[Event], work: list[_Work]) -> None:
        """Store the new events as they came, when answering by recomputation is on."""
        if self._raw is None:
            return
        # Before the states: a crash in between re-writes the same raw keys on replay.
        self._raw.write(
            {
                raw_event_key(events[i].user_id, events[i].ts, events[i].event_id): (
                    _raw_encoder.encode(events[i])
                )
                for _, _, fresh in work
                for i in fresh
            }
        )

    def _apply_users(
        self, batch: MicroBatch, work: list[_Work], puts: dict[bytes, bytes], report: BatchReport
    ) -> None:
        """Enrich, then apply each user's new events to every signal; the records to write go
        into ``puts`` and the counts into ``report``."""
        events, positions = batch.events, batch.positions
        records = self._lookups(
            [events[i] for _, _, fresh in work for i in fresh], missing=report.missing_enrichment
        )
        applied = {plan.key: 0 for plan in self._plans}
        expired = {plan.key: 0 for plan in self._plans}
        joins = {
            plan.layout: [(name, records[name], plan.lookup_keys[name]) for name in plan.layout]
            for plan in self._plans
        }
        tally = _Tally(joins, report.missing_enrichment, applied, expired)
        native_states: list[list[bytes | None]] = []
        if self._native:
            missing_native = report.missing_enrichment if self._native_counts_misses else None
            started = time.perf_counter()
            native_states, native_applied, native_expired = self._native.apply(
                events, work, records, missing_native
            )
            tally.seconds[NATIVE_TIMING_KEY] = time.perf_counter() - started
            applied.update(native_applied)
            expired.update(native_expired)
        newest = 0
        for index, (key, record, fresh) in enumerate(work):
            user_events = [events[i] for i in fresh]
            if self._python_plans:
                self._apply_python(key, record.states, fresh, batch, tally)
            if native_states:
                self._native.place(record.states, native_states[index])
            _advance(record.progress, positions, fresh)
            newest = max(newest, user_events[-1].ts)
            self._drop_stale_versions(record.states)
            puts[key] = encode_record(record)
        report.applied = applied
        report.expired = expired
        report.newest_event_ms = newest
        report.signal_seconds = tally.seconds
        if tally.rejected:
            report.rejected += tally.rejected
            _log_failures(tally.rejected)

    def _apply_python(
        self, key: bytes, states: dict[str, Any], fresh: list[int], batch: MicroBatch, tally: _Tally
    ) -> None:
        """One user's events (``fresh``, indices into ``batch``) through the signals the
        native core does not run; the events a signal fails on go to ``tally.rejected``
        (processing/python_signals.py)."""
        user_events = [batch.events[i] for i in fresh]
        rows_by_layout: dict[tuple[str, ...], list[Row]] = {}
        for plan in self._python_plans:
            layout_rows = rows_by_layout.get(plan.layout)
            if layout_rows is None:
                layout_rows = rows_by_layout[plan.layout] = _join(
                    user_events, tally.joins[plan.layout], tally.missing, self._filtered_sources
                )
            accepts = plan.accepts
            rows = layout_rows if accepts is None else [row for row in layout_rows if accepts(row)]
            if not rows:
                continue
            started = time.perf_counter()
            raw_state = states.get(plan.key)
            state = self._hot.get(key, plan.key, raw_state)
            stored = None if raw_state is None else bytes(raw_state)
            step = apply_signal(plan.key, plan.runtime, stored, state, rows, self._contain)
            spent = time.perf_counter() - started
            tally.seconds[plan.key] = tally.seconds.get(plan.key, 0.0) + spent
            if step.failed:
                self._hot.discard(key, plan.key)
                failed = [(rows[i][0], why) for i, why in step.failed]
                tally.rejected += _rejected(plan.key, failed, fresh, batch)
            if step.encoded is not None:
                encoded = msgspec.Raw(step.encoded)
                self._hot.put(key, plan.key, encoded, step.state)
                states[plan.key] = encoded
            tally.applied[plan.key] += step.applied
            tally.expired[plan.key] += step.expired

    def _select(
        self, batch: MicroBatch, read: ReadRecords, report: BatchReport, rewinds: bool
    ) -> tuple[list[_Work], list[tuple[bytes, UserRecord]]]:
        """Each user's record and new events (by event time); and the users whose new events
        were all repeats of applied event ids (only their progress and fingerprints change)."""
        events, positions = batch.events, batch.positions
        by_user: dict[str, list[int]] = {}
        for index, event in enumerate(events):
            by_user.setdefault(event.user_id, []).append(index)
        users = list(by_user)
        keys = [user_key(user) for user in users]
        stored = read(keys)
        work: list[_Work] = []
        puts_only_progress: list[tuple[bytes, UserRecord]] = []
        for key, raw, user in zip(keys, stored, users, strict=True):
            record = decode_record(key, raw) if raw else UserRecord({}, {})
            fresh = _unapplied(by_user[user], positions, record.progress)
            if rewinds and len(fresh) < len(by_user[user]) and self._dedupe is not None:
                rewound = _rewound(self._dedupe, by_user[user], fresh, events, record.seen)
                report.rewound += len(rewound)
                fresh = sorted(fresh + rewound)  # arrival order, as the dedupe judges it
            report.duplicates += len(by_user[user]) - len(fresh)
            if fresh and self._dedupe is not None:
                admitted, record.seen = self._dedupe.admit(record.seen, events, fresh)
                report.repeats += len(fresh) - len(admitted)
                _advance(record.progress, positions, fresh)  # repeats are consumed too
                fresh = admitted
                if not fresh:
                    puts_only_progress.append((key, record))
            if fresh:
                fresh.sort(key=lambda i: events[i].ts)
                work.append((key, record, fresh))
        return work, puts_only_progress

    def _lookups(
        self,
        live: list[Event],
        keys: Mapping[str, list[str]] | None = None,
        remember: bool = True,
        ahead: LookupsAhead | None = None,
        missing: dict[str, int] | None = None,
    ) -> dict[str, dict[str, Record]]:
        """One batched lookup per source, of the distinct keys that the ``live`` events (the
        ones to apply) carry, where a signal interested in them reads the source; through
        the Materializer's cache unless not ``remember``. ``keys``: per source, the distinct
        keys of all the ``live`` events, read already (by the core's column reader, see
        ``NativeBatches``), for the sources whose signals do not filter first. ``ahead``:
        what :meth:`read_block_ahead` fetched of them. ``missing``: where the misses of the
        sources looked up for the events a filter accepts are counted (those events whose
        key found no record)."""
        records: dict[str, dict[str, Record]] = {}
        for source, join in self._joins.items():
            wanted: Iterable[str]
            distinct = False
            looked_for: list[str] | None = None  # a filtered source's keys, event by event
            if join.filters is not None:  # every signal filters on event fields first
                filters = join.filters
                candidates = [e for e in live if any(check((e, ())) for check in filters)]
                looked_for = _keys_of(candidates, join.field_name)
                wanted = set(looked_for) - {""}
            elif keys is not None and source in keys:
                wanted, distinct = keys[source], True  # in order of first appearance
            else:
                wanted = _key_set(live, join.field_name)
            if self.materializer is None:  # __init__ refuses this; kept for the type checker
                raise ConfigurationError(f"no materializer for lookup source {source!r}")
            found = records[source] = self.materializer.lookup(
                source, wanted, remember=remember, distinct=distinct, ahead=ahead
            )
            if looked_for is not None and missing is not None:
                misses = sum(1 for key in looked_for if key not in found)
                if misses:
                    missing[source] = missing.get(source, 0) + misses
        return records

    def delete_users(
        self,
        user_ids: Sequence[str],
        marks: Mapping[bytes, bytes] | None = None,
        applied_before: Mapping[str, int] | None = None,
    ) -> None:
        """Forget users: their record (states and progress) and any raw events.

        ``applied_before`` (read positions): keep only these as the users' progress, so
        events accepted before the deletion but read after it, from another source
        partition, count as applied and never bring the user back.
        """
        puts = dict(marks or {})
        deletes = [user_key(user) for user in user_ids]
        if applied_before:
            tombstone = encode_record(UserRecord(dict(applied_before), {}))
            puts.update(dict.fromkeys(deletes, tombstone))
            deletes = []
        self._write(puts, deletes)
        if self._raw is not None:
            for user in user_ids:
                keys = [key for key, _ in self._raw.scan(raw_events_prefix(user))]
                if keys:
                    self._raw.write({}, deletes=keys)

    def _drop_stale_versions(self, states: dict[str, Any]) -> None:
        """Forget states of versions of registered signals that the module no longer declares,
        or that a cut-over retired and whose grace period is over."""
        for key in [key for key in states if key not in self._keys or key in self._expired]:
            if key.partition("@")[0] in self._names:
                del states[key]


def enriched_field_kinds(registry: SignalRegistry) -> dict[str, dict[str, list[FieldKind]]]:
    """Per lookup source, what the signals need of each enriched field they read.

    The aggregation declares its needs; a field a filter compares must be a JSON scalar (a
    list in ``category.isin(...)`` would raise in the middle of a batch).
    """
    out: dict[str, dict[str, list[FieldKind]]] = {}
    for signal in registry.computed:
        needs = signal.aggregate.field_kinds()
        filtered = signal.where.fields() if signal.where is not None else set()
        for enrichment in signal.enrich:
            fields = out.setdefault(enrichment.lookup.name, {})
            for name in enrichment.names:
                kinds = fields.setdefault(name, [])
                if name in needs:
                    kinds.append(needs[name])
                if name in filtered:
                    kinds.append(SCALAR)
    return out


def _join(
    events: list[Event],
    joins: list[tuple[str, dict[str, Record], str]],
    missing: dict[str, int],
    counted_apart: frozenset[str] = frozenset(),
) -> list[Row]:
    """Rows of ``events`` with the record of each lookup joined on (an empty dict if none);
    the misses counted into ``missing``, but for the sources ``counted_apart`` (at their
    lookup)."""
    rows: list[Row]
    if not joins:
        return [(event, ()) for event in events]
    if len(joins) == 1 and joins[0][2] in BASE_FIELDS:
        # The common case, one source keyed by an event field: a tight loop.
        name, table, field_name = joins[0]
        key_of = attrgetter(field_name)
        rows = [(event, (table.get(key_of(event)) or _MISSING,)) for event in events]
        if name not in counted_apart:
            misses = sum(1 for row in rows if row[1][0] is _MISSING)
            if misses:
                missing[name] = missing.get(name, 0) + misses
        return rows
    rows = []
    for event in events:
        joined = []
        for name, table, field_name in joins:
            record = table.get(_key_value(event, field_name) or "")
            if record is None:
                # Signals see the fields as missing (None); the miss is counted.
                if name not in counted_apart:
                    missing[name] = missing.get(name, 0) + 1
                record = _MISSING
            joined.append(record)
        rows.append((event, tuple(joined)))
    return rows


def _log_failures(rejected: list[BadEvent]) -> None:
    """One warning per failing signal and batch (its dead letters hold every event)."""
    first: dict[str, BadEvent] = {}
    counts: Counter[str] = Counter()
    for bad in rejected:
        signal = bad.detail.partition(":")[0]
        first.setdefault(signal, bad)
        counts[signal] += 1
    for signal, count in counts.items():
        logger.warning(
            "signal %s failed on %d event(s), dead-lettered as %s; the first: %s",
            signal, count, SIGNAL_FAILED, first[signal].detail,
        )  # fmt: skip


def _rejected(
    signal: str, failed: list[tuple[Event, str]], fresh: list[int], batch: MicroBatch
) -> list[BadEvent]:
    """Dead letters of the events ``signal`` failed on, with their read positions."""
    where = {id(batch.events[i]): batch.positions[i] for i in fresh}
    return [
        BadEvent(SIGNAL_FAILED, f"{signal}: {why}", _json_encoder.encode(event), where[id(event)])
        for event, why in failed
    ]


def _advance(progress: dict[str, int], positions: Sequence[Position], indices: list[int]) -> None:
    for i in indices:
        position = positions[i]
        if position.offset > progress.get(position.partition, -1):
            progress[position.partition] = position.offset


def _rewound(
    dedupe: EventIdDedupe, indices: list[int], fresh: list[int], events: list[Event], seen: Seen
) -> list[int]:
    """Of a user's events (``indices``) at or below its progress (not in ``fresh``), those
    whose id was never met: their partition's offsets went backwards (``KeptIds``)."""
    kept = dedupe.kept(seen)
    if kept is None:
        return []
    taken = set(fresh)
    return [i for i in indices if i not in taken and not kept.met(events[i])]


def _unapplied(
    indices: list[int], positions: Sequence[Position], progress: dict[str, int]
) -> list[int]:
    if not progress:
        return list(indices)
    return [i for i in indices if positions[i].offset > progress.get(positions[i].partition, -1)]


@dataclass(frozen=True)
class _SourceJoin:
    """How a lookup source joins onto events: the event field holding its key (one per
    source, validated), and the filters of its signals when every one of them filters on
    event fields first (only the events one accepts are looked up), else ``None``."""

    field_name: str
    filters: tuple[RowPredicate, ...] | None

    @classmethod
    def of(cls, source: str, plans: Sequence[_Plan]) -> _SourceJoin:
        reading = [plan for plan in plans if source in plan.layout]
        filters = tuple(plan.accepts for plan in reading if plan.prefilter and plan.accepts)
        every = len(filters) == len(reading)
        return cls(reading[0].lookup_keys[source], filters if every else None)


def _key_set(events: list[Event], field_name: str) -> set[str]:
    """The distinct lookup keys of ``events`` in ``field_name``; ``""`` (an absent key)
    finds nothing and is left out."""
    if field_name in TEXT_FIELDS:  # straight into the set (the read-ahead's whole block)
        wanted = set(map(attrgetter(field_name), events))
    else:
        wanted = set(_keys_of(events, field_name))
    wanted.discard("")
    return wanted


def _keys_of(events: list[Event], field_name: str) -> list[str]:
    """Each event's lookup key in ``field_name``, ``""`` where it has none."""
    if field_name in TEXT_FIELDS:  # the common case: a tight loop in C
        return list(map(attrgetter(field_name), events))
    return [_key_value(event, field_name) or "" for event in events]


def _key_value(event: Event, field_name: str) -> str | None:
    if field_name in BASE_FIELDS:
        value = getattr(event, field_name)
    elif field_name.startswith(ATTR_PREFIX):
        value = attrs_reader(field_name[len(ATTR_PREFIX) :])(event.attrs)
    else:
        return None
    return None if value is None else str(value)
