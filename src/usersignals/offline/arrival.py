"""The order the stream delivered an archive's events in, as far as the archive tells it.

The event-id dedupe judges a repeat by the events delivered before it, so the offline jobs
judge repeats in this order, not by event time (an archive laid out by event day puts a
late redelivery beside its original).

Within a Kafka partition the order is the offsets'. Across partitions the archive does not
say how the processor's reads interleaved: a user's partitions are merged by event time, each
partition's events kept in offset order. A producer keyed by user puts each user's events on one
partition, and this is exact; a retry written to another partition is placed beside its
original (it carries the original's time), where the processor, reading both partitions at
once, met it soon after. Rows without coordinates (``archive:<file>``, row) are in the
archive's order: files by their relative name, then row.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from operator import attrgetter, itemgetter

from usersignals.events.model import Event
from usersignals.processing.dedupe import users_with_repeats

_TIME = itemgetter(0)
_PARTITION = itemgetter(0)
_USER = attrgetter("user_id")


def arrival_order(
    events: Sequence[Event],
    places: Sequence[tuple[str, int]],
    spread: set[str] | None = None,
) -> list[int]:
    """The indices of ``events`` (at ``places``: partition and offset) with each user's
    events in the order the stream delivered them, where that order decides anything.

    Only the event-id dedupe depends on the order (the states are the same in any order),
    so only a user with an event-id fingerprint twice and events on several partitions
    needs the merge; everyone else keeps offset order. Across users the order is any.
    ``spread``: the users with events on several partitions (a superset does too), when
    the caller knows them already (the backfill's ``Taker`` tracks each user's partitions);
    finding them here is most of this function's time for a producer keyed by user."""
    order = sorted(range(len(places)), key=places.__getitem__)
    if spread is None:
        homes = list(zip(map(_USER, events), map(_PARTITION, places), strict=True))
        home = dict(homes)
        spread = {user for user, partition in homes if home[user] != partition}
    merging = users_with_repeats(e for e in events if e.user_id in spread) if spread else set()
    if not merging:  # no repeats to judge: offsets alone
        return order
    kept: list[int] = []
    runs: dict[str, dict[str, list[tuple[int, int]]]] = {}  # user -> partition -> (time, i)
    for index in order:
        user = events[index].user_id
        if user in merging:
            user_runs = runs.setdefault(user, {})
            user_runs.setdefault(places[index][0], []).append((events[index].ts, index))
        else:
            kept.append(index)
    for user_runs in runs.values():
        # The user's partitions merged on their own: a merge of everyone's would let other
        # users' events decide which of this user's heads comes first.
        merged = heapq.merge(*(user_runs[partition] for partition in sorted(user_runs)), key=_TIME)
        kept.extend(index for _, index in merged)
    return kept
