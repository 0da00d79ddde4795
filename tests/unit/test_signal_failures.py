"""A user-defined aggregation that fails is contained: its events are dead-lettered.

A signal written in Python whose ``apply`` raised on one event used to end the processor
with a traceback; at the restart it met the same event and ended again, so no signal (the
native ones included) moved past that batch. An ``encode`` that returned a ``str`` wrote it
into the user's record, which no read could decode again; a ``decode`` of a state another
layout wrote ended the processor too. Now the engine applies such a signal event by event
once it fails, dead-letters the events it fails on (reason ``signal_failed``, the signal and
the error in the detail), applies the rest, and leaves every other signal alone. The testing
helpers raise :class:`SignalFailedError` instead, from the signal's own error, so an author
sees it in a unit test.
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pytest

from usersignals import (
    Count,
    Engine,
    MicroBatch,
    Position,
    Signal,
    SignalFailedError,
    SignalReadError,
    SignalRegistry,
)
from usersignals.aggregations import Aggregation, AggregationRuntime, ApplyOut, ReadContext, ReadOut
from usersignals.events.decode import EventDecoder, EventPolicy
from usersignals.events.model import BadEvent, Event
from usersignals.offline import MemoryStore
from usersignals.processing.pipeline import PipelineStep
from usersignals.serving.reader import SignalReader
from usersignals.state.codec import decode_record
from usersignals.state.keys import user_key
from usersignals.testing import event, run_signals

NOW = 1_767_225_600_000


@dataclass(frozen=True)
class Dwell(Aggregation):
    """The total of ``attrs.dwell_ms``; ``fail`` picks how it misbehaves."""

    fail: str = "apply"
    kind = "dwell_total"

    def problems(self) -> list[str]:
        return []

    def fields(self) -> set[str]:
        return {"attrs.dwell_ms"}

    def context_parameters(self) -> frozenset[str]:
        return frozenset()

    def params(self) -> dict[str, Any]:
        return {"fail": self.fail}

    def compile(self, resolve: Any, retention_ms: int) -> DwellRuntime:
        return DwellRuntime(resolve("attrs.dwell_ms"), self.fail)


class DwellRuntime(AggregationRuntime[list[int]]):
    def __init__(self, dwell: Any, fail: str) -> None:
        self.dwell = dwell
        self.fail = fail

    def apply(self, state: list[int] | None, rows: Sequence[Any]) -> ApplyOut[list[int]]:
        total = list(state or [0, 0])
        for row in rows:
            value = self.dwell(row)
            if self.fail == "apply" and value > 9000:
                raise ValueError(f"dwell {value} too large for my model")
            total = [total[0] + value, max(total[1], row[0].ts)]
        if self.fail == "bare":
            return total  # type: ignore[return-value]  # the author's mistake: no ApplyOut
        if self.fail == "negative":
            return ApplyOut(total, -1)
        return ApplyOut(total, 0)

    def merge(self, a: list[int], b: list[int]) -> list[int]:
        return [a[0] + b[0], max(a[1], b[1])]

    def read(self, state: list[int] | None, context: ReadContext) -> ReadOut:
        return ReadOut(None, None) if state is None else ReadOut(state[0], state[1])

    def encode(self, state: list[int]) -> bytes:
        if self.fail == "encode" and state[0] > 9000:
            return repr(state)  # type: ignore[return-value]  # the author's mistake
        return msgspec.msgpack.encode(state)

    def decode(self, data: bytes) -> list[int]:
        if self.fail == "decode":
            raise msgspec.ValidationError("Expected 'object', got 'array'")
        return msgspec.msgpack.decode(data, type=list[int])


def signals(fail: str) -> list[Signal]:
    return [
        Signal(name="clicks", version=1, aggregate=Count(by="action")),
        Signal(name="dwell", version=1, aggregate=Dwell(fail)),
    ]


def dwell_event(user: str, n: int, dwell: int) -> Event:
    return event(user, f"i{n}", "click", ts=NOW + n, event_id=f"{user}-{n}",
                 attrs={"dwell_ms": dwell})  # fmt: skip


EVENTS = [dwell_event("u1", 1, 100), dwell_event("u1", 2, 99_999), dwell_event("u1", 3, 200)]


def run(fail: str, batches: Sequence[Sequence[Event]]) -> tuple[MemoryStore, list[BadEvent]]:
    registry = SignalRegistry(signals(fail))
    store = MemoryStore()
    engine = Engine(registry, store)
    rejected: list[BadEvent] = []
    offset = 0
    for batch in batches:
        positions = [Position("p", offset + i) for i in range(len(batch))]
        offset += len(batch)
        rejected += engine.process(MicroBatch(list(batch), positions)).rejected
    return store, rejected


def answers(store: MemoryStore, fail: str) -> dict[str, Any]:
    read = SignalReader(SignalRegistry(signals(fail)), store).read(
        "u1", None, ReadContext(now_ms=NOW + 10)
    )
    return {name: result.value for name, result in read.signals.items()}


@pytest.mark.parametrize("fail", ["apply", "encode"])
def test_the_event_a_signal_fails_on_is_dead_lettered_and_the_rest_applied(fail: str) -> None:
    store, rejected = run(fail, [EVENTS])
    assert [(bad.reason, bad.position) for bad in rejected] == [("signal_failed", Position("p", 1))]
    assert "dwell@1" in rejected[0].detail
    assert msgspec.json.decode(rejected[0].raw)["event_id"] == "u1-2"
    # The native signal counted every event; the failing one all but the one it failed on.
    assert answers(store, fail) == {"clicks": {"total": 3, "by": {"click": 3}}, "dwell": 300}


def test_a_failing_event_in_a_later_batch_leaves_the_earlier_state_as_it_was() -> None:
    store, rejected = run("apply", [EVENTS[:1], EVENTS[1:]])
    assert len(rejected) == 1
    assert answers(store, "apply")["dwell"] == 300


def test_a_stored_state_the_signal_cannot_decode_fails_its_new_events_not_the_batch() -> None:
    store, _ = run("none", [EVENTS[:1]])
    registry = SignalRegistry(signals("decode"))
    engine = Engine(registry, store)
    report = engine.process(MicroBatch([EVENTS[2]], [Position("p", 2)]))
    assert [bad.reason for bad in report.rejected] == ["signal_failed"]
    assert "decoding its stored state" in report.rejected[0].detail
    record = decode_record(user_key("u1"), store.get_many([user_key("u1")])[0])
    assert msgspec.msgpack.decode(record.states["dwell@1"]) == [100, NOW + 1]  # kept
    assert record.progress == {"p": 2}  # the batch is done: never met again at a restart


def test_the_pipeline_dead_letters_them_and_counts_them() -> None:
    written: list[BadEvent] = []

    class Sink:
        def write(self, bad: list[BadEvent]) -> None:
            written.extend(bad)

        def close(self) -> None:
            pass

    step = PipelineStep(Engine(SignalRegistry(signals("apply")), MemoryStore()),
                        EventDecoder(EventPolicy()), Sink())  # fmt: skip
    lines = [msgspec.json.encode(one) for one in EVENTS]
    step.apply(step.decode(lines, [Position("p", i) for i in range(3)]))
    assert [bad.reason for bad in written] == ["signal_failed"]
    assert step.stats.bad_by_reason == {"signal_failed": 1}


def test_the_testing_helpers_raise_the_signal_s_error() -> None:
    with pytest.raises(SignalFailedError) as info:
        run_signals(signals("apply"), EVENTS)
    assert info.value.signal == "dwell@1"
    assert isinstance(info.value.__cause__, ValueError)
    assert "dwell 99999 too large" in str(info.value)


@pytest.mark.parametrize(
    ("fail", "says"),
    [("bare", "apply returned list, not ApplyOut(state, expired)"), ("negative", "expired -1")],
)
def test_an_apply_that_answers_no_proper_apply_out_is_named_so(fail: str, says: str) -> None:
    # An apply that returned the bare state dead-lettered every event with "AttributeError:
    # 'list' object has no attribute 'state'", which names neither apply nor ApplyOut; a
    # negative expired count was added to the counts as it was.
    with pytest.raises(SignalFailedError, match=re.escape(says)):
        run_signals(signals(fail), EVENTS)
    _, rejected = run(fail, [EVENTS])
    assert len(rejected) == len(EVENTS)
    assert all(says in (bad.detail or "") for bad in rejected)


# -- reads ------------------------------------------------------------------------------------


class FailingRead(DwellRuntime):
    answer: Any = "raise"

    def read(self, state: list[int] | None, context: ReadContext) -> ReadOut:
        if self.answer == "raise":
            raise ZeroDivisionError("division by zero")
        return ReadOut(self.answer, None)


@dataclass(frozen=True)
class FailingDwell(Dwell):
    def compile(self, resolve: Any, retention_ms: int) -> DwellRuntime:
        return FailingRead(resolve("attrs.dwell_ms"), self.fail)


def read_beside_clicks(aggregate: Dwell) -> tuple[SignalRegistry, MemoryStore, Any]:
    """``aggregate`` as the signal ``dwell`` beside a built-in count, one event applied, and
    u1's answers read (contained, as the API reads them)."""
    registry = SignalRegistry(
        [signals("none")[0], Signal(name="dwell", version=1, aggregate=aggregate)]
    )
    store = MemoryStore()
    Engine(registry, store).process(MicroBatch(EVENTS[:1], [Position("p", 0)]))
    read = SignalReader(registry, store).read("u1", None, ReadContext(now_ms=NOW + 10))
    return registry, store, read


@pytest.mark.parametrize("answer", ["raise", object()])  # an object: what JSON cannot carry
def test_a_read_that_fails_answers_that_signal_only(answer: Any) -> None:
    """Found by the signal-author trial: a user-defined read that raised, or answered a
    numpy scalar, was a 500 for the whole request, the built-in signals with it."""
    FailingRead.answer = answer
    _, _, read = read_beside_clicks(FailingDwell("none"))
    assert read.signals["clicks"].value == {"total": 1, "by": {"click": 1}}
    failed = read.signals["dwell"]
    assert (failed.value, failed.error) == (None, "signal_failed")
    assert b'"error":"signal_failed"' in msgspec.json.encode(read)


def test_a_read_that_fails_is_logged_naming_the_user(caplog: pytest.LogCaptureFixture) -> None:
    """Found in a signal author's trial: the worker's log said "signal badread@1 failed to
    read: ZeroDivisionError" and not whose state it failed on, to reproduce it with."""
    FailingRead.answer = "raise"
    with caplog.at_level(logging.WARNING):
        read_beside_clicks(FailingDwell("none"))
    assert "signal dwell@1 failed to read user 'u1': " in caplog.text, caplog.text


class OddRead(DwellRuntime):
    answer: Any = None

    def read(self, state: list[int] | None, context: ReadContext) -> Any:
        return self.answer


@dataclass(frozen=True)
class OddDwell(Dwell):
    def compile(self, resolve: Any, retention_ms: int) -> DwellRuntime:
        return OddRead(resolve("attrs.dwell_ms"), self.fail)


@pytest.mark.parametrize(
    "answer",
    [
        ReadOut(5, "2026-01-01"),  # the newest event's time as text
        ReadOut(5, datetime(2026, 1, 1, tzinfo=UTC)),
        ReadOut(5, True),
        5,  # the value alone, not a ReadOut
        ReadOut(5, 10**20),  # a time no calendar holds (found in review: a 500 still)
        ReadOut(5, -(10**16)),
    ],
)
def test_a_read_that_answers_no_read_out_answers_that_signal_only(answer: Any) -> None:
    """Found by the signal-author trial: a read whose ReadOut carried its newest event's time
    as text or a datetime got past the containment and made the request a 500 (and a
    traceback from `usersignals get`), the built-in signals with it."""
    OddRead.answer = answer
    registry, store, read = read_beside_clicks(OddDwell("none"))
    assert read.signals["clicks"].value == {"total": 1, "by": {"click": 1}}
    failed = read.signals["dwell"]
    assert (failed.value, failed.error, failed.newest_event_ms) == (None, "signal_failed", None)
    # The testing helpers (and `signals preview`) name the mistake, in one line.
    with pytest.raises(SignalReadError, match=r"dwell@1 failed to read user 'u1'") as caught:
        SignalReader(registry, store, contain_failures=False).read("u1", None, ReadContext())
    assert "read() must return ReadOut" in str(caught.value)
    assert isinstance(caught.value.__cause__, TypeError)


def failing_read_module(tmp_path: Path, answer: str) -> tuple[Path, Path]:
    """A module whose signal ``dwell`` reads ``answer`` (Python source; ``'raise'``: its read
    raises), and a file of one event of u1."""
    module = tmp_path / "failing_read.py"
    module.write_text(
        f"import sys\nsys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_signal_failures import FailingDwell, FailingRead\n"
        "from usersignals import Signal\n"
        f"FailingRead.answer = {answer}\n"
        "dwell = Signal(name='dwell', version=1, aggregate=FailingDwell('none'))\n"
    )
    sample = tmp_path / "events.jsonl"
    sample.write_bytes(msgspec.json.encode(EVENTS[0]) + b"\n")
    return module, sample


def test_a_read_that_raises_is_one_line_in_signals_preview(tmp_path: Path) -> None:
    """Found by the signal-author trial: `signals preview` of a module whose read raised
    printed the read's traceback (its apply's failure was one line already)."""
    module, sample = failing_read_module(tmp_path, "'raise'")
    done = subprocess.run(
        [str(Path(sys.executable).parent / "usersignals"), "signals", "preview", str(module),
         "--events", str(sample)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("error: signal dwell@1 failed to read user 'u1' as of ")
    assert "ZeroDivisionError: division by zero" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_state_its_own_decode_refuses_is_never_written() -> None:
    """Found by the review: only the one-by-one path checked that the encoded state decodes
    again. A sum taking 1.5 wrote a float its decode (list[int]) refuses, and every later
    batch of the user failed on it. Now the event that makes it so is dead-lettered."""
    events = [dwell_event("u1", 1, 5), dwell_event("u1", 2, 0)]
    odd = event("u1", "i9", "click", ts=NOW + 9, event_id="u1-9", attrs={"dwell_ms": 1.5})
    store, rejected = run("none", [events[:1], [odd], events[1:]])
    assert [msgspec.json.decode(bad.raw)["event_id"] for bad in rejected] == ["u1-9"]
    assert answers(store, "none")["dwell"] == 5


def test_the_processor_s_running_stats_keep_counts_not_the_rejected_events() -> None:
    """Found by the review: every signal_failed event stayed in the pipeline's cumulative
    report for as long as the processor ran."""

    class Sink:
        def write(self, bad: list[BadEvent]) -> None:
            pass

        def close(self) -> None:
            pass

    step = PipelineStep(Engine(SignalRegistry(signals("apply")), MemoryStore()),
                        EventDecoder(EventPolicy()), Sink())  # fmt: skip
    for block in range(5):
        failing = [dwell_event(f"u{block}", n, 99_999) for n in range(10)]
        lines = [msgspec.json.encode(one) for one in failing]
        step.apply(step.decode(lines, [Position("p", block * 10 + i) for i in range(10)]))
    assert step.stats.bad_by_reason == {"signal_failed": 50}
    assert step.stats.report.rejected == []


def test_a_read_json_cannot_carry_is_one_error_naming_it_in_signals_preview(
    tmp_path: Path,
) -> None:
    """Found in a newcomer's trial: a read answering what JSON cannot carry (an object)
    ended `signals preview` with a TypeError traceback; a read that raised was one line."""
    from usersignals.preview import preview

    module, sample = failing_read_module(tmp_path, "{'x': object()}")
    with pytest.raises(SignalReadError, match=r"dwell@1 failed to read user 'u1' as of ") as caught:
        preview(str(module), sample, {})
    assert "a value the API cannot serve" in str(caught.value)


def test_signals_preview_reads_only_the_users_it_shows(tmp_path: Path) -> None:
    """Found in a newcomer's trial: `preview --user u1 --context as_of=T` failed with a 422
    of another user (one with an event after T in a bucket the view cuts): preview read
    every user and showed one."""
    from usersignals.preview import preview

    module = tmp_path / "clicks.py"
    module.write_text(
        "from usersignals import LastN, Signal\n"
        "recent = Signal(name='recent', version=1, aggregate=LastN(5), retention='7d')\n"
        "from usersignals import Distinct\n"
        "creators = Signal(name='creators', version=1, aggregate=Distinct(of='item_id'),"
        " retention='7d')\n"
    )
    early = event("u1", "i1", "click", ts=NOW, event_id="u1-1")
    late = event("u2", "i2", "click", ts=NOW + 60_000, event_id="u2-1")
    sample = tmp_path / "events.jsonl"
    sample.write_bytes(b"".join(msgspec.json.encode(e) + b"\n" for e in (early, late)))
    as_of = {"as_of": str(NOW + 1)}  # before u2's event, in the same day bucket
    shown = preview(str(module), sample, {}, users=["u1"], context=as_of)
    assert list(shown.users) == ["u1"]
    assert shown.users["u1"]["recent"].value[0]["item_id"] == "i1"


def test_a_summary_says_which_bad_events_are_good_events_a_signal_failed_on() -> None:
    """Found in a newcomer's trial: `replay` printed "9 good events ... 2 bad" for nine
    events of which two failed one signal's own code: they were counted both ways with
    nothing to say so."""
    from usersignals.processing.pipeline import PipelineStats

    stats = PipelineStats()
    stats.count_bad([BadEvent("missing_field", "no ts", b"{}")])
    assert stats.bad_said() == "1 bad"
    stats.count_bad([BadEvent("signal_failed", "dwell@1: ZeroDivisionError", b"{}")] * 2)
    assert stats.bad_said("dead letters") == (
        "3 dead letters (2 of them good events a signal's own code failed on: applied to the "
        "other signals)"
    )
