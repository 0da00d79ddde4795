"""Every signal, for every user of a messy log, equals a recompute from the raw events.

The log (``workload.py``) is replayed through the real path — decode, dead letters, the
engine with its dedupe, RocksDB — in small micro-batches. Each user's signals are then read at
the end of the log and at earlier ``as_of`` values on tile and bucket boundaries, and compared
with ``recompute.py``: equal for exact aggregations, within the bound the README states for
the others, and refused (HTTP 422's AsOfError) exactly where the README says.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import recompute as ref
from workload import DAY, END, HOUR, Log, TruthEvent, build_log, item_table

from usersignals import (
    Count,
    DecayedScores,
    Distinct,
    Engine,
    FirstSeen,
    LastN,
    LastSeen,
    Lookup,
    MeanVector,
    ReadContext,
    RocksStore,
    Signal,
    SignalRegistry,
    Sum,
    TileLayout,
    action,
    days,
    field,
    hours,
    minutes,
)
from usersignals.enrich import Materializer, TableSource, load_table
from usersignals.errors import AsOfError
from usersignals.events import EventDecoder
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.files import JsonlSource
from usersignals.processing.pipeline import PipelineStats
from usersignals.processing.replay import replay_file
from usersignals.serving import SignalReader

LOOKBACK = 2 * DAY  # the README: states answer as_of down to 2 days before their newest event
EXACT_SPAN = 2 * DAY  # the README: Count/Sum keep the last 2 days at exact times
ENGAGEMENTS = frozenset({"closeup", "click", "save", "share", "hide"})
WEIGHTS = {"impression": 0.1, "closeup": 1.0, "click": 2.0, "save": 4.0, "share": 4.0, "hide": -4.0}
TASTE_WEIGHTS = {"closeup": 1.0, "click": 2.0, "save": 4.0}
TILES = TileLayout(((minutes(5), hours(2)), (hours(1), days(1)), (hours(6), days(8)), (days(1), 0)))
items = Lookup("items", key="item_id", provides=("category", "creator_id", "embedding"))

SIGNALS = [
    Signal(name="recent", version=1, where=action.isin(ENGAGEMENTS),
           enrich=[items.fields("category")],
           aggregate=LastN(60, keep=("item_id", "action", "surface", "category")),
           retention=days(10)),
    Signal(name="recent_items", version=1,
           aggregate=LastN(20, keep=("item_id", "action"), dedupe_by="item_id"),
           retention=days(10)),
    Signal(name="counts", version=1, aggregate=Count(by=("action", "surface"), tiles=TILES),
           retention=days(28)),
    Signal(name="dwell", version=1,
           aggregate=Sum(of="attrs.dwell_ms", by=("action",), decimals=0, tiles=TILES),
           retention=days(28)),
    Signal(name="ios", version=1, where=field("attrs.device.os").eq("ios"),
           aggregate=Count(by=("action",), tiles=TILES), retention=days(28)),
    Signal(name="interest", version=1, enrich=[items.fields("category")],
           aggregate=DecayedScores(key="category", half_life=days(2), weights=WEIGHTS,
                                   default_weight=0.0, top_k=8),
           retention=days(12)),
    Signal(name="taste", version=1, where=action.isin(set(TASTE_WEIGHTS)),
           enrich=[items.fields("embedding")],
           aggregate=MeanVector(of="embedding", dim=4, half_life=days(3), weights=TASTE_WEIGHTS),
           retention=days(12)),
    Signal(name="creators", version=1, where=action.isin(ENGAGEMENTS),
           enrich=[items.fields("creator_id")],
           aggregate=Distinct(of="creator_id", precision=10), retention=days(7)),
    Signal(name="first", version=1, aggregate=FirstSeen(by="surface"), retention=days(10)),
    Signal(name="last", version=1, aggregate=LastSeen(by="action"), retention=days(10)),
]  # fmt: skip
BY_NAME = {signal.name: signal for signal in SIGNALS}


class Replayed:
    def __init__(self, log: Log, reader: SignalReader, summary: PipelineStats) -> None:
        self.log = log
        self.reader = reader
        self.summary = summary
        self.items = {str(r["item_id"]): r for r in item_table()}
        self.by_user: dict[str, list[TruthEvent]] = {}
        for event in log.events:
            self.by_user.setdefault(event.user_id, []).append(event)

    def read(self, user: str, name: str, context: ReadContext) -> Any:
        """The served value, or the AsOfError the read raised."""
        try:
            return self.reader.read(user, [name], context).signals[name].value
        except AsOfError as refused:
            if refused.signal != name:
                raise AssertionError(f"AsOfError names {refused.signal!r}, not {name!r}") from None
            return refused


@pytest.fixture(scope="module")
def replayed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replayed]:
    root = tmp_path_factory.mktemp("correctness")
    log = build_log()
    events_path = root / "events.jsonl"
    events_path.write_bytes(b"\n".join(log.lines) + b"\n")
    items_path = root / "items.jsonl"
    items_path.write_text("".join(json.dumps(r) + "\n" for r in item_table()))
    store = RocksStore(root / "store")
    try:
        load_table(store.table("items"), items_path, key="item_id")
        registry = SignalRegistry(SIGNALS)
        engine = Engine(
            registry, store, Materializer({"items": TableSource("items", store.table("items"))})
        )
        with DeadLetterFile(root / "dead.jsonl") as dead:
            # Small blocks: many micro-batches, so batch boundaries fall everywhere.
            summary = replay_file(
                JsonlSource(events_path, block_size=700), EventDecoder(), engine, dead
            )
        yield Replayed(log, SignalReader(registry, store), summary)
    finally:
        store.close()


def as_of_values(newest: int) -> list[int]:
    """The end of the log and earlier times on tile and bucket boundaries."""
    day_start = END - END % DAY
    return sorted({
        END,
        END - END % HOUR,  # hour-aligned: the last hour's count must not be 0
        END - END % (5 * 60_000),
        day_start,  # a UTC-day bucket boundary
        day_start - 1,  # the last millisecond of the previous day
        END - DAY + 1,
        END - 2 * DAY - 6 * HOUR,  # the read of issue 10, 2 days 6 hours back
        newest - 1,  # just before this user's newest event
        newest,
    })  # fmt: skip


def users(replayed: Replayed) -> list[str]:
    return sorted(replayed.by_user)


def passing(events: list[TruthEvent], name: str) -> list[TruthEvent]:
    where: dict[str, Callable[[TruthEvent], bool]] = {
        "recent": lambda e: e.action in ENGAGEMENTS,
        "creators": lambda e: e.action in ENGAGEMENTS,
        "taste": lambda e: e.action in TASTE_WEIGHTS,
        "ios": lambda e: e.attrs["device"]["os"] == "ios",  # type: ignore[index]
    }
    check = where.get(name)
    return events if check is None else [e for e in events if check(e)]


def test_the_log_has_what_makes_answers_go_wrong(replayed: Replayed) -> None:
    log, summary = replayed.log, replayed.summary
    assert log.repeated > 100
    assert log.malformed > 50
    # Every repeated line was dropped as a repeat, every malformed one dead-lettered, every
    # blank one counted, and every good event applied once.
    assert summary.report.repeats == log.repeated
    assert sum(summary.bad_by_reason.values()) == log.malformed
    assert summary.blank == log.blank
    assert summary.report.events - summary.report.repeats == len(log.events)
    times = [e.ts for e in log.events]
    assert any(a > b for a, b in itertools.pairwise(times)), "out of order"
    assert len(times) - len(set(times)) > 100, "same-millisecond ties"
    assert any(not user.isascii() for user in replayed.by_user), "unicode ids"


def test_last_n(replayed: Replayed) -> None:
    answered = 0
    for user in users(replayed):
        for name, dedupe_by in (("recent", None), ("recent_items", "item_id")):
            signal = BY_NAME[name]
            spec = signal.aggregate
            assert isinstance(spec, LastN)
            events = passing(replayed.by_user[user], name)
            newest = max((e.ts for e in events), default=0)
            for view in as_of_values(newest):
                for window, limit in ((None, None), (DAY, 5)):
                    context = ReadContext(as_of_ms=view, window_ms=window, limit=limit)
                    got = replayed.read(user, name, context)
                    if isinstance(got, AsOfError):
                        assert newest > view  # refused only when newer events exist
                        continue
                    want = ref.last_n(events, view, signal.retention, spec.n, spec.keep,
                                      replayed.items, dedupe_by, window)  # fmt: skip
                    assert got == want[: limit or spec.n], (user, name, view)
                    answered += 1
    assert answered > 500


def tile_width(m: int, ts: int) -> int:
    """The README's layout: tier i holds events from floor(M, next resolution) - span_i on."""
    tiers = TILES.tiers
    for (resolution, span), (coarser, _) in itertools.pairwise(tiers):
        if ts >= m - m % coarser - span:
            return resolution
    return tiers[-1][0]


def straddling_tile_holds(events: list[TruthEvent], m: int, edge: int, at_end: bool) -> bool:
    """The README's ``as_of`` rule for tiles: the tile of M's layout holding a window's
    ``edge`` reaches past it (before a start, after an end) and holds any of ``events``."""
    exact_from = m - EXACT_SPAN
    if edge >= exact_from:
        return False
    width = tile_width(m, edge)
    first = edge - edge % width
    last = min(first + width, exact_from) - 1
    if (edge == last) if at_end else (edge == first):
        return False
    return any(first <= e.ts <= last for e in events)


def test_count_and_sum(replayed: Replayed) -> None:
    checked = exact = refused = 0
    for user in users(replayed):
        for name in ("counts", "dwell", "ios"):
            signal = BY_NAME[name]
            events = passing(replayed.by_user[user], name)
            if not events:
                continue
            m = max(e.ts for e in events)

            def value(e: TruthEvent, name: str = name) -> float | None:
                return float(e.attrs["dwell_ms"]) if name == "dwell" else 1.0  # type: ignore[arg-type]

            for view in as_of_values(m):
                for window in (HOUR, DAY, 7 * DAY, 28 * DAY, None):
                    context = ReadContext(as_of_ms=view, window_ms=window)
                    got = replayed.read(user, name, context)
                    start = ref.ceil_to(view - signal.retention, DAY)
                    if window is not None:
                        start = max(start, view - window)
                    if start < m - m % DAY - signal.retention - LOOKBACK:
                        assert isinstance(got, AsOfError), (user, name, view, window)
                        continue
                    counted = [e for e in events if value(e) is not None]
                    if view < m and (
                        straddling_tile_holds(counted, m, start, at_end=False)
                        or straddling_tile_holds(counted, m, view, at_end=True)
                    ):
                        # Before newer events, such a tile may hold events of other times.
                        assert isinstance(got, AsOfError), (user, name, view, window)
                        refused += 1
                        continue
                    assert not isinstance(got, AsOfError), (user, name, view, window, got)
                    total, by = ref.count(events, start, view, value)
                    checked += 1
                    if start >= m - EXACT_SPAN or view < m:
                        assert got["total"] == total, (user, name, view, window)
                        assert got["by"] == by
                        exact += 1
                        continue
                    # The stated bound: never below the exact value, above it by at most the
                    # events of the tiles straddling the window's edges.
                    w_start, w_end = tile_width(m, start), tile_width(m, view)
                    slack = sum(
                        value(e) or 0.0
                        for e in events
                        if start - w_start <= e.ts < start
                        or view < e.ts < min(view + w_end, m - EXACT_SPAN)
                    )
                    assert total <= got["total"] <= total + slack, (user, name, view, window)
                    if total:
                        assert got["total"] > 0
    assert checked > 1_000
    assert exact > 300
    assert refused > 50


def _refused_decayed(events: list[TruthEvent], view: int, retention: int,
                     contributes: Callable[[TruthEvent], bool]) -> bool:  # fmt: skip
    m = max(e.ts for e in events)
    if ref.ceil_to(view - retention, DAY) < ref.ceil_to(m - LOOKBACK - retention, DAY):
        return True
    return any(e.ts > view and e.ts // DAY == view // DAY for e in events if contributes(e))


def test_decayed_scores(replayed: Replayed) -> None:
    signal = BY_NAME["interest"]
    spec = signal.aggregate
    assert isinstance(spec, DecayedScores)
    compared = 0
    for user in users(replayed):
        events = replayed.by_user[user]

        def contributes(e: TruthEvent) -> bool:
            return bool(WEIGHTS.get(e.action)) and e.item_id in replayed.items

        for view in as_of_values(max(e.ts for e in events)):
            got = replayed.read(user, "interest", ReadContext(as_of_ms=view))
            refused = _refused_decayed(events, view, signal.retention, contributes)
            assert isinstance(got, AsOfError) == refused, (user, view)
            if refused:
                continue
            scores, counted = ref.decayed_scores(
                events, view, signal.retention, spec.half_life, WEIGHTS, replayed.items
            )
            bound = counted * 2.0**-21 + 1e-12  # the README: each event's term to 2^-21
            assert len(got) == min(spec.top_k, len(scores))
            ranked = sorted(scores.values(), reverse=True)
            for place, entry in enumerate(got):
                assert abs(entry["score"] - scores[entry["key"]]) <= bound, (user, view)
                assert abs(entry["score"] - ranked[place]) <= 2 * bound
            compared += 1
    assert compared > 150


def test_mean_vector(replayed: Replayed) -> None:
    signal = BY_NAME["taste"]
    spec = signal.aggregate
    assert isinstance(spec, MeanVector)
    largest = max(abs(c) for r in replayed.items.values() for c in r["embedding"])  # type: ignore[attr-defined]
    compared = 0
    for user in users(replayed):
        events = passing(replayed.by_user[user], "taste")
        if not events:
            continue
        for view in as_of_values(max(e.ts for e in events)):
            got = replayed.read(user, "taste", ReadContext(as_of_ms=view))
            refused = _refused_decayed(
                events, view, signal.retention, lambda e: e.item_id in replayed.items
            )
            assert isinstance(got, AsOfError) == refused, (user, view)
            if refused:
                continue
            vector, weight, counted = ref.mean_vector(
                events, view, signal.retention, spec.half_life, TASTE_WEIGHTS, replayed.items
            )
            assert abs(got["weight"] - weight) <= counted * 2.0**-17 + 1e-12
            if vector is None:
                assert got["vector"] is None or got["weight"] == 0.0
                continue
            bound = 2.0**-17 + counted * 2.0**-16 * largest / weight + 1e-12
            for component, want in zip(got["vector"], vector, strict=True):
                assert abs(component - want) <= bound, (user, view)
            compared += 1
    assert compared > 100


def test_distinct_within_its_standard_error(replayed: Replayed) -> None:
    signal = BY_NAME["creators"]
    compared = 0
    for user in users(replayed):
        events = passing(replayed.by_user[user], "creators")
        if not events:
            continue
        m = max(e.ts for e in events)

        def creator(e: TruthEvent) -> object:
            return replayed.items.get(e.item_id, {}).get("creator_id")

        for view in as_of_values(m):
            for window in (7 * DAY, DAY):
                got = replayed.read(user, "creators", ReadContext(as_of_ms=view, window_ms=window))
                start = max(view - signal.retention, view - window)
                if start < m - m % DAY - signal.retention - LOOKBACK:
                    assert isinstance(got, AsOfError)
                    continue
                day = view - view % DAY
                if (
                    view < m
                    and view != day + DAY - 1
                    and any(day <= e.ts < day + DAY and creator(e) is not None for e in events)
                ):
                    # Before newer events, view's day may hold events after it.
                    assert isinstance(got, AsOfError), (user, view)
                    continue
                assert not isinstance(got, AsOfError), (user, view, got)
                # Buckets (UTC days) that start in [start, view] count, whole.
                first = ref.ceil_to(start, DAY)
                truth = ref.distinct(events, first, day + DAY - 1, creator)
                error = 1.04 / math.sqrt(1 << 10)
                assert abs(got["estimate"] - truth) <= 4 * error * truth + 1, (user, view)
                compared += 1
    assert compared > 100


def test_first_and_last_seen(replayed: Replayed) -> None:
    for user in users(replayed):
        events = replayed.by_user[user]
        m = max(e.ts for e in events)
        for view in as_of_values(m):
            context = ReadContext(as_of_ms=view)
            assert replayed.read(user, "first", context) == ref.first_seen(events, view)
            got = replayed.read(user, "last", context)
            refused = any(e.ts > view for e in events) or view < m - LOOKBACK
            assert isinstance(got, AsOfError) == refused, (user, view)
            if not refused:
                assert got == ref.last_seen(events, view, BY_NAME["last"].retention)


def test_scores_are_served_at_full_precision(replayed: Replayed) -> None:
    got = replayed.read("bot-\u03b1", "interest", ReadContext(as_of_ms=END))
    assert any(entry["score"] != round(entry["score"], 6) for entry in got)
