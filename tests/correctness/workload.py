"""A seeded engagement log with everything that makes answers go wrong, and its ground truth.

The log has ordinary users, two bots (thousands of events, bursts of many events in the same
millisecond), unicode user ids, events late by up to three hours and out of order in the file,
repeated lines, malformed and blank lines, and nested ``attrs``. Besides the raw lines it
returns the *ground truth*: the distinct good events, which is what a recompute starts from.
This module knows nothing of how usersignals aggregates.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

DAY = 86_400_000
HOUR = 3_600_000
END = 1_773_149_832_345  # 2026-03-10T13:37:12.345Z: aligned to nothing
SPAN = 40 * DAY
ACTIONS = ("impression", "closeup", "click", "save", "share", "hide")
SURFACES = ("home", "search", "related", "board")
ITEMS = [f"i{n:03d}" for n in range(160)]
MISSING_ITEMS = frozenset(ITEMS[-8:])  # no record in the item table


@dataclass(frozen=True)
class TruthEvent:
    event_id: str
    user_id: str
    item_id: str
    action: str
    surface: str
    ts: int
    attrs: dict[str, object]


@dataclass
class Log:
    lines: list[bytes] = field(default_factory=list)
    events: list[TruthEvent] = field(default_factory=list)  # distinct good events
    repeated: int = 0
    malformed: int = 0
    blank: int = 0


def item_table() -> list[dict[str, object]]:
    rng = random.Random(7)
    return [
        {
            "item_id": item,
            "category": f"cat{n % 12}",
            "creator_id": f"cr{(n * 7) % 40}",
            "embedding": [round(rng.uniform(-1.5, 1.5), 4) for _ in range(4)],
        }
        for n, item in enumerate(ITEMS)
        if item not in MISSING_ITEMS
    ]


def _users(rng: random.Random) -> list[tuple[str, int]]:
    users = [(f"u{n:02d}", max(3, int(400 / (n + 1)))) for n in range(30)]
    users += [("bot-\u03b1", 2_500), ("bot-\u03b2", 1_800)]  # Greek alpha and beta
    # Accents, CJK, an emoji outside the BMP, and fullwidth letters that look like ASCII.
    users += [("ü-é", 40), ("用户-三", 25), ("😀-fan", 60), ("ascii-looking-\uff55\uff11", 12)]
    return users


def _times(rng: random.Random, count: int, bot: bool) -> list[int]:
    times: list[int] = []
    while len(times) < count:
        ts = END - int(rng.random() ** 0.7 * SPAN)  # denser near the end
        if bot and rng.random() < 0.15:
            times += [ts] * rng.randint(5, 25)  # a burst: many events, one millisecond
        else:
            times.append(ts)
    # Some events land exactly on tile and bucket boundaries.
    for n in range(min(6, count)):
        grid = (DAY, HOUR, 5 * 60_000)[n % 3]
        times[n] = times[n] - times[n] % grid
    return times[:count]


def build_log(seed: int = 10) -> Log:
    rng = random.Random(seed)
    events: list[TruthEvent] = []
    for user, count in _users(rng):
        bot = user.startswith("bot")
        for n, ts in enumerate(_times(rng, count, bot)):
            attrs: dict[str, object] = {
                "dwell_ms": rng.randint(0, 60_000),
                "device": {"os": rng.choice(("ios", "android")), "screen": [390, 844]},
                "tags": ["a", {"b": None}],
            }
            events.append(
                TruthEvent(
                    event_id=f"{user}/{n}",
                    user_id=user,
                    item_id=rng.choice(ITEMS[:40] if bot else ITEMS),
                    action=rng.choices(ACTIONS, (40, 15, 15, 12, 8, 10))[0],
                    surface=rng.choice(SURFACES),
                    ts=ts,
                    attrs=attrs,
                )
            )

    # File order: by time, except late events, which arrive up to three hours after their time.
    def arrival(event: TruthEvent) -> int:
        late = rng.random() < 0.04
        return event.ts + (rng.randint(1, 3 * HOUR) if late else 0)

    ordered = sorted(events, key=arrival)
    log = Log(events=ordered)
    encoded = [
        json.dumps(event.__dict__, ensure_ascii=rng.random() < 0.5).encode() for event in ordered
    ]
    pending: list[tuple[int, bytes]] = []  # (line index to re-send at, line)
    for index, line in enumerate(encoded):
        log.lines.append(line)
        if rng.random() < 0.03:  # a producer retry, a few lines later
            pending.append((index + rng.randint(0, 40), line))
        for due in [p for p in pending if p[0] <= index]:
            pending.remove(due)
            log.lines.append(due[1])
            log.repeated += 1
        roll = rng.random()
        if roll < 0.01:
            log.lines.append(rng.choice(_MALFORMED))
            log.malformed += 1
        elif roll < 0.015:
            log.lines.append(b"   ")
            log.blank += 1
    for _, line in pending:
        log.lines.append(line)
        log.repeated += 1
    return log


_MALFORMED = [
    b'{"event_id": "x", "user_id": "u00"',
    b'{"event_id": "x", "user_id": "u00", "item_id": "i001", "action": "save"}',
    b'{"event_id": "x", "user_id": "u00", "item_id": "i001", "action": "save", '
    b'"surface": "home", "ts": "yesterday"}',
    b'{"event_id": "", "user_id": "u00", "item_id": "i001", "action": "save", '
    b'"surface": "home", "ts": 1773149832345}',
    b"not json at all",
    b'{"event_id": "y", "user_id": "u00", "item_id": "i001", "action": "save", '
    b'"surface": "home", "ts": 1773149832345, "attrs": [1, 2]}',
]
