"""A partition whose offsets went backwards (a topic made again, a broker that lost its log):
the new events below the users' progress are applied, replays still are not.

Found by an operations trial: every new event at or below a user's stored progress for its
partition was skipped as already applied (220 of 2,617 events lost). An event there is now
skipped only when its id is among the ones the user's record keeps (the dedupe's
fingerprints): a replay's always is, a new event's is not. The native pipeline and the
Python steps (its reference model) are held to each other and to one pass over the events.
"""

from __future__ import annotations

import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_native_pipeline import ITEMS, open_engine, run

from native_batching import batches
from usersignals import Engine, Event, MicroBatch, Position
from usersignals.durations import HOUR_MS
from usersignals.processing.batch import BatchReport
from usersignals.state.codec import decode_record

BASE = 1_767_225_600_000
WEEK_MS = 7 * 86_400_000


def event(rng: random.Random, event_id: str, after_ms: int = 0) -> Event:
    return Event(
        event_id=event_id,
        user_id=f"u{rng.randrange(4)}",
        item_id=rng.choice(ITEMS),
        action=rng.choice(["click", "save", "view"]),
        surface=rng.choice(["home", "search"]),
        ts=BASE + after_ms + rng.randrange(2 * 86_400_000),
        attrs={"dwell": rng.choice([1, 2.5, None])},
    )


def two_logs(seed: int, first: int, second: int) -> tuple[list[Event], list[Event], list[Event]]:
    """The first log's events; the second log's (new ids, later, as a topic's events after
    it was made again are; some of the first log's events produced again); and replays of
    the first log's last events in between (a restart)."""
    rng = random.Random(seed)
    old = [event(rng, f"a{n}") for n in range(first)]
    new: list[Event] = [event(rng, f"b{n}", 2 * 86_400_000) for n in range(second)]
    for _ in range(second // 4):
        if old:
            new.insert(rng.randrange(len(new) + 1), rng.choice(old))
    replayed = old[-rng.randrange(len(old) + 1) :] if old else []
    return old, replayed, new


def positioned(events: list[Event], start: int = 0) -> list[tuple[Event, Position]]:
    return [(e, Position("t/0", start + n)) for n, e in enumerate(events)]


def states_and_seen(engine_store: object) -> dict[bytes, object]:
    records = dict(engine_store.scan(b"u:"))  # type: ignore[attr-defined]
    out: dict[bytes, object] = {}
    for key, raw in records.items():
        record = decode_record(key, raw)
        out[key] = (record.states, record.seen)
    return out


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    first=st.integers(0, 60),
    second=st.integers(1, 60),
    cuts=st.lists(st.integers(1, 150), max_size=6),
)
def test_new_events_below_the_progress_are_applied_and_replays_are_not(
    seed: int, first: int, second: int, cuts: list[int]
) -> None:
    old, replayed, new = two_logs(seed, first, second)
    # The first log at offsets 0.., its last events again (a restart), then the second log
    # from offset 0 again.
    stream = positioned(old) + positioned(replayed, first - len(replayed)) + positioned(new)
    native, python = open_engine(True, WEEK_MS), open_engine(False, WEEK_MS)
    reports = run(native, stream, cuts, rewinds=True)
    assert reports == run(python, stream, cuts, rewinds=True)
    assert dict(native.store.scan(b"u:")) == dict(python.store.scan(b"u:"))

    # One pass over the same events on a log that never went back.
    once = open_engine(True, WEEK_MS)
    run(once, positioned(old + new), [], rewinds=True)
    assert states_and_seen(native.store) == states_and_seen(once.store)

    total = BatchReport()
    for report in reports:
        total.add(report)
    assert (total.duplicates, total.rewound) == expected_counts(stream, cuts)


def expected_counts(stream: list[tuple[Event, Position]], cuts: list[int]) -> tuple[int, int]:
    """(duplicates, rewound) as the rule says, batch by batch. An event at or below its
    user's progress (as stored before its batch) is a replay when the record keeps no ids,
    when its hour is before the first hour kept (the horizon, a week, reaches past every
    event here), or when its id was met; otherwise it is rewound and applied. The record
    keeps the ids and hours of the events it admits (not repeats)."""
    progress: dict[str, int] = {}
    met: dict[str, set[str]] = {}
    hours: dict[str, set[int]] = {}
    duplicates = rewound = 0
    for batch in batches(stream, cuts):
        taken: list[tuple[Event, Position]] = []
        for e, position in batch:
            user = e.user_id
            if position.offset > progress.get(user, -1):
                taken.append((e, position))
            elif (
                not hours.get(user)
                or e.ts // HOUR_MS < min(hours[user])
                or e.event_id in met.get(user, set())
            ):
                duplicates += 1
            else:
                rewound += 1
                taken.append((e, position))
        for e, position in taken:
            progress[e.user_id] = max(progress.get(e.user_id, -1), position.offset)
            if e.event_id not in met.setdefault(e.user_id, set()):
                met[e.user_id].add(e.event_id)
                hours.setdefault(e.user_id, set()).add(e.ts // HOUR_MS)
    return duplicates, rewound


@pytest.mark.parametrize("native", [True, False])
def test_a_spool_deletion_keeps_the_events_acknowledged_before_it_out(native: bool) -> None:
    """The spool's deletion leaves the user a record of the progress of the events it had
    acknowledged before it in other files, with no ids. Once the user has new events,
    those older events must still count as applied, not as a partition gone back: the
    spool's offsets never go backwards, and its runner trusts the progress. (With the
    Kafka runner's rule the late event below would be taken: it is newer than the new ones
    and its id was never met.)"""
    rng = random.Random(9)
    user = "u1"
    later = [
        msgspec.structs.replace(event(rng, f"b{n}"), user_id=user, ts=BASE + n * HOUR_MS)
        for n in range(3)
    ]
    late = msgspec.structs.replace(event(rng, "a0"), user_id=user, ts=BASE + 10 * HOUR_MS)
    engine = open_engine(native, WEEK_MS)
    engine.delete_users([user], applied_before={"spool:other": 5})
    engine.process(MicroBatch(later, [Position("spool:mine", n) for n in range(3)]))
    report = engine.process(MicroBatch([late], [Position("spool:other", 2)]))
    assert (report.duplicates, report.rewound) == (1, 0)


def test_a_replay_after_the_horizon_was_raised_is_not_applied_twice() -> None:
    """From a review: fingerprints pruned under a shorter horizon looked "never met" under
    a longer one, so the replay of a batch not committed before a restart that raised the
    horizon applied its older events again. Before the first hour the record keeps, the
    progress is trusted."""
    rng = random.Random(4)
    events = [event(rng, f"a{n}") for n in range(40)]
    pairs = positioned(events)
    short = open_engine(True, 3_600_000)
    run(short, pairs, [20], rewinds=True)
    raised = Engine(
        short.registry,
        short.store,
        short.materializer,
        dedupe_horizon_ms=86_400_000,
    )
    before = dict(short.store.scan(b"u:"))
    reports = run(raised, pairs[20:], [], rewinds=True)
    assert (reports[0].duplicates, reports[0].rewound) == (20, 0)
    assert dict(raised.store.scan(b"u:")) == before


def test_without_a_dedupe_horizon_the_progress_is_trusted_as_before() -> None:
    """No fingerprints are kept, so a replay cannot be told from a new event: skipped."""
    rng = random.Random(3)
    old = [event(rng, f"a{n}") for n in range(20)]
    new = [event(rng, f"b{n}") for n in range(10)]
    engine = open_engine(True, None)
    reports = run(engine, positioned(old) + positioned(new), [20], rewinds=True)
    assert reports[1].rewound == 0
    assert reports[1].duplicates == 10
