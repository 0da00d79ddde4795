"""``usersignals consistency``: the answers the API logged, recomputed offline, compared.

For every logged answer (:mod:`usersignals.serving.feature_log`) the same signal version is
computed from the event archive with the training-set machinery
(:func:`usersignals.offline.training.compute_features`): the service's engine over the
user's events at or before the request's time, read with the logged context at that time.
The report gives the share of answers that agree exactly, and the share that agree within
the aggregation's stated error (a HyperLogLog's standard error, the fixed-point quantum of
decayed sums and mean vectors; zero for exact aggregations) — the online/offline consistency
figure Chronon reports.

Requests that named an ``as_of`` are counted apart (``skipped``): the training machinery reads
as of the request's time, which is what they asked only when ``as_of`` was absent.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import msgspec

from usersignals.aggregations.context import ReadContext
from usersignals.aggregations.decayed import DecayedScores, MeanVector
from usersignals.aggregations.distinct import Distinct
from usersignals.assembly import build_decoder
from usersignals.config import Settings
from usersignals.errors import (
    ConfigurationError,
    ContextError,
    SignalsMismatchError,
    StoreError,
)
from usersignals.events.model import Event, Position
from usersignals.ingest.archive import EventArchive
from usersignals.offline.common import open_existing, open_lookup_store
from usersignals.offline.deletions import Deletions
from usersignals.offline.features_file import value_rows
from usersignals.offline.label_shards import Label
from usersignals.offline.training import FeatureColumn, FeatureEngine, compute_features
from usersignals.processing.pipeline import decode_segments
from usersignals.serving.feature_log import FeatureLogRecord, read_feature_log
from usersignals.serving.feature_records import LoggedAnswer
from usersignals.serving.identity import mismatch
from usersignals.signals.definition import Signal
from usersignals.signals.registry import SignalRegistry
from usersignals.state.keys import SIGNALS_KEY
from usersignals.state.store import StateStore

logger = logging.getLogger(__name__)

_SHOWN_MISMATCHES = 5
_SHOWN_UNREADABLE = 20

#: Why an answer differs from its recomputation, as far as the log and the archive tell.
#: ``behind``: the archive holds an event of the user at or before the request's time that
#: is newer than every event the answer counted (the served state had not applied it yet:
#: freshness, not a bug); ``ahead``: the answer counted an event stamped after the request
#: (a producer's clock ahead: the API's view moves to it, a recomputation at the request's
#: time leaves it out); anything else is ``unexplained``.
BEHIND, AHEAD, UNEXPLAINED = "behind", "ahead", "unexplained"


@dataclass
class SignalAgreement:
    answers: int = 0
    exact: int = 0
    within_error: int = 0


@dataclass
class ConsistencyReport:
    records: int = 0
    skipped: int = 0
    answers: int = 0
    exact: int = 0
    within_error: int = 0
    per_signal: dict[str, SignalAgreement] = field(default_factory=dict)
    mismatches: list[dict[str, Any]] = field(default_factory=list)
    #: Logged requests whose context this release refuses (an empty value, a time in
    #: seconds): not compared.
    outdated: int = 0
    #: Log lines skipped (a JSONL line, a Parquet row, or a whole Parquet file that cannot
    #: be read, each counted once), and the first of them (:data:`_SHOWN_UNREADABLE`), each
    #: ``FILE:LINE: reason`` (``FILE: reason`` for a file).
    unreadable_lines: int = 0
    unreadable: list[str] = field(default_factory=list)
    #: Logged answers of versions the module does not declare (``name@version`` → how
    #: many; a version deleted after a cut-over, say): nothing to recompute them with.
    undeclared: dict[str, int] = field(default_factory=dict)
    #: The answers that differ, by what the log and the archive say of why (:func:`why`).
    differences: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys((BEHIND, AHEAD, UNEXPLAINED), 0)
    )

    def add(
        self,
        key: str,
        online: Any,
        offline: Any,
        tolerance: float,
        record: FeatureLogRecord,
        cause: Callable[[], str],
    ) -> None:
        """One answer compared; ``cause`` says why it differs, when it does."""
        agreement = self.per_signal.setdefault(key, SignalAgreement())
        exact = online == offline
        close = exact or _close(online, offline, tolerance)
        for counts in (self, agreement):
            counts.answers += 1
            counts.exact += exact
            counts.within_error += close
        if exact:
            return
        found = cause()
        self.differences[found] += 1
        if len(self.mismatches) < _SHOWN_MISMATCHES:
            # With the request's context: `usersignals get` with it (and --as-of the time)
            # reads the same view again.
            self.mismatches.append(
                {
                    "signal": key, "where": f"{record.user_id} at {record.ts}",
                    "user_id": record.user_id, "ts": record.ts, "context": record.params,
                    "online": online, "offline": offline, "why": found,
                }
            )  # fmt: skip

    @property
    def exact_share(self) -> float:
        return self.exact / self.answers if self.answers else 1.0

    @property
    def within_error_share(self) -> float:
        return self.within_error / self.answers if self.answers else 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "skipped": self.skipped,
            "outdated": self.outdated,
            "answers": self.answers,
            "exact": self.exact,
            "within_error": self.within_error,
            "exact_share": round(self.exact_share, 6),
            "within_error_share": round(self.within_error_share, 6),
            "per_signal": {key: vars(value) for key, value in sorted(self.per_signal.items())},
            "mismatches": self.mismatches,
            "differences": self.differences,
            "unreadable_lines": self.unreadable_lines,
            "unreadable": self.unreadable,
            "undeclared": dict(sorted(self.undeclared.items())),
        }


def why(answer: LoggedAnswer, request_ms: int, user_times: Sequence[int]) -> str:
    """Why ``answer`` (served at ``request_ms``) differs; ``user_times``: the user's event
    times in the archive, ascending."""
    newest = answer.newest_event_ms
    if newest is msgspec.UNSET:  # a log written before answers kept it: nothing to go by
        return UNEXPLAINED
    if newest is not None and newest > request_ms:
        return AHEAD
    before = bisect.bisect_right(user_times, request_ms)
    if before and user_times[before - 1] > (newest if newest is not None else -1):
        return BEHIND
    return UNEXPLAINED


def stated_error(signal: Signal) -> float:
    """The error an aggregation states for its answers: relative for a distinct count,
    absolute per component for fixed-point sums, zero for exact aggregations."""
    aggregate = signal.aggregate
    if isinstance(aggregate, Distinct):
        return float(1.04 / (2**aggregate.precision) ** 0.5)
    if isinstance(aggregate, DecayedScores):
        return float(max((abs(w) for w in aggregate.weights.values()), default=1.0)) * 2**-20
    if isinstance(aggregate, MeanVector):
        return float(2**-16)
    return 0.0


def check_consistency(log: Path, archive: str, settings: Settings) -> ConsistencyReport:
    unreadable: list[str] = []
    records = read_feature_log(log, unreadable)
    if not records:
        message = f"no logged answers in {str(log)!r}"
        if unreadable:
            shown = f"{len(unreadable):,} unreadable lines or files, the first {unreadable[0]}"
            message += f" ({shown})"
        writing = sorted(log.glob("*.tmp")) if log.is_dir() else []
        if writing:  # a running server's Parquet files, readable once finished
            message += (
                f"; {len(writing):,} file{'s' if len(writing) > 1 else ''} still being written "
                f"(*.tmp, such as {writing[0].name}): read once finished, when the server "
                "finishes the file (after serving.feature_log_rows_per_file rows) or stops"
            )
        raise ConfigurationError(message)
    registry = SignalRegistry.from_module(settings.signals)
    _refuse_other_definitions(settings, registry)
    report = ConsistencyReport(
        records=len(records),
        unreadable_lines=len(unreadable),
        unreadable=unreadable[:_SHOWN_UNREADABLE],
    )
    usable = [record for record in records if "as_of" not in record.params]
    report.skipped = len(records) - len(usable)
    parsed = [record for record in usable if _still_parses(record.params)]
    report.outdated = len(usable) - len(parsed)
    usable = _declared_only(parsed, registry, report.undeclared)
    if not usable:
        raise ConfigurationError(
            f"none of the {len(records):,} logged requests could be compared: each named an "
            "as_of, which the recomputation cannot take"
        )
    lookups = open_lookup_store(settings, registry)
    try:
        history = _History.of(archive, settings, {record.user_id for record in usable})
        groups: dict[tuple[tuple[str, str], ...], list[int]] = {}
        for index, record in enumerate(usable):
            context = tuple(sorted((k, v) for k, v in record.params.items() if k != "names"))
            groups.setdefault(context, []).append(index)
        for context, indices in groups.items():
            _check_group(
                report,
                (registry, settings, lookups),
                history,
                dict(context),
                [usable[i] for i in indices],
            )
    finally:
        if lookups is not None:
            lookups.close()
    return report


@dataclass(frozen=True)
class _History:
    """The logged users' archive: their events, each user's event times ascending, and,
    for the users it deletes, their events once every deletion is applied."""

    events: list[tuple[Event, Position]]
    times: dict[str, list[int]]
    deleted: frozenset[str]
    after_deletions: list[tuple[Event, Position]]

    @classmethod
    def of(cls, archive: str, settings: Settings, users: set[str]) -> _History:
        events, deletions = _archive_events(archive, settings, users)
        times: dict[str, list[int]] = {}
        for event, _ in events:
            times.setdefault(event.user_id, []).append(event.ts)
        for user_times in times.values():
            user_times.sort()
        deleted = deletions.users()
        after = deletions.kept([pair for pair in events if pair[0].user_id in deleted])
        return cls(events, times, deleted, after)


def _check_group(
    report: ConsistencyReport,
    deployment: tuple[SignalRegistry, Settings, StateStore | None],
    history: _History,
    params: dict[str, str],
    records: Sequence[FeatureLogRecord],
) -> None:
    """Records read with one context. A request may have named two versions of a signal;
    each pass serves one version of each name, so the reader answers every column by name.

    The archive does not say when a user's deletion was applied: their answers are
    recomputed from their events with and without it, and agree with either."""
    registry = deployment[0]
    versions: dict[str, set[int]] = {}
    for record in records:
        for answer in record.signals.values():
            versions.setdefault(answer.name, set()).add(answer.version)
    passes = max((len(found) for found in versions.values()), default=0)
    labels: list[Label] = [(row, record.user_id, record.ts) for row, record in enumerate(records)]
    deleted = [label for label in labels if label[1] in history.deleted]
    for number in range(passes):
        served = {
            name: sorted(found)[number] for name, found in versions.items() if number < len(found)
        }
        registry.serve(served)
        context = ReadContext.parse(params, now_ms=0)
        signals = [registry.get(f"{name}@{version}") for name, version in served.items()]
        columns = [FeatureColumn(signal.name, signal, context) for signal in signals]
        rows = _recomputed(deployment, columns, history.events, labels)
        after = _recomputed(deployment, columns, history.after_deletions, deleted)
        for row, record in enumerate(records):
            for index, column in enumerate(columns):
                signal = column.signal
                tolerance = stated_error(signal)
                for answer in record.signals.values():
                    if answer.name != signal.name or answer.version != signal.version:
                        continue
                    texts = [rows[row][index], *([after[row][index]] if row in after else [])]
                    offline = nearest(
                        answer.value, [msgspec.json.decode(t) for t in texts], tolerance
                    )
                    cause = partial(why, answer, record.ts, history.times.get(record.user_id, ()))
                    report.add(signal.key, answer.value, offline, tolerance, record, cause)


def _recomputed(
    deployment: tuple[SignalRegistry, Settings, StateStore | None],
    columns: list[FeatureColumn],
    events: list[tuple[Event, Position]],
    labels: list[Label],
) -> dict[int, list[str]]:
    """The columns' values (JSON texts) at each label, by label row."""
    if not labels:
        return {}
    registry, settings, lookups = deployment
    parts = FeatureEngine.build(settings, registry, lookups)
    return value_rows(compute_features(parts, columns, events, labels))


def _declared_only(
    records: list[FeatureLogRecord], registry: SignalRegistry, undeclared: dict[str, int]
) -> list[FeatureLogRecord]:
    """``records`` with only the answers of versions the module declares; the others are
    counted in ``undeclared``. A log outlives versions (the README deletes the old one from
    the module after a cut-over): one such answer must not keep the rest from being
    compared. A log holding none of the module's versions is another deployment's."""
    declared = {signal.key for signal in registry.computed}
    kept = []
    for record in records:
        answers = {}
        for label, answer in record.signals.items():
            key = f"{answer.name}@{answer.version}"
            if key in declared:
                answers[label] = answer
            else:
                undeclared[key] = undeclared.get(key, 0) + 1
        if answers:
            kept.append(msgspec.structs.replace(record, signals=answers))
    if records and not kept:
        raise ConfigurationError(
            f"none of the logged answers is of a signal version the module declares: the log "
            f"holds {', '.join(sorted(undeclared))}, the module declares "
            f"{', '.join(sorted(declared))} (another deployment's log, or --signals)"
        )
    return kept


def _refuse_other_definitions(settings: Settings, registry: SignalRegistry) -> None:
    """The logged answers were computed by the definitions the store records: a module that
    defines a signal otherwise under the same version would recompute something else, and
    every difference would pass for drift. Refused by the check ``serve`` and ``get`` make
    (:func:`usersignals.serving.identity.mismatch`)."""
    try:
        store = open_existing(settings)
        if store is None:
            return
        try:
            recorded = store.get_many([SIGNALS_KEY])[0]
        finally:
            store.close()
    except StoreError as exc:  # the check needs the store; the recomputation does not
        logger.warning("the store does not answer (%s): signal definitions not checked", exc)
        return
    problem = mismatch(recorded, settings.signals, registry)
    if problem is not None:
        raise SignalsMismatchError(f"{problem}; the recomputation would be of other signals")


def _archive_events(
    archive: str, settings: Settings, users: set[str]
) -> tuple[list[tuple[Event, Position]], Deletions]:
    """The valid events of ``users`` in the archive, and their deletion records."""
    decoder = build_decoder(settings)
    events: list[tuple[Event, Position]] = []
    deletions = Deletions()
    for block in EventArchive(archive, settings.processing.batch_size).blocks():
        for segment in decode_segments(decoder, block.lines, block.positions):
            valid = segment.decoded
            events.extend(
                (event, position)
                for event, position in zip(valid.events, valid.positions, strict=True)
                if event.user_id in users
            )
            deleted, place = segment.control, segment.control_position
            if deleted is not None and place is not None and deleted.user_id in users:
                deletions.add(deleted.user_id, place)
    return events, deletions


def nearest(online: Any, recomputed: Sequence[Any], tolerance: float) -> Any:
    """The recomputation to compare ``online`` with, of several equally possible ones (a
    deleted user's, without and with the deletion): the first equal to it, else the first
    within ``tolerance``, else the first."""
    for candidate in recomputed:
        if candidate == online:
            return candidate
    return next((c for c in recomputed if _close(online, c, tolerance)), recomputed[0])


def _close(online: Any, offline: Any, tolerance: float) -> bool:
    """Equal up to ``tolerance`` in every number (relative above 1, absolute below)."""
    if tolerance <= 0:
        return False
    if isinstance(online, bool) or isinstance(offline, bool):
        return bool(online == offline)
    if isinstance(online, int | float) and isinstance(offline, int | float):
        return abs(online - offline) <= tolerance * max(1.0, abs(online), abs(offline))
    if isinstance(online, list) and isinstance(offline, list):
        return len(online) == len(offline) and all(
            _close(a, b, tolerance) or a == b for a, b in zip(online, offline, strict=True)
        )
    if isinstance(online, dict) and isinstance(offline, dict):
        return online.keys() == offline.keys() and all(
            online[k] == offline[k] or _close(online[k], offline[k], tolerance) for k in online
        )
    return bool(online == offline)


def _still_parses(params: dict[str, str]) -> bool:
    """Whether a logged request's context is one this release takes (an older worker may
    have answered one it now refuses)."""
    try:
        ReadContext.parse({k: v for k, v in params.items() if k != "names"}, now_ms=0)
    except ContextError:
        return False
    return True
