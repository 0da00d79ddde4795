"""A training set's plan in the core (``LabelPlan``, ``usersignals._core.plan_labels``) is
what the Python steps it replaced give: the reference model below, for random events over
several partitions with redelivered ids, random dedupe horizons and random labels.

The reference: each event placed where it arrived (an archive's rows in one sequence, its
files ranked by name above their row numbers; Kafka coordinates as they are); each user's
events less the repeats ``EventIdDedupe`` drops, judged in ``arrival_order``; then sorted by
time, partition and offset; each user's labels, by time then row, grouped where no event of
the user falls between them.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st

from usersignals import Event, Position, hours
from usersignals.offline.arrival import arrival_order
from usersignals.offline.label_shards import Label
from usersignals.offline.training import LabelPlan
from usersignals.processing.dedupe import EventIdDedupe, users_with_repeats

Pairs = list[tuple[Event, Position]]
Groups = dict[str, list[tuple[int, list[Label]]]]

USERS = ["u1", "u2", "u3"]
PARTITIONS = ["a/1", "a/0", "b/0", "archive:b.jsonl", "archive:a/x.jsonl"]


def without_repeats(pairs: Pairs, dedupe: EventIdDedupe) -> Pairs:
    if len(pairs) < 2 or not users_with_repeats(event for event, _ in pairs):
        return pairs
    order = arrival_order(
        [event for event, _ in pairs],
        [(position.partition, position.offset) for _, position in pairs],
    )
    arrived = [pairs[index] for index in order]
    admitted, _ = dedupe.admit({}, [event for event, _ in arrived], range(len(arrived)))
    return [arrived[index] for index in admitted]


def label_groups(by_user: dict[str, Pairs], labels: Sequence[Label]) -> Groups:
    groups: Groups = {}
    times = {user: [event.ts for event, _ in pairs] for user, pairs in by_user.items()}
    for label in sorted(labels, key=lambda label: (label[2], label[0])):
        user = label[1]
        end = bisect.bisect_right(times.get(user, ()), label[2])
        lists = groups.setdefault(user, [])
        if lists and lists[-1][0] == end:
            lists[-1][1].append(label)
        else:
            lists.append((end, [label]))
    return groups


def reference(
    pairs: Pairs, labels: Sequence[Label], dedupe: EventIdDedupe | None
) -> tuple[dict[str, Pairs], Groups]:
    names, offsets = arrival_places_reference([position for _, position in pairs])
    placed = [
        (event, Position(name, offset))
        for (event, _), name, offset in zip(pairs, names, offsets, strict=True)
    ]
    original = {id(position): pair for (_, position), pair in zip(placed, pairs, strict=True)}
    by_user: dict[str, Pairs] = {}
    for event, position in placed:
        by_user.setdefault(event.user_id, []).append((event, position))
    for user, user_events in by_user.items():
        if dedupe is not None:
            user_events = by_user[user] = without_repeats(user_events, dedupe)
        user_events.sort(key=lambda pair: (pair[0].ts, pair[1].partition, pair[1].offset))
    groups = label_groups(by_user, labels)
    in_pairs = {
        user: [original[id(position)] for _, position in by_user.get(user, [])] for user in groups
    }
    return in_pairs, groups


raw_events = st.lists(
    st.tuples(
        st.sampled_from(USERS),
        st.integers(0, 12),  # time, in hours: ties and late events alike
        st.sampled_from(PARTITIONS),
        st.integers(0, 5),  # event id: few, so ids repeat
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(
    raw=raw_events,
    labels_at=st.lists(st.tuples(st.sampled_from([*USERS, "nobody"]), st.integers(-1, 13))),
    horizon=st.one_of(st.none(), st.integers(1, 6)),
    shuffle=st.randoms(use_true_random=False),
)
def test_the_core_plans_what_the_python_steps_planned(
    raw: list[tuple[str, int, str, int]],
    labels_at: list[tuple[str, int]],
    horizon: int | None,
    shuffle: object,
) -> None:
    offsets = dict.fromkeys(PARTITIONS, 0)
    pairs: Pairs = []
    for n, (user, hour, partition, event_id) in enumerate(raw):
        offsets[partition] += 1 + n % 2  # ascending within each partition, with gaps
        event = Event(f"e{event_id}", user, "i1", "click", "home", hour * hours(1))
        pairs.append((event, Position(partition, offsets[partition])))
    labels = [(row * 3, user, hour * hours(1)) for row, (user, hour) in enumerate(labels_at)]
    shuffle.shuffle(labels)  # type: ignore[attr-defined]
    dedupe = EventIdDedupe(hours(horizon)) if horizon is not None else None

    plan = LabelPlan.of(pairs, labels, dedupe)
    by_user, groups = plan.rounds(pairs, labels)

    expected_by_user, expected_groups = reference(pairs, labels, dedupe)
    assert list(groups.items()) == list(expected_groups.items())
    assert by_user == expected_by_user
    assert sorted(plan.label_order) == list(range(len(labels)))


def test_a_plan_of_nothing_is_empty() -> None:
    plan = LabelPlan.of([], [], EventIdDedupe(hours(1)))
    assert (plan.order, plan.users, plan.label_order) == ([], [], [])


def arrival_places_reference(positions: Sequence[Position]) -> tuple[list[str], list[int]]:
    """Where each event arrived, as the plan judges it: archive rows in one sequence, files
    ranked by name above their row numbers; Kafka coordinates as they are."""
    names = sorted({p.partition for p in positions if p.partition.startswith("archive:")})
    rank = {name: index for index, name in enumerate(names)}
    partitions, offsets = [], []
    for position in positions:
        file = rank.get(position.partition)
        if file is None:
            partitions.append(position.partition)
            offsets.append(position.offset)
        else:
            partitions.append("archive:")
            offsets.append(file << 40 | position.offset)
    return partitions, offsets
