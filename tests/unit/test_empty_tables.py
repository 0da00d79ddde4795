"""A processor whose signals enrich from an embedded table that holds nothing says so when it
starts: found in a newcomer's trial, the README's Kafka steps ran the processor on a store
whose item table was never loaded, and every event was applied with its enriched fields
missing (categories null, interests empty) without a word."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from usersignals.app import build_processor
from usersignals.config import Settings


def processor_log(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> str:
    settings = Settings.load(environ={}, overrides={"store": {"path": str(tmp_path / "s")}})
    with caplog.at_level(logging.WARNING):
        build_processor(settings).close()
    return caplog.text


def test_an_empty_item_table_is_warned_of(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    said = processor_log(tmp_path, caplog)
    assert "table 'items'" in said
    assert "usersignals tables load items" in said


def test_a_loaded_item_table_is_not(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from usersignals.enrich.sources import encode_table_record
    from usersignals.state.rocks import RocksStore

    store = RocksStore(tmp_path / "s")
    store.table("items").write({b"i1": encode_table_record({"category": "c1"})})
    store.close()
    assert "table 'items'" not in processor_log(tmp_path, caplog)
