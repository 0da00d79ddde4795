"""Reading one full LastN(500) state: the native read kernel against the Python reference.

Method: build the `recent_engagements` state (LastN(500), four kept fields) of one user from
1,000 synthetic engagements, store it in both forms (the Python reference's msgpack and the
native format), then time, per read, decode + evaluate + build the JSON-ready answer with
the serving bench's context (window=1d, actions=click,save,closeup, limit=50) and with no
filter (all 500 entries). Python's side gets no decoded-state cache, as on a cache miss.

    .venv/bin/python bench/native_read.py
"""

from __future__ import annotations

import timeit

from usersignals import Event, ReadContext
from usersignals.examples.reference import recent_engagements
from usersignals.processing.native import NativeSignals
from usersignals.state.codec import UserRecord

BASE = 1_767_225_600_000
ACTIONS = ["closeup", "click", "save", "share", "hide"]
SURFACES = ["home", "search", "related", "board"]


def main() -> None:
    signal = recent_engagements
    runtime = signal.compiled.runtime
    events = [
        Event(f"e{i}", "u1", f"i{(i * 7919) % 10_000_000:08d}", ACTIONS[i % 5],
              SURFACES[i % 4], BASE + i * 60_000)
        for i in range(1_000)
    ]  # fmt: skip
    table = {e.item_id: {"category": f"c{hash(e.item_id) % 500:03d}"} for e in events}
    rows = [(e, (table[e.item_id],)) for e in events]
    python_bytes = runtime.encode(runtime.apply(None, rows).state)
    native = NativeSignals([signal])
    record = UserRecord({}, {})
    states, _, _ = native.apply(
        events, [(b"u1", record, list(range(len(events))))], {"items": table}
    )
    native.place(record.states, states[0])
    native_raw = record.states[signal.key]
    now = BASE + 1_000 * 60_000
    contexts = {
        "window=1d, 3 actions, limit=50": ReadContext(
            window_ms=86_400_000,
            actions=frozenset({"click", "save", "closeup"}),
            limit=50,
            now_ms=now,
        ),
        "no filter (500 entries)": ReadContext(now_ms=now),
    }
    print(f"state bytes: Python codec {len(python_bytes):,}, native {len(bytes(native_raw)):,}")
    for name, context in contexts.items():
        expected = runtime.read(runtime.decode(python_bytes), context)
        assert native.read(signal, native_raw, context, b"u1") == expected
        number = 2_000
        py = timeit.timeit(
            lambda c=context: runtime.read(runtime.decode(python_bytes), c), number=number
        )
        rs = timeit.timeit(
            lambda c=context: native.read(signal, native_raw, c, b"u1"), number=number
        )
        print(
            f"{name}: Python decode+read {py / number * 1e6:,.1f} µs, "
            f"native {rs / number * 1e6:,.1f} µs ({py / rs:.1f}x)"
        )


if __name__ == "__main__":
    main()
