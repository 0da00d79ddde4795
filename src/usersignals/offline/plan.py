"""``usersignals signals plan`` / ``apply``: what a change of the signals module does to the
stored state, reviewed before it runs, and recorded once accepted.

The store's version table (:mod:`usersignals.state.versions`) records, per ``name@version``,
the compiled definition that was applied. Against it, each version the module declares is:

- ``new``: never applied. Its state starts empty, so it needs a backfill to start warm —
  unless a sample of stored records already holds it (a deployment from before the table);
- ``changed``: applied with another definition under the same key. The stored state would mix
  two meanings: ``apply`` refuses it, bump the version instead;
- ``readded``: applied once, then recorded removed by an ``apply``. What is left of its state
  is partial (dropped user by user as events arrived, and missing every event since), yet it
  would look warm: ``apply`` refuses it too, declare a new version and backfill it;
- ``unchanged``;

and each recorded version the module no longer declares is ``removed``: the engine drops its
state as users' events arrive. The removal is recorded for good
(:data:`~usersignals.state.versions.REMOVED_KEY`). A version the store serves by default (a
cut-over's) that the module, declaring its signal, does not declare is ``undeclared``: a
module rolled back past a cut-over, which ``apply`` refuses (its readers would serve another
version in its place, perhaps a retired one).
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any, Literal

from usersignals.durations import iso_utc
from usersignals.errors import ConfigurationError, StoreError
from usersignals.signals.definition import Signal
from usersignals.signals.registry import SignalRegistry
from usersignals.state.codec import decode_record
from usersignals.state.keys import USER_PREFIX
from usersignals.state.store import StateStore
from usersignals.state.versions import (
    VersionTable,
    definition_text,
    load_backfilled,
    load_removed,
    load_versions,
    readded_detail,
    record_backfilled,
    same_meaning,
    save_versions,
)

Kind = Literal["new", "changed", "readded", "unchanged", "removed", "undeclared"]
#: The kinds ``apply`` refuses: the stored state under the key would not mean what it says.
REFUSED: frozenset[Kind] = frozenset({"changed", "readded", "undeclared"})
#: How many stored user records ``plan`` looks at to see which states exist already.
SAMPLE_RECORDS = 1_000


@dataclass(frozen=True)
class Change:
    key: str
    kind: Kind
    needs_backfill: bool
    #: How the version is served: "default", "shadow" (only by name@version), "retiring" (a
    #: cut-over's old version in its grace period: as a shadow), "retired" (its grace period
    #: over: not at all) or "" (removed).
    serving: str
    detail: str = ""


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)

    @property
    def refused(self) -> list[Change]:
        return [change for change in self.changes if change.kind in REFUSED]

    def to_json(self) -> dict[str, Any]:
        return {"changes": [asdict(change) for change in self.changes]}


def stored_state_keys(store: StateStore, sample: int = SAMPLE_RECORDS) -> set[str]:
    """The state keys held by the first ``sample`` user records of the store."""
    keys: set[str] = set()
    for key, raw in islice(store.scan(USER_PREFIX), sample):
        keys.update(decode_record(key, raw).states)
    return keys


def make_plan(
    registry: SignalRegistry,
    table: VersionTable,
    stored: set[str],
    removed: Mapping[str, int] | None = None,
    backfilled: Mapping[str, str] | None = None,
    now_ms: int | None = None,
) -> Plan:
    """``removed``: the versions an earlier ``apply`` recorded removed, and when;
    ``backfilled``: the versions a backfill computed, and under which definition; ``now_ms``:
    the time a retired version's grace period is compared with (the wall clock)."""
    registry.serve(table.served)
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    plan = Plan()
    for signal in registry.computed:
        serving = "default" if registry.label(signal) == signal.name else "shadow"
        recorded = table.applied.get(signal.key)
        if recorded is not None and not same_meaning(recorded, signal):
            detail = "definition changed under the same version: bump the version"
            plan.changes.append(Change(signal.key, "changed", True, serving, detail))
        elif signal.key in table.retired:
            plan.changes.append(_retired(signal, table.retired[signal.key], now))
        elif recorded is None and removed and signal.key in removed:
            detail = readded_detail(removed[signal.key])
            plan.changes.append(Change(signal.key, "readded", True, serving, detail))
        elif recorded is None:
            warm = backfilled is not None and _backfilled_as(backfilled, signal)
            plan.changes.append(_new(signal.key, serving, signal.key in stored, table, warm))
        else:
            plan.changes.append(Change(signal.key, "unchanged", False, serving))
    declared = {signal.key for signal in registry.computed}
    undeclared = list(registry.undeclared(table.served).values())
    for key in sorted(table.applied.keys() - declared - set(undeclared)):
        detail = "no longer declared: its state is dropped as users' events arrive"
        plan.changes.append(Change(key, "removed", False, "", detail))
    for key in undeclared:
        detail = "served by default (a cut-over), but not declared: deploy the module declaring it"
        plan.changes.append(Change(key, "undeclared", False, "default", detail))
    return plan


def _retired(signal: Signal, drop_at_ms: int, now_ms: int) -> Change:
    """A version a cut-over retired, still declared: computed (and served when named)
    until its grace period ends, then neither, its state dropped as users' events arrive."""
    when = iso_utc(drop_at_ms, "seconds")
    if drop_at_ms > now_ms:
        detail = (
            f"replaced by a cut-over: computed (and answered when named) until {when}, then "
            f"retired, its state dropped; until then `signals cutover {signal.key}` serves "
            "it again"
        )
        return Change(signal.key, "unchanged", False, "retiring", detail)
    detail = (
        f"retired by a cut-over: no longer computed since {when}, its state dropped and "
        "its reads answered 410; remove it from the module"
    )
    return Change(signal.key, "unchanged", False, "retired", detail)


def _backfilled_as(backfilled: Mapping[str, str], signal: Signal) -> bool:
    """Whether a backfill computed ``signal`` under the definition it has now."""
    recorded = backfilled.get(signal.key)
    return recorded is not None and same_meaning(recorded, signal)


def _new(
    key: str, serving: str, in_store: bool, table: VersionTable, backfilled: bool = False
) -> Change:
    """A version ``apply`` never recorded. Its state in the store is warm for a deployment
    from before the version table (nothing applied yet), or when a backfill computed it
    under its definition (the README's order: backfill, then apply); otherwise, once
    ``apply`` is in use, such state started when a deployment skipped ``apply``, or outlived
    a removal by a release that did not record removals: not a history either way."""
    # Before the sample's answer: a rare signal's backfilled state may not be in the
    # records the plan samples (the first 1,000).
    if backfilled:
        return Change(key, "new", False, serving, "backfilled: its history is in the store")
    if not in_store:
        return Change(key, "new", True, serving, "starts empty: backfill it")
    if not table.applied:
        return Change(key, "new", False, serving, "state already in the store")
    detail = "state in the store, but never applied: partial history; backfill it"
    return Change(key, "new", True, serving, detail)


def stored_plan(
    store: StateStore,
    registry: SignalRegistry,
    table: VersionTable | None = None,
    removed: Mapping[str, int] | None = None,
    stored: set[str] | None = None,
) -> Plan:
    """:func:`make_plan` against what ``store`` holds (its version table, removals, backfills
    and a sample of its records: ``stored``, when read already)."""
    return make_plan(
        registry,
        load_versions(store) if table is None else table,
        stored_state_keys(store) if stored is None else stored,
        load_removed(store) if removed is None else removed,
        load_backfilled(store),
    )


def record_backfill(store: StateStore, registry: SignalRegistry) -> None:
    """Record that a backfill computed ``registry``'s versions, under their definitions now
    (:data:`~usersignals.state.versions.BACKFILLED_KEY`). A failure here comes after the
    states were written: it says so."""
    try:
        record_backfilled(
            store, {signal.key: definition_text(signal) for signal in registry.computed}
        )
    except StoreError as exc:
        raise StoreError(
            exc.backend,
            "record",
            f"the backfill's states are in the store, but its record of them is not ({exc}):"
            " run the backfill again, or `signals plan` calls them partial history",
        ) from exc


def apply_plan(store: StateStore, registry: SignalRegistry) -> Plan:
    """Record the module's definitions in the version table, and its removals
    (:func:`~usersignals.state.versions.save_versions`); refuses a plan that changes a
    definition under an existing version or declares a removed version again (the kinds in
    :data:`REFUSED`). Under the store's metadata lock: a cut-over at the same time keeps its
    change, and this its own."""
    # The records' sample first, outside the lock: it only says what needs a backfill, and
    # a store's scan takes longer the more users it holds (Redis scans every key).
    stored = stored_state_keys(store)
    with store.metadata_lock():
        table = load_versions(store)
        removed = load_removed(store)
        plan = stored_plan(store, registry, table, removed, stored)
        if plan.refused:
            reasons = "; ".join(f"{change.key}: {change.detail}" for change in plan.refused)
            raise ConfigurationError(
                f"signals apply refused, stored state would mislead: {reasons}"
            )
        now = time.time_ns() // 1_000_000
        removed.update({c.key: now for c in plan.changes if c.kind == "removed"})
        table.applied = {signal.key: definition_text(signal) for signal in registry.computed}
        save_versions(store, table, removed)
    return plan
