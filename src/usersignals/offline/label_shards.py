"""How a local training set shares its labels out among processes.

A label costs about the size of its user's state at its time, and a state grows with the
user's events, so the k-th label of a user costs about k: a user's work goes about as the
square of their label count. Work goes out heaviest first, each piece to the shard with the
least so far (longest-processing-time first).

One user can outweigh all the others (the reference workload's busiest user is 60 % of its
training set). Such a user is cut, by label time, into pieces of about equal work, at most
one per shard: each piece replays the user's events up to its first label in one step, which
costs little next to reading its labels, then reads its own. The shard that gets a user's
first piece owns the user's records (decodes, counts and dead-letters them); the shards with
the other pieces borrow them (decode their valid events only). The job plans once, in its
own process, and hands each shard its part.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter

#: A label row: its index in the label file, the user id, the label time (ms).
Label = tuple[int, str, int]
_ROW = itemgetter(0)
_USER = itemgetter(1)


@dataclass(frozen=True)
class LabelShards:
    #: The shard that owns each labelled user's records.
    owner: dict[str, int]
    #: Per shard, its labels.
    labels: list[list[Label]]
    #: Per shard, the users whose records it needs without owning them.
    borrowed: list[frozenset[str]]


def plan_label_shards(labels: Sequence[Label], shards: int) -> LabelShards:
    """The labels of each of ``shards`` processes, the work balanced (see the module)."""
    if not labels:
        return LabelShards({}, [[] for _ in range(shards)], [frozenset()] * shards)
    if shards == 1:
        # Nothing to balance, and the plan runs before the shard starts: the pieces and
        # sorts below took 0.03-0.05 s of CPU for the bench's 20,000 labels, this 0.001 s.
        return LabelShards(
            dict.fromkeys(map(_USER, labels), 0), [sorted(labels, key=_ROW)], [frozenset()]
        )
    by_user: dict[str, list[Label]] = {}
    for label in sorted(labels, key=lambda label: (label[2], label[0])):
        by_user.setdefault(label[1], []).append(label)
    fair = sum(_work(len(user_labels)) for user_labels in by_user.values()) / shards
    # (work, user, first label's place among the user's, labels): a user's runs, each once.
    pieces = [
        (_work(start + len(piece)) - _work(start), user, start, piece)
        for user, user_labels in by_user.items()
        for start, piece in _cut(
            user_labels, min(shards, math.ceil(_work(len(user_labels)) / fair))
        )
    ]
    pieces.sort(key=lambda item: (-item[0], item[1], item[2]))
    load = [0] * shards
    owner: dict[str, int] = {}
    out: list[list[Label]] = [[] for _ in range(shards)]
    holders: dict[str, set[int]] = {}
    # Each user's pieces go to distinct shards: two on one shard would replay twice.
    for work, user, start, piece in pieces:
        taken = holders.setdefault(user, set())
        free = [shard for shard in range(shards) if shard not in taken]
        lightest = min(free, key=lambda shard: (load[shard], shard))
        taken.add(lightest)
        load[lightest] += work
        out[lightest].extend(piece)
        if start == 0:
            owner[user] = lightest
    borrowed = [
        frozenset(user for user, held in holders.items() if shard in held and owner[user] != shard)
        for shard in range(shards)
    ]
    return LabelShards(owner, [sorted(labels) for labels in out], borrowed)


def _work(count: int) -> int:
    """A user's work with ``count`` labels: the k-th label costs k."""
    return count * (count + 1) // 2


def _cut(user_labels: list[Label], pieces: int) -> list[tuple[int, list[Label]]]:
    """``user_labels`` (in time order) in ``pieces`` runs of about equal work, each with its
    first label's place."""
    if pieces <= 1:
        return [(0, user_labels)]
    total = _work(len(user_labels))
    # The j-th cut where the work so far reaches j/pieces of the whole: k(k+1)/2 = total·j/p.
    cuts = [round((math.sqrt(1 + 8 * total * j / pieces) - 1) / 2) for j in range(1, pieces)]
    inner = sorted({min(max(cut, 1), len(user_labels) - 1) for cut in cuts})
    bounds = [0, *inner, len(user_labels)]
    return [(a, user_labels[a:b]) for a, b in itertools.pairwise(bounds) if a < b]
