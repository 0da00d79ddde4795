"""The batch route's plan: each requested signal with its context, shared or its own.

``contexts`` is keyed by the signals the request names. A version-pinning client names
``interests@1`` in ``signals`` and keys its context the same way; that was refused
("names signals not requested") because only the answer's label (``interests`` while v1 is
served) was accepted, so which key worked changed at a cut-over.
"""

from __future__ import annotations

import pytest

from usersignals import ContextError, Count, DecayedScores, Signal, SignalRegistry
from usersignals.errors import SignalNotFoundError
from usersignals.serving.read_routes import batch_plan
from usersignals.serving.schemas import BatchRequest

COUNTS = Signal(name="counts", version=1, aggregate=Count(by="action"))
INTERESTS_V1 = Signal(name="interests", version=1, aggregate=DecayedScores(key="surface"))
INTERESTS_V2 = Signal(
    name="interests", version=2, aggregate=DecayedScores(key="action"), shadow=True
)


def registry() -> SignalRegistry:
    return SignalRegistry([COUNTS, INTERESTS_V1, INTERESTS_V2])


def windows(body: BatchRequest) -> dict[str, int | None]:
    return {signal.key: context.window_ms for signal, context in batch_plan(registry(), body)[0]}


@pytest.mark.parametrize("key", ["interests", "interests@1"])
def test_a_served_version_s_context_is_keyed_by_its_name_or_its_name_at_version(key: str) -> None:
    body = BatchRequest(
        users=["u1"], signals=["interests@1", "counts"], contexts={key: {"window": "1h"}}
    )
    assert windows(body) == {"interests@1": 3_600_000, "counts@1": None}


def test_a_shadow_version_s_context_is_keyed_by_its_name_at_version() -> None:
    contexts = {"interests@2": {"window": "1h"}}
    body = BatchRequest(users=["u1"], signals=["interests@2", "interests"], contexts=contexts)
    assert windows(body) == {"interests@2": 3_600_000, "interests@1": None}


def test_a_signal_named_twice_gets_each_names_own_context_only() -> None:
    # Named by its name and its name@version, one signal is answered under both keys; the
    # context keyed by one of them was applied to both answers.
    contexts = {"interests@1": {"window": "1h"}}
    body = BatchRequest(users=["u1"], signals=["interests@1", "interests"], contexts=contexts)
    plan, labels = batch_plan(registry(), body)
    assert labels == ["interests@1", "interests"]
    assert [context.window_ms for _, context in plan] == [3_600_000, None]
    body = BatchRequest(
        users=["u1"],
        signals=["interests", "interests@1"],
        contexts={"interests": {"window": "1h"}, "interests@1": {"window": "2h"}},
    )
    assert [c.window_ms for _, c in batch_plan(registry(), body)[0]] == [3_600_000, 7_200_000]


def test_one_signal_s_context_given_under_both_keys_is_refused() -> None:
    body = BatchRequest(
        users=["u1"],
        signals=["interests"],
        contexts={"interests": {"window": "1h"}, "interests@1": {"window": "2h"}},
    )
    with pytest.raises(ContextError) as info:
        batch_plan(registry(), body)
    assert info.value.parameter == "contexts"
    assert "interests" in str(info.value)


def test_a_context_for_a_signal_not_requested_is_refused() -> None:
    body = BatchRequest(users=["u1"], signals=["counts"], contexts={"interests": {"limit": "1"}})
    with pytest.raises(ContextError) as info:
        batch_plan(registry(), body)
    assert "not requested" in str(info.value)


def test_the_get_route_lists_names_among_its_known_parameters() -> None:
    from usersignals.serving.queries import resolve

    with pytest.raises(ContextError) as info:
        resolve(registry(), b"name=counts")
    assert info.value.parameter == "name"
    assert "known: names, window" in str(info.value)


def test_a_context_for_a_signal_nobody_has_is_an_unknown_signal() -> None:
    """Found in a ranking engineer's trial: with every signal requested, a context keyed by
    a misspelt name was refused as 'names signals not requested', which every signal was;
    it is the 404 an unknown name gets in `names`, listing the known ones."""
    body = BatchRequest(users=["u1"], signals=None, contexts={"nope": {"window": "1h"}})
    with pytest.raises(SignalNotFoundError) as caught:
        batch_plan(registry(), body)
    assert "nope" in str(caught.value)
    # A signal the registry has, not asked for: still the 400 naming it.
    body = BatchRequest(users=["u1"], signals=["counts"], contexts={"interests": {"window": "1h"}})
    with pytest.raises(ContextError, match="not requested"):
        batch_plan(registry(), body)
