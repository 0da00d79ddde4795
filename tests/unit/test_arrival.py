"""The stream's order of an archive's events (``usersignals.offline.arrival``)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from usersignals.offline.arrival import arrival_order

places = st.lists(
    st.tuples(st.sampled_from(["t/0", "t/1", "t/2"]), st.integers(0, 1_000), st.integers(0, 50)),
    max_size=40,
    unique_by=lambda place: (place[0], place[1]),
)


@given(places)
def test_each_partition_keeps_its_offset_order_and_every_event_comes_once(
    events: list[tuple[str, int, int]],
) -> None:
    order = arrival_order([ts for _, _, ts in events], [(p, o) for p, o, _ in events])
    assert sorted(order) == list(range(len(events)))
    for partition in {p for p, _, _ in events}:
        offsets = [events[i][1] for i in order if events[i][0] == partition]
        assert offsets == sorted(offsets)


def test_one_partition_is_offset_order_whatever_the_times() -> None:
    assert arrival_order([30, 10, 20], [("t/0", 2), ("t/0", 0), ("t/0", 1)]) == [1, 2, 0]


def test_partitions_merge_by_event_time_a_tie_to_the_first_partition() -> None:
    """A retry on ``t/1`` carries its original's time: it goes right after it, before the
    home partition's later events (a late one included, as its partition keeps it)."""
    times = [100, 300, 50, 100]
    places = [("t/0", 0), ("t/0", 1), ("t/0", 2), ("t/1", 0)]
    assert arrival_order(times, places) == [0, 3, 1, 2]
