"""Loading embedded enrichment tables from JSONL, CSV and Parquet."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from usersignals.enrich import TableSource, load_table
from usersignals.errors import ConfigurationError
from usersignals.state import RocksStore

RECORDS = [
    {"item_id": "i1", "category": "cats", "embedding": [0.5, -0.25], "price": 3},
    {"item_id": "i2", "category": "dogs", "embedding": [1.0, 0.0], "price": 4},
]


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    opened = RocksStore(tmp_path / "store")
    yield opened
    opened.close()


def test_jsonl_keeps_types(store: RocksStore, tmp_path: Path) -> None:
    path = tmp_path / "items.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in RECORDS))
    assert load_table(store.table("items"), path, key="item_id") == 2
    assert TableSource("items", store.table("items")).fetch(["i1", "i3"]) == {"i1": RECORDS[0]}


def test_csv_decodes_json_cells(store: RocksStore, tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text(
        'item_id,category,embedding,price\ni1,cats,"[0.5, -0.25]",3\ni2,dogs,"[1.0, 0.0]",4\n'
    )
    load_table(store.table("items"), path, key="item_id")
    assert TableSource("items", store.table("items")).fetch(["i2"]) == {"i2": RECORDS[1]}


def test_parquet_keeps_types(store: RocksStore, tmp_path: Path) -> None:
    path = tmp_path / "items.parquet"
    pq.write_table(pa.Table.from_pylist(RECORDS), path)
    assert load_table(store.table("items"), path, key="item_id") == 2
    got = TableSource("items", store.table("items")).fetch(["i1", "i2"])
    assert got == {"i1": RECORDS[0], "i2": RECORDS[1]}


def test_bad_files_are_clear_errors(store: RocksStore, tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="does not exist"):
        load_table(store.table("items"), tmp_path / "absent.jsonl", key="item_id")
    other = tmp_path / "items.txt"
    other.write_text("x")
    with pytest.raises(ConfigurationError, match=r"\.jsonl, \.csv or \.parquet"):
        load_table(store.table("items"), other, key="item_id")
    keyless = tmp_path / "keyless.jsonl"
    keyless.write_text('{"category": "cats"}\n')
    with pytest.raises(ConfigurationError, match="no key field 'item_id'"):
        load_table(store.table("items"), keyless, key="item_id")


def test_csv_with_numpy_style_arrays_is_refused_naming_the_column(
    store: RocksStore, tmp_path: Path
) -> None:
    """``str(numpy_array)`` is not JSON: kept as a string, a MeanVector over it was silently
    empty. The file is refused, naming the column and the line."""
    path = tmp_path / "items.csv"
    path.write_text('item_id,category,embedding\ni1,cats,"[0.5 -0.25]"\n')
    with pytest.raises(ConfigurationError) as refused:
        load_table(store.table("items"), path, key="item_id")
    assert "embedding" in str(refused.value)
    assert ":2" in str(refused.value)


def test_csv_cells_with_spaces_around_arrays_and_numbers_are_typed(
    store: RocksStore, tmp_path: Path
) -> None:
    path = tmp_path / "items.csv"
    path.write_text('item_id,embedding,price,code\ni1," [0.5, -0.25] ", 3.5 ,007\n')
    load_table(store.table("items"), path, key="item_id")
    record = TableSource("items", store.table("items")).fetch(["i1"])["i1"]
    assert record == {"item_id": "i1", "embedding": [0.5, -0.25], "price": 3.5, "code": "007"}


def test_csv_declared_types_are_enforced(store: RocksStore, tmp_path: Path) -> None:
    path = tmp_path / "items.csv"
    path.write_text('item_id,embedding,zip\ni1,"[1, 2]",01234\n')
    types = {"embedding": "vector", "zip": "string", "item_id": "string"}
    load_table(store.table("items"), path, key="item_id", types=types)
    record = TableSource("items", store.table("items")).fetch(["i1"])["i1"]
    assert record == {"item_id": "i1", "embedding": [1, 2], "zip": "01234"}
    bad = tmp_path / "bad.csv"
    bad.write_text('item_id,embedding\ni1,"[1, ""x""]"\n')
    with pytest.raises(ConfigurationError, match="embedding"):
        load_table(store.table("items"), bad, key="item_id", types={"embedding": "vector"})
    with pytest.raises(ConfigurationError, match="kind"):
        load_table(store.table("items"), path, key="item_id", types={"zip": "date"})
