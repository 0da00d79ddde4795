"""The one pipeline step: decode → dead letters → process → commit → stats, in that order.

A real engine over the in-memory store and a real dead-letter file on a temp dir.
"""

from __future__ import annotations

import time
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usersignals import Count, Event, ReadContext, Signal, SignalRegistry
from usersignals._core import lines_holding
from usersignals.events.decode import EventDecoder
from usersignals.events.model import Position
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.spool import encode_delete
from usersignals.processing.engine import Engine
from usersignals.processing.pipeline import PipelineStep
from usersignals.serving.reader import SignalReader
from usersignals.state.memory import MemoryStore

NOW = time.time_ns() // 1_000_000
MARK = b"m:test_mark"


@pytest.fixture
def registry() -> SignalRegistry:
    return SignalRegistry([Signal(name="clicks", version=1, aggregate=Count())])


def click(event_id: str, user_id: str) -> bytes:
    return msgspec.json.encode(Event(event_id, user_id, "i1", "click", "home", NOW))


def clicks(registry: SignalRegistry, store: MemoryStore, user_id: str) -> int:
    context = ReadContext(window_ms=86_400_000, now_ms=NOW + 1)
    answer = SignalReader(registry, store).read(user_id, ["clicks"], context)
    return int(answer.signals["clicks"].value["total"])


def run_block(
    registry: SignalRegistry, store: MemoryStore, tmp_path: Path, lines: list[bytes]
) -> PipelineStep:
    step = PipelineStep(Engine(registry, store), EventDecoder(), DeadLetterFile(tmp_path / "dl"))
    positions = [Position("p", offset) for offset in range(len(lines))]
    seen_at_mark: list[int] = []

    def marks() -> dict[bytes, bytes]:
        seen_at_mark.append(step.stats.deleted_users)  # asked for after every deletion
        return {MARK: b"%d" % len(lines)}

    step.apply(step.decode(lines, positions), marks=marks)
    assert seen_at_mark == [step.stats.deleted_users]
    return step


def test_a_block_is_cut_at_a_deletion_and_its_bad_lines_are_dead_lettered(
    registry: SignalRegistry, tmp_path: Path
) -> None:
    store = MemoryStore()
    lines = [click("a", "u1"), click("b", "u2"), encode_delete("u1"), b"{oops", click("c", "u1")]
    step = run_block(registry, store, tmp_path, lines)
    # The deletion forgot u1's click before it, not the one after.
    assert clicks(registry, store, "u1") == 1
    assert clicks(registry, store, "u2") == 1
    assert store.get_many([MARK]) == [b"5"]
    records = (tmp_path / "dl").read_bytes().splitlines()
    assert [msgspec.json.decode(r)["offset"] for r in records] == [3]
    stats = step.stats
    assert (stats.lines, stats.batches, stats.deleted_users) == (5, 1, 1)
    assert (stats.bad, stats.bad_by_reason) == (1, {"malformed_json": 1})
    assert stats.report.events == 3


def test_a_block_ending_in_a_deletion_writes_its_marks_after_it(
    registry: SignalRegistry, tmp_path: Path
) -> None:
    store = MemoryStore()
    step = run_block(registry, store, tmp_path, [click("a", "u1"), encode_delete("u1")])
    assert clicks(registry, store, "u1") == 0
    assert store.get_many([MARK]) == [b"2"]
    assert step.stats.deleted_users == 1


def test_a_file_replay_step_treats_a_deletion_record_as_an_event(
    registry: SignalRegistry, tmp_path: Path
) -> None:
    store = MemoryStore()
    step = PipelineStep(
        Engine(registry, store), EventDecoder(), DeadLetterFile(tmp_path / "dl"), deletions=False
    )
    lines = [click("a", "u1"), encode_delete("u1")]
    step.apply(step.decode(lines, [Position("f", 0), Position("f", 1)]))
    assert clicks(registry, store, "u1") == 1
    assert step.stats.deleted_users == 0
    assert step.stats.bad == 1


def test_an_event_with_an_op_field_is_an_event_not_a_deletion(
    registry: SignalRegistry, tmp_path: Path
) -> None:
    """A valid event that happens to carry ``"op": "delete"`` (an unknown field, ignored as
    any other) is applied. Before, the deletion record's decoder ignored the event's own
    fields and took the line for a deletion: the user's history was wiped, the event lost,
    and nothing dead-lettered. A deletion record with a field it does not know is not a
    deletion either: it is dead-lettered, as a line that is no event."""
    store = MemoryStore()
    event = msgspec.json.decode(click("a", "u1"))
    with_op = msgspec.json.encode({**event, "op": "delete"})
    odd_delete = msgspec.json.encode({"op": "delete", "user_id": "u1", "why": "?"})
    step = run_block(registry, store, tmp_path, [click("b", "u1"), with_op, odd_delete])
    assert clicks(registry, store, "u1") == 2
    assert step.stats.deleted_users == 0
    assert step.stats.bad == 1


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=40) | st.sampled_from([b'{"op":"delete"}', b'"op"', b'"o'])))
def test_the_deletion_pre_scan_finds_the_lines_python_finds(lines: list[bytes]) -> None:
    """The core's scan (one SIMD search per line) against Python's ``in``."""
    expected = [index for index, line in enumerate(lines) if b'"op"' in line]
    assert lines_holding(lines, b'"op"') == expected
