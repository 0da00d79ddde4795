"""``usersignals signals diff OLD NEW``: two versions of a signal read side by side over a
sample of users from the store — how many answers changed, and how the values are distributed
under each — before a cut-over makes NEW the served default."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from itertools import islice
from typing import Any

from usersignals.aggregations.context import ReadContext
from usersignals.errors import AsOfError, ConfigurationError
from usersignals.serving.reader import ReadPlan, SignalReader, UserSignals
from usersignals.signals.definition import Signal
from usersignals.state.codec import decode_record
from usersignals.state.keys import USER_PREFIX, user_of


@dataclass(frozen=True)
class Distribution:
    """Of a per-user magnitude: a count's total, a list's length, a number itself."""

    users: int
    mean: float
    p50: float
    p90: float
    max: float


@dataclass(frozen=True)
class DiffReport:
    old: str
    new: str
    users: int
    changed: int
    only_old: int
    only_new: int
    #: Users whose first entry (top interest, newest engagement) is the same in both.
    same_first_entry: int
    old_distribution: Distribution
    new_distribution: Distribution
    #: A few changed users, with both values, to look at.
    examples: list[dict[str, Any]]
    #: Users whose answer is empty in both versions (:func:`is_empty`; a view time past
    #: their events' windows, say): a sample of only those compares nothing.
    empty_in_both: int
    #: Per version, the context's parameters its aggregation ignores (as ``get`` lists them
    #: under ``ignored``); versions that take them all are left out.
    ignored: dict[str, list[str]]
    #: Users whose state cannot answer the view exactly (an ``as_of`` before newer events
    #: in its bucket: the API's 422), left out of the comparison; one of the reasons.
    refused: int = 0
    refusal: str | None = None
    #: Users whose answer in one version reflects a later event than in the other (a
    #: version backfilled from an archive that ends before the stream, a filter of its own).
    newer_in_old: int = 0
    newer_in_new: int = 0

    @property
    def changed_share(self) -> float:
        return self.changed / self.users if self.users else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "changed_share": round(self.changed_share, 6)}


def sample_users(reader: SignalReader, signals: list[Signal], sample: int) -> list[str]:
    """The first ``sample`` users (in key order) holding a state of any of ``signals``."""
    keys = {signal.key for signal in signals}
    users = (
        user_of(key)
        for key, raw in reader.store.scan(USER_PREFIX)
        if keys & decode_record(key, raw).states.keys()
    )
    return list(islice(users, sample))


def diff_signals(
    reader: SignalReader, old: Signal, new: Signal, sample: int, context: ReadContext
) -> DiffReport:
    if old.name != new.name:
        raise ConfigurationError(
            f"signals diff compares two versions of one signal: {old.key} and {new.key} are "
            "two signals"
        )
    given = context.given()
    unused = {signal.key: given - signal.aggregate.context_parameters() for signal in (old, new)}
    ignored = {key: sorted(names) for key, names in unused.items() if names}
    users = sample_users(reader, [old, new], sample)
    answers, refusals = _answered(reader, users, [(old, context), (new, context)])
    old_label, new_label = reader.registry.label(old), reader.registry.label(new)
    changed = only_old = only_new = same_first = empty = newer_in_old = newer_in_new = 0
    old_sizes: list[float] = []
    new_sizes: list[float] = []
    examples: list[dict[str, Any]] = []
    for answer in answers:
        before = answer.signals[old_label]
        after = answer.signals[new_label]
        old_sizes.append(magnitude(before.value))
        new_sizes.append(magnitude(after.value))
        if before.newest_event_ms is None and after.newest_event_ms is not None:
            only_new += 1
        elif after.newest_event_ms is None and before.newest_event_ms is not None:
            only_old += 1
        elif before.newest_event_ms is not None and after.newest_event_ms is not None:
            newer_in_old += before.newest_event_ms > after.newest_event_ms
            newer_in_new += after.newest_event_ms > before.newest_event_ms
        nothing = is_empty(before.value) and is_empty(after.value)
        empty += nothing
        if not nothing and first_entry(before.value) == first_entry(after.value):
            same_first += 1
        if before.value != after.value:
            changed += 1
            if len(examples) < 5:
                examples.append(
                    {"user_id": answer.user_id, "old": before.value, "new": after.value}
                )
    return DiffReport(
        old.key,
        new.key,
        len(answers),  # compared: the sample less the refused
        changed,
        only_old,
        only_new,
        same_first,
        distribution(old_sizes),
        distribution(new_sizes),
        examples,
        empty,
        ignored,
        len(refusals),
        refusals[0] if refusals else None,
        newer_in_old,
        newer_in_new,
    )


def _answered(
    reader: SignalReader, users: list[str], plan: ReadPlan
) -> tuple[list[UserSignals], list[str]]:
    """The users' answers, and the refusals of those whose state cannot answer the view
    (read one by one once a refusal is met: one user's 422 ended the whole diff)."""
    try:
        return reader.read_each(users, plan), []
    except AsOfError:
        pass
    answers: list[UserSignals] = []
    refusals: list[str] = []
    for user in users:
        try:
            answers.extend(reader.read_each([user], plan))
        except AsOfError as exc:
            refusals.append(str(exc))
    return answers, refusals


def magnitude(value: Any) -> float:
    if isinstance(value, bool) or value is None:
        return 0.0
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, dict):
        total = value.get("total")
        return float(total) if isinstance(total, int | float) else float(len(value))
    if isinstance(value, list):
        return float(len(value))
    return 0.0


def is_empty(value: Any) -> bool:
    """An answer with nothing in it: no entry, a zero count or weight, no vector; a map is
    empty when all its values are (``{"total": 0, "by": {}}``, ``{"estimate": 0}``,
    ``{"vector": None, "weight": 0.0}``)."""
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return value == 0
    if isinstance(value, str | list):
        return not value
    if isinstance(value, dict):
        return all(is_empty(item) for item in value.values())
    return False


def first_entry(value: Any) -> Any:
    if isinstance(value, list) and value:
        head = value[0]
        return head.get("key", head) if isinstance(head, dict) else head
    return value


def distribution(sizes: list[float]) -> Distribution:
    if not sizes:
        return Distribution(0, 0.0, 0.0, 0.0, 0.0)
    ordered = sorted(sizes)
    return Distribution(
        len(ordered),
        round(statistics.fmean(ordered), 6),
        ordered[len(ordered) // 2],
        ordered[min(len(ordered) - 1, int(len(ordered) * 0.9))],
        ordered[-1],
    )
