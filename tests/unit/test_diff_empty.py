"""What ``signals diff`` counts as an empty answer: each aggregation's answer for a user with
nothing in view, read from the real reader, and nothing else."""

from __future__ import annotations

import pytest

from usersignals import SignalRegistry
from usersignals.aggregations.context import ReadContext
from usersignals.offline.diff import is_empty
from usersignals.serving.reader import SignalReader
from usersignals.state.memory import MemoryStore


def test_every_reference_signal_reads_empty_for_a_user_without_events() -> None:
    registry = SignalRegistry.from_module("usersignals.examples.reference")
    answer = SignalReader(registry, MemoryStore()).read("nobody", None, ReadContext.parse({}))
    assert len(answer.signals) == 5
    for name, result in answer.signals.items():
        assert is_empty(result.value), (name, result.value)


@pytest.mark.parametrize(
    "value",
    [1, 0.5, True, False, "x", [{"key": "c1", "score": 0.0}], {"total": 3, "by": {}},
     {"estimate": 2}, {"vector": [0.0, 0.0], "weight": 1.0}],
)  # fmt: skip
def test_an_answer_with_anything_in_it_is_not_empty(value: object) -> None:
    assert not is_empty(value)


def test_two_different_signals_are_not_diffed() -> None:
    """Found in a newcomer's trial: ``signals diff category_interest@1 action_counts@1`` ran
    and reported every user changed. It compares two versions of one signal."""
    from usersignals.errors import ConfigurationError
    from usersignals.offline.diff import diff_signals

    registry = SignalRegistry.from_module("usersignals.examples.reference")
    reader = SignalReader(registry, MemoryStore())
    with pytest.raises(ConfigurationError, match="two versions of one signal"):
        diff_signals(
            reader,
            registry.get("category_interest"),
            registry.get("action_counts"),
            10,
            ReadContext.parse({}),
        )


def test_a_diff_says_which_context_parameters_each_version_ignores() -> None:
    """Found in a newcomer's trial: the README's own example diffs a DecayedScores signal
    with ``--context window=7d``, which it ignores; the diff said nothing (``get`` lists
    it under ``ignored``)."""
    from usersignals.offline.diff import diff_signals

    registry = SignalRegistry.from_module("usersignals.examples.reference")
    reader = SignalReader(registry, MemoryStore())
    interests = registry.get("category_interest")
    report = diff_signals(
        reader, interests, interests, 10, ReadContext.parse({"window": "7d", "limit": "5"})
    )
    assert report.ignored == {"category_interest@1": ["window"]}
    assert report.to_json()["ignored"] == {"category_interest@1": ["window"]}


def test_users_that_cannot_answer_the_as_of_are_counted_not_fatal() -> None:
    """Found in an ML engineer's trial: `signals diff --context as_of=...`, as the README
    suggests, ended in an error at the first sampled user whose state cannot answer that
    time exactly (events later in the same day's bucket), with no result. Such users are
    counted apart, one reason shown; the others are compared. And users empty in both
    versions are not counted as having the same first entry (they have none)."""
    from usersignals import DecayedScores, Engine, MicroBatch, Position, Signal
    from usersignals.offline.diff import diff_signals
    from usersignals.testing import event

    day, hour = 86_400_000, 3_600_000
    base = 1_767_225_600_000
    v1 = Signal(name="interests", version=1, aggregate=DecayedScores(key="surface"))
    v2 = Signal(name="interests", version=2, aggregate=DecayedScores(key="action"), shadow=True)
    registry = SignalRegistry([v1, v2])
    store = MemoryStore()
    events = [
        event("early", "i1", "click", ts=base + hour),  # all before the as_of
        event("late", "i1", "click", ts=base + hour),
        event("late", "i2", "save", ts=base + 20 * hour),  # later the same day: refused
        event("quiet", "i1", "click", ts=base - 400 * day),  # long expired: empty in both
    ]
    Engine(registry, store).process(
        MicroBatch(events, [Position("p", n) for n in range(len(events))])
    )
    report = diff_signals(
        SignalReader(registry, store), v1, v2, 10,
        ReadContext.parse({"as_of": str(base + 2 * hour)}),
    )  # fmt: skip
    assert (report.users, report.refused) == (2, 1)  # compared, and refused
    assert "late" in report.refusal
    assert report.changed == 1  # "early": by surface against by action
    assert report.empty_in_both == 1
    assert report.same_first_entry == 0  # "quiet" has no first entry in either


def test_a_diff_counts_the_users_whose_versions_saw_different_newest_events() -> None:
    """Found in an author's trial: a new version backfilled from an archive that ended
    before the stream, cut over, and diffed first: the diff said "changed", nothing of the
    new version missing the old one's latest events. It counts the users whose answer in
    one version reflects a later event than in the other (here the new version's filter
    leaves u1's latest event out, as a short backfill would)."""
    from usersignals import Count, Engine, Event, MicroBatch, Position, Signal, action, days
    from usersignals.offline.diff import diff_signals

    old = Signal(name="clicks", version=1, aggregate=Count(by="action"), retention=days(7))
    new = Signal(
        name="clicks", version=2, aggregate=Count(by="action"), retention=days(7),
        where=action.eq("click"), shadow=True,
    )  # fmt: skip
    both = SignalRegistry([old, new])
    now = 1_767_225_600_000
    events = [
        Event("e1", "u1", "i1", "click", "home", now - 60_000),
        Event("e2", "u2", "i1", "click", "home", now - 60_000),
        Event("e3", "u1", "i1", "save", "home", now),
    ]
    store = MemoryStore()
    Engine(both, store).process(MicroBatch(events, [Position("t/0", n) for n in range(3)]))
    reader = SignalReader(both, store)
    context = ReadContext.parse({"as_of": str(now)})
    report = diff_signals(reader, both.get("clicks@1"), both.get("clicks@2"), 10, context)
    assert (report.newer_in_old, report.newer_in_new) == (1, 0)
