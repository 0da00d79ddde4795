"""Admin commands run at the same time against a shared store (Redis, Redis Cluster): each
one's change to the version lifecycle's records is kept, none overwrites another's.

Two operators cutting over two signals at once, or two backfills finishing together, each
read the record, changed it and wrote it back: the later write put back what the earlier
one had replaced, and a cut-over reported done was undone."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from lock_holder import metadata_lock_held
from usersignals import SignalRegistry
from usersignals.errors import StoreError
from usersignals.offline.plan import apply_plan
from usersignals.state import store as state_store
from usersignals.state.redis import RedisClusterStore, RedisStore
from usersignals.state.store import StateStore
from usersignals.state.versions import cut_over, load_backfilled, load_versions, record_backfilled

SIGNALS = 6
ROUNDS = 2
HOUR_MS = 3_600_000

MODULE = """
from usersignals import Count, Signal

SIGNALS = [
    Signal(name=f"s{i}", version=version, shadow=version == 2, aggregate=Count(by="surface"))
    for i in range({count})
    for version in (1, 2)
]
"""


@pytest.fixture(params=["redis", "redis-cluster"])
def open_store(request: pytest.FixtureRequest) -> Callable[[], StateStore]:
    """Opens a connection of its own to one shared store (a fresh namespace per test)."""
    namespace = f"c{uuid.uuid4().hex[:12]}"
    if request.param == "redis":
        url = request.getfixturevalue("redis_url")
        return lambda: RedisStore(url, namespace=namespace)
    url = request.getfixturevalue("redis_cluster_url")
    return lambda: RedisClusterStore(url, namespace=namespace)


def all_at_once(tasks: list[Callable[[], None]]) -> None:
    """Run ``tasks`` on threads of their own, released together; raise the first failure."""
    start = threading.Barrier(len(tasks))
    failures: list[BaseException] = []

    def run(task: Callable[[], None]) -> None:
        start.wait()
        try:
            task()
        except BaseException as exc:  # reported by the caller
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(task,)) for task in tasks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]


def registry(tmp_path: Path) -> SignalRegistry:
    path = tmp_path / "signals.py"
    path.write_text(MODULE.replace("{count}", str(SIGNALS)))
    return SignalRegistry.from_module(str(path))


def test_cut_overs_at_the_same_time_are_all_kept(
    open_store: Callable[[], StateStore], tmp_path: Path
) -> None:
    stores = [open_store() for _ in range(SIGNALS)]
    # One each (a cut-over serves the table it wrote on its registry), loaded beforehand.
    registries = [registry(tmp_path) for _ in range(SIGNALS)]
    try:
        for version in [2, 1] * ROUNDS:  # to v2 and back, each time all signals at once
            tasks = [
                lambda store=store, signals=signals, key=f"s{i}@{version}": _cut(
                    store, signals, key
                )
                for i, (store, signals) in enumerate(zip(stores, registries, strict=True))
            ]
            all_at_once(tasks)
            table = load_versions(stores[0])
            assert table.served == {f"s{i}": version for i in range(SIGNALS)}
            retired = {f"s{i}@{3 - version}" for i in range(SIGNALS)}
            assert set(table.retired) == retired
    finally:
        for store in stores:
            store.close()


def _apply(store: StateStore, signals: SignalRegistry) -> None:
    apply_plan(store, signals)


def _cut(store: StateStore, signals: SignalRegistry, key: str) -> None:
    cut_over(store, signals, signals.get(key), grace_ms=HOUR_MS)


def test_backfills_recorded_at_the_same_time_are_all_kept(
    open_store: Callable[[], StateStore],
) -> None:
    stores = [open_store() for _ in range(SIGNALS)]
    try:
        for round_ in range(ROUNDS):
            tasks = [
                lambda store=store, key=f"s{i}@{round_}": record_backfilled(store, {key: "def"})
                for i, store in enumerate(stores)
            ]
            all_at_once(tasks)
        expected = {f"s{i}@{r}": "def" for i in range(SIGNALS) for r in range(ROUNDS)}
        assert load_backfilled(stores[0]) == expected
    finally:
        for store in stores:
            store.close()


def test_a_cut_over_that_cannot_get_the_lock_fails_and_changes_nothing(
    open_store: Callable[[], StateStore], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(state_store, "METADATA_LOCK_WAIT_S", 0.2)
    holder, store = open_store(), open_store()
    signals = registry(tmp_path)
    try:
        with metadata_lock_held(holder):
            with pytest.raises(StoreError, match=r"metadata lock .* for over 0\.2 s"):
                cut_over(store, signals, signals.get("s0@2"), grace_ms=HOUR_MS)
            assert load_versions(store).served == {}
    finally:
        holder.close()
        store.close()


def test_an_apply_beside_cut_overs_keeps_theirs_and_its_own(
    open_store: Callable[[], StateStore], tmp_path: Path
) -> None:
    stores = [open_store() for _ in range(SIGNALS)]
    registries = [registry(tmp_path) for _ in range(SIGNALS)]
    try:
        tasks: list[Callable[[], None]] = [lambda: _apply(stores[0], registries[0])]
        tasks += [
            lambda store=store, signals=signals, key=f"s{i}@2": _cut(store, signals, key)
            for i, (store, signals) in enumerate(zip(stores, registries, strict=True))
            if i
        ]
        all_at_once(tasks)
        table = load_versions(stores[0])
        assert table.served == {f"s{i}": 2 for i in range(1, SIGNALS)}
        assert set(table.applied) == {signal.key for signal in registries[0].computed}
    finally:
        for store in stores:
            store.close()
