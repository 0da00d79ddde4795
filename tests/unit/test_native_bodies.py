"""The GET route's body written by the core equals the object path's answer, encoded.

``SignalReader.read_body`` (one core call, JSON written in Rust) against ``SignalReader.read``
(one core call per signal, ``SignalResult`` objects encoded by msgspec, the reference): for
random events through the engine's native seam, random query strings and random request
clocks, the two give the same JSON value, or the same refusal. The store is a real
in-memory one holding the records as the engine writes them.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from native_batching import BASE, event_lists, native_states
from usersignals import Event, FirstSeen, LastSeen, Signal, Sum, days, hours
from usersignals.errors import AsOfError
from usersignals.examples import reference
from usersignals.serving.queries import Queries, resolve
from usersignals.serving.reader import SignalReader
from usersignals.signals.registry import SignalRegistry
from usersignals.state.codec import UserRecord, encode_record
from usersignals.state.keys import user_key
from usersignals.state.memory import MemoryStore

USERS = ["u1", "u2", "u3"]
ITEMS = [f"i{n}" for n in range(8)]
ACTIONS = ["click", "save", "hide", "view"]
SURFACES = ["home", "search"]
TABLE = {
    item: {"category": f"c{n % 3}", "creator_id": f"k{n % 4}", "embedding": [n / 8] * 32}
    for n, item in enumerate(ITEMS[:-1])  # the last item has no record
}
SIGNALS = [
    *reference.SIGNALS,
    Signal(name="last_surface", version=1, aggregate=LastSeen(by="surface"), retention=days(3)),
    Signal(name="first_action", version=1, aggregate=FirstSeen(by="action"), retention=days(3)),
    Signal(
        name="dwell", version=1, aggregate=Sum(of="attrs.dwell", by=("action",)), retention=days(2)
    ),
]

events = event_lists(
    USERS,
    ITEMS,
    ACTIONS,
    SURFACES,
    steps=st.integers(0, hours(5)),
    lateness=st.integers(0, hours(30)),
    attrs=st.one_of(st.none(), st.builds(lambda d: {"dwell": d}, st.integers(0, 50))),
)
parameters = st.fixed_dictionaries(
    {},
    optional={
        "names": st.lists(st.sampled_from([s.name for s in SIGNALS]), min_size=1).map(",".join),
        "window": st.sampled_from(["1h", "1d", "7d"]),
        "actions": st.sampled_from(["click", "click,save", "view"]),
        "surfaces": st.sampled_from(["home", "search"]),
        "limit": st.sampled_from(["1", "3", "50"]),
        "dedupe": st.sampled_from(["true", "false"]),
        "exclude": st.sampled_from(["i1", "c0,c1", "k2"]),
        "as_of": st.integers(0, 40).map(lambda h: str(BASE + h * hours(6))),
        "until": st.integers(0, 40).map(lambda h: str(BASE + h * hours(6))),
    },
)


def reader_over(event_list: list[Event]) -> SignalReader:
    """A reader over a store holding each user's record as the engine writes it."""
    store = MemoryStore()
    records: dict[str, UserRecord] = {}
    for signal in SIGNALS:
        for user, stored in native_states(signal, [event_list], USERS, TABLE).items():
            record = records.setdefault(user, UserRecord({}, {}))
            record.states[signal.key] = msgspec.Raw(stored)
    store.write({user_key(user): encode_record(record) for user, record in records.items()})
    return SignalReader(SignalRegistry(SIGNALS), store)


def outcome(read: Any) -> Any:
    """The JSON value of an answer, or the refusal's fields."""
    try:
        out = read()
    except AsOfError as exc:
        return (exc.signal, exc.as_of_ms, exc.earliest_ms, exc.why)
    return out if out is None else msgspec.json.decode(out)


@settings(max_examples=60, deadline=None)
@given(
    event_list=events,
    params=parameters,
    now=st.integers(0, 60).map(lambda h: BASE + h * hours(4)),
)
def test_the_core_written_body_equals_the_encoded_answer(
    event_list: list[Event], params: dict[str, str], now: int
) -> None:
    reader = reader_over(event_list)
    if "as_of" in params and "until" in params and params["until"] < params["as_of"]:
        params["until"] = params["as_of"]
    query = resolve(reader.registry, "&".join(f"{k}={v}" for k, v in params.items()).encode())
    context = query.at(now)
    for user in [*USERS, "nobody"]:
        written = outcome(lambda u=user: reader.read_body(u, query, now))
        assert written is not None, "every signal here is native: the core writes the body"
        encoded = outcome(lambda u=user: msgspec.json.encode(reader.read(u, query.names, context)))
        assert written == encoded


def test_a_state_of_the_python_codec_is_left_to_the_object_path() -> None:
    """The old codec's state (a msgpack array) is migrated on the object path, not here."""
    signal = reference.recent_engagements
    store = MemoryStore()
    old = signal.compiled.runtime.encode([(BASE, 0, "i1", "click", "home", "c1")])
    store.write({user_key("u1"): encode_record(UserRecord({}, {signal.key: msgspec.Raw(old)}))})
    reader = SignalReader(SignalRegistry([signal]), store)
    query = resolve(reader.registry, b"")
    assert reader.read_body("u1", query, BASE) is None
    assert reader.read("u1", None, query.at(BASE)).signals[signal.name].value[0]["ts"] == BASE


def test_a_cached_query_follows_a_cut_over() -> None:
    """A query string resolved before a cut-over is resolved again after it."""
    v1 = Signal(name="seen", version=1, aggregate=LastSeen(), retention=days(1))
    v2 = Signal(name="seen", version=2, aggregate=FirstSeen(), retention=days(1), shadow=True)
    registry = SignalRegistry([v1, v2])
    queries = Queries(registry)
    assert queries.get(b"names=seen").signals == [v1]
    registry.serve({"seen": 1})  # unchanged: the cached query stays
    assert queries.get(b"names=seen") is queries.get(b"names=seen")
    registry.serve({"seen": 2})
    assert queries.get(b"names=seen").signals == [v2]


def test_a_bad_query_string_is_refused_every_time() -> None:
    queries = Queries(SignalRegistry(SIGNALS))
    for _ in range(2):
        with pytest.raises(Exception, match="limit"):
            queries.get(b"limit=0")


def test_a_kept_list_object_or_big_integer_is_served_as_it_came() -> None:
    """Found in a ranking engineer's trial: a LastN keeping ``attrs.device`` answered null
    for ``{"os": "ios"}`` and ``attrs.pos`` null for ``[1, 2]`` (the core held scalars
    only), while the README says attrs may hold nested objects and lists. Such a value is
    kept as its JSON text now, in both the body the core writes and the object path; its
    state says so in its format version (3), which a build reading version 2 refuses."""
    import usersignals._core as core
    from usersignals import LastN

    values: list[Any] = [{"os": "ios", "v": [1.5, {"a": True}]}, [1, "two", None], 2**70, {}]
    signal = Signal(
        name="recent", version=1, aggregate=LastN(10, keep=("item_id", "attrs.x")),
        retention=days(3),
    )  # fmt: skip
    events = [
        Event(f"e{n}", "u1", f"i{n}", "click", "home", BASE + n, {"x": value})
        for n, value in enumerate(values)
    ]
    stored = native_states(signal, [events], ["u1"], {})["u1"]
    assert msgspec.msgpack.decode(stored)[0] == core.LAST_N_JSON_VALUES_VERSION == 3
    store = MemoryStore()
    store.write({user_key("u1"): encode_record(UserRecord({}, {signal.key: msgspec.Raw(stored)}))})
    reader = SignalReader(SignalRegistry([signal]), store)
    query = resolve(reader.registry, b"")
    written = outcome(lambda: reader.read_body("u1", query, BASE + 10))
    answer = written["signals"]["recent"]["value"]
    assert [entry["attrs.x"] for entry in answer] == values[::-1]  # newest first
    encoded = outcome(lambda: msgspec.json.encode(reader.read("u1", None, query.at(BASE + 10))))
    assert written == encoded
    scalars = Event("s", "u1", "i9", "click", "home", BASE, {"x": "text"})
    plain = native_states(signal, [[scalars]], ["u1"], {})["u1"]
    assert msgspec.msgpack.decode(plain)[0] == core.LAST_N_FORMAT_VERSION
