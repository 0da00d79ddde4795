"""A read of many users that one of them cannot answer as of the time asked names that user.

Found in a newcomer's trial: `POST /v1/signals/batch` for 1,000 users at an `as_of` one user
could not answer exactly was a 422 naming the signal and that user's earliest `as_of`, but
not the user: the caller could neither find nor drop them."""

from __future__ import annotations

import pytest

from usersignals import Distinct, Event, ReadContext, Signal, SignalRegistry
from usersignals.errors import AsOfError
from usersignals.events import Position
from usersignals.processing import Engine, MicroBatch
from usersignals.serving.error_handlers import error_body
from usersignals.serving.reader import SignalReader
from usersignals.state.memory import MemoryStore

NOW = 1_767_225_600_000


def test_the_user_an_as_of_cannot_be_answered_for_is_named() -> None:
    registry = SignalRegistry(
        [Signal(name="items", version=1, aggregate=Distinct(of="item_id"), retention="7d")]
    )
    store = MemoryStore()
    events = [
        Event("e1", "early", "i1", "click", "home", NOW),
        Event("e2", "late", "i2", "click", "home", NOW + 60_000),  # after the as_of, same day
    ]
    Engine(registry, store).process(MicroBatch(events, [Position("p", 0), Position("p", 1)]))
    reader = SignalReader(registry, store)
    with pytest.raises(AsOfError) as caught:
        reader.read_many(["early", "late"], None, ReadContext(as_of_ms=NOW + 1, now_ms=NOW + 1))
    assert caught.value.user == "late"
    assert "for user 'late'" in str(caught.value)
    body = error_body(caught.value)
    assert (body.user, body.signal) == ("late", "items")
