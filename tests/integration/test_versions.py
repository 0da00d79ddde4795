"""New signal versions: shadow serving by explicit version, backfill + cut-over without loss or
double count, and the old version's state dropped after the grace period."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from offline_helpers import (
    History,
    new_store,
    random_history,
    settings_for,
    stream,
    user_states,
    write_parquet_archive,
)

from usersignals import SignalRegistry
from usersignals.aggregations.context import ReadContext
from usersignals.offline import BackfillJob, backfill
from usersignals.offline.training import TrainingJob, training_set
from usersignals.serving.reader import SignalReader
from usersignals.state.codec import decode_record
from usersignals.state.keys import user_of
from usersignals.state.rocks import RocksStore
from usersignals.state.versions import cut_over, load_versions, save_versions

MODULE = """
from usersignals import Count, DecayedScores, Lookup, Signal, action

items = Lookup("items", key="item_id", provides=("category",))

clicks = Signal(
    name="clicks", version=1, where=action.eq("click"), aggregate=Count(by="surface"),
    retention="28d",
)


def interests(version: int, half_life: str, shadow: bool = False) -> Signal:
    return Signal(
        name="interests", version=version, shadow=shadow, enrich=[items.fields("category")],
        aggregate=DecayedScores(
            key="category", half_life=half_life, weights={"save": 4, "click": 2},
            default_weight=0.0, top_k=10,
        ),
        retention="60d",
    )
"""
HOUR_MS = 3_600_000


def module(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / f"{name}.py"
    path.write_text(MODULE + body)
    return str(path)


@pytest.fixture(scope="module")
def history() -> History:
    return random_history(21)


def registries(tmp_path: Path) -> tuple[str, SignalRegistry, SignalRegistry, SignalRegistry]:
    """The module as deployed (v1), with v2 in shadow, and v2 alone (the reference)."""
    shadowed = module(
        tmp_path, "shadowed", 'SIGNALS = [clicks, interests(1, "7d"), interests(2, "3d", True)]\n'
    )
    v1 = SignalRegistry.from_module(
        module(tmp_path, "v1", 'SIGNALS = [clicks, interests(1, "7d")]\n')
    )
    v2 = SignalRegistry.from_module(
        module(tmp_path, "v2", 'SIGNALS = [clicks, interests(2, "3d")]\n')
    )
    return shadowed, SignalRegistry.from_module(shadowed), v1, v2


def test_a_shadow_version_is_served_only_when_named(tmp_path: Path, history: History) -> None:
    _, both, v1, _ = registries(tmp_path)
    assert both.names == ["clicks", "interests"]
    assert both.get("interests").version == 1
    assert both.get("interests@2").version == 2
    assert "interests@2" in both.known
    store = new_store(tmp_path / "store", history)
    try:
        stream(store, history, 101, registry=both)
        user = history.events[0].user_id
        reader = SignalReader(both, store)
        context = ReadContext.parse({}, now_ms=history.events[-1].ts)
        default = reader.read(user, None, context).signals
        assert set(default) == {"clicks", "interests"}
        assert default["interests"].version == 1
        named = reader.read(user, ["interests", "interests@2"], context).signals
        assert named["interests"].version == 1
        assert named["interests@2"].version == 2
        assert named["interests@2"].value != named["interests"].value  # 3 d vs 7 d half-life
        # The served version's state is the one a deployment of v1 alone computes.
        alone = new_store(tmp_path / "alone", history)
        try:
            stream(alone, history, 101, registry=v1)
            plain = SignalReader(v1, alone).read(user, ["interests"], context).signals
            assert plain["interests"].value == named["interests"].value
        finally:
            alone.close()
    finally:
        store.close()


def test_backfilled_version_cut_over_while_events_arrive_loses_and_doubles_nothing(
    tmp_path: Path, history: History
) -> None:
    """v1 runs; v2 is added in shadow and backfilled up to where each user stands; the stream
    goes on with both and the default moves to v2 between two micro-batches: v2's state is
    exactly what streaming every event into v2 gives, and v1's what it always was."""
    shadowed, both, v1, v2 = registries(tmp_path)
    reference = new_store(tmp_path / "reference", history)
    try:
        stream(reference, history, 89, registry=v2)
        expected_v2 = {k: decode_record(k, v).states for k, v in user_states(reference).items()}
    finally:
        reference.close()
    reference = new_store(tmp_path / "reference-v1", history)
    try:
        stream(reference, history, 89, registry=v1)
        expected_v1 = {k: decode_record(k, v).states for k, v in user_states(reference).items()}
    finally:
        reference.close()

    third = len(history.events) // 3
    store = new_store(tmp_path / "store", history)
    try:
        stream(store, history, 89, registry=v1, upto=third)
    finally:
        store.close()
    archive = write_parquet_archive(tmp_path / "archive", history)
    settings = settings_for(tmp_path / "store")
    settings.signals = shadowed
    summary = backfill(BackfillJob(str(archive), settings, only=("interests@2",)))
    assert summary.left_to_stream > 0  # the archive reaches past where the stream stands

    store = RocksStore(tmp_path / "store")
    try:
        cut_at = 2 * third
        # Re-fed from the start, as after a restart: the progress skips what is applied.
        stream(store, history, 89, registry=both, upto=cut_at)
        previous, table = cut_over(store, both, both.get("interests@2"), grace_ms=HOUR_MS)
        assert previous is not None
        assert previous.key == "interests@1"
        assert table.served == {"interests": 2}
        assert "interests@1" in table.retired
        stream(store, history, 89, registry=both)
        states = {k: decode_record(k, v).states for k, v in user_states(store).items()}
        assert states.keys() == expected_v2.keys()
        for key, user_states_now in states.items():
            assert user_states_now.get("interests@2") == expected_v2[key].get("interests@2")
            assert user_states_now.get("clicks@1") == expected_v2[key].get("clicks@1")
            # Within the grace period the old version is still computed, unchanged.
            assert user_states_now.get("interests@1") == expected_v1[key].get("interests@1")
        # Every reader of the store serves v2 by default from now on.
        reader = SignalReader(SignalRegistry.from_module(shadowed), store)
        user = history.events[0].user_id
        answer = reader.read(user, None, ReadContext.parse({}, now_ms=history.events[-1].ts))
        assert answer.signals["interests"].version == 2
    finally:
        store.close()


def test_old_version_state_is_dropped_after_the_grace_period(
    tmp_path: Path, history: History
) -> None:
    _, both, _, _ = registries(tmp_path)
    store = new_store(tmp_path / "store", history)
    try:
        half = len(history.events) // 2
        stream(store, history, 97, registry=both, upto=half)
        cut_over(store, both, both.get("interests@2"), grace_ms=HOUR_MS)
        stream(store, history, 97, registry=both, upto=half + 200)
        # In the grace period: both versions kept.
        assert all(
            "interests@1" in decode_record(k, v).states for k, v in user_states(store).items()
        )
        # The grace period is over (cut over an hour and more ago): users with new events
        # lose the old version's state; the others keep it until their next event.
        table = load_versions(store)
        table.retired["interests@1"] = 1
        save_versions(store, table)
        stream(store, history, 97, registry=both)
        touched = {e.user_id for e in history.events[half + 200 :]}
        for key, raw in user_states(store).items():
            record = decode_record(key, raw)
            assert "interests@2" in record.states
            if user_of(key) in touched:
                assert "interests@1" not in record.states
        assert load_versions(store).expired(2) == {"interests@1"}
    finally:
        store.close()


def test_a_reader_opened_before_any_cutover_sees_the_first_one(
    tmp_path: Path, history: History
) -> None:
    """A serving worker (a RocksDB secondary) may start before the store has any version
    table, even before the processor's first batch; the first cut-over still reaches it."""
    _, both, _, _ = registries(tmp_path)
    writer = new_store(tmp_path / "store", history)  # tables only: no batch processed yet
    reader_store = RocksStore(tmp_path / "store", read_only=True)
    try:
        reader = SignalReader(SignalRegistry(both.computed), reader_store)
        assert reader.registry.get("interests").version == 1
        stream(writer, history, 97, registry=both)
        cut_over(writer, both, both.get("interests@2"), grace_ms=HOUR_MS)
        reader.refresh()
        assert reader.registry.get("interests").version == 2
        user = history.events[0].user_id
        answer = reader.read(user, None, ReadContext.parse({}, now_ms=history.events[-1].ts))
        assert answer.signals["interests"].version == 2
    finally:
        reader_store.close()
        writer.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_a_training_set_after_a_cut_over_gives_the_served_version(
    tmp_path: Path, history: History, workers: int
) -> None:
    """The training set gives each value as the API would serve it: after a cut-over, the
    column named ``interests`` holds version 2's values (a new user's report: it kept v1's)."""
    shadowed, both, _, v2 = registries(tmp_path)
    store = new_store(tmp_path / "store", history)
    try:
        cut_over(store, both, both.get("interests@2"), grace_ms=HOUR_MS)
    finally:
        store.close()
    archive = write_parquet_archive(tmp_path / "archive", history)
    user, ts = history.events[0].user_id, history.events[-1].ts
    pq.write_table(pa.table({"user_id": [user], "ts": [ts]}), tmp_path / "labels.parquet")
    settings = settings_for(tmp_path / "store")
    settings.signals = shadowed
    out = tmp_path / "features.parquet"
    training_set(
        TrainingJob(tmp_path / "labels.parquet", str(archive), settings, out, workers=workers)
    )
    (row,) = pq.read_table(out).to_pylist()
    alone = new_store(tmp_path / "alone", history)
    try:
        stream(alone, history, 101, registry=v2)
        context = ReadContext.parse({}, now_ms=ts)
        served = SignalReader(v2, alone).read(user, ["interests"], context).signals
    finally:
        alone.close()
    assert json.loads(row["interests"]) == served["interests"].value
