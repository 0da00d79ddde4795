"""The core's whole-batch pipeline (processing/native_batch.py) against the engine's
per-user Python steps, its reference model: for random streams — several partitions,
redeliveries, repeated event ids, late events, random batch splits — the stores hold the same
bytes and every batch reports the same counts.
"""

from __future__ import annotations

import importlib
import random

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native_batching import batches
from usersignals import (
    Count,
    DecayedScores,
    Distinct,
    Engine,
    Event,
    FirstSeen,
    LastN,
    Lookup,
    MeanVector,
    MicroBatch,
    Position,
    Signal,
    SignalRegistry,
    Sum,
    action,
    days,
)
from usersignals._core import replace_progress
from usersignals.enrich import Materializer, TableSource
from usersignals.enrich.sources import encode_table_record
from usersignals.errors import StateCodecError
from usersignals.offline.backfill import with_progress
from usersignals.processing.batch import BatchReport
from usersignals.state.codec import UserRecord, decode_record, encode_record
from usersignals.state.keys import user_key
from usersignals.state.memory import MemoryStore

BASE = 1_767_225_600_000
ITEMS = [f"i{n}" for n in range(8)]
items = Lookup("items", key="item_id", provides=("category", "creator", "embedding"))
SIGNALS = [
    Signal(name="recent", version=2, where=action.isin({"click", "save"}),
           enrich=[items.fields("category")],
           aggregate=LastN(5, keep=("item_id", "action", "category")), retention=days(3)),
    Signal(name="counts", version=1, aggregate=Count(by=("action",)), retention=days(3)),
    Signal(name="dwell", version=1, aggregate=Sum(of="attrs.dwell", by=("surface",))),
    Signal(name="interest", version=1, enrich=[items.fields("category")],
           aggregate=DecayedScores(key="category", half_life=days(1), weights={"save": 2.0},
                                   default_weight=1.0, top_k=3)),
    Signal(name="taste", version=1, enrich=[items.fields("embedding")],
           aggregate=MeanVector(of="embedding", dim=2, half_life=days(1))),
    Signal(name="creators", version=1, enrich=[items.fields("creator")],
           aggregate=Distinct(of="creator", precision=6)),
    Signal(name="first", version=1, aggregate=FirstSeen(by="action")),
]  # fmt: skip


def open_engine(native_pipeline: bool, horizon_ms: int | None) -> Engine:
    store = MemoryStore()
    table = store.table("items")
    table.write(
        {
            item.encode(): encode_table_record(
                {
                    "item_id": item,
                    "category": f"c{n % 3}",
                    "creator": f"k{n % 5}",
                    "embedding": [n / 4, 1.0 - n / 8],
                }
            )
            for n, item in enumerate(ITEMS[:-1])  # the last item has no record: a miss
        }
    )
    registry = SignalRegistry(SIGNALS)
    materializer = Materializer({"items": TableSource("items", table)})
    return Engine(
        registry,
        store,
        materializer,
        dedupe_horizon_ms=horizon_ms,
        native_pipeline=native_pipeline,
    )


def stream(seed: int, size: int) -> list[tuple[Event, Position]]:
    """Events of 4 users over 2 partitions and 3 days, with repeats of earlier event ids,
    then redeliveries of earlier positions mixed in (a consumer that went back)."""
    rng = random.Random(seed)
    out: list[tuple[Event, Position]] = []
    offsets = [0, 0]
    for n in range(size):
        partition = rng.randrange(2)
        repeat = out and rng.random() < 0.15
        event_id = rng.choice(out)[0].event_id if repeat else f"e{n}"
        event = Event(
            event_id=event_id,
            user_id=f"u{rng.randrange(4)}",
            item_id=rng.choice(ITEMS),
            action=rng.choice(["click", "save", "view"]),
            surface=rng.choice(["home", "search"]),
            ts=BASE + rng.randrange(3 * 86_400_000),
            attrs={"dwell": rng.choice([1, 2.5, None, "x"])},
        )
        out.append((event, Position(f"t/{partition}", offsets[partition])))
        offsets[partition] += 1
    for _ in range(size // 5):
        at = rng.randrange(len(out))
        out.insert(rng.randrange(at, len(out) + 1), out[at])
    return out


def run(
    engine: Engine, pairs: list[tuple[Event, Position]], cuts: list[int], rewinds: bool = False
) -> list[BatchReport]:
    """The pairs in batches split at ``cuts``; ``rewinds`` as the Kafka runner asks."""
    return [
        engine.process(MicroBatch([e for e, _ in part], [p for _, p in part]), rewinds=rewinds)
        for part in batches(pairs, cuts)
    ]


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    size=st.integers(1, 120),
    cuts=st.lists(st.integers(1, 150), max_size=6),
    horizon=st.sampled_from([None, 3_600_000, 86_400_000]),
)
def test_the_native_pipeline_writes_what_the_python_steps_write(
    seed: int, size: int, cuts: list[int], horizon: int | None
) -> None:
    pairs = stream(seed, size)
    native, python = open_engine(True, horizon), open_engine(False, horizon)
    assert native._batches is not None
    assert python._batches is None
    assert run(native, pairs, cuts) == run(python, pairs, cuts)
    assert dict(native.store.scan(b"u:")) == dict(python.store.scan(b"u:"))


def test_stale_versions_and_python_codec_states_are_handled_as_the_reference_does() -> None:
    """A record holding a retired version (dropped), a signal of another module (kept) and
    a state the Python codec wrote (migrated when touched, left as it is when not)."""
    engines = open_engine(True, 86_400_000), open_engine(False, 86_400_000)
    recent = SIGNALS[0].compiled.runtime
    event = Event("e0", "u0", "i1", "click", "home", BASE, None)
    old_state = recent.encode(recent.apply(None, [(event, ({"category": "c1"},))]).state)
    counts = SIGNALS[1].compiled.runtime
    old_counts = counts.encode(counts.apply(None, [(event, ())]).state)
    record = UserRecord(
        {"t/0": 0},
        {
            "recent@1": msgspec.Raw(b"\x90"),
            "other@1": msgspec.Raw(b"\x90"),
            "recent@2": msgspec.Raw(old_state),
            "counts@1": msgspec.Raw(old_counts),
        },
    )
    stored = encode_record(record)
    for engine in engines:
        engine.store.write({user_key("u0"): stored})
        # Only a view: `recent` (clicks and saves) is not touched, `counts` is.
        engine.process(MicroBatch([Event("e1", "u0", "i2", "view", "home", BASE + 5, None)],
                                  [Position("t/0", 1)]))  # fmt: skip
    native, python = (engine.store.get_many([user_key("u0")])[0] for engine in engines)
    assert native == python
    assert native is not None
    states = decode_record(user_key("u0"), native).states
    assert "recent@1" not in states
    assert "other@1" in states
    assert bytes(states["recent@2"]) == old_state  # untouched: not rewritten
    assert bytes(states["counts@1"])[0] in (0xC4, 0xC5, 0xC6)  # migrated to the native form


_TEXT = st.text(min_size=1, max_size=12)
_I64 = st.integers(-(2**63), 2**63 - 1)  # what msgpack holds
_RECORDS = st.builds(
    UserRecord,
    st.dictionaries(_TEXT, st.integers(0, 2**62), max_size=4),
    st.dictionaries(
        _TEXT,
        st.one_of(st.binary(max_size=40), st.lists(_I64, max_size=5)).map(
            lambda state: msgspec.Raw(msgspec.msgpack.encode(state))
        ),
        max_size=4,
    ),
    st.dictionaries(st.integers(-(2**40), 2**40), st.binary(max_size=16), max_size=3),
)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(_RECORDS, st.dictionaries(_TEXT, st.integers(0, 2**62), max_size=4)),
        max_size=4,
    )
)
def test_replace_progress_writes_what_the_python_codec_writes(
    records: list[tuple[UserRecord, dict[str, int]]],
) -> None:
    """The backfill's hand-over rewrites the records' progress in the core, a chunk a call
    (no Python objects): the bytes are the Python codec's, and the states and fingerprints
    stay."""
    data = [encode_record(record) for record, _ in records]
    expected = [
        encode_record(UserRecord(progress, record.states, record.seen))
        for record, progress in records
    ]
    assert replace_progress(data, [progress for _, progress in records]) == expected


def test_a_record_that_does_not_decode_is_named_by_its_key_in_the_load(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The load rewrites records a chunk a core call; a bad one in a later chunk is still
    named by its own key."""
    # The package exports the function ``backfill`` under the module's name.
    module = importlib.import_module("usersignals.offline.backfill")
    monkeypatch.setattr(module, "_PROGRESS_CHUNK", 2)
    good = encode_record(UserRecord({"p/0": 3}, {}, {}))
    keys = [user_key(user) for user in "abcd"]
    records = [(key, b"not a record" if key == keys[2] else good) for key in keys]
    with pytest.raises(StateCodecError) as raised:
        list(with_progress(records, {"a": {"t/0": 1}}))
    assert raised.value.key == keys[2]


def test_a_record_the_core_cannot_decode_is_named_by_its_key() -> None:
    """The core numbers the batch's users itself; the error still names the right record."""
    engine = open_engine(native_pipeline=True, horizon_ms=None)
    engine.store.write({user_key("u2"): b"\xc1 not a record"})
    events = [
        Event(f"e{n}", user, ITEMS[0], "click", "home", BASE + n)
        for n, user in enumerate(["u1", "u2", "u1"])
    ]
    positions = [Position("t/0", n) for n in range(len(events))]
    with pytest.raises(StateCodecError) as caught:
        engine.process(MicroBatch(events, positions))
    assert caught.value.key == user_key("u2")
