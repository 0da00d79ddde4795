"""A Sum never serves a saturated total, nor one wrapped by a single huge value.

A value counts when it is a finite number whose scaled magnitude (``|value| * 10**decimals``)
is at most 2**53 (:data:`~usersignals.aggregations.windowed.MAX_SUM_SCALED`); a larger one
adds nothing, as a value that is not a number. Before, the core saturated a value (1e300
became 2**63 - 1) and wrapped a sum past 2**63 into a negative total. Sums add modulo 2**64,
as the stored integers do, so a total is exact whenever it fits in them, whatever the
order of its values (the state stays byte-identical whatever the batches). Checked on the
core's path (``run_signals``) and on the Python reference. A sum of many values past
2**63 wraps (documented): the same in the core and the reference, whatever the batches.
An answer with decimals is the integer total divided by the scale, as a float: exact while
the scaled total is within 2**53.
"""

from __future__ import annotations

from typing import Any

import pytest

from usersignals import ReadContext, Signal, Sum
from usersignals.aggregations.windowed import MAX_SUM_SCALED
from usersignals.testing import event, run_signals

NOW = 1_767_225_600_000
WHOLE = Signal(name="dwell", version=1, aggregate=Sum(of="attrs.v", decimals=0), retention="7d")
MILLIS = Signal(name="spend", version=1, aggregate=Sum(of="attrs.v"), retention="7d")  # 3 places

CASES = [
    # (signal, values, expected total)
    (WHOLE, [9_000_000_000_000_000_000, 9_000_000_000_000_000_000], 0),  # each over 2**53
    (WHOLE, [1e300], 0),
    (WHOLE, [2**70], 0),
    (MILLIS, [5e15, 5e15], 0),  # 5e18 scaled: over 2**53
    (WHOLE, [MAX_SUM_SCALED, 1], MAX_SUM_SCALED + 1),  # at the bound: counted, exactly
    (WHOLE, [-MAX_SUM_SCALED, 7], -MAX_SUM_SCALED + 7),
    (WHOLE, [MAX_SUM_SCALED + 1, 7], 7),
    (MILLIS, [1.5, 2**60, 2.25], 3.75),
]
IDS = [f"{signal.name}-{n}" for n, (signal, _, _) in enumerate(CASES)]


def events_of(values: list[Any]) -> list[Any]:
    return [
        event("u1", "i1", "click", ts=NOW + n, attrs={"v": value}) for n, value in enumerate(values)
    ]


@pytest.mark.parametrize(("signal", "values", "expected"), CASES, ids=IDS)
def test_the_core_counts_only_values_within_the_bound(
    signal: Signal, values: list[Any], expected: float
) -> None:
    answer = run_signals([signal], events_of(values))["u1"][signal.name]
    assert answer["total"] == expected


@pytest.mark.parametrize(("signal", "values", "expected"), CASES, ids=IDS)
def test_the_reference_counts_only_values_within_the_bound(
    signal: Signal, values: list[Any], expected: float
) -> None:
    runtime = signal.compiled.runtime
    rows = [(one, ()) for one in events_of(values)]
    state = runtime.decode(runtime.encode(runtime.apply(None, rows).state))
    assert runtime.read(state, ReadContext(now_ms=NOW + 10)).value["total"] == expected


def test_sums_past_the_stored_integers_wrap_the_same_in_any_order() -> None:
    """1,025 values at the bound pass 2**63: the stored sum wraps (documented), to the same
    total whichever way the batches cut them, in the core as in the reference."""
    values = [MAX_SUM_SCALED] * 1_025 + [-MAX_SUM_SCALED] * 3
    wrapped = (1_022 * MAX_SUM_SCALED + 2**63) % 2**64 - 2**63
    one = run_signals([WHOLE], events_of(values))["u1"]["dwell"]
    cut = run_signals([WHOLE], events_of(values), batch_size=7)["u1"]["dwell"]
    assert one == cut == {"total": wrapped, "by": {"click": wrapped}}
    assert reference_total(WHOLE, values) == wrapped


def test_a_scaled_total_past_2_53_reads_the_same_in_the_core_and_the_reference() -> None:
    """With decimals, the answer is the integer total divided by the scale, as a float:
    past 2**53 the reference divided exactly and the core rounded twice (to float, then
    the quotient): 26853417591063.25 against .246."""
    values = [8_965_159_297_272.275, 8_978_872_335_113.55, 8_909_385_958_677.424]  # 2.7e16
    core = run_signals([MILLIS], events_of(values))["u1"]["spend"]["total"]
    assert core == reference_total(MILLIS, values)


def reference_total(signal: Signal, values: list[Any]) -> Any:
    runtime = signal.compiled.runtime
    rows = [(one, ()) for one in events_of(values)]
    state = runtime.decode(runtime.encode(runtime.apply(None, rows).state))
    return runtime.read(state, ReadContext(now_ms=NOW + len(values))).value["total"]
