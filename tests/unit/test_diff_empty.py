"""What ``signals diff`` counts as an empty answer: each aggregation's answer for a user with
nothing in view, read from the real reader, and nothing else."""

from __future__ import annotations

import pytest

from usersignals import SignalRegistry
from usersignals.aggregations.context import ReadContext
from usersignals.offline.diff import is_empty
from usersignals.serving.reader import SignalReader
from usersignals.state.memory import MemoryStore


def test_every_reference_signal_reads_empty_for_a_user_without_events() -> None:
    registry = SignalRegistry.from_module("usersignals.examples.reference")
    answer = SignalReader(registry, MemoryStore()).read("nobody", None, ReadContext.parse({}))
    assert len(answer.signals) == 5
    for name, result in answer.signals.items():
        assert is_empty(result.value), (name, result.value)


@pytest.mark.parametrize(
    "value",
    [1, 0.5, True, False, "x", [{"key": "c1", "score": 0.0}], {"total": 3, "by": {}},
     {"estimate": 2}, {"vector": [0.0, 0.0], "weight": 1.0}],
)  # fmt: skip
def test_an_answer_with_anything_in_it_is_not_empty(value: object) -> None:
    assert not is_empty(value)


def test_two_different_signals_are_not_diffed() -> None:
    """Found in a newcomer's trial: ``signals diff category_interest@1 action_counts@1`` ran
    and reported every user changed. It compares two versions of one signal."""
    from usersignals.errors import ConfigurationError
    from usersignals.offline.diff import diff_signals

    registry = SignalRegistry.from_module("usersignals.examples.reference")
    reader = SignalReader(registry, MemoryStore())
    with pytest.raises(ConfigurationError, match="two versions of one signal"):
        diff_signals(
            reader,
            registry.get("category_interest"),
            registry.get("action_counts"),
            10,
            ReadContext.parse({}),
        )


def test_a_diff_says_which_context_parameters_each_version_ignores() -> None:
    """Found in a newcomer's trial: the README's own example diffs a DecayedScores signal
    with ``--context window=7d``, which it ignores; the diff said nothing (``get`` lists
    it under ``ignored``)."""
    from usersignals.offline.diff import diff_signals

    registry = SignalRegistry.from_module("usersignals.examples.reference")
    reader = SignalReader(registry, MemoryStore())
    interests = registry.get("category_interest")
    report = diff_signals(
        reader, interests, interests, 10, ReadContext.parse({"window": "7d", "limit": "5"})
    )
    assert report.ignored == {"category_interest@1": ["window"]}
    assert report.to_json()["ignored"] == {"category_interest@1": ["window"]}
