"""The deployment's version table: which version of each signal is served by default, which
old versions are retired (and when their state goes), and what ``signals apply`` recorded.

It is one small record under a meta key of the store's main table (not a table of its own: a
RocksDB secondary does not see a column family created after it opened), so that a cut-over
is one atomic write that every serving worker sees on its next refresh (RocksDB secondaries
and Redis alike), and the processor on its next micro-batch. The module declares the default
(its version not marked ``shadow=True``); the table overrides it.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TypeVar

import msgspec

from usersignals.durations import iso_utc
from usersignals.errors import ConfigurationError, SignalsMismatchError
from usersignals.signals.definition import Signal
from usersignals.signals.identity import changed_definitions, not_computed_by_writer
from usersignals.signals.registry import SignalRegistry
from usersignals.state.keys import BACKFILL_OFFSETS_KEY, SIGNALS_KEY, meta_key
from usersignals.state.store import StateStore

T = TypeVar("T")

VERSIONS_KEY = meta_key("signal_versions")
#: ``name@version`` → when (ms) ``signals apply`` recorded it removed from the module. A key
#: of its own, not a field of the table: readers of the previous release refuse a table
#: with fields they do not know, and a removal must not stop them.
REMOVED_KEY = meta_key("removed_versions")
#: ``name@version`` → the compiled definition a backfill computed its states under: the
#: README's order is plan, backfill, then apply, so a backfilled version's state is a history
#: before ``signals apply`` records it. A key of its own, for the same reason as removals.
BACKFILLED_KEY = meta_key("backfilled_versions")


class VersionTable(msgspec.Struct, omit_defaults=True, forbid_unknown_fields=True):
    #: name → the version served by default (set by a cut-over).
    served: dict[str, int] = {}
    #: ``name@version`` → the time (ms) after which its stored state is dropped.
    retired: dict[str, int] = {}
    #: ``name@version`` → the compiled definition ``signals apply`` recorded for it.
    applied: dict[str, str] = {}

    def expired(self, now_ms: int) -> set[str]:
        """The retired versions whose grace period is over."""
        return {key for key, drop_at in self.retired.items() if drop_at <= now_ms}


_decoder = msgspec.json.Decoder(VersionTable)
_removed_decoder = msgspec.json.Decoder(dict[str, int])
_backfilled_decoder = msgspec.json.Decoder(dict[str, str])


def load_versions(store: StateStore) -> VersionTable:
    raw = store.get_many([VERSIONS_KEY])[0]
    if raw is None:
        return VersionTable()
    try:
        return _decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise ConfigurationError(f"the store's version table cannot be read: {exc}") from exc


def save_versions(
    store: StateStore, table: VersionTable, removed: dict[str, int] | None = None
) -> None:
    """The table, and before it the removals when given.

    Two writes, removals first: the two keys are in two slots of a Redis Cluster, where one
    write of both could reach one slot's primary and not the other's. With the table written
    and not the removals, ``apply`` run again saw no removal (the table no longer names the
    version), and the removal was never recorded; the other way round, it finds the removed
    version in the table still and records it again."""
    if removed is not None:
        store.write({REMOVED_KEY: msgspec.json.encode(removed)})
    store.write({VERSIONS_KEY: msgspec.json.encode(table)})


def definition_text(signal: Signal) -> str:
    return json.dumps(signal.definition_json(), sort_keys=True, separators=(",", ":"))


def same_meaning(recorded: str, signal: Signal) -> bool:
    """Whether ``recorded`` (a :func:`definition_text`) defines what ``signal`` computes: an
    edited description is no change."""
    try:
        applied = json.loads(recorded)
    except ValueError:
        return False
    if isinstance(applied, dict):
        applied.pop("description", None)
    return bool(applied == json.loads(json.dumps(signal.meaning_json())))  # as JSON reads


def changed_since_computed(
    recorded: bytes | None, table: VersionTable, registry: SignalRegistry
) -> list[str]:
    """The versions ``registry`` computes whose definition differs from the one the store's
    states of them were computed with, as ``apply`` recorded it (``table``) or the processor
    writing the store did (``recorded``, its record of its signals): computed on, or merged
    in, their states would mix two meanings under one name@version."""
    changed = set(changed_definitions(recorded, registry)) if recorded else set()
    applied = table.applied
    for signal in registry.computed:
        if signal.key in applied and not same_meaning(applied[signal.key], signal):
            changed.add(signal.key)
    return sorted(changed)


def readded(
    store: StateStore, keys: Iterable[str], table: VersionTable | None = None
) -> dict[str, str]:
    """Of ``keys``, the versions ``signals apply`` recorded removed, each with why it must
    not be computed or served again (:func:`readded_detail`)."""
    removed = load_removed(store)
    if not removed:
        return {}
    applied = (table if table is not None else load_versions(store)).applied
    return {
        key: readded_detail(removed[key]) for key in keys if key in removed and key not in applied
    }


def refuse_served_undeclared(served: Mapping[str, int], registry: SignalRegistry) -> None:
    """The versions the store serves by default (``served``, a cut-over's choice) that
    ``registry`` does not declare (:meth:`SignalRegistry.undeclared`: a module rolled back
    past a cut-over), refused: its readers, or a training set, would serve another version
    under the signal's name (perhaps a retired one)."""
    problem = undeclared_problem(list(registry.undeclared(served).values()))
    if problem is not None:
        raise SignalsMismatchError(problem)


def undeclared_problem(undeclared: Sequence[str]) -> str | None:
    """What is wrong with a module that does not declare the ``undeclared`` versions the
    store serves by default; ``None`` when there are none."""
    if not undeclared:
        return None
    return (
        f"the store serves {', '.join(undeclared)} by default (a cut-over), which this "
        "module does not declare: deploy the module that declares it"
    )


def readded_detail(removed_ms: int) -> str:
    """Why a removed version declared again is refused: the engine dropped its state user by
    user as their events arrived, and the rest missed every event since."""
    when = iso_utc(removed_ms, "seconds")
    return (
        f"removed at {when}: its state left in the store is partial; declare a new version "
        "and backfill it"
    )


def load_removed(store: StateStore) -> dict[str, int]:
    """The versions ``signals apply`` recorded removed (see :data:`REMOVED_KEY`)."""
    return _load_meta(store, REMOVED_KEY, _removed_decoder, "removed versions")


def load_backfilled(store: StateStore) -> dict[str, str]:
    """The versions a backfill computed, each with its definition (:data:`BACKFILLED_KEY`)."""
    return _load_meta(store, BACKFILLED_KEY, _backfilled_decoder, "backfilled versions")


def _load_meta(
    store: StateStore, key: bytes, decoder: msgspec.json.Decoder[dict[str, T]], what: str
) -> dict[str, T]:
    """A meta record of the version lifecycle (empty when absent), or one line saying it
    cannot be read."""
    raw = store.get_many([key])[0]
    if raw is None:
        return {}
    try:
        return decoder.decode(raw)
    except msgspec.DecodeError as exc:
        raise ConfigurationError(f"the store's {what} cannot be read: {exc}") from exc


def record_backfilled(store: StateStore, definitions: dict[str, str]) -> None:
    """Add ``definitions`` (``name@version`` → compiled definition) to the versions a
    backfill computed: a later backfill under another definition replaces the entry."""
    with store.metadata_lock():  # two backfills ending together each keep their entries
        recorded = {**load_backfilled(store), **definitions}
        store.write({BACKFILLED_KEY: msgspec.json.encode(recorded)})


def cut_over(
    store: StateStore,
    registry: SignalRegistry,
    target: Signal,
    grace_ms: int,
    now_ms: int | None = None,
) -> tuple[Signal | None, VersionTable]:
    """Serve ``target`` by default from now on, in one write; the version served until now is
    retired: computed for ``grace_ms`` more (a cut-over back is still instant), then dropped.

    Returns the version served before, and the new table. Under the store's metadata
    lock: two cut-overs at once (of two signals) each keep the other's change.
    """
    if grace_ms < 0:
        raise ConfigurationError("the grace period must not be negative")
    now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    with store.metadata_lock():
        previous, table = _cut_over_locked(store, registry, target, grace_ms, now)
    registry.serve(table.served)
    return previous, table


def _cut_over_locked(
    store: StateStore, registry: SignalRegistry, target: Signal, grace_ms: int, now: int
) -> tuple[Signal | None, VersionTable]:
    """:func:`cut_over`'s read of the table, its checks and its write."""
    table = load_versions(store)
    registry.serve(table.served)
    previous = registry.get(target.name) if target.name in registry.names else None
    refused = readded(store, [target.key], table)
    if refused:
        raise ConfigurationError(f"cannot cut over to {target.key}: {refused[target.key]}")
    uncomputed = not_computed_by_writer(store.get_many([SIGNALS_KEY])[0], target.key)
    if uncomputed is not None:
        # Every reader serving it would find the writer not computing what it serves, and
        # go not-ready: every read of every signal answered 503 until a restart.
        raise ConfigurationError(
            f"cannot cut over to {target.key}: {uncomputed}, so every reader serving it "
            "would stop answering; run the processor with a module that declares it (as a "
            "shadow version it is computed beside the one served), then cut over"
        )
    if target.key in table.expired(now):
        dropped = iso_utc(table.retired[target.key], "seconds")
        raise ConfigurationError(
            f"cannot cut over to {target.key}: its grace period was over at {dropped}, and "
            "since then its state is no longer computed and is dropped user by user: "
            "declare a new version, backfill it, then cut over to that"
        )
    table.served[target.name] = target.version
    table.retired.pop(target.key, None)  # cutting back to a retired version keeps it
    if previous is not None and previous is not target:
        table.retired[previous.key] = now + grace_ms
    save_versions(store, table)
    return previous, table


def read_backfill_offsets(store: StateStore) -> dict[str, int]:
    """A backfill's hand-over offsets (``topic/partition`` → the next offset; empty when no
    backfill with Kafka coordinates wrote any)."""
    raw = store.get_many([BACKFILL_OFFSETS_KEY])[0]
    return msgspec.json.decode(raw, type=dict[str, int]) if raw else {}
