"""Undecodable input becomes a bad event with a reason, never an exception (issue 9, item 1)."""

from __future__ import annotations

import pytest

from usersignals.events.decode import (
    REASON_INVALID_UTF8,
    REASON_MALFORMED,
    EventDecoder,
    EventPolicy,
)
from usersignals.events.model import BadEvent, Event, Position

NOW = 1_767_225_600_000
GOOD = (
    b'{"event_id":"e1","user_id":"u1","item_id":"i1","action":"save","surface":"home",'
    b'"ts":1767225500000}'
)


@pytest.mark.parametrize(
    "raw",
    [
        GOOD.replace(b'"e1"', b'"e\xff1"'),  # an invalid start byte in an id
        GOOD.replace(b'"home"', b'"ho\xc3"'),  # a truncated multi-byte sequence
        GOOD[:-1] + b',"attrs":{"k":"\xed\xa0\x80"}}',  # an encoded surrogate, in an attribute
    ],
)
def test_a_string_that_is_not_utf8_is_a_bad_event(raw: bytes) -> None:
    outcome = EventDecoder().decode_one(raw, NOW)
    assert isinstance(outcome, BadEvent)
    assert outcome.reason == REASON_INVALID_UTF8
    assert outcome.raw == raw
    assert "UTF-8" in outcome.detail


def test_json_nested_too_deeply_is_malformed_not_a_crash() -> None:
    # An unknown field is skipped, not typed: msgspec walks its nesting and runs out of stack.
    raw = GOOD[:-1] + b',"extra":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    outcome = EventDecoder(EventPolicy(max_event_bytes=1 << 20)).decode_one(raw, NOW)
    assert isinstance(outcome, BadEvent)
    assert outcome.reason == REASON_MALFORMED
    assert "nested too deeply" in outcome.detail


def test_a_block_keeps_the_good_events_around_an_undecodable_one() -> None:
    bad = GOOD.replace(b'"e1"', b'"e\xff"')
    second = GOOD.replace(b'"e1"', b'"e2"')
    positions = [Position("p", 0), Position("p", 1), Position("p", 2)]
    result = EventDecoder().decode_block([GOOD, bad, second], positions, NOW)
    assert [event.event_id for event in result.events] == ["e1", "e2"]
    assert all(isinstance(event, Event) for event in result.events)
    assert [(b.reason, b.position) for b in result.bad] == [(REASON_INVALID_UTF8, positions[1])]
