"""Seeded generator of the reference workload: Pinterest-like engagement events and item table.

Benchmarks, examples and end-to-end tests need the same realistic stream, reproducibly and fast
enough that generating it never dominates a measurement, so columns are drawn with numpy in
chunks and Python objects are only built at the edge. Realism the signals depend on: Zipf-skewed
users and items (inverse CDF over ranks, scattered over the id space by a seeded bijection so
popular ids are not the small numbers); steady event time with jitter plus a late fraction, to
exercise watermarks; and an item table that is a pure function of (seed, item number), so the
materializer needs no shared state, with embeddings clustered by category so that a user's
"taste embedding" means something.
"""

from __future__ import annotations

import gc
import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import xxhash
from numpy.typing import NDArray

from usersignals.errors import ConfigurationError

logger = logging.getLogger(__name__)

REFERENCE_ACTIONS: tuple[str, ...] = ("impression", "closeup", "click", "save", "share", "hide")
REFERENCE_ACTION_PROBABILITIES: tuple[float, ...] = (0.60, 0.15, 0.10, 0.08, 0.05, 0.02)
REFERENCE_SURFACES: tuple[str, ...] = ("home", "search", "related", "board")
REFERENCE_SURFACE_PROBABILITIES: tuple[float, ...] = (0.5, 0.2, 0.2, 0.1)

_JITTER_MS = 3_000
_POSITIONS = 50
_MAX_DWELL_MS = 120_000
# Median dwell of about 4 s with a heavy right tail, as engaged views look in practice.
_DWELL_LOG_MEDIAN = math.log(4_000.0)
_DWELL_LOG_SIGMA = 1.1
# Noise relative to the category centroid: same-category cosine similarity is about 0.64 while
# unrelated categories are near 0, strong enough for taste embeddings, loose enough to be noisy.
_EMBEDDING_NOISE = 0.75
_CREATOR_ZIPF = 1.0
_CATEGORY_ZIPF = 1.0
_ITEM_BLOCK = 65_536
_MERGE_EVERY = 32  # chunks of distinct item numbers to accumulate before compacting them
#: The events drawn at a time, whatever the chunks they are handed out in: the stream drawn
#: in chunks made `generate` (100,000) and `produce` (20,000) write two streams of one spec.
#: The size the default chunks had, which keeps every workload written before as it was.
_DRAW_EVENTS = 100_000

_U64 = np.uint64
_GOLDEN = _U64(0x9E3779B97F4A7C15)
_STREAM_EVENTS = 1  # distinct numpy seed streams, so event and table draws never overlap
_STREAM_CENTROIDS = 2

_ENCODER = msgspec.json.Encoder()


@dataclass(frozen=True)
class WorkloadSpec:
    """Every knob of the reference workload; the defaults are the published reference."""

    seed: int = 7
    events: int = 1_000_000
    users: int = 1_000_000
    items: int = 10_000_000
    user_zipf: float = 1.0
    item_zipf: float = 1.05
    categories: int = 500
    creators: int = 200_000
    embedding_dim: int = 32
    start_ms: int = 1_767_225_600_000  # 2026-01-01T00:00Z
    span_ms: int = 14 * 86_400_000
    late_fraction: float = 0.01
    max_late_ms: int = 3_600_000

    def __post_init__(self) -> None:
        # Validate up front: a bad knob would otherwise surface as a numpy error deep in a chunk.
        problems = [
            f"{name} must be >= {low}"
            for name, low in (("seed", 0), ("events", 0), ("span_ms", 0), ("max_late_ms", 0))
            if getattr(self, name) < low
        ]
        # Ids are mapped through (rank * mult + offset) % n in int64: keep n small enough.
        problems += [
            f"{name} must be in 1..2**31"
            for name in ("users", "items", "categories", "creators", "embedding_dim")
            if not 1 <= getattr(self, name) <= 2**31
        ]
        problems += [
            f"{name} must be > 0" for name in ("user_zipf", "item_zipf") if getattr(self, name) <= 0
        ]
        if not 0.0 <= self.late_fraction <= 1.0:
            problems.append("late_fraction must be in [0, 1]")
        if problems:
            raise ConfigurationError("invalid WorkloadSpec: " + "; ".join(problems))


@dataclass(frozen=True)
class WorkloadFiles:
    """What :func:`write_workload` produced."""

    events_path: Path
    items_path: Path
    events: int
    items: int


@dataclass(frozen=True)
class _Columns:
    """One chunk of events as parallel numpy columns (event numbers start..start+len)."""

    start: int
    users: NDArray[np.int64]
    items: NDArray[np.int64]
    actions: NDArray[np.intp]
    surfaces: NDArray[np.intp]
    ts: NDArray[np.int64]
    positions: NDArray[np.int64]
    dwell_ms: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def slice(self, begin: int, end: int) -> _Columns:
        """Events ``begin`` to ``end`` of this chunk (positions in it)."""
        return _Columns(
            self.start + begin,
            *(column[begin:end] for column in self._columns()),
        )

    def then(self, following: _Columns) -> _Columns:
        """This chunk followed by ``following``, the events after it."""
        return _Columns(
            self.start,
            *(
                np.concatenate([mine, theirs])
                for mine, theirs in zip(self._columns(), following._columns(), strict=True)
            ),
        )

    def _columns(self) -> tuple[NDArray[Any], ...]:
        return (
            self.users, self.items, self.actions, self.surfaces, self.ts, self.positions,
            self.dwell_ms,
        )  # fmt: skip


@lru_cache(maxsize=8)
def _zipf_cdf(n: int, exponent: float) -> NDArray[np.float64]:
    """Normalised cumulative weights 1/r^a over ranks 1..n (80 MB for 10 M items, so cached)."""
    cdf = np.arange(1, n + 1, dtype=np.float64)
    np.power(cdf, -exponent, out=cdf)
    np.cumsum(cdf, out=cdf)
    cdf /= cdf[-1]
    cdf[-1] = 1.0  # so a draw just below 1.0 can never fall past the last rank
    cdf.setflags(write=False)
    return cdf


def _zipf_ranks(cdf: NDArray[np.float64], uniform: NDArray[np.float64]) -> NDArray[np.int64]:
    ranks: NDArray[np.int64] = np.searchsorted(cdf, uniform, side="right").astype(np.int64)
    np.minimum(ranks, cdf.shape[0] - 1, out=ranks)
    return ranks


def _categorical(probs: tuple[float, ...], uniform: NDArray[np.float64]) -> NDArray[np.intp]:
    cdf = np.cumsum(np.asarray(probs, dtype=np.float64))
    cdf /= cdf[-1]
    codes = np.searchsorted(cdf, uniform, side="right")
    return np.minimum(codes, len(probs) - 1)


@lru_cache(maxsize=32)
def _bijection(n: int, seed: int, salt: bytes) -> tuple[int, int]:
    """(mult, offset) of the seeded bijection rank -> (rank * mult + offset) % n.

    A multiplier coprime to n makes the map a permutation of 0..n-1 without storing one
    (a 10 M item permutation would be 40 MB per seed).
    """
    digest = xxhash.xxh64_intdigest(salt, seed=seed)
    mult = max(digest % n, 1)
    while math.gcd(mult, n) != 1:
        mult = mult % n + 1
    return mult, (digest >> 32) % n


def _scatter(ranks: NDArray[np.int64], n: int, seed: int, salt: bytes) -> NDArray[np.int64]:
    mult, offset = _bijection(n, seed, salt)
    return (ranks * mult + offset) % n


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic GC while building ~10^5 acyclic containers: the collections they would
    trigger rescan them all for nothing (~30 % of build time). Never held across a ``yield``."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _format_ids(prefix: str, width: int, numbers: NDArray[np.int64]) -> list[str]:
    """Zero-padded string ids; %-formatting a Python list is the fastest way measured."""
    template = prefix.replace("%", "%%") + f"%0{width}d"
    return [template % n for n in numbers.tolist()]


def _iter_columns(spec: WorkloadSpec, chunk_size: int) -> Iterator[_Columns]:
    """The stream in chunks of ``chunk_size`` (the last one shorter): the same events
    whatever the size, cut from the blocks :func:`_drawn_columns` draws."""
    if chunk_size < 1:
        raise ConfigurationError(f"chunk_size must be >= 1, got {chunk_size}")
    pending: _Columns | None = None
    for block in _drawn_columns(spec):
        pending = block if pending is None or not len(pending) else pending.then(block)
        taken = 0
        while len(pending) - taken >= chunk_size:
            yield pending.slice(taken, taken + chunk_size)
            taken += chunk_size
        pending = pending.slice(taken, len(pending)) if taken else pending
    if pending is not None and len(pending):
        yield pending


def _drawn_columns(spec: WorkloadSpec) -> Iterator[_Columns]:
    """The stream as drawn: blocks of :data:`_DRAW_EVENTS` events, each column of a block
    drawn in turn from one generator."""
    rng = np.random.default_rng([spec.seed, _STREAM_EVENTS])
    user_cdf = _zipf_cdf(spec.users, spec.user_zipf)
    item_cdf = _zipf_cdf(spec.items, spec.item_zipf)
    step_ms = spec.span_ms / max(spec.events, 1)
    for start in range(0, spec.events, _DRAW_EVENTS):
        n = min(_DRAW_EVENTS, spec.events - start)
        user_ranks = _zipf_ranks(user_cdf, rng.random(n))
        item_ranks = _zipf_ranks(item_cdf, rng.random(n))
        actions = _categorical(REFERENCE_ACTION_PROBABILITIES, rng.random(n))
        surfaces = _categorical(REFERENCE_SURFACE_PROBABILITIES, rng.random(n))
        # Steady clock (float math: index * span would overflow int64 for huge workloads).
        base = (np.arange(start, start + n, dtype=np.float64) * step_ms).astype(np.int64)
        ts = spec.start_ms + base + rng.integers(-_JITTER_MS, _JITTER_MS + 1, n)
        late = rng.random(n) < spec.late_fraction
        ts -= rng.integers(0, spec.max_late_ms + 1, n) * late
        # Squaring a uniform skews positions toward the top of the feed, as real feeds are.
        positions = (rng.random(n) ** 2 * _POSITIONS).astype(np.int64)
        dwell = rng.lognormal(_DWELL_LOG_MEDIAN, _DWELL_LOG_SIGMA, n)
        dwell_ms = np.clip(dwell, 1, _MAX_DWELL_MS).astype(np.int64)
        dwell_ms[actions == 0] = 0  # an impression is a view without engagement: no dwell
        yield _Columns(
            start=start,
            users=_scatter(user_ranks, spec.users, spec.seed, b"users"),
            items=_scatter(item_ranks, spec.items, spec.seed, b"items"),
            actions=actions,
            surfaces=surfaces,
            ts=ts,
            positions=positions,
            dwell_ms=dwell_ms,
        )


def _event_dicts(spec: WorkloadSpec, cols: _Columns) -> list[dict[str, object]]:
    numbers = np.arange(cols.start, cols.start + cols.users.shape[0], dtype=np.int64)
    columns = zip(
        _format_ids(f"e{spec.seed}-", 10, numbers),
        _format_ids("u", 7, cols.users),
        _format_ids("i", 8, cols.items),
        [REFERENCE_ACTIONS[k] for k in cols.actions.tolist()],
        [REFERENCE_SURFACES[k] for k in cols.surfaces.tolist()],
        cols.ts.tolist(),
        cols.positions.tolist(),
        cols.dwell_ms.tolist(),
        strict=True,
    )
    with _gc_paused():
        return [
            {
                "event_id": eid,
                "user_id": uid,
                "item_id": iid,
                "action": action,
                "surface": surface,
                "ts": ts,
                "attrs": {"position": position, "dwell_ms": dwell},
            }
            for eid, uid, iid, action, surface, ts, position, dwell in columns
        ]


def iter_event_chunks(
    spec: WorkloadSpec, chunk_size: int = 100_000
) -> Iterator[list[dict[str, object]]]:
    """Yield the workload's events, in event-number order, as lists of at most chunk_size dicts.

    The stream is deterministic for a given spec, whatever the chunk size.
    """
    for cols in _iter_columns(spec, chunk_size):
        yield _event_dicts(spec, cols)


def iter_event_json_lines(spec: WorkloadSpec, chunk_size: int = 100_000) -> Iterator[bytes]:
    """Yield the events as large blocks of newline-terminated JSON lines, one block per chunk.

    Same events as :func:`iter_event_chunks`, byte for byte.
    """
    for cols in _iter_columns(spec, chunk_size):
        yield _ENCODER.encode_lines(_event_dicts(spec, cols))


def _item_number(spec: WorkloadSpec, item_id: str) -> int:
    digits = item_id[1:]
    if not (item_id.startswith("i") and digits.isascii() and digits.isdigit()):
        raise ConfigurationError(f"{item_id!r} is not a synthetic item id (expected i########)")
    number = int(digits)
    if number >= spec.items:
        raise ConfigurationError(f"{item_id!r} is outside this workload's {spec.items} items")
    return number


def _splitmix64(x: NDArray[np.uint64]) -> NDArray[np.uint64]:
    """SplitMix64 finaliser; numpy uint64 arrays wrap on overflow, as the algorithm needs."""
    z = x + _GOLDEN
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def _unit_interval(bits: NDArray[np.uint64]) -> NDArray[np.float64]:
    return (bits >> _U64(11)).astype(np.float64) * 2.0**-53


@lru_cache(maxsize=4)
def _category_centroids(seed: int, categories: int, dim: int) -> NDArray[np.float64]:
    rng = np.random.default_rng([seed, _STREAM_CENTROIDS])
    centroids = rng.standard_normal((categories, dim))
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    centroids.setflags(write=False)
    return centroids


def _item_block(spec: WorkloadSpec, numbers: list[int]) -> list[dict[str, object]]:
    """Item records for one block of item numbers.

    Only per-row elementwise arithmetic is used after hashing (no transcendental ufuncs, no
    reductions whose order could depend on the block), so a record is bit-identical whether it
    is computed alone or in a block: :func:`item_record` and :func:`item_records` always agree.
    """
    seed = spec.seed
    hashes = np.fromiter(
        (xxhash.xxh3_64_intdigest(b"item:%d" % n, seed=seed) for n in numbers),
        dtype=np.uint64,
        count=len(numbers),
    )
    category = _zipf_ranks(_zipf_cdf(spec.categories, _CATEGORY_ZIPF), _unit_interval(hashes))
    creator_rank = _zipf_ranks(
        _zipf_cdf(spec.creators, _CREATOR_ZIPF), _unit_interval(_splitmix64(hashes))
    )
    creator = _scatter(creator_rank, spec.creators, seed, b"creators")
    # One 64-bit word per dimension; the sum of its four 16-bit fields is an Irwin-Hall(4)
    # variate, which rescaled to unit variance is a close enough Gaussian for noise.
    dim = spec.embedding_dim
    lanes = np.arange(1, dim + 1, dtype=np.uint64) * _GOLDEN
    words = _splitmix64(hashes[:, None] ^ lanes[None, :])
    fields = np.zeros(words.shape, dtype=np.float64)
    for shift in (0, 16, 32, 48):
        fields += ((words >> _U64(shift)) & _U64(0xFFFF)).astype(np.float64)
    noise = ((fields + 2.0) / 65536.0 - 2.0) * math.sqrt(3.0)
    emb = _category_centroids(seed, spec.categories, dim)[category] + noise * (
        _EMBEDDING_NOISE / math.sqrt(dim)
    )
    squared = np.zeros(len(numbers), dtype=np.float64)
    for j in range(dim):  # fixed summation order, see the docstring
        squared += emb[:, j] * emb[:, j]
    emb = np.round(emb / np.sqrt(squared)[:, None], 4)
    with _gc_paused():
        return [
            {"item_id": item_id, "category": cat, "creator_id": creator_id, "embedding": vector}
            for item_id, cat, creator_id, vector in zip(
                _format_ids("i", 8, np.asarray(numbers, dtype=np.int64)),
                _format_ids("c", 3, category),
                _format_ids("cr", 6, creator),
                emb.tolist(),
                strict=True,
            )
        ]


def item_records(spec: WorkloadSpec, item_ids: Iterable[str]) -> Iterator[dict[str, object]]:
    """Item table rows for many ids, in input order; each equals :func:`item_record`."""
    block: list[int] = []
    for item_id in item_ids:
        block.append(_item_number(spec, item_id))
        if len(block) == _ITEM_BLOCK:
            yield from _item_block(spec, block)
            block = []
    if block:
        yield from _item_block(spec, block)


def item_record(spec: WorkloadSpec, item_id: str) -> dict[str, object]:
    """The item table row of one item: category, creator and embedding, a pure function of
    (spec, item number), so any component can look an item up without shared state."""
    return _item_block(spec, [_item_number(spec, item_id)])[0]


def _write_atomically(path: Path, blocks: Iterable[bytes]) -> None:
    # Readers never see a half-written file, even if generation is interrupted.
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as fh:
        for block in blocks:
            fh.write(block)
    os.replace(tmp, path)


def write_workload(
    spec: WorkloadSpec,
    out_dir: Path,
    chunk_size: int = 100_000,
    progress: Callable[[int], None] | None = None,
) -> WorkloadFiles:
    """Write out_dir/events.jsonl and out_dir/items.jsonl (the distinct items of the events,
    sorted by item_id); progress(n) is called with the events written so far after each chunk."""
    out_dir.mkdir(parents=True, exist_ok=True)
    events_path = out_dir / "events.jsonl"
    items_path = out_dir / "items.jsonl"
    seen: list[NDArray[np.int64]] = []
    written = 0

    def event_blocks() -> Iterator[bytes]:
        nonlocal seen, written
        for cols in _iter_columns(spec, chunk_size):
            yield _ENCODER.encode_lines(_event_dicts(spec, cols))
            seen.append(np.unique(cols.items))
            if len(seen) >= _MERGE_EVERY:  # bound memory on very long workloads
                seen = [np.unique(np.concatenate(seen))]
            written += cols.items.shape[0]
            if progress is not None:
                progress(written)

    _write_atomically(events_path, event_blocks())
    distinct = np.unique(np.concatenate(seen)) if seen else np.empty(0, dtype=np.int64)
    # Sort the strings, not the numbers: they only agree while ids keep their 8-digit width.
    item_ids = sorted(_format_ids("i", 8, distinct))

    def item_blocks() -> Iterator[bytes]:
        for i in range(0, len(item_ids), _ITEM_BLOCK):
            yield _ENCODER.encode_lines(list(item_records(spec, item_ids[i : i + _ITEM_BLOCK])))

    _write_atomically(items_path, item_blocks())
    logger.info(
        "wrote synthetic workload: %d events, %d items to %s", written, len(item_ids), out_dir
    )
    return WorkloadFiles(events_path, items_path, written, len(item_ids))
