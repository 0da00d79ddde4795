"""``event_id`` as an idempotency key: a repeat within a horizon is dropped, once per user.

Each user's record keeps the fingerprints of the event ids it applied recently: hour of the
event time → the sorted, distinct 32-bit fingerprints (CRC-32 of the id) of that hour, as
big-endian bytes. An event is a repeat when its fingerprint was applied within the horizon;
the horizon reaches back ``horizon`` (rounded up to whole hours) from the newest event time
applied before it, in arrival order — so whether a line is a repeat depends only on the lines
before it, never on how they were split into micro-batches, and the kept fingerprints depend
only on the set of events applied: the state stays canonical.

Memory is bounded by the user's events within the horizon (4 bytes each), and by
:data:`IDS_PER_HOUR` fingerprints an hour: once an hour of a user's record holds that many, the
ids applied in it later are not recorded, so a repeat of one of them is applied again (a user of
more than 2.3 events a second for an hour: a bot, whose record grew by a MB a minute,
rewritten in each batch of theirs). Fingerprints can collide: a new event is taken for a repeat
with probability ``k / 2**32`` when the user has ``k`` events within the horizon (2.3e-7 for
1,000 events a day). A repeat of an event older than the horizon (behind the newest event seen
before it) is not recognised and is applied again.

The same fingerprints tell a replay from a partition whose offsets went backwards (a topic
made again, a broker that lost its log): an event at or below its user's progress for its
partition was met before only if its id is among the ones kept (:class:`KeptIds`); asked by
the Kafka processor only, whose topics can go back. Skipped on the offset alone, every new
event below the old offsets was lost. (A replay of a repeat whose first event has since left
the horizon is applied then, as any repeat older than the horizon is; in a full hour, the
offset alone decides, as it did before.)
"""

from __future__ import annotations

import sys
import zlib
from array import array
from collections.abc import Iterable, Sequence

from usersignals.durations import HOUR_MS
from usersignals.events.model import Event

Seen = dict[int, bytes]  # hour (ts // 1 h) -> sorted distinct 4-byte big-endian fingerprints
#: The fingerprints an hour of a user's record keeps at most (32 KiB). Part of the record
#: format, as the core's ``dedupe::IDS_PER_HOUR``: a larger cap would leave hours full under
#: the old one looking open to :class:`KeptIds`.
IDS_PER_HOUR = 8_192
_SWAP = sys.byteorder == "little"
if array("I").itemsize != 4:  # C unsigned int: 4 bytes on every platform Python supports
    raise ImportError("usersignals needs 4-byte unsigned ints in array('I')")


def _unpack(blob: bytes) -> array[int]:
    """4-byte big-endian fingerprints, decoded in C (an array, not a Python loop)."""
    values = array("I", blob)
    if _SWAP:
        values.byteswap()
    return values


def _pack(fingerprints: Iterable[int]) -> bytes:
    values = array("I", sorted(fingerprints))
    if _SWAP:
        values.byteswap()
    return values.tobytes()


def fingerprint(event_id: str) -> int:
    """What a user's record keeps of an applied event id: its CRC-32."""
    return zlib.crc32(event_id.encode())


def horizon_hours(horizon_ms: int) -> int:
    """The horizon in whole hours, rounded up: the unit the fingerprints are kept in."""
    return -(-horizon_ms // HOUR_MS)


def users_with_repeats(events: Iterable[Event]) -> set[str]:
    """The users among ``events`` with a fingerprint twice: the only ones whose events'
    arrival order can change what the dedupe drops (nothing else depends on the order)."""
    seen: set[tuple[str, int]] = set()
    twice: set[str] = set()
    for event in events:
        key = (event.user_id, fingerprint(event.event_id))
        if key in seen:
            twice.add(event.user_id)
        seen.add(key)
    return twice


class KeptIds:
    """Whether an event at or below its user's progress for its partition was met before:
    its id is among those the record keeps (applied, or dropped as a repeat of one kept).
    Before ``trusted_before`` (the older of the first hour kept, and the horizon back from
    the newest) the record cannot tell, and the progress is trusted, as before: fingerprints
    pruned under a shorter horizon, or not kept while the dedupe was off, are not missed; nor
    can it in a ``full`` hour (:data:`IDS_PER_HOUR`), whose later ids were not recorded.
    Built once per user: scanned per event, a bot's replay took seconds."""

    def __init__(self, trusted_before: int, fingerprints: set[int], full: set[int]) -> None:
        self.trusted_before = trusted_before
        self.fingerprints = fingerprints
        self.full = full

    def met(self, event: Event) -> bool:
        hour = event.ts // HOUR_MS
        return (
            hour < self.trusted_before
            or hour in self.full
            or fingerprint(event.event_id) in self.fingerprints
        )


class EventIdDedupe:
    """Drops repeated event ids of one user; see the module docstring for the guarantees."""

    def __init__(self, horizon_ms: int, ids_per_hour: int = IDS_PER_HOUR) -> None:
        self.horizon_hours = horizon_hours(horizon_ms)
        self.ids_per_hour = ids_per_hour  # another than IDS_PER_HOUR in tests only

    def kept(self, seen: Seen) -> KeptIds | None:
        """What a user's record keeps of the ids it met (:class:`KeptIds`), for its events at
        or below its progress; ``None`` when it keeps none: the progress alone decides."""
        if not seen:
            return None
        trusted_before = max(min(seen), max(seen) - self.horizon_hours)
        full = {hour for hour, blob in seen.items() if len(blob) // 4 >= self.ids_per_hour}
        return KeptIds(trusted_before, set().union(*map(_unpack, seen.values())), full)

    def admit(
        self, seen: Seen, events: Sequence[Event], indices: Sequence[int]
    ) -> tuple[list[int], Seen]:
        """The indices (arrival order) that are not repeats, and the user's new ``seen``."""
        horizon = self.horizon_hours
        newest_hour = max(seen, default=-(1 << 62))
        known: dict[int, int] = {}  # fingerprint -> newest hour it was applied in
        for hour, blob in sorted(seen.items()):
            known.update(dict.fromkeys(_unpack(blob), hour))
        admitted: list[int] = []
        added: dict[int, set[int]] = {}
        for index in indices:
            event = events[index]
            hour = event.ts // HOUR_MS
            first = newest_hour - horizon
            if hour >= first:
                key = fingerprint(event.event_id)
                have = known.get(key)
                if have is not None and have >= first:
                    continue  # a repeat within the horizon
                recorded = len(seen.get(hour, b"")) // 4 + len(added.get(hour, ()))
                if recorded < self.ids_per_hour:  # else the hour is full: not recorded
                    if have is None or have < hour:
                        known[key] = hour
                    added.setdefault(hour, set()).add(key)
            admitted.append(index)
            newest_hour = max(newest_hour, hour)
        if not added and not seen:
            return admitted, seen
        first = newest_hour - horizon
        merged: Seen = {}
        for hour in sorted(set(seen) | set(added)):
            if hour < first:
                continue
            fresh, blob = added.get(hour), seen.get(hour, b"")
            if not fresh:
                merged[hour] = blob  # unchanged: already sorted and distinct
                continue
            fresh.update(_unpack(blob))
            merged[hour] = _pack(fresh)
        return admitted, merged


def merge_seen(first: Seen, second: Seen, horizon_ms: int | None) -> Seen:
    """Two records' fingerprints of one user as one record keeps them (a backfill's merged
    into the stored record): each hour's union, without the hours older than the horizon
    before the newest (none dropped when ``horizon_ms`` is 0 or ``None``: the engine then
    keeps what is stored as it is). Each side kept every fingerprint within the horizon of
    its own newest hour, so the result is what one engine applying both sides' events keeps;
    but for an hour over :data:`IDS_PER_HOUR` on the two sides together, kept whole (up to
    twice the cap): full, it records no more, and its replays go by the progress."""
    hours = sorted(set(first) | set(second))
    if horizon_ms and hours:
        oldest = hours[-1] - horizon_hours(horizon_ms)
        hours = [hour for hour in hours if hour >= oldest]
    merged: Seen = {}
    for hour in hours:
        one, other = first.get(hour, b""), second.get(hour, b"")
        if not one or not other or one == other:
            merged[hour] = one or other  # each already sorted and distinct
        else:
            merged[hour] = _pack(set(_unpack(one)) | set(_unpack(other)))
    return merged
