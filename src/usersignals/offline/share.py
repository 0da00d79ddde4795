"""A shard's share of an event archive: its users' records, routed before they are decoded.

Validating an event costs about three times what reading its line and finding its user id
does, so a shard of a local backfill or training set reads every record but decodes only
those of its users (:func:`~usersignals.offline.common.shard_of` of the user id). The core
splits each block in one call (``usersignals._core.ShareRouter``: about 0.27 µs a record
against 0.45 µs for :func:`route` over the same 200,000 lines); :func:`route` is the
reference, and routes every record the core cannot read for sure. It reads the user id
alone, as the decoder would read it (the same JSON decoder, a struct of that one field); a
record whose user id cannot be read is bad whatever else it holds, and shard 0 decodes it,
so that the decoder names the reason.

Dead letters are kept in archive order: each shard writes its bad records to a file of its
own and remembers their places in the archive; :func:`merge_dead_letters` interleaves the
shards' files back into that order.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from usersignals._core import ShareRouter
from usersignals.events.decode import UNDECODABLE, EventDecoder
from usersignals.events.model import Event, Position
from usersignals.ingest.archive import EventArchive
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.offline.common import shard_of
from usersignals.offline.deletions import Deletions
from usersignals.processing.pipeline import Segment, decode_segments


class _UserOnly(msgspec.Struct):
    user_id: str


_user_only = msgspec.json.Decoder(_UserOnly).decode


def route(
    line: bytes, shards: int, assigned: Mapping[str, int] | None = None
) -> tuple[int, str | None]:
    """The shard that decodes a raw record — its user's (``assigned`` to one, or by the
    stable hash), or 0 when it names no readable user — and that user id."""
    try:
        user = _user_only(line).user_id
    except UNDECODABLE:
        return 0, None
    if assigned is not None and user in assigned:
        return assigned[user], user
    return shard_of(user, shards), user


@dataclass
class ArchiveShare:
    """Shard ``index`` of ``shards``: its records of ``archive``, decoded, bad ones written to
    ``dead_letters`` (their places in the archive kept in :attr:`bad_places`)."""

    archive: EventArchive
    index: int
    shards: int
    dead_letters: DeadLetterFile | None = None
    #: Users placed on a shard by the job (a training set balances its labelled users, a
    #: backfill its heavy users); every other user goes by the stable hash.
    assigned: Mapping[str, int] | None = None
    #: Users of another shard whose valid events this one needs too (a training set's user
    #: cut into pieces); they land in :attr:`borrowed_events`, neither counted nor
    #: dead-lettered here.
    borrowed: frozenset[str] = frozenset()
    #: Records decoded (valid and bad).
    decoded: int = 0
    bad_places: list[int] = field(default_factory=list)
    borrowed_events: list[tuple[Event, Position]] = field(default_factory=list)
    #: The borrowed users' deletion records (counted by their own shard).
    borrowed_deletions: Deletions = field(default_factory=Deletions)
    #: Deletion records of the share's users (the borrowed users' are their shard's).
    deletions: int = 0
    _router: ShareRouter | None = field(default=None, init=False, repr=False)

    def results(self, decoder: EventDecoder) -> Iterator[Segment]:
        """The share's records block by block, decoded and cut at each deletion record (a
        segment's ``control``: the deletion after its events)."""
        end = 0  # the places in the archive of the records before this block
        for block in self.archive.blocks():
            # A block's records rejected as read (no user: the first shard's) take the
            # places after its lines, so every shard numbers the archive alike.
            first, end = end, end + len(block.lines) + len(block.bad)
            places: Sequence[int]
            if self.shards == 1:  # every record is this shard's: none is read twice
                lines, positions = block.lines, block.positions
                places = range(first, first + len(lines))
            else:
                lines, positions, places = self._route(decoder, block.lines, block.positions, first)
            read_bad = block.bad if self.index == 0 else []
            if not lines and not read_bad:
                continue
            segments = decode_segments(decoder, lines, positions)
            bad = [event for segment in segments for event in segment.decoded.bad]
            self.deletions += len(segments) - 1
            self.decoded += sum(len(s.decoded.events) for s in segments) + len(bad) + len(read_bad)
            if bad or read_bad:
                # decode_block hands back each bad record's own Position object.
                at = {
                    id(position): place for position, place in zip(positions, places, strict=True)
                }
                self.bad_places.extend(at[id(event.position)] for event in bad)
                self.bad_places.extend(range(end - len(read_bad), end))
                segments[-1].decoded.bad += read_bad
                if self.dead_letters is not None:
                    self.dead_letters.write(bad + read_bad)
            yield from segments

    def _route(
        self,
        decoder: EventDecoder,
        block_lines: list[bytes],
        block_positions: Sequence[Position],
        first: int,
    ) -> tuple[list[bytes], list[Position], list[int]]:
        """A block's records of this shard, with their places in the archive; the valid
        events of the users it borrows go to :attr:`borrowed_events`."""
        if self._router is None:
            self._router = ShareRouter(
                self.index, self.shards, dict(self.assigned or {}), self.borrowed
            )
        mine, borrowing, unsure = self._router.split(block_lines)
        for index in unsure:  # the records the core could not read for sure
            shard, user = route(block_lines[index], self.shards, self.assigned)
            if shard == self.index:
                mine.append(index)
            elif user in self.borrowed:
                borrowing.append(index)
        if unsure:
            mine.sort()
            borrowing.sort()
        if borrowing:
            segments = decode_segments(
                decoder,
                [block_lines[i] for i in borrowing],
                [block_positions[i] for i in borrowing],
            )
            for segment in segments:
                valid = segment.decoded
                self.borrowed_events.extend(zip(valid.events, valid.positions, strict=True))
                if segment.control is not None and segment.control_position is not None:
                    self.borrowed_deletions.add(segment.control.user_id, segment.control_position)
        lines = [block_lines[i] for i in mine]
        positions = [block_positions[i] for i in mine]
        return lines, positions, [first + i for i in mine]


def merge_dead_letters(parts: Sequence[tuple[Path, Sequence[int]]], out: Path) -> None:
    """Append the shards' dead-letter files to ``out`` in archive order (``parts``: each file
    with its records' places, ascending; one JSON line per record); no ``out`` is made
    when they hold none."""

    def placed(path: Path, places: Sequence[int]) -> Iterator[tuple[int, bytes]]:
        if not places:
            return
        with path.open("rb") as handle:
            yield from zip(places, handle, strict=True)

    if not any(places for _, places in parts):
        return  # nothing bad: no file, as a job in one process writes none
    merged = heapq.merge(*(placed(path, places) for path, places in parts))
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("ab") as handle:
        handle.writelines(line for _, line in merged)
