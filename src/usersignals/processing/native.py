"""The seam between the Python engine and reader and the native core (``usersignals._core``).

The signals whose aggregation the core implements (the ``_READABLE`` classes below) run
natively: their compiled plans go to the core once, at construction, with where each field
column comes from; then the core reads each micro-batch's columns from the fresh events and
the records the Materializer fetched (event fields, attributes, enriched fields, aligned with
the events), and applies them to every affected user's stored state of those signals: it
filters (``where``), groups by user, applies and encodes; Python only places the returned
bytes into the user records.
Every other signal, including user-defined aggregations, stays on the engine's per-user
Python path beside this one.

The Python implementations stay the reference models the core is tested against; their old
stored form (msgpack) is migrated to the native form the first time a state is touched.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec

from usersignals._core import (
    DECAYED_SCORES_FORMAT_VERSION,
    DISTINCT_FORMAT_VERSION,
    LAST_N_READABLE_VERSIONS,
    MEAN_VECTOR_FORMAT_VERSION,
    SEEN_FORMAT_VERSION,
    TILES_READABLE_VERSIONS,
    ColumnReader,
    Columns,
    CoreError,
    CoreStateError,
    JoinKeys,
    NativePlans,
)
from usersignals.aggregations.base import ReadOut
from usersignals.aggregations.context import ReadContext
from usersignals.aggregations.decayed import DecayedScores, MeanVector, ScoresState, VectorState
from usersignals.aggregations.distinct import Distinct, DistinctState
from usersignals.aggregations.last_n import LastN
from usersignals.aggregations.seen import FirstSeen, LastSeen, SeenState
from usersignals.aggregations.windowed import Count, Sum, TileState
from usersignals.durations import to_duration
from usersignals.enrich.sources import Record
from usersignals.errors import AsOfError, NativeCoreError, StateCodecError
from usersignals.events.model import Event
from usersignals.signals.definition import Signal
from usersignals.signals.fields import ATTR_PREFIX, BASE_FIELDS, TEXT_FIELDS
from usersignals.state.codec import UserRecord

if TYPE_CHECKING:
    from usersignals._core import Filters, LabelColumn, Refusal, Times


# (user key, record, indices of the user's fresh events sorted by time): the engine's work list.
Work = Sequence[tuple[bytes, UserRecord, list[int]]]


# The format version bytes each native aggregation's states may start with (a state of an
# older version is rewritten in the current one when a batch touches it).
_READABLE = {
    LastN: frozenset(LAST_N_READABLE_VERSIONS),
    Distinct: frozenset({DISTINCT_FORMAT_VERSION}),
    Count: frozenset(TILES_READABLE_VERSIONS),
    Sum: frozenset(TILES_READABLE_VERSIONS),
    FirstSeen: frozenset({SEEN_FORMAT_VERSION}),
    LastSeen: frozenset({SEEN_FORMAT_VERSION}),
    DecayedScores: frozenset({DECAYED_SCORES_FORMAT_VERSION}),
    MeanVector: frozenset({MEAN_VECTOR_FORMAT_VERSION}),
}
# What a native signal answers for a user without state (the reference's answers to None).
_EMPTY: dict[type, Any] = {
    Distinct: {"estimate": 0},
    Count: {"total": 0, "by": {}},
    Sum: {"total": 0, "by": {}},
    FirstSeen: {},
    LastSeen: {},
    DecayedScores: [],
    MeanVector: {"vector": None, "weight": 0.0},
}
# The prefix of a column holding a field's values as ``str()`` renders them (what Distinct
# hashes, as its reference does); see ``text_column`` in crates/usersignals-core/src/plan.rs.
TEXT_PREFIX = "str:"
# The prefix of a column holding a field's values as they are (MeanVector's vectors), which
# the binding converts to floats; see ``vector_column`` in plan.rs.
VECTOR_PREFIX = "vec:"


def is_native(signal: Signal) -> bool:
    """Whether the core runs this signal. Exact type: a user's subclass stays Python."""
    return type(signal.aggregate) in _READABLE


def plan_json(signal: Signal) -> str:
    """The plan the core executes: the signal's compiled JSON parts and its retention."""
    aggregate = signal.aggregate.to_json()
    if isinstance(signal.aggregate, Distinct):
        aggregate["bucket_ms"] = signal.aggregate.bucket_ms  # the JSON shows it as a duration
    if isinstance(signal.aggregate, Count):  # and Sum: the tiers in ms, for the same reason
        aggregate["tiers_ms"] = [list(tier) for tier in signal.aggregate.tiles.tiers]
    if isinstance(signal.aggregate, DecayedScores | MeanVector):
        # Also shown as a duration text in the JSON.
        aggregate["half_life_ms"] = int(to_duration(signal.aggregate.half_life))
    return json.dumps(
        {
            "key": signal.key,
            "where": signal.where.to_json() if signal.where is not None else None,
            "aggregate": aggregate,
            "retention_ms": signal.retention,
        }
    )


@dataclass(frozen=True)
class _Enriched:
    source: str
    key_field: str


class NativeSignals:
    """The native signals of a registry: one core call per batch, one per state read.

    ``misses_counted_apart``: the lookup sources whose misses the engine counts itself (where
    it looks up only the events the signals' filters accept); a reader counts none."""

    def __init__(
        self, signals: Sequence[Signal], misses_counted_apart: frozenset[str] = frozenset()
    ) -> None:
        self.signals: list[Signal] = []
        self._enriched: dict[str, _Enriched] = {}
        for signal in signals:
            if is_native(signal) and self._claim_fields(signal):
                self.signals.append(signal)
        self.keys = [signal.key for signal in self.signals]
        self._readable = [_READABLE[type(signal.aggregate)] for signal in self.signals]
        self._index = {key: i for i, key in enumerate(self.keys)}
        self.layouts = {tuple(lookup.name for lookup in s.lookups) for s in self.signals}
        try:
            self._core = NativePlans([plan_json(signal) for signal in self.signals])
        except CoreError as exc:
            raise NativeCoreError("plan", str(exc)) from exc
        fields = sorted({name for names in self._core.fields() for name in names})
        # ``_joins``: the sources the columns join, in the order the reader counts misses.
        self._columns, self._joins = _column_reader(fields, self._enriched)
        #: The sources whose misses the engine counts at their lookup (see Engine._lookups).
        self.misses_counted_apart = misses_counted_apart

    def _claim_fields(self, signal: Signal) -> bool:
        """Record where the signal's enriched fields come from; False on a clash with an
        earlier native signal (the same name from another source), which keeps the signal
        on the Python path rather than mixing two fields in one column."""
        claims = {
            name: _Enriched(e.lookup.name, e.lookup.key) for e in signal.enrich for name in e.names
        }
        if any(self._enriched.get(name, claim) != claim for name, claim in claims.items()):
            return False
        self._enriched.update(claims)
        return True

    def __bool__(self) -> bool:
        return bool(self.signals)

    @property
    def plans(self) -> NativePlans:
        """The compiled plans in the core (what a ``BatchSession`` runs)."""
        return self._core

    def apply(
        self,
        events: Sequence[Event],
        work: Work,
        records: Mapping[str, Mapping[str, Record]],
        missing: Counts | None = None,
    ) -> tuple[list[list[bytes | None]], Counts, Counts]:
        """New state bytes per work item and native signal (``None``: unchanged), and the
        applied and expired counts per signal key. With ``missing``, lookup misses of the
        native signals' sources are counted into it (once per event and source)."""
        live = [events[i] for _, _, fresh in work for i in fresh]
        users = [u for u, (_, _, fresh) in enumerate(work) for _ in fresh]
        stored = [
            [self._stored(key, record.states.get(k), i) for i, k in enumerate(self.keys)]
            for key, record, _ in work
        ]
        columns = self.live_columns(live, records, missing)
        try:
            states, applied, expired = self._core.apply(
                len(work),
                users,
                [event.ts for event in live],
                [event.event_id for event in live],
                columns,
                stored,
            )
        except CoreStateError as exc:
            user, plan, message = exc.args
            raise StateCodecError(work[user][0], f"{plan}: {message}") from exc
        except CoreError as exc:
            raise NativeCoreError("apply", str(exc)) from exc
        return (
            states,
            dict(zip(self.keys, applied, strict=True)),
            dict(zip(self.keys, expired, strict=True)),
        )

    def join_keys(self, live: list[Event]) -> tuple[JoinKeys | None, dict[str, list[str]] | None]:
        """The lookup keys of ``live``, read by the core once: for ``live_columns`` of the
        same list, and per source the distinct keys (in order of first appearance, no
        ``""``); ``(None, None)`` when a text key field holds something else than text."""
        read = self._columns.join_keys(live)
        if read is None:
            return None, None
        keys, distinct = read
        return keys, dict(zip(self._joins, distinct, strict=True))

    def live_columns(
        self,
        live: list[Event],
        records: Mapping[str, Mapping[str, Record]],
        missing: Counts | None = None,
        keys: JoinKeys | None = None,
    ) -> Columns:
        """The columns the plans read, aligned with ``live``, read by the core; with
        ``missing``, the lookup misses of the native signals' sources are counted into it
        (once per event and source). ``keys``: ``join_keys(live)``'s, if read."""
        columns, misses = self._columns.read(live, dict(records), keys)
        if missing is not None:
            for source, count in zip(self._joins, misses, strict=True):
                if count and source not in self.misses_counted_apart:
                    missing[source] = missing.get(source, 0) + count
        return columns

    def place(self, states: dict[str, msgspec.Raw], new: Sequence[bytes | None]) -> None:
        """Put one user's new native states into their record's states.

        The record embeds each state as msgpack; a native state goes in as a msgpack *bin*,
        which no state of the old Python codec (a msgpack array) can be mistaken for.
        """
        for key, data in zip(self.keys, new, strict=True):
            if data is not None:
                states[key] = msgspec.Raw(_bin.encode(data))

    def read(
        self, signal: Signal, raw: bytes | None, context: ReadContext, key: bytes
    ) -> ReadOut | None:
        """The signal's answer evaluated by the core, or ``None`` when it is not native.

        Raises :class:`AsOfError` (naming the signal) where the reference refuses: an
        ``as_of`` the stored state cannot answer exactly."""
        index = self._index.get(signal.key)
        if index is None:
            return None
        distinct = isinstance(signal.aggregate, Distinct)
        decayed = isinstance(signal.aggregate, DecayedScores | MeanVector)
        if raw is None:
            return ReadOut(_EMPTY.get(type(signal.aggregate), []), None)
        data = self._native_form(key, raw, index)
        # Unresolved: the core resolves them against the state's newest event, as
        # ReadContext.view_time/end/start do.
        times = (
            context.as_of_ms,
            context.now_ms,
            context.until_ms,
            context.window_ms,
            context.since_ms,
        )
        try:
            if isinstance(signal.aggregate, Count | LastSeen):  # and Sum, FirstSeen
                grouped, newest, refusal = self._core.read_grouped(
                    index, data, times, context.actions, context.surfaces
                )
                answer = ReadOut(grouped, newest)
            elif decayed:
                value, newest, refusal = self._read_decayed(signal, index, data, times, context)
                answer = ReadOut(value, newest)
            elif distinct:
                estimate, newest, refusal = self._core.read_distinct(index, data, times)
                answer = ReadOut({"estimate": estimate}, newest)
            else:
                value, newest, refusal = self._core.read_last_n(
                    index, data, times, _filters(context)
                )
                answer = ReadOut(value, newest)
        except CoreError as exc:
            raise StateCodecError(key, f"{signal.key}: {exc}") from exc
        if refusal is not None:
            view_ms, earliest_ms, why = refusal
            parameter = context.refused_parameter(signal.aggregate.context_parameters())
            raise AsOfError(signal.name, view_ms, earliest_ms, why, parameter)
        return answer

    def _read_decayed(
        self, signal: Signal, index: int, data: bytes, times: Times, context: ReadContext
    ) -> tuple[Any, int | None, Refusal | None]:
        """A DecayedScores or MeanVector read by the core: (value, newest, refusal)."""
        if isinstance(signal.aggregate, MeanVector):
            return self._core.read_mean_vector(index, data, times)
        return self._core.read_decayed_scores(index, data, times, context.exclude, context.limit)

    def label_columns(
        self, columns: Sequence[tuple[Signal, ReadContext]]
    ) -> list[LabelColumn] | None:
        """Training-set columns (a signal and its context, whose ``as_of`` and "now" each
        label sets) as the core reads them, or ``None`` when a signal is not native."""
        plans = [self._index.get(signal.key) for signal, _ in columns]
        if any(plan is None for plan in plans):
            return None
        return [
            (plan, (None, 0, c.until_ms, c.window_ms, c.since_ms), _filters(c))
            for plan, (_, c) in zip(plans, columns, strict=True)
            if plan is not None
        ]

    def entries(self, signal: Signal, raw: Any, key: bytes) -> int:
        """How many entries a stored LastN state holds (for size reports and tests)."""
        index = self._index[signal.key]
        return len(self._core.decode_last_n(index, self._native_form(key, raw, index)))

    def _stored(self, key: bytes, raw: Any, index: int) -> bytes | None:
        return None if raw is None else self._native_form(key, raw, index)

    def _native_form(self, key: bytes, raw: Any, index: int) -> bytes:
        data = bytes(raw)
        if not data or data[0] not in _BIN_HEADERS:
            return self.migrate(key, data, index)
        try:
            state = _unbin.decode(data)
        except msgspec.DecodeError as exc:
            raise StateCodecError(key, f"{self.keys[index]}: {exc}") from exc
        readable = self._readable[index]
        if not state or state[0] not in readable:
            version = state[0] if state else None
            raise StateCodecError(
                key, f"{self.keys[index]}: format version {version}, not one of {sorted(readable)}"
            )
        return state

    def migrate(self, key: bytes, data: bytes, index: int) -> bytes:
        """A state of the Python codec (msgpack; it starts 0x92 or 0x95, never the native
        version byte), decoded by the reference and re-encoded in the native form."""
        runtime = self.signals[index].compiled.runtime
        try:
            state = runtime.decode(data)
        except msgspec.DecodeError as exc:
            raise StateCodecError(key, f"{self.keys[index]}: {exc}") from exc
        if isinstance(state, DistinctState):
            return self._core.encode_distinct(index, state.newest, state.buckets)
        if isinstance(state, TileState):
            cells = [(start, group, value) for (start, group), value in state.cells.items()]
            exact = [(ts, group, value) for (ts, group), value in state.exact.items()]
            return self._core.encode_tiles(index, state.newest, cells, exact, state.exact_from)
        if isinstance(state, SeenState):
            return self._core.encode_seen(index, state.newest, state.times)
        if isinstance(state, ScoresState):
            scores = [(k, bucket, total) for (k, bucket), total in state.cells.items()]
            return self._core.encode_decayed_scores(index, (state.newest, scores, state.tops))
        if isinstance(state, VectorState):
            return self._core.encode_mean_vector(index, (state.newest, state.buckets, state.tops))
        return self._core.encode_last_n(index, [tuple(entry) for entry in state])


def _column_reader(
    fields: Sequence[str], enriched: Mapping[str, _Enriched]
) -> tuple[ColumnReader, list[str]]:
    """The core's reader of the plans' columns, and the sources it joins (in its order): each
    column is an event field, a path into ``attrs``, or a field of the record a lookup joined
    on (``enriched`` says which)."""
    sources: list[str] = []
    joins: list[tuple[str, tuple[str, list[str]], bool]] = []
    columns = []
    for name in fields:
        rendering, field_name = "value", name
        if name.startswith(VECTOR_PREFIX):
            rendering, field_name = "vector", name[len(VECTOR_PREFIX) :]
        elif name.startswith(TEXT_PREFIX):
            rendering, field_name = "text", name[len(TEXT_PREFIX) :]
        if field_name in BASE_FIELDS or field_name.startswith(ATTR_PREFIX):
            columns.append((name, rendering, _event_origin(field_name)))
            continue
        source, key_field = enriched[field_name].source, enriched[field_name].key_field
        if source not in sources:
            sources.append(source)
            # A lookup key is its field's text; "" (an absent attribute) finds nothing.
            joins.append((source, _event_origin(key_field), key_field in TEXT_FIELDS))
        columns.append((name, rendering, ("record", [str(sources.index(source)), field_name])))
    try:
        return ColumnReader(columns, joins), sources
    except CoreError as exc:
        raise NativeCoreError("plan", str(exc)) from exc


def _event_origin(field_name: str) -> tuple[str, list[str]]:
    """An event field, or a dotted path into its ``attrs``, as the core's reader names it."""
    if field_name.startswith(ATTR_PREFIX):
        return "attrs", field_name[len(ATTR_PREFIX) :].split(".")
    return "event", [field_name]


def _filters(context: ReadContext) -> Filters:
    """The context's actions, surfaces, exclude, dedupe and limit, as the core's reads take
    them."""
    return context.actions, context.surfaces, context.exclude, context.dedupe, context.limit


Counts = dict[str, int]
_bin = msgspec.msgpack.Encoder()
_unbin = msgspec.msgpack.Decoder(bytes)
_BIN_HEADERS = frozenset({0xC4, 0xC5, 0xC6})  # msgpack bin 8 / 16 / 32
