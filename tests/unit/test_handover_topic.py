"""A Kafka processor says so when the store's backfill hand-over names another topic than
the one it consumes: found in an ML engineer's trial, a backfill of an export whose
envelopes said topic `engagements`, then a processor on `engagements-live` holding the same
events, counted 175 of 100 (only repeats within the dedupe horizon were dropped by event id),
without a word."""

from __future__ import annotations

import logging

import msgspec
import pytest

from usersignals.app import warn_of_another_topic
from usersignals.state.keys import BACKFILL_OFFSETS_KEY
from usersignals.state.memory import MemoryStore


def said(offsets: dict[str, int] | None, topic: str, caplog: pytest.LogCaptureFixture) -> str:
    store = MemoryStore()
    if offsets is not None:
        store.write({BACKFILL_OFFSETS_KEY: msgspec.json.encode(offsets)})
    with caplog.at_level(logging.WARNING):
        warn_of_another_topic(store, topic)
    return caplog.text


def test_a_hand_over_of_another_topic_is_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    text = said({"engagements/0": 100, "engagements/1": 7}, "engagements-live", caplog)
    assert "'engagements'" in text
    assert "'engagements-live'" in text
    assert "twice" in text


@pytest.mark.parametrize("offsets", [None, {"engagements/0": 100}])
def test_the_same_topic_or_no_hand_over_is_not(
    offsets: dict[str, int] | None, caplog: pytest.LogCaptureFixture
) -> None:
    assert said(offsets, "engagements", caplog) == ""
