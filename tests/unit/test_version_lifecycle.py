"""A version's key, once its state has been dropped, is never reused: what is left of its
state is partial (the engine drops it user by user, as their events arrive), and serving it
or computing on top of it again would answer from some users' history and not others'."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from lock_holder import metadata_lock_held
from usersignals import Count, Signal, SignalRegistry, days
from usersignals.app import build_processor
from usersignals.assembly import open_store
from usersignals.config import Settings
from usersignals.durations import iso_utc
from usersignals.errors import (
    ConfigurationError,
    SignalRetiredError,
    SignalsMismatchError,
    StoreError,
)
from usersignals.offline.plan import apply_plan, make_plan, record_backfill
from usersignals.signals.identity import signals_identity
from usersignals.state import store as state_store
from usersignals.state.keys import SIGNALS_KEY
from usersignals.state.memory import MemoryStore
from usersignals.state.versions import cut_over, load_removed, load_versions

HOUR_MS = 3_600_000


def clicks(version: int, by: str = "action", shadow: bool = False) -> Signal:
    return Signal(
        name="clicks", version=version, aggregate=Count(by=by), retention=days(7), shadow=shadow
    )


def views() -> Signal:
    return Signal(name="views", version=1, aggregate=Count(), retention=days(1))


def clicks_v1_deployment(tmp_path: Path) -> Settings:
    """Settings of a deployment whose module declares clicks@1 alone, its store under
    ``tmp_path``."""
    module = tmp_path / "signals.py"
    module.write_text(
        "from usersignals import Count, Signal, days\n"
        "SIGNALS = [Signal(name='clicks', version=1, aggregate=Count(by='action'),"
        " retention=days(7))]\n"
    )
    return Settings.load(
        environ={}, overrides={"signals": str(module), "store": {"path": str(tmp_path / "s")}}
    )


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


def test_a_removed_version_declared_again_is_neither_cut_over_to_nor_computed(
    tmp_path: Path,
) -> None:
    """Found by the review: only ``apply`` refused it; ``cutover`` served it and a processor
    started with the module computed it again, on top of the partial state."""
    store = MemoryStore()
    both = SignalRegistry([clicks(1), clicks(2, by="surface", shadow=True), views()])
    apply_plan(store, both)
    apply_plan(store, SignalRegistry([clicks(2, by="surface"), views()]))
    with pytest.raises(ConfigurationError, match=r"clicks@1: removed at .*new version"):
        cut_over(store, both, both.get("clicks@1"), grace_ms=HOUR_MS)

    settings = clicks_v1_deployment(tmp_path)
    rocks = open_store(settings)
    try:
        apply_plan(rocks, SignalRegistry([clicks(1), views()]))
        apply_plan(rocks, SignalRegistry([views()]))
    finally:
        rocks.close()
    with pytest.raises(SignalsMismatchError, match=r"clicks@1: removed at .*new version"):
        build_processor(settings)


def test_a_version_never_applied_beside_applied_ones_is_not_taken_for_warm() -> None:
    """Found by the review: a removal by the release before this one left no record, so the
    version declared again read "state already in the store". Once ``apply`` is in use, a
    version it never applied has state from a deployment that skipped it, or left by such a
    removal: either way not a backfilled history."""
    store = MemoryStore()
    apply_plan(store, SignalRegistry([views()]))
    planned = make_plan(
        SignalRegistry([clicks(1), views()]), load_versions(store), {"clicks@1"}, {}
    )
    new = planned.changes[0]
    assert (new.key, new.kind, new.needs_backfill) == ("clicks@1", "new", True)
    assert "never applied" in new.detail
    # Before the table (nothing applied yet): the deployed signals' state is warm.
    fresh = make_plan(SignalRegistry([clicks(1)]), load_versions(MemoryStore()), {"clicks@1"})
    assert fresh.changes[0].needs_backfill is False


def test_a_version_whose_grace_period_is_over_is_not_answered() -> None:
    """Found by an operations trial: after ``cutover counts@2 --grace 1s`` expired, a request
    for ``counts@1`` still answered 200: 0 for users with events since (their state was
    dropped), frozen old totals for the others. A client pinned to it read a mix; now it
    gets a 410 naming the version served instead."""
    from usersignals.aggregations import ReadContext
    from usersignals.errors import SignalNotFoundError, SignalRetiredError
    from usersignals.serving.reader import SignalReader

    store = MemoryStore()
    registry = SignalRegistry([clicks(1), clicks(2, by="surface", shadow=True)])
    reader = SignalReader(registry, store)
    context = ReadContext(now_ms=1_000)
    assert reader.read("u1", ["clicks@1"], context).signals["clicks@1"].error is None
    now = 1_767_225_600_000
    cut_over(store, registry, registry.get("clicks@2"), grace_ms=HOUR_MS, now_ms=now - 2 * HOUR_MS)
    reader.refresh()
    with pytest.raises(SignalRetiredError) as retired:
        reader.read("u1", ["clicks@1"], context)
    assert retired.value.http_status == 410
    assert isinstance(retired.value, SignalNotFoundError)  # every caller that handles those
    assert "'clicks@1' was retired" in str(retired.value)
    assert "read 'clicks' (clicks@2) instead" in str(retired.value)
    assert "clicks@1" not in registry.known
    assert reader.read("u1", ["clicks@2"], context).signals["clicks@2"].error is None
    assert list(reader.read("u1", None, context).signals) == ["clicks"]
    # Within the grace period it is answered still (cutting back is instant).
    fresh = MemoryStore()
    again = SignalRegistry([clicks(1), clicks(2, by="surface", shadow=True)])
    cut_over(fresh, again, again.get("clicks@2"), grace_ms=HOUR_MS, now_ms=now + 10**12)
    assert (
        SignalReader(again, fresh).read("u1", ["clicks@1"], context).signals["clicks@1"].error
        is None
    )


def test_a_retired_version_is_refused_by_the_cached_query_and_the_batch_route() -> None:
    """The GET route resolves each query string once and keeps it while the served versions
    stay the same object: a query for ``clicks@1`` resolved before its grace period ended
    must not go on answering after it (found in review: untested)."""
    from usersignals.errors import SignalRetiredError
    from usersignals.serving.queries import Queries
    from usersignals.serving.read_routes import batch_plan
    from usersignals.serving.reader import SignalReader
    from usersignals.serving.schemas import BatchRequest

    store = MemoryStore()
    registry = SignalRegistry([clicks(1), clicks(2, by="surface", shadow=True)])
    reader = SignalReader(registry, store)
    queries = Queries(registry)
    cut_over(store, registry, registry.get("clicks@2"), grace_ms=10**12)  # in its grace
    reader.refresh()
    assert [s.key for s in queries.get(b"names=clicks@1").signals] == ["clicks@1"]
    # The grace period ends while the served versions stay as they are (what a refresh
    # finds once the time has come).
    registry.retire({"clicks@1": 1_767_225_600_000})
    with pytest.raises(SignalRetiredError):
        queries.get(b"names=clicks@1")
    with pytest.raises(SignalRetiredError):
        batch_plan(registry, BatchRequest(users=["u1"], signals=["clicks@1"]))
    assert [s.key for s in queries.get(b"").signals] == ["clicks@2"]


def test_a_backfilled_version_whose_state_the_sample_misses_is_warm() -> None:
    """Found in review: ``plan`` looks for a version's state in a sample of the store's
    records (the first 1,000); a rare signal (only users who bought) backfilled in full has
    none there, and was planned "starts empty: backfill it" once more."""
    from usersignals import Engine, Event, MicroBatch, Position, action
    from usersignals.offline.plan import record_backfill, stored_plan

    store = MemoryStore()
    apply_plan(store, SignalRegistry([clicks(1)]))
    buys = Signal(name="buys", version=1, aggregate=Count(), where=action.isin({"buy"}))
    both = SignalRegistry([clicks(1), buys])
    events = [
        Event(event_id=f"e{n}", user_id=f"u{n:05d}", item_id="i", action="click",
              surface="home", ts=1_767_225_600_000)
        for n in range(1_500)
    ]  # fmt: skip
    events.append(
        Event(event_id="b", user_id="u99999", item_id="i", action="buy", surface="home",
              ts=1_767_225_600_000)
    )  # fmt: skip
    Engine(both, store).process(MicroBatch(events, [Position("p", n) for n in range(len(events))]))
    record_backfill(store, SignalRegistry([buys]))
    change = next(c for c in stored_plan(store, both).changes if c.key == "buys@1")
    assert (change.kind, change.needs_backfill) == ("new", False)
    assert change.detail == "backfilled: its history is in the store"


def test_the_signal_catalogue_says_which_versions_are_retired() -> None:
    """``GET /v1/signals`` listed a retired version like any other, though naming it answers
    410 (found in review)."""
    import json

    from usersignals.serving.read_routes import signals_document

    registry = SignalRegistry([clicks(1), clicks(2, by="surface", shadow=True)])
    assert json.loads(signals_document(registry))["retired"] == {}
    registry.retire({"clicks@1": 1_767_225_600_000})
    document = json.loads(signals_document(registry))
    assert [s["version"] for s in document["signals"]] == [1, 2]  # the definitions, as compiled
    assert document["retired"] == {"clicks@1": "2026-01-01T00:00:00+00:00"}


def test_the_signal_catalogue_says_until_when_a_replaced_version_is_served() -> None:
    """Noticed in a trial: after a cut-over, ``GET /v1/signals`` said nothing of the version
    it replaced until its grace period was over (then ``retired``): a client pinned to it
    could not learn from the API until when it would be answered."""
    import json

    from usersignals.serving.read_routes import signals_document
    from usersignals.serving.reader import SignalReader

    store = MemoryStore()
    registry = SignalRegistry([clicks(1), clicks(2, by="surface", shadow=True)])
    reader = SignalReader(registry, store)
    cut_over(store, registry, registry.get("clicks@2"), grace_ms=10**12)  # in its grace
    reader.refresh()
    document = json.loads(signals_document(registry))
    (until,) = document["retiring"].values()
    assert list(document["retiring"]) == ["clicks@1"]
    assert until == iso_utc(load_versions(store).retired["clicks@1"], "seconds")
    assert document["retired"] == {}
    assert document["served"] == {"clicks": "clicks@2"}


def test_an_unknown_signal_lists_every_version_of_a_name_with_several() -> None:
    """Found in a newcomer's trial: the 404 listed "interests, interests@2", and
    ``interests@1``, the version the name served, was answered all the same. A name of
    one version is listed alone, as before."""
    from usersignals.errors import SignalNotFoundError

    registry = SignalRegistry([clicks(1), clicks(2, by="surface", shadow=True), views()])
    assert registry.known == ["clicks", "views", "clicks@1", "clicks@2"]
    registry.serve({"clicks": 2})
    assert registry.known == ["clicks", "views", "clicks@1", "clicks@2"]
    registry.retire({"clicks@1": 1_000})
    assert registry.known == ["clicks", "views", "clicks@2"]
    with pytest.raises(SignalNotFoundError, match=r"known signals: clicks, views, clicks@2$"):
        registry.get("click")


def test_the_signal_catalogue_says_which_version_each_name_serves() -> None:
    """Found in a newcomer's trial: after a cut-over ``GET /v1/signals`` still listed the new
    version as declared (``"shadow": true``) and nothing said which version a name served.
    The compiled definitions stay as declared; ``served`` names each signal's default."""
    import json

    from usersignals.serving.read_routes import signals_document

    registry = SignalRegistry([clicks(1), clicks(2, by="surface", shadow=True), views()])
    assert json.loads(signals_document(registry))["served"] == {
        "clicks": "clicks@1",
        "views": "views@1",
    }
    registry.serve({"clicks": 2})  # a cut-over, as the workers' refresh applies it
    assert json.loads(signals_document(registry))["served"]["clicks"] == "clicks@2"


class _KeyByKeyStore(MemoryStore):
    """A write applied key by key, failing after ``fail_after`` keys: what a Redis Cluster
    write does when its keys are in two slots and one slot's primary fails mid-write (the
    version table and the removals are two keys, in two slots)."""

    fail_after: int | None = None

    def write(self, puts: Mapping[bytes, bytes], deletes: Sequence[bytes] = ()) -> None:
        for key, value in puts.items():
            if self.fail_after == 0:
                raise StoreError("redis-cluster", "write", "a primary failed mid-write")
            super().write({key: value})
            if self.fail_after is not None:
                self.fail_after -= 1
        super().write({}, deletes)


def test_a_removal_survives_an_apply_that_failed_part_way() -> None:
    """The table and the removals were one write: on a Redis Cluster one slot's key could
    be written and not the other's. Table first: ``apply`` failed, and run again it no
    longer saw the removal (the table no longer named the version), so the removal was never
    recorded and a later re-declaration was taken for warm state."""
    store = _KeyByKeyStore()
    apply_plan(store, SignalRegistry([clicks(1), views()]))
    store.fail_after = 1
    with pytest.raises(StoreError):
        apply_plan(store, SignalRegistry([views()]))
    store.fail_after = None
    apply_plan(store, SignalRegistry([views()]))  # run again, as the operator would
    assert "clicks@1" in load_removed(store)
    with pytest.raises(ConfigurationError, match="clicks@1: removed at"):
        apply_plan(store, SignalRegistry([clicks(1), views()]))


def test_a_backfill_record_that_cannot_get_the_lock_says_its_states_are_in(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The record comes after the states were written: its failure must not read as if the
    backfill changed nothing."""
    monkeypatch.setattr(state_store, "METADATA_LOCK_WAIT_S", 0.1)
    store = MemoryStore()
    with (
        metadata_lock_held(store),
        pytest.raises(StoreError, match="states are in the store, but its record"),
    ):
        record_backfill(store, SignalRegistry([clicks(1)]))


def test_a_cut_over_to_a_version_the_processor_does_not_compute_is_refused() -> None:
    """Found in a newcomer's trial: cut over to a version the processor writing the store
    does not compute (its module declares only the old one), and every serving worker,
    reading with the new module, went not-ready: every read of every signal answered 503
    until the processor restarted. Now the cut-over is refused and says what to do; a
    version the processor computes (in shadow) is cut over to."""
    store = MemoryStore()
    old = SignalRegistry([clicks(1), views()])
    new = SignalRegistry([clicks(1), clicks(2, by="surface", shadow=True), views()])
    store.write({SIGNALS_KEY: signals_identity("app.signals", old)})
    before = load_versions(store)
    with pytest.raises(
        ConfigurationError,
        match=r"cannot cut over to clicks@2: the processor writing this store \(module "
        r"'app.signals'\) does not compute it.*run the processor with a module",
    ):
        cut_over(store, new, new.get("clicks@2"), grace_ms=HOUR_MS)
    assert load_versions(store) == before  # nothing written
    store.write({SIGNALS_KEY: signals_identity("app.signals", new)})  # the shadow computed
    previous, table = cut_over(store, new, new.get("clicks@2"), grace_ms=HOUR_MS)
    assert previous is not None
    assert previous.key == "clicks@1"
    assert table.served["clicks"] == 2


def test_a_module_rolled_back_past_a_cut_over_is_refused_and_said_so(tmp_path: Path) -> None:
    """Found in a newcomer's trial: after a cut-over to clicks@2 (clicks@1's grace period
    over), a module declaring only clicks@1 was planned "unchanged", applied, and run; every
    read then answered 410 with "read 'clicks' (clicks@1) instead", the retired version
    itself. The processor now refuses such a module, naming the version the store serves,
    and a reader's 410 says what is wrong."""
    settings = clicks_v1_deployment(tmp_path)
    both = SignalRegistry([clicks(1), clicks(2, by="surface", shadow=True)])
    rocks = open_store(settings)
    try:
        rocks.write({SIGNALS_KEY: signals_identity("both", both)})
        cut_over(rocks, both, both.get("clicks@2"), grace_ms=HOUR_MS, now_ms=1_000)
    finally:
        rocks.close()
    with pytest.raises(
        SignalsMismatchError,
        match=r"the store serves clicks@2 by default \(a cut-over\), which this module does "
        r"not declare",
    ):
        build_processor(settings)

    rolled_back = SignalRegistry([clicks(1)])
    rolled_back.serve({"clicks": 2})
    rolled_back.retire({"clicks@1": 1_000 + HOUR_MS})
    with pytest.raises(SignalRetiredError) as refused:
        rolled_back.get("clicks")
    assert "read 'clicks'" not in str(refused.value)
    assert "the store serves clicks@2 by default, which this module does not declare" in str(
        refused.value
    )


def test_a_plan_refuses_a_module_rolled_back_past_a_cut_over() -> None:
    """The same rolled-back module, planned: the version the store serves, undeclared, is a
    refused row, and ``apply`` refuses the module (it was planned "unchanged" and applied)."""
    store = MemoryStore()
    both = SignalRegistry([clicks(1), clicks(2, by="surface", shadow=True)])
    apply_plan(store, both)
    cut_over(store, both, both.get("clicks@2"), grace_ms=HOUR_MS, now_ms=1_000)
    rolled_back = SignalRegistry([clicks(1)])
    planned = make_plan(rolled_back, load_versions(store), set(), load_removed(store))
    row = next(change for change in planned.changes if change.key == "clicks@2")
    assert (row.kind, row.serving) == ("undeclared", "default")
    assert planned.refused == [row]
    with pytest.raises(ConfigurationError, match=r"clicks@2: served by default .*not declared"):
        apply_plan(store, rolled_back)


def test_a_retired_version_deleted_from_the_module_still_answers_410() -> None:
    """Found in a newcomer's trial: once v1 (retired by a cut-over, its grace period over)
    was deleted from the module, as the README says to do, a request naming clicks@1 got
    404 ``unknown_signal`` and the catalogue's ``retired`` was empty: a pinned client lost
    the "read clicks (clicks@2) instead"."""
    import json

    from usersignals.serving.read_routes import signals_document

    registry = SignalRegistry([clicks(2, by="surface")])
    registry.retire({"clicks@1": 1_767_225_600_000})
    with pytest.raises(SignalRetiredError, match=r"read 'clicks' \(clicks@2\) instead"):
        registry.get("clicks@1")
    document = json.loads(signals_document(registry))
    assert document["retired"] == {"clicks@1": "2026-01-01T00:00:00+00:00"}


def test_a_deleted_retired_version_is_not_told_to_read_another_retired_one() -> None:
    """Found by the review: a version deleted from the module, retired, was told to read the
    module's default, itself retired (a module rolled back past a cut-over)."""
    registry = SignalRegistry([clicks(1)])
    registry.serve({"clicks": 3})
    registry.retire({"clicks@1": 10, "clicks@2": 20})
    with pytest.raises(SignalRetiredError) as refused:
        registry.get("clicks@2")
    assert "read 'clicks'" not in str(refused.value)
    assert "the store serves clicks@3 by default" in str(refused.value)


def test_a_training_set_refuses_a_module_rolled_back_past_a_cut_over(tmp_path: Path) -> None:
    """Found by the review: a training set with such a module computed the module's own
    default (perhaps retired) under the signal's name, where the API serves another version:
    features that are not what was served, without a word."""
    from usersignals.offline.training import TrainingJob, job_registry

    settings = clicks_v1_deployment(tmp_path)
    job = TrainingJob(
        tmp_path / "labels.parquet", "archive", settings, tmp_path / "out.parquet",
        served={"clicks": 2},
    )  # fmt: skip
    with pytest.raises(
        ConfigurationError,
        match=r"the store serves clicks@2 by default \(a cut-over\), which this module does "
        r"not declare",
    ):
        job_registry(job)
    assert job_registry(dataclasses.replace(job, served={"clicks": 1})).get("clicks").version == 1


def test_a_plan_says_a_version_is_retired_and_when_its_state_goes() -> None:
    """After a cut-over the old version, still declared, showed in ``signals plan`` as an
    unchanged shadow version, as if it would go on being computed: it is retired, computed
    until its grace period ends, then no longer computed, its state dropped and its reads
    answered 410."""
    store = MemoryStore()
    registry = SignalRegistry([clicks(1), clicks(2, by="surface", shadow=True)])
    apply_plan(store, registry)
    cut_over(store, registry, registry.get("clicks@2"), grace_ms=HOUR_MS, now_ms=1_000)

    def change(now_ms: int) -> tuple[str, str, str]:
        planned = make_plan(registry, load_versions(store), set(), now_ms=now_ms)
        (old,) = [c for c in planned.changes if c.key == "clicks@1"]
        assert not planned.refused
        return old.kind, old.serving, old.detail

    kind, serving, detail = change(now_ms=2_000)
    # "retiring" in its grace period, as GET /v1/signals says (a trial found `plan` saying
    # "retired" where the API's "retired" was empty).
    assert (kind, serving) == ("unchanged", "retiring")
    assert "computed (and answered when named) until 1970-01-01T01:00:01" in detail
    assert "signals cutover clicks@1" in detail  # the way back, while it lasts
    kind, serving, detail = change(now_ms=2 * HOUR_MS)
    assert (kind, serving) == ("unchanged", "retired")
    assert "no longer computed" in detail
    assert "remove it from the module" in detail
    # Its definition edited all the same: a change, refused, retired or not.
    edited = SignalRegistry([clicks(1, by="surface"), clicks(2, by="surface", shadow=True)])
    planned = make_plan(edited, load_versions(store), set(), now_ms=2_000)
    assert [c.key for c in planned.refused] == ["clicks@1"]


def test_a_reader_with_a_module_rolled_back_past_a_cut_over_does_not_serve_the_old_version(
    tmp_path: Path,
) -> None:
    """A serving worker (or ``usersignals get``) whose module does not declare the version a
    cut-over serves answered the signal's name with the module's own default — within the
    old version's grace period silently the old version, the store serving another. It is
    now refused at start, as the processor is, and a worker that sees the cut-over while it
    runs goes not-ready with the same reason (its reads answer 503)."""
    from usersignals.app import open_store_reader
    from usersignals.serving.identity import WriterCheck

    settings = clicks_v1_deployment(tmp_path)
    both = SignalRegistry([clicks(1), clicks(2, by="surface", shadow=True)])
    rocks = open_store(settings)
    try:
        rocks.write({SIGNALS_KEY: signals_identity("both", both)})
        reader = open_store_reader(settings)  # before the cut-over: the module matches
        reader.store.close()
        cut_over(rocks, both, both.get("clicks@2"), grace_ms=HOUR_MS)
        recorded = rocks.get_many([SIGNALS_KEY])[0]
    finally:
        rocks.close()
    undeclared = r"the store serves clicks@2 by default \(a cut-over\), which this module"
    with pytest.raises(SignalsMismatchError, match=undeclared):
        open_store_reader(settings)

    running = SignalRegistry([clicks(1)])
    check = WriterCheck("v1_module", running)
    check.observe(recorded)
    assert check.problem is None
    running.serve({"clicks": 2})  # the worker's refresh reads the cut-over
    check.observe(recorded)
    assert check.problem is not None
    assert "serves clicks@2 by default" in check.problem
