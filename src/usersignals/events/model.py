"""The engagement event: the one input record of usersignals."""

from __future__ import annotations

from typing import Any

import msgspec

AttrValue = str | int | float | bool | None


# gc=False: events never form reference cycles, and skipping the garbage collector for the
# millions of them in flight is a measurable saving. (Not in the docstring: the OpenAPI
# document shows it to the API's users.)
class Event(msgspec.Struct, gc=False):
    """One user engagement.

    ``ts`` is the event time in milliseconds since the Unix epoch (UTC). ``attrs`` holds optional
    producer-defined attributes (position, dwell time, a nested ``device`` object...) that
    filters and aggregations read by path (``attrs.device.os``): any JSON object.
    """

    event_id: str
    user_id: str
    item_id: str
    action: str
    surface: str
    ts: int
    attrs: dict[str, Any] | None = None


class Position(msgspec.Struct, frozen=True, gc=False):
    """Where an event came from: a partition of a source and its offset in it.

    For Kafka, ``partition`` is ``"topic/partition"``; for a file, the file's name. Offsets grow
    within a partition, which is what makes per-user progress (and so idempotent replay) work.
    """

    partition: str
    offset: int


def partition_id(topic: str, partition: int) -> str:
    """The id of a Kafka partition in positions and per-user progress: ``topic/partition``."""
    return f"{topic}/{partition}"


class BadEvent(msgspec.Struct, frozen=True):
    """An input record that was rejected, with a machine-readable reason and a human detail;
    ``key``: its Kafka message's key (the user id, as producers key events), which its dead
    letter keeps: a value that cannot be parsed names no user otherwise."""

    reason: str
    detail: str
    raw: bytes
    position: Position | None = None
    key: bytes | None = None
