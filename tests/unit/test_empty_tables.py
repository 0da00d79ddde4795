"""A processor whose signals enrich from an embedded table that holds nothing says so when it
starts consuming: found in a newcomer's trial, the README's Kafka steps ran the processor on a
store whose item table was never loaded, and every event was applied with its enriched fields
missing (categories null, interests empty) without a word. Said when the processor starts,
not when it is built: `./dev demo` (and bench/backfill.py) build it, load the table through
its store, then process, and were told at the top of their output that the table was empty."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from usersignals.app import build_processor, build_spool_runner
from usersignals.config import Settings
from usersignals.enrich.sources import encode_table_record
from usersignals.state.rocks import RocksStore


def settings_of(tmp_path: Path) -> Settings:
    return Settings.load(
        environ={},
        overrides={
            "store": {"path": str(tmp_path / "s")},
            "spool": {"path": str(tmp_path / "spool")},
        },
    )


def load_items(store: RocksStore) -> None:
    store.table("items").write({b"i1": encode_table_record({"category": "c1"})})


def runner_log(tmp_path: Path, caplog: pytest.LogCaptureFixture, *, load: bool) -> str:
    """What building a processor, loading the item table (or not) and starting the spool
    runner says."""
    with caplog.at_level(logging.WARNING):
        processor = build_processor(settings_of(tmp_path))
        if load:
            assert isinstance(processor.store, RocksStore)
            load_items(processor.store)
        build_spool_runner(processor).close()
    return caplog.text


def test_an_empty_item_table_is_warned_of(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    said = runner_log(tmp_path, caplog, load=False)
    assert "table 'items'" in said
    assert "usersignals tables load items" in said


def test_a_table_loaded_before_the_start_is_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    assert "table 'items'" not in runner_log(tmp_path, caplog, load=True)


def test_a_table_loaded_before_the_build_is_not(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RocksStore(tmp_path / "s")
    load_items(store)
    store.close()
    assert "table 'items'" not in runner_log(tmp_path, caplog, load=False)
