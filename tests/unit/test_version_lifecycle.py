"""A version's key, once its state has been dropped, is never reused: what is left of its
state is partial (the engine drops it user by user, as their events arrive), and serving it
or computing on top of it again would answer from some users' history and not others'."""

from __future__ import annotations

import pytest

from usersignals import Count, Signal, SignalRegistry, days
from usersignals.errors import ConfigurationError
from usersignals.offline.plan import apply_plan, make_plan
from usersignals.state.memory import MemoryStore
from usersignals.state.versions import cut_over, load_removed, load_versions

HOUR_MS = 3_600_000


def clicks(version: int, by: str = "action", shadow: bool = False) -> Signal:
    return Signal(
        name="clicks", version=version, aggregate=Count(by=by), retention=days(7), shadow=shadow
    )


def views() -> Signal:
    return Signal(name="views", version=1, aggregate=Count(), retention=days(1))


def test_re_declaring_a_removed_version_is_refused_not_taken_for_warm_state() -> None:
    """Found in the offline trials and left open until now: ``plan`` called a re-added
    version "state already in the store" (no backfill needed) while that state missed every
    event since its removal, and some users' had been dropped."""
    store = MemoryStore()
    apply_plan(store, SignalRegistry([clicks(1), views()]))
    removal = apply_plan(store, SignalRegistry([views()]))
    assert [(c.key, c.kind) for c in removal.changes] == [
        ("views@1", "unchanged"),
        ("clicks@1", "removed"),
    ]
    back = SignalRegistry([clicks(1), views()])
    planned = make_plan(back, load_versions(store), {"clicks@1", "views@1"}, load_removed(store))
    readded = next(change for change in planned.changes if change.key == "clicks@1")
    assert readded.kind == "readded"
    assert readded.needs_backfill
    assert "new version" in readded.detail
    assert planned.refused == [readded]
    with pytest.raises(ConfigurationError, match=r"clicks@1: removed at .*new version"):
        apply_plan(store, back)
    # A new version of it is a new signal: applied, and it needs its backfill.
    bumped = apply_plan(store, SignalRegistry([clicks(2), views()]))
    first = bumped.changes[0]
    assert (first.key, first.kind, first.needs_backfill) == ("clicks@2", "new", True)
    # The removal stays on record: a later plan still refuses version 1.
    assert (
        make_plan(back, load_versions(store), set(), load_removed(store)).refused[0].key
        == "clicks@1"
    )


def test_cutting_back_to_a_version_whose_grace_period_is_over_is_refused() -> None:
    """Within the grace period a cut-over back is instant; after it, the engine has stopped
    computing the old version and dropped its state user by user: serving it again would
    answer stale or empty values."""
    store = MemoryStore()
    registry = SignalRegistry([clicks(1), clicks(2, by="surface", shadow=True)])
    cut_over(store, registry, registry.get("clicks@2"), grace_ms=HOUR_MS, now_ms=1_000)
    # Still in the grace period: back at once.
    cut_over(store, registry, registry.get("clicks@1"), grace_ms=HOUR_MS, now_ms=2_000)
    cut_over(store, registry, registry.get("clicks@2"), grace_ms=HOUR_MS, now_ms=3_000)
    before = load_versions(store)
    with pytest.raises(ConfigurationError, match=r"clicks@1.*grace period.*over"):
        cut_over(store, registry, registry.get("clicks@1"), grace_ms=HOUR_MS, now_ms=10 * HOUR_MS)
    assert load_versions(store) == before  # nothing written
