"""A refusal names the parameter the signal reads: found in a ranking engineer's trial, a
DecayedScores read refused with `as_of` and `until` both given named `until`, which that
signal ignores (it lists it in `ignored`): changing `until` as told could never help."""

from __future__ import annotations

import pytest

from usersignals import (
    AsOfError,
    DecayedScores,
    Engine,
    MicroBatch,
    Position,
    Signal,
    SignalRegistry,
    action,
)
from usersignals.offline import MemoryStore
from usersignals.serving.queries import resolve
from usersignals.serving.reader import SignalReader
from usersignals.testing import event

HOUR = 3_600_000
NOW = 1_767_225_600_000 + 12 * HOUR  # midday: events later in the day share its bucket
interest = Signal(
    name="interest", version=1, where=action.eq("click"),
    aggregate=DecayedScores(key="surface", half_life="1d", weights={"click": 1.0}),
    retention="7d",
)  # fmt: skip


def reader() -> SignalReader:
    registry = SignalRegistry([interest])
    store = MemoryStore()
    engine = Engine(registry, store)
    batch = [event("u1", "i1", "click", ts=NOW - HOUR), event("u1", "i2", "click", ts=NOW)]
    engine.process(MicroBatch(batch, [Position("p", n) for n in range(len(batch))]))
    return SignalReader(registry, store)


@pytest.mark.parametrize("path", ["object", "body"])
def test_a_signal_that_ignores_until_is_refused_for_its_as_of(path: str) -> None:
    signals = reader()
    query = resolve(
        signals.registry, f"names=interest&as_of={NOW - 30_000}&until={NOW - 2 * HOUR}".encode()
    )

    def read() -> object:
        if path == "body":
            return signals.read_body("u1", query, NOW)
        return signals.read("u1", query.names, query.at(NOW))

    with pytest.raises(AsOfError) as caught:
        read()
    assert caught.value.parameter == "as_of"
