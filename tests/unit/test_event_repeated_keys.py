"""The ingest route's check for a key given twice in an event (serving/inputs.py): the
count that leaves out the full check never hides a repeat."""

from __future__ import annotations

import pytest

from usersignals.events.decode import EventDecoder
from usersignals.events.model import Event
from usersignals.serving.inputs import event_repeated_key

NOW = 1_767_225_600_000
BASE = b'"event_id":"e1","user_id":"u1","item_id":"i1","action":"click","surface":"home","ts":%d'


def decoded(raw: bytes) -> Event:
    event = EventDecoder().decode_one(raw, NOW)
    assert isinstance(event, Event), event
    return event


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b"{" + BASE % NOW + b"}", None),
        (b"{" + BASE % NOW + b',"attrs":{"a":1,"b":"x\\":y"}}', None),  # a value holding ":
        (b"{" + BASE % NOW + b',"other": 1}', None),  # a key the event does not keep
        (b"{" + BASE % NOW + b',"user_id" : "u2"}', "user_id"),  # spaced colon
        (b"{" + BASE % NOW + b',"attrs":{"a":1,"a":2}}', "attrs.a"),
        (b'{"attrs":null,' + BASE % NOW + b',"attrs":{"a":1}}', "attrs"),
    ],
)
def test_a_key_given_twice_is_found_and_only_then(raw: bytes, path: str | None) -> None:
    assert event_repeated_key(raw, decoded(raw)) == path
