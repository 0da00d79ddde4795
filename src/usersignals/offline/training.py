"""Point-in-time training data: each label row's signals as they would have been served then.

For every label row (a user id, a time, any other columns), every signal is read with the
API's own reader (:class:`~usersignals.serving.reader.SignalReader`) and context
(:class:`~usersignals.aggregations.context.ReadContext`, with ``as_of`` and "now" set to the
label's time) over the state the service's engine builds from that user's events at or before
the label's time — never a later one. Per shard of users, the events are applied in rounds:
round k applies every user's events up to their k-th label time, in one micro-batch, then
reads the k-th labels. The states live in memory and are dropped at the end.

Repeated event ids are dropped first, judged as the processor judges them: over the user's
whole history in the order the stream delivered it (:class:`LabelPlan`), since
whether a redelivery is a repeat depends on what arrived before it, later events included.

The values are JSON text, one column per signal (and per context when several are given),
appended to the label columns in the label file's row order. The Spark runner
(:mod:`usersignals.offline.spark`) calls :func:`compute_features` per partition, and both
write with :func:`~usersignals.offline.features_file.write_features`: the same bytes.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from usersignals._core import PlannedLabels, plan_labels
from usersignals.aggregations.context import CONTEXT_PARAMETERS, ReadContext, check_view_time
from usersignals.assembly import build_decoder
from usersignals.config import Settings
from usersignals.errors import (
    AsOfError,
    ConfigurationError,
    ContextError,
    SignalReadError,
    UserSignalsError,
)
from usersignals.events.decode import EventPolicy
from usersignals.events.model import BadEvent, Event, Position
from usersignals.ingest.archive import EventArchive
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.offline.boundary import ARCHIVE_PREFIX
from usersignals.offline.common import (
    ShardPool,
    build_engine,
    check_dead_letter,
    check_workers,
    open_existing,
    open_lookup_store,
)
from usersignals.offline.deletions import Deletions
from usersignals.offline.features_file import (
    TextColumns,
    in_row_order,
    read_text_columns,
    read_values,
    rows_table,
    write_features,
    write_text_columns,
    write_values,
)
from usersignals.offline.label_shards import Label, plan_label_shards
from usersignals.offline.memory import MemoryStore
from usersignals.offline.share import ArchiveShare, merge_dead_letters
from usersignals.processing.batch import MicroBatch
from usersignals.processing.dedupe import EventIdDedupe
from usersignals.processing.engine import Engine
from usersignals.serving.reader import SignalReader
from usersignals.signals.definition import Signal
from usersignals.signals.registry import SignalRegistry
from usersignals.state.codec import decode_record
from usersignals.state.keys import user_key
from usersignals.state.store import StateStore
from usersignals.state.versions import load_versions, refuse_served_undeclared
from usersignals.uninterrupted import temporary_directory

if TYPE_CHECKING:
    from usersignals._core import LabelledUser

_encoder = msgspec.json.Encoder()


@dataclass(frozen=True)
class FeatureColumn:
    """One output column: a signal read with a context (``as_of`` comes from each label)."""

    name: str
    signal: Signal
    context: ReadContext
    #: The ``--context`` text it was read with ("" for none): the field's metadata says it.
    context_text: str = ""

    @property
    def metadata(self) -> dict[str, str]:
        """What the file says of the column: the version it holds, and its context."""
        return {"usersignals.signal": self.signal.key, "usersignals.context": self.context_text}


@dataclass(frozen=True)
class TrainingJob:
    labels: Path
    archive: str
    settings: Settings
    out: Path
    contexts: tuple[str, ...] = ()
    workers: int = 1
    user_column: str = "user_id"
    time_column: str = "ts"
    dead_letter: Path | None = None
    #: The version of each name a column holds (name → version), as the API serves them by
    #: default; ``None``: read from the deployment's store when the job starts (a cut-over's
    #: choice, else the module's defaults). See :func:`served_versions`.
    served: Mapping[str, int] | None = None
    #: The signals to write, each a column: a name (its served version) or ``name@version``
    #: (exactly that one, a shadow version too); none given: every served signal.
    signals: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_workers(self.workers)
        if self.out.resolve() == self.labels.resolve():
            raise ConfigurationError(
                f"the output {str(self.out)!r} is the labels file: write the features elsewhere"
            )
        check_dead_letter(self.dead_letter, self.archive, labels=self.labels, output=self.out)
        if self.out.is_dir():  # else refused by the writer, once the work is done
            raise ConfigurationError(
                f"the output {str(self.out)!r} is a directory: give the file to write"
            )


@dataclass
class TrainingSummary:
    #: Label rows written: every row of the label file.
    rows: int = 0
    #: Of them, rows without a user (or one the API refuses) or a time: features null.
    rows_without_values: int = 0
    #: Valid events in the archive.
    events: int = 0
    bad: int = 0
    #: User deletions in the archive (``{"op": "delete"}`` records): the user's events before
    #: one are left out, as the stream forgot them.
    deletions: int = 0
    #: Events a signal's own code failed on: dead-lettered, left out of that signal only.
    signal_failed: int = 0
    #: Values the API refuses at their label's time (an ``until`` before newer events): null.
    refused: int = 0
    seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def served_versions(settings: Settings) -> dict[str, int]:
    """The versions the deployment's API serves by default, as its store records them (a
    cut-over's choice); none when it has no store yet (then the module's defaults)."""
    store = open_existing(settings)
    if store is None:
        return {}
    try:
        return dict(load_versions(store).served)
    finally:
        store.close()


def with_served_versions(job: TrainingJob) -> TrainingJob:
    """``job`` with the versions to serve resolved, once, before its shards start."""
    if job.served is not None:
        return job
    return dataclasses.replace(job, served=served_versions(job.settings))


def job_registry(job: TrainingJob) -> SignalRegistry:
    """The job's signals, each name's column holding the version the API serves."""
    registry = SignalRegistry.from_module(job.settings.signals)
    refuse_served_undeclared(job.served or {}, registry)
    registry.serve(job.served or {})
    return registry


def parse_context_option(text: str) -> dict[str, str]:
    """``window=7d,actions=save,click`` → ``{"window": "7d", "actions": "save,click"}``."""
    params: dict[str, str] = {}
    last: str | None = None
    for part in text.split(","):
        name, equals, value = part.partition("=")
        if equals:
            last = name.strip()
            if last in params:
                raise ContextError(last, f"given twice in {text!r}")
            if not value.strip():
                raise ContextError(last, f"no value in {text!r}")
            params[last] = value.strip()
        elif last is not None and part.strip():
            # A comma inside a list value: actions=save,click.
            params[last] += "," + part.strip()
        elif part.strip():
            raise ContextError(part.strip(), "expected NAME=VALUE, e.g. window=7d")
    return params


def feature_columns(
    registry: SignalRegistry, contexts: Sequence[str], chosen: Sequence[str] = ()
) -> list[FeatureColumn]:
    """A column per signal and context; named by the signal alone when there is one context.
    ``chosen``: the signals, as named (``name`` or ``name@version``); else every served one."""
    parsed: list[tuple[str, ReadContext]] = []
    for text in contexts or ("",):
        params = parse_context_option(text)
        if "as_of" in params:
            raise ContextError("as_of", "is each label row's time; do not set it in --context")
        taken = [name for name in CONTEXT_PARAMETERS if name != "as_of"]
        for name in params:
            if name not in taken:  # named here: the parser's list has as_of, refused above
                raise ContextError(name, f"unknown parameter; known: {', '.join(taken)}")
        parsed.append((text, ReadContext.parse(params, now_ms=0)))
    seen: set[str] = set()
    for text, _ in parsed:
        if text in seen:
            raise ContextError(text, "given twice: each --context makes its own columns")
        seen.add(text)
    signals = _chosen_signals(registry, chosen)
    return [
        FeatureColumn(name if len(parsed) == 1 else f"{name}[{text}]", signal, ctx, text)
        for text, ctx in parsed
        for name, signal in signals
    ]


def _chosen_signals(registry: SignalRegistry, chosen: Sequence[str]) -> list[tuple[str, Signal]]:
    """Each column's name and signal: as ``chosen`` names them, else every served signal."""
    if not chosen:
        return [(signal.name, signal) for signal in registry]
    named: dict[str, str] = {}
    signals = []
    for name in chosen:
        signal = registry.get(name)  # unknown or retired: refused, naming the known ones
        if signal.key in named:
            raise ConfigurationError(
                f"{signal.key} chosen twice (as {named[signal.key]!r} and {name!r})"
            )
        named[signal.key] = name
        signals.append((name, signal))
    return signals


def check_label_columns(path: Path, table: Any, columns: Sequence[FeatureColumn]) -> None:
    """Refuses a label column named as a feature column: the file written would hold two
    columns of that name, which Arrow cannot read back by name."""
    clash = next((c.name for c in columns if c.name in table.column_names), None)
    if clash is not None:
        raise ConfigurationError(
            f"labels {str(path)!r} have a column {clash!r}, the name of a feature column: rename it"
        )


def read_labels(
    path: Path,
    user_column: str,
    time_column: str,
    max_user_id_chars: int = EventPolicy.max_user_id_chars,
) -> tuple[Any, list[Label]]:
    """The label table as read, and its valid rows; rows without a user or time get nulls,
    and so do rows whose user id the API refuses (empty, or over ``max_user_id_chars``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    if not path.exists():
        raise ConfigurationError(f"labels file {str(path)!r} does not exist")
    try:
        # A file is read without pyarrow's dataset layer (a directory of parts needs it):
        # importing that alone took 0.3 s, in the parent and again in every shard.
        table = pq.ParquetFile(path).read() if path.is_file() else pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise ConfigurationError(f"cannot read labels {str(path)!r}: {exc}") from exc
    for column in (user_column, time_column):
        if column not in table.column_names:
            raise ConfigurationError(
                f"labels {str(path)!r} have no column {column!r} "
                f"(columns: {', '.join(table.column_names)})"
            )
    times = table.column(time_column)
    if pa.types.is_timestamp(times.type):
        times = times.cast(pa.timestamp("ms", tz=times.type.tz)).cast(pa.int64())
    elif pa.types.is_floating(times.type):  # pandas' int column with a missing value
        times = _whole_ms(path, time_column, times)
    elif not pa.types.is_integer(times.type):
        raise ConfigurationError(
            f"label column {time_column!r} must be a timestamp or ms since the epoch, "
            f"not {times.type}"
        )
    label_times = times.to_pylist()
    _check_label_times(path, time_column, label_times)
    users = _label_users(path, user_column, table.column(user_column))
    labels = [
        (row, user, int(ts))
        for row, (user, ts) in enumerate(zip(users, label_times, strict=True))
        if user and len(user) <= max_user_id_chars and ts is not None
    ]
    return table, labels


@dataclass(frozen=True)
class TrainingInputs:
    """What a training set reads before its work: the job with the served versions, its
    feature columns, the label table and its valid rows, and when the job started."""

    job: TrainingJob
    columns: list[FeatureColumn]
    table: Any
    labels: list[Label]
    started: float


def training_inputs(job: TrainingJob, started: float | None = None) -> TrainingInputs:
    """The job's inputs read and checked: every refusal a label file or a context can earn
    comes from here, before a shard (or Spark's JVM) starts. ``started``: when the job did
    (its workers may start first); now, if not given."""
    started = time.perf_counter() if started is None else started
    job = with_served_versions(job)
    columns = feature_columns(job_registry(job), job.contexts, job.signals)
    settings = job.settings
    table, labels = read_labels(
        job.labels, job.user_column, job.time_column, settings.events.max_user_id_chars
    )
    check_label_columns(job.labels, table, columns)
    return TrainingInputs(job, columns, table, labels, started)


def _whole_ms(path: Path, column: str, times: Any) -> Any:
    """Float label times (pandas writes an integer column with a missing value as float64)
    as whole milliseconds, the missing ones null; a fraction is refused."""
    import pyarrow as pa

    values = [None if t is None or t != t else t for t in times.to_pylist()]  # NaN: missing
    if any(t is not None and not float(t).is_integer() for t in values):
        raise ConfigurationError(
            f"labels {str(path)!r}: column {column!r} must hold whole milliseconds since the "
            "epoch (floats with a fraction are not)"
        )
    return pa.array([None if t is None else int(t) for t in values], pa.int64())


def _label_users(path: Path, column: str, values: Any) -> list[str | None]:
    """The user ids of a label column as the API reads them: text; UTF-8 bytes (as Hive and
    Spark exports hold them) decoded; integers as their digits. Others are refused: read
    with ``str()``, ``b"u001"`` was the user ``"b'u001'"`` and ``1.0`` the user ``"1.0"``,
    labels of no one, answered empty without a word."""
    import pyarrow as pa

    kind = values.type
    if pa.types.is_dictionary(kind):  # pandas' category column
        values = values.cast(kind.value_type)
        kind = values.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return list(values.to_pylist())
    if pa.types.is_integer(kind):
        return [None if user is None else str(user) for user in values.to_pylist()]
    if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
        try:
            return [None if user is None else user.decode() for user in values.to_pylist()]
        except UnicodeDecodeError as exc:
            raise ConfigurationError(
                f"labels {str(path)!r}: column {column!r} holds a user id that is not UTF-8 "
                f"text ({exc.object[:40]!r})"
            ) from None
    raise ConfigurationError(
        f"labels {str(path)!r}: column {column!r} must hold user ids as text (or integers, "
        f"or UTF-8 bytes), not {kind}"
    )


def _check_label_times(path: Path, column: str, times: list[int | None]) -> None:
    """Label times are those a request's ``as_of`` may name (:func:`check_view_time`): the
    earliest and the latest checked. In Python, not ``pyarrow.compute.min_max``: importing
    ``pyarrow.compute`` took 0.04 s of the job's start (nothing else in a local training
    set over integer times needs it)."""
    known = [ms for ms in times if ms is not None]
    for ms in (min(known), max(known)) if known else ():
        try:
            check_view_time(column, ms)
        except ContextError as exc:
            raise ConfigurationError(f"labels {str(path)!r}: {exc}") from None


@dataclass(frozen=True)
class FeatureEngine:
    """What :func:`compute_features` runs: the service's engine over a store of its own,
    without event-id dedupe (``repeats`` judges them first, in the stream's order), and the
    API's reader over that store."""

    engine: Engine
    reader: SignalReader
    #: The deployment's event-id dedupe (``None`` when it is off).
    repeats: EventIdDedupe | None
    #: Events a signal's own code failed on (dead letters ``signal_failed``), at their
    #: places in the archive.
    rejected: list[BadEvent] = field(default_factory=list)
    #: One entry per value the API's own rules refuse at its label's time (null in the file).
    refused: list[int] = field(default_factory=list)

    @classmethod
    def build(
        cls, settings: Settings, registry: SignalRegistry, lookups: StateStore | None
    ) -> FeatureEngine:
        store = MemoryStore()
        engine, _ = build_engine(settings, registry, store, lookups, judges_repeats=False)
        horizon_ms = settings.processing.dedupe_horizon_ms
        repeats = EventIdDedupe(horizon_ms) if horizon_ms else None
        return cls(engine, SignalReader(registry, store), repeats)


def compute_features(
    parts: FeatureEngine,
    columns: Sequence[FeatureColumn],
    events: Iterable[tuple[Event, Position]],
    labels: Sequence[Label],
) -> Any:
    """Each label's column values (JSON text), from ``events`` (any order) of the labels'
    users: a table of value columns and the labels' rows, in no particular row order (see
    :mod:`usersignals.offline.features_file`)."""
    values = compute_values(parts, columns, events, labels)
    return values.table() if isinstance(values, TextColumns) else values


def compute_values(
    parts: FeatureEngine,
    columns: Sequence[FeatureColumn],
    events: Iterable[tuple[Event, Position]],
    labels: Sequence[Label],
) -> TextColumns | Any:
    """:func:`compute_features`' values: as the core wrote them when it read every label
    (not wrapped by Arrow), else the object path's table."""
    pairs = events if isinstance(events, list) else list(events)
    plan = LabelPlan.of(pairs, labels, parts.repeats)
    in_core = _in_core(parts.engine, columns, pairs, labels, plan)
    if in_core is not None:
        return in_core
    by_user, groups = plan.rounds(pairs, labels)
    return rows_table(_in_rounds(parts, columns, by_user, groups), len(columns))


@dataclass(frozen=True)
class LabelPlan:
    """Which events feed each labelled user, in what order, and where the user's labels
    fall among them (``usersignals._core.plan_labels``, which reads the events' fields
    itself and keeps the plan native for ``Engine.label_rows``): each user's events less
    the repeats the processor drops, judged in the order the stream delivered them
    (:mod:`usersignals.offline.arrival`; an archive's rows in one sequence, its files by
    their relative name, then row, as backfill and replay meet them: its files are no
    partitions to merge by event time), then by time, partition and offset; their labels
    grouped where no event falls between (they read the same state). Users come in the
    order of their first label."""

    planned: PlannedLabels

    @classmethod
    def of(
        cls,
        pairs: Sequence[tuple[Event, Position]],
        labels: Sequence[Label],
        repeats: EventIdDedupe | None,
    ) -> LabelPlan:
        planned = plan_labels(
            pairs if isinstance(pairs, list) else list(pairs),
            [user for _, user, _ in labels],
            [ts for _, _, ts in labels],
            [row for row, _, _ in labels],
            repeats.horizon_hours if repeats is not None else None,
            ARCHIVE_PREFIX,
        )
        return cls(planned)

    @property
    def order(self) -> list[int]:
        """The events' indices in feeding order, users one after another."""
        return self.planned.order

    @property
    def users(self) -> list[LabelledUser]:
        """Per user: their events (places in ``order``), their label groups (the events
        each includes, its labels' times)."""
        return self.planned.users

    @property
    def label_order(self) -> list[int]:
        """The labels' indices in the order the groups list them."""
        return self.planned.label_order

    def rounds(
        self, pairs: Sequence[tuple[Event, Position]], labels: Sequence[Label]
    ) -> tuple[dict[str, list[tuple[Event, Position]]], dict[str, list[tuple[int, list[Label]]]]]:
        """The plan as :func:`_in_rounds` takes it: per user, their events; and their label
        groups, each with the number of events it includes."""
        by_user: dict[str, list[tuple[Event, Position]]] = {}
        groups: dict[str, list[tuple[int, list[Label]]]] = {}
        listed = iter(self.label_order)
        order = self.order
        for places, user_groups in self.users:
            mine = [(end, [labels[next(listed)] for _ in times]) for end, times in user_groups]
            user = mine[0][1][0][1]
            by_user[user] = [pairs[order[place]] for place in places]
            groups[user] = mine
        return by_user, groups


def _in_core(
    engine: Engine,
    columns: Sequence[FeatureColumn],
    pairs: Sequence[tuple[Event, Position]],
    labels: Sequence[Label],
    plan: LabelPlan,
) -> TextColumns | None:
    """Every user's labels in one core call, when every signal is native; ``None`` when
    not, or when the core leaves a label to the object path (then the rounds answer all)."""
    flat = [pairs[index][0] for index in plan.order]
    asked = [(column.signal, column.context) for column in columns]
    values = engine.label_rows(flat, plan.planned, asked)
    if values is None:
        return None
    return TextColumns([labels[index][0] for index in plan.label_order], values)


def _in_rounds(
    parts: FeatureEngine,
    columns: Sequence[FeatureColumn],
    by_user: dict[str, list[tuple[Event, Position]]],
    groups: dict[str, list[tuple[int, list[Label]]]],
) -> list[tuple[int, list[bytes]]]:
    """The labels by rounds of micro-batches through the engine: round k applies every
    user's events up to their k-th label group, then reads that group."""
    engine, reader = parts.engine, parts.reader
    # Users with the most groups first: round k's users are a prefix of this order.
    users = sorted(groups, key=lambda user: -len(groups[user]))
    done = dict.fromkeys(groups, 0)
    out: list[tuple[int, list[bytes]]] = []
    sequence = 0
    for k in range(len(groups[users[0]]) if users else 0):
        batch: list[Event] = []
        positions: list[Position] = []
        while len(groups[users[-1]]) <= k:
            users.pop()
        current = [(user, groups[user][k]) for user in users]
        archived: dict[int, Position] = {}  # feeding order -> the event's own place
        for user, (end, _) in current:
            for event, position in by_user.get(user, [])[done[user] : end]:
                # Positions in feeding order: progress plays no part in a training set.
                sequence += 1
                batch.append(event)
                positions.append(Position("training", sequence))
                archived[sequence] = position
            done[user] = end
        report = engine.process(MicroBatch(batch, positions))
        parts.rejected.extend(
            msgspec.structs.replace(bad, position=archived[bad.position.offset])
            for bad in report.rejected
            if bad.position is not None
        )
        for user, (_, group) in current:
            out.extend(_read_group(reader, columns, user, group, parts.refused))
    return out


def _read_group(
    reader: SignalReader,
    columns: Sequence[FeatureColumn],
    user: str,
    group: Sequence[Label],
    refused: list[int],
) -> list[tuple[int, list[bytes]]]:
    """The columns' values for labels of one user that read the same state: one store read,
    then each column with "now" and ``as_of`` at each label's time."""
    key = user_key(user)
    raw = reader.store.get_many([key])[0]
    record = decode_record(key, raw) if raw else None
    out = []
    for row, _, ts in group:
        at: dict[int, ReadContext] = {}
        values = []
        for column in columns:
            context = at.get(id(column.context))
            if context is None:
                context = dataclasses.replace(column.context, as_of_ms=ts, now_ms=ts)
                at[id(column.context)] = context
            try:
                answer = reader.answer(column.signal, record, context, key)
                values.append(_encoder.encode(answer.value))
            except AsOfError:
                # The API refused this view at the label's time too (an `until` before the
                # user's newer events): it served no value, so none is made up here.
                refused.append(1)
                values.append(b"null")
            except Exception as exc:
                if isinstance(exc, UserSignalsError) or reader.is_native(column.signal):
                    raise
                # The author's read: a training set cannot leave the value out, as the API
                # does (signal_failed); stop on it in one line, naming it.
                detail = f"{type(exc).__name__}: {exc}"
                raise SignalReadError(column.signal.key, user, ts, detail) from exc
        out.append((row, values))
    return out


def training_set(job: TrainingJob) -> TrainingSummary:
    """Write ``job.out``: the label rows with each signal's point-in-time value."""
    started = time.perf_counter()
    shards = job.workers
    # The workers start now: they start up while this process reads the labels and plans.
    with ShardPool(shards, __name__) as pool:
        inputs = training_inputs(job, started)
        job, columns, table, labels = inputs.job, inputs.columns, inputs.table, inputs.labels
        # Planned here, once: a shard in a process of its own then reads no label file
        # (nor imports pyarrow to read it).
        plan = plan_label_shards(labels, shards)
        with temporary_directory("usersignals-training-") as scratch:
            tasks = [
                _Shard(
                    job, i, shards, _shard_dead_letters(job, i, Path(scratch)),
                    Path(scratch) / f"values-{i}", plan.labels[i], plan.owner, plan.borrowed[i],
                )
                for i in range(shards)
            ]  # fmt: skip
            results = pool.run(_training_shard, tasks)
            summary = _merged_and_written(job, table, len(labels), columns, tasks, results)
    summary.seconds = time.perf_counter() - inputs.started
    return summary


def _merged_and_written(
    job: TrainingJob,
    table: Any,
    rows: int,
    columns: Sequence[FeatureColumn],
    tasks: Sequence[_Shard],
    results: Sequence[_ShardResult],
) -> TrainingSummary:
    """The shards' dead letters merged and their values written with the label ``table``
    (of which ``rows`` have a user and a time)."""
    if len(tasks) > 1 and job.dead_letter is not None:
        parts = [
            (t.dead_letter, r.bad_places)
            for t, r in zip(tasks, results, strict=True)
            if t.dead_letter
        ]
        merge_dead_letters(parts, job.dead_letter)
    summary = TrainingSummary(rows=table.num_rows, rows_without_values=table.num_rows - rows)
    for result in results:
        summary.events += result.events
        summary.bad += result.bad
        summary.deletions += result.deletions
        summary.refused += result.refused
    rejected = _each_once([bad for result in results for bad in result.rejected])
    summary.signal_failed = len(rejected)
    if job.dead_letter is not None and rejected:  # after the archive's bad records
        with DeadLetterFile(job.dead_letter) as dead_letters:
            dead_letters.write(rejected)
    values = in_row_order([_shard_values(t, r) for t, r in zip(tasks, results, strict=True)])
    write_features(table, [(c.name, c.metadata) for c in columns], values, job.out)
    return summary


@dataclass(frozen=True)
class _Shard:
    job: TrainingJob
    index: int
    shards: int
    #: Where this shard writes its dead letters (the job's own file when it is the only one).
    dead_letter: Path | None
    #: Where it writes its label rows' values, unless it is the first: as the core wrote
    #: them (:func:`write_text_columns`), or the object path's table (:func:`write_values`).
    values: Path
    #: Its labels, the owner of each labelled user's records, and the users it borrows
    #: (:func:`~usersignals.offline.label_shards.plan_label_shards`, run by the parent).
    labels: list[Label]
    owner: dict[str, int]
    borrowed: frozenset[str]


@dataclass
class _ShardResult:
    #: Valid events and bad records among the shard's share of the archive.
    events: int
    bad: int
    bad_places: list[int]
    #: Deletion records of the shard's users.
    deletions: int = 0
    #: The first shard's value table: :meth:`ShardPool.run` runs it in this process, so its
    #: table stays in memory (the others come back through their files).
    values: Any = None
    #: Whether the shard's file holds the core's text columns (else an Arrow IPC table).
    text_columns_file: bool = False
    #: Events a signal's own code failed on (:attr:`FeatureEngine.rejected`).
    rejected: list[BadEvent] = field(default_factory=list)
    #: Values refused at their label's time (:attr:`FeatureEngine.refused`).
    refused: int = 0


def _each_once(rejected: list[BadEvent]) -> list[BadEvent]:
    """The shards' rejected events, each once: a user cut across shards has the events up to
    each piece's last label applied in that piece's shard, so an event one piece fails on,
    a later piece fails on again (and only a later piece reaches the events after an
    earlier one's labels). An event is known by its place in the archive."""
    seen: set[tuple[str, int] | bytes] = set()
    once: list[BadEvent] = []
    for bad in rejected:
        place = bad.raw if bad.position is None else (bad.position.partition, bad.position.offset)
        if place not in seen:
            seen.add(place)
            once.append(bad)
    return once


def _shard_values(shard: _Shard, result: _ShardResult) -> Any:
    """A shard's value table: the first's as it came back, the others' from their files."""
    if result.values is not None:
        return result.values
    if result.text_columns_file:
        return read_text_columns(shard.values)
    return read_values(shard.values)


def _shard_dead_letters(job: TrainingJob, index: int, scratch: Path) -> Path | None:
    if job.dead_letter is None or job.workers <= 1:
        return job.dead_letter
    return scratch / f"dead-{index}.jsonl"


def _training_shard(shard: _Shard) -> _ShardResult:
    job = shard.job
    settings = job.settings
    registry = job_registry(job)
    columns = feature_columns(registry, job.contexts, job.signals)
    mine = shard.labels
    users = {label[1] for label in mine}
    lookups = open_lookup_store(settings, registry)
    dead_letters = DeadLetterFile(shard.dead_letter) if shard.dead_letter else None
    try:
        parts = FeatureEngine.build(settings, registry, lookups)
        decoder = build_decoder(settings)
        archive = EventArchive(job.archive, settings.processing.batch_size)
        share = ArchiveShare(
            archive, shard.index, shard.shards, dead_letters, shard.owner, shard.borrowed
        )
        events: list[tuple[Event, Position]] = []
        deletions = Deletions()
        valid = bad = 0
        for segment in share.results(decoder):
            block = segment.decoded
            bad += len(block.bad)
            valid += len(block.events)
            events.extend(
                (event, position)
                for event, position in zip(block.events, block.positions, strict=True)
                if event.user_id in users
            )
            if segment.control is not None and segment.control_position is not None:
                deletions.add(segment.control.user_id, segment.control_position)
        events.extend(share.borrowed_events)  # a cut user's, owned by another shard
        deletions.update(share.borrowed_deletions)
        values = compute_values(parts, columns, deletions.kept(events), mine)
        result = _ShardResult(valid, bad, share.bad_places, share.deletions)
        result.rejected, result.refused = parts.rejected, len(parts.refused)
        if shard.index == 0:  # ShardPool.run runs the first task in the calling process
            result.values = values.table() if isinstance(values, TextColumns) else values
        elif isinstance(values, TextColumns):
            write_text_columns(values, shard.values)
            result.text_columns_file = True
        else:
            write_values(values, shard.values)
        return result
    finally:
        if lookups is not None:
            lookups.close()
        if dead_letters is not None:
            dead_letters.close()
