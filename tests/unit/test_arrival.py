"""The stream's order of an archive's events (``usersignals.offline.arrival``)."""

from __future__ import annotations

import zlib

from hypothesis import given
from hypothesis import strategies as st

from usersignals import Event
from usersignals.offline.arrival import arrival_order

Row = tuple[str, int, int, str, str]  # partition, offset, time, user, event id

rows = st.lists(
    st.tuples(
        st.sampled_from(["t/0", "t/1", "t/2"]),
        st.integers(0, 1_000),
        st.integers(0, 50),
        st.sampled_from(["u1", "u2", "u3"]),
        st.sampled_from(["e1", "e2", "e3", "e4", "e5", "e6"]),
    ),
    max_size=40,
    unique_by=lambda row: (row[0], row[1]),
)


def event(row: Row) -> Event:
    _, _, ts, user, event_id = row
    return Event(event_id, user, "i1", "click", "home", ts)


def order_of(got: list[Row]) -> list[int]:
    return arrival_order([event(row) for row in got], [(p, o) for p, o, *_ in got])


def merged(runs: list[list[Row]]) -> list[Row]:
    """The runs merged by time, each kept in order, a tie to the first run (a reference
    written apart from ``heapq.merge``)."""
    out: list[Row] = []
    while any(runs):
        first = min((run for run in runs if run), key=lambda run: run[0][2])
        out.append(first.pop(0))
    return out


@given(rows)
def test_each_users_events_come_in_the_streams_order_where_it_decides_anything(
    got: list[Row],
) -> None:
    """Every event once; each user's events keep each partition's offset order; a user
    whose event ids repeat (by fingerprint) across partitions gets their partitions merged
    by time."""
    order = order_of(got)
    assert sorted(order) == list(range(len(got)))
    # A superset of the spread users (everyone) gives each user the same order.
    everyone = {row[3] for row in got}
    places = [(p, o) for p, o, *_ in got]
    told = arrival_order([event(row) for row in got], places, everyone)
    for user in everyone:
        assert [i for i in told if got[i][3] == user] == [i for i in order if got[i][3] == user]
    for user in {row[3] for row in got}:
        mine = [got[i] for i in order if got[i][3] == user]
        runs = [
            sorted((row for row in mine if row[0] == partition), key=lambda row: row[1])
            for partition in sorted({row[0] for row in mine})
        ]
        fingerprints = [zlib.crc32(row[4].encode()) for row in mine]
        if len(runs) > 1 and len(set(fingerprints)) < len(fingerprints):
            assert mine == merged(runs)
        else:
            for run in runs:  # each non-empty: one per partition the user has rows on
                assert [row for row in mine if row[0] == run[0][0]] == run


def test_one_partition_is_offset_order_whatever_the_times() -> None:
    got = [("t/0", 2, 30, "u1", "e1"), ("t/0", 0, 10, "u1", "e1"), ("t/0", 1, 20, "u1", "e2")]
    assert order_of(got) == [1, 2, 0]


def test_a_retry_on_another_partition_goes_beside_its_original() -> None:
    """The retry on ``t/1`` carries its original's time: it goes right after it, before the
    home partition's later events (a late one included, as its partition keeps it)."""
    got = [
        ("t/0", 0, 100, "u1", "e1"),
        ("t/0", 1, 300, "u1", "e2"),
        ("t/0", 2, 50, "u1", "e3"),
        ("t/1", 0, 100, "u1", "e1"),
    ]
    assert order_of(got) == [0, 3, 1, 2]
