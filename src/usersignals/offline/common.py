"""What backfill and training-set generation share: signal selection, user shards, engines."""

from __future__ import annotations

import gc
import importlib
import multiprocessing
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from importlib.machinery import ModuleSpec
from pathlib import Path
from typing import TypeVar

import xxhash

from usersignals.assembly import build_decoder, build_materializer, embedded_tables, open_store
from usersignals.config import Settings
from usersignals.errors import ConfigurationError
from usersignals.events.decode import EventDecoder
from usersignals.ingest.archive import inside_archive
from usersignals.offline.plan import record_backfill
from usersignals.offline.stopping import start_worker, take_stops, workers_start_held
from usersignals.processing.engine import Engine
from usersignals.processing.gc_tuning import collector_tuned
from usersignals.signals.registry import SignalRegistry
from usersignals.state.keys import SIGNALS_KEY
from usersignals.state.store import StateStore
from usersignals.state.versions import changed_since_computed, load_versions


def shard_of(user_id: str, shards: int) -> int:
    """The shard of a user: a stable hash, the same in every process and on every machine
    (Python's own ``hash`` of a string changes with each interpreter)."""
    return xxhash.xxh64_intdigest(user_id.encode()) % shards


def check_workers(workers: int) -> None:
    """An offline job runs in at least one process (``workers``)."""
    if workers < 1:
        raise ConfigurationError(f"workers: must be at least 1, not {workers}")


def check_dead_letter(dead_letter: Path | None, archive: str, **files: Path) -> None:
    """Refuse a dead-letter file that is one of the job's ``files`` (by what they are: the
    labels file, the output), which appending to would corrupt, or inside the event archive,
    where the next job would read its lines as events."""
    if dead_letter is None:
        return
    where = dead_letter.resolve()
    for what, path in files.items():
        if where == path.resolve():
            raise ConfigurationError(
                f"--dead-letter {str(dead_letter)!r} is the {what} file: give another path"
            )
    if inside_archive(archive, dead_letter):
        raise ConfigurationError(
            f"the dead-letter file {str(dead_letter)!r} is inside the event archive "
            f"{archive!r}: the next job would read it as events; give --dead-letter a path "
            "outside it (or, for the training set's own, --out)"
        )


Task = TypeVar("Task")
Result = TypeVar("Result")


class ShardPool:
    """The processes of an offline job's shards beyond the first, which runs in the calling
    process (it would only wait otherwise, and its start-up is paid).

    The workers start on entering, each importing ``module`` (the job's), so that their
    start-up (an interpreter and the jobs' imports: 0.2-0.3 s on the 2-core machine)
    overlaps what this process does before the shards run: reading the labels, sampling
    the archive, planning the shards. Spawned, not forked: this process may hold RocksDB
    and Arrow threads a fork would not copy. On leaving, the workers exit while the caller
    goes on (the pool's own thread joins them; a worker's exit took 0.06 s of a 2 s
    training set; a command waits for them at its very end, :func:`wait_for_workers`), or,
    after an error, are waited for.
    """

    def __init__(self, shards: int, module: str) -> None:
        self._workers = max(0, shards - 1)
        self._module = module
        self._pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> ShardPool:
        if self._workers:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=context,
                initializer=start_worker,
                initargs=(os.getpid(),),
            )
            try:
                # Each submit starts a worker while none is idle; started with the stops held.
                with _main_not_rerun(), workers_start_held():
                    for _ in range(self._workers):
                        self._pool.submit(_in_worker, _warm_up, self._module)
            except BaseException:
                self._pool.shutdown(wait=True, cancel_futures=True)
                raise
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if self._pool is not None:
            failed = kind is not None
            # The thread that joins the workers; the pool forgets it on shutdown.
            joiner = getattr(self._pool, "_executor_manager_thread", None)
            self._pool.shutdown(wait=failed, cancel_futures=failed)
            if not failed and isinstance(joiner, threading.Thread):
                # A library caller may never call wait_for_workers: keep only live ones.
                _winding_down[:] = [*(t for t in _winding_down if t.is_alive()), joiner]

    def run(
        self,
        compute: Callable[[Task], Result],
        tasks: Sequence[Task],
        then: Callable[[Result], None] | None = None,
    ) -> list[Result]:
        """``compute`` over each task: the first in this process, the others in the
        workers, all at once; the results in the tasks' order. ``then`` gets the first
        result as soon as it is there, while the others may still run.

        Returns or raises only once no task runs any more: after an error, the tasks not
        started are cancelled and the running ones waited for, so that nothing writes into
        the caller's scratch directory after the caller has moved on (and removed it)."""
        if len(tasks) - 1 > self._workers:
            raise ValueError(f"{len(tasks)} tasks for {self._workers} workers and this process")
        others: list[Future[Result]] = []
        try:
            if self._pool is not None:
                with _main_not_rerun(), workers_start_held():  # should a worker start only now
                    others = [self._pool.submit(_in_worker, compute, task) for task in tasks[1:]]
            first = _tuned(compute, tasks[0])
            if then is not None:
                then(first)
            return [first, *(future.result() for future in others)]
        except BaseException:
            # Every worker gone before this raises: a pool broken by one worker's exit
            # fails the others' futures at once, while they may still be unwinding.
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            raise


#: The threads of pools whose workers exit on their own (see :class:`ShardPool`), each
#: joining its workers, until :func:`wait_for_workers` waits for them.
_winding_down: list[threading.Thread] = []


def wait_for_workers() -> None:
    """Return once the workers of every finished job have exited. A command calls it before
    its process ends: at exit, Python 3.11's own handler for process pools can race a
    pool's thread that closes its wake-up pipe, and print an ignored "OSError: [Errno 9]
    Bad file descriptor" (seen twice in about 80 training sets)."""
    while _winding_down:
        _winding_down.pop().join()


def _warm_up(module: str) -> None:
    """A worker's first task: import the job's module (returning nothing to send back)."""
    importlib.import_module(module)


@contextmanager
def _main_not_rerun() -> Iterator[None]:
    """Workers spawned meanwhile do not run this process's main script again.

    A spawned worker re-runs the parent's main script (by path) before its task, so that
    functions defined there unpickle. The tasks here are the package's own functions; the
    main script is the ``usersignals`` command's (0.45 s of imports: the whole CLI) or a
    caller's, and a worker started 0.67 s after the parent's shard on a 1M-event backfill.
    A main module named ``__main__`` by its spec is one multiprocessing leaves alone (as it
    does for a package run with ``python -m``).
    """
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    main.__spec__ = ModuleSpec("__main__", None)
    try:
        yield
    finally:
        main.__spec__ = spec


def _in_worker(run: Callable[[Task], Result], task: Task) -> Result:
    """A task in a worker. Told to stop (SIGTERM, as :func:`start_worker` has it), the
    worker ends once the task has unwound: the pool would otherwise send the stop back as
    the task's error and wait for another task, from a parent that may be gone.

    ``os._exit`` runs no finalizer, so the end waits until the stop's traceback is gone
    and the collector has run: an object the signal left half-made (a read-only store whose
    open it interrupted) is then finalized, its temporary directory removed. Ended inside
    the handler, the traceback held it, and the directory stayed (seen under load)."""
    try:
        take_stops()  # here, where a stop unwinds the task cleanly
        return _tuned(run, task)
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 1
    gc.collect()
    os._exit(code)


def _tuned(run: Callable[[Task], Result], task: Task) -> Result:
    """One shard, with the processor's garbage-collection tuning: a shard holds its whole
    share of the archive's events, and the default collector walked them all again and
    again (9-13 % of a training set's or a backfill's time, timed with ``gc.callbacks``)."""
    with collector_tuned():
        return run(task)


def select_signals(registry: SignalRegistry, only: Sequence[str]) -> SignalRegistry:
    """The signals named in ``only``, each ``NAME@VERSION`` or ``NAME`` (its default
    version); all of them when it is empty."""
    if not only:
        return registry
    chosen = []
    for spec in only:
        name, _, version = spec.partition("@")
        signal = registry.get(name) if name in registry.names else None
        # A shadow version (not served by default) is named with its version.
        declared = [s for s in registry.computed if s.name == name]
        if version:
            signal = next((s for s in declared if str(s.version) == version), None)
        if signal is None:
            if not declared:
                registry.get(name)  # raises SignalNotFoundError, listing the known signals
            versions = ", ".join(s.key for s in declared)
            raise ConfigurationError(
                f"--only {spec}: the module defines {versions}, not version {version}"
            )
        chosen.append(signal)
    return SignalRegistry(chosen)


def note_backfilled(settings: Settings, registry: SignalRegistry) -> None:
    """Record that a backfill computed ``registry``'s versions, once their states are in:
    ``signals plan`` and ``apply`` then take that state for a history, not a leftover."""
    store = open_store(settings)
    try:
        record_backfill(store, registry)
    finally:
        store.close()


def refuse_changed_definitions(settings: Settings, registry: SignalRegistry) -> None:
    """Refuse to backfill a version defined otherwise than when the store's states of it
    were computed (:func:`~usersignals.state.versions.changed_since_computed`), as ``signals
    apply`` and ``run`` refuse it."""
    existing = open_existing(settings)
    if existing is None:
        return
    try:
        recorded = existing.get_many([SIGNALS_KEY])[0]
        changed = changed_since_computed(recorded, load_versions(existing), registry)
    finally:
        existing.close()
    if changed:
        raise ConfigurationError(
            f"backfill refused: {', '.join(changed)} defined otherwise than when the store's "
            "states were computed; merged in, its states would mix two meanings: bump the "
            "version to change what a signal computes"
        )


def open_existing(settings: Settings) -> StateStore | None:
    """The deployment's store, read-only, if it exists yet: its stored progress (backfill),
    its served versions (training sets)."""
    return open_store(settings, read_only=True) if _store_exists(settings) else None


def _store_exists(settings: Settings) -> bool:
    """An embedded store once created (Redis is always there to ask)."""
    return settings.store.backend != "rocksdb" or (Path(settings.store.path) / "CURRENT").exists()


def open_lookup_store(settings: Settings, registry: SignalRegistry) -> StateStore | None:
    """The deployment's store, read-only, when the signals enrich from its embedded tables."""
    tables = embedded_tables(settings, registry)
    if not tables:
        return None
    if not _store_exists(settings):
        raise ConfigurationError(
            f"signals enrich from embedded tables ({', '.join(sorted(set(tables)))}) but there is "
            f"no store at {settings.store.path}: load them first (usersignals tables load)"
        )
    return open_store(settings, read_only=True)


def build_engine(
    settings: Settings,
    registry: SignalRegistry,
    store: StateStore,
    lookups: StateStore | None,
    *,
    judges_repeats: bool = True,
) -> tuple[Engine, EventDecoder]:
    """The service's engine and decoder over ``store``, enriching from ``lookups``, with the
    deployment's event-id dedupe horizon (as the processor's); without event-id dedupe when
    not ``judges_repeats`` (the caller drops the repeats itself)."""
    materializer = None
    if any(signal.lookups for signal in registry.computed):
        materializer = build_materializer(settings, registry, lookups or store)
    horizon_ms = settings.processing.dedupe_horizon_ms if judges_repeats else None
    engine = Engine(registry, store, materializer, dedupe_horizon_ms=horizon_ms)
    return engine, build_decoder(settings)
