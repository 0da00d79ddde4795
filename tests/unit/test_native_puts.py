"""``BatchSession.apply`` hands the records to write keyed by their user keys (the keys
``select`` handed out), in key order, where Python keyed (user index, bytes) pairs before:
per batch, the native pipeline writes the very records the per-user Python steps write,
and in ascending key order (what makes the store's sort of them one pass)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.unit.test_native_pipeline import open_engine, stream

from usersignals import Engine, MicroBatch


def writes(engine: Engine) -> list[dict[bytes, bytes]]:
    """Every ``write`` the engine makes to its store from now on, as it made it."""
    made: list[dict[bytes, bytes]] = []
    write = engine.store.write

    def recording(puts: Mapping[bytes, bytes], deletes: Sequence[bytes] = ()) -> None:
        made.append(dict(puts))
        write(puts, deletes)

    engine.store.write = recording  # type: ignore[method-assign]
    return made


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    size=st.integers(1, 120),
    cuts=st.lists(st.integers(1, 150), max_size=6),
)
def test_each_batch_writes_the_python_steps_records_in_key_order(
    seed: int, size: int, cuts: list[int]
) -> None:
    pairs = stream(seed, size)
    native, python = open_engine(True, 86_400_000), open_engine(False, 86_400_000)
    assert native._batches is not None
    made = [writes(native), writes(python)]
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(pairs)}), len(pairs)]
    for a, b in itertools.pairwise(bounds):
        part = pairs[a:b]
        for engine in (native, python):
            engine.process(MicroBatch([e for e, _ in part], [p for _, p in part]))
    assert made[0] == made[1]
    for puts in made[0]:
        assert list(puts) == sorted(puts)
