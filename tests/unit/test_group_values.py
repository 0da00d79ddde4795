"""What a group, a Distinct value and a DecayedScores key are made of, as the README's
"Aggregations, their state and their error" says: the field's value as text, a missing or
null value "None"; a DecayedScores key keeps its JSON type, and a missing one scores
nothing."""

from __future__ import annotations

from usersignals import Count, DecayedScores, Distinct, FirstSeen, LastSeen, Signal
from usersignals.testing import event, run_signals

NOW = 1_767_225_600_000
OS = [{"os": "ios"}, None, {"os": None}, {"os": "None"}, {"os": 5}, {"os": "5"}]
EVENTS = [event("u1", "i1", "click", NOW + 1000 * n, attrs=attrs) for n, attrs in enumerate(OS)]


def signal(name: str, aggregate: object) -> Signal:
    return Signal(name=name, version=1, aggregate=aggregate, retention="28d")  # type: ignore[arg-type]


def test_a_group_is_the_fields_text_and_a_missing_value_is_none() -> None:
    signals = [
        signal("count", Count(by="attrs.os")),
        signal("first", FirstSeen(by="attrs.os")),
        signal("last", LastSeen(by="attrs.os")),
        signal("distinct", Distinct(of="attrs.os")),
    ]
    answers = run_signals(signals, EVENTS)["u1"]
    assert answers["count"] == {"total": 6, "by": {"ios": 1, "None": 3, "5": 2}}
    assert answers["first"] == {"ios": NOW, "None": NOW + 1000, "5": NOW + 4000}
    assert answers["last"] == {"ios": NOW, "None": NOW + 3000, "5": NOW + 5000}
    assert answers["distinct"] == {"estimate": 3}


def test_a_decayed_key_keeps_its_type_and_a_missing_one_scores_nothing() -> None:
    scores = DecayedScores(key="attrs.os", half_life="7d", weights={"click": 1.0})
    answer = run_signals([signal("scores", scores)], EVENTS)["u1"]["scores"]
    keys = sorted(repr(entry["key"]) for entry in answer)
    assert keys == ["'5'", "'None'", "'ios'", "5"]
    assert all(abs(entry["score"] - 1.0) < 1e-5 for entry in answer)  # one event each
