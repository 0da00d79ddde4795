"""The training set's file writer: values streamed in any batch split, a row group at a time,
land on their label rows; rows without values get nulls; Spark-like parts read in row order."""

from __future__ import annotations

import itertools
import subprocess
import sys
from array import array
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usersignals.offline.features_file import (
    _as_string,
    _RowCursor,
    in_row_order,
    read_parts,
    value_batch,
    write_features,
)

NAMES = ["count", "recent[window=7d]"]
#: Each feature column as written: its name and its field's metadata.
COLUMNS = [(name, {"usersignals.signal": name.split("[")[0] + "@1"}) for name in NAMES]


def labels(rows: int) -> pa.Table:
    return pa.table({"user_id": [f"u{i % 7}" for i in range(rows)], "ts": list(range(rows))})


def expected(rows: int, valued: list[int]) -> dict[str, list[str | None]]:
    return {
        name: [f"{index}:{row}" if row in valued else None for row in range(rows)]
        for index, name in enumerate(NAMES)
    }


def values_of(rows: list[int]) -> list[tuple[int, list[bytes]]]:
    return [(row, [f"{index}:{row}".encode() for index in range(len(NAMES))]) for row in rows]


def split(items: list[tuple[int, list[bytes]]], cuts: list[int]) -> list[pa.RecordBatch]:
    bounds = [0, *sorted({c % (len(items) + 1) for c in cuts}), len(items)]
    return [value_batch(items[a:b], len(NAMES)) for a, b in itertools.pairwise(bounds)]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(0, 60),
    keep=st.data(),
    cuts=st.lists(st.integers(0, 60), max_size=6),
    group=st.integers(1, 17),
)
def test_values_land_on_their_rows_whatever_the_batches_and_row_groups(
    tmp_path_factory: pytest.TempPathFactory,
    rows: int,
    keep: st.DataObject,
    cuts: list[int],
    group: int,
) -> None:
    valued = sorted(keep.draw(st.sets(st.integers(0, max(rows - 1, 0)))) if rows else [])
    out = tmp_path_factory.mktemp("features") / "out.parquet"
    table = labels(rows)
    write_features(table, COLUMNS, split(values_of(valued), cuts), out, row_group_rows=group)
    written = pq.read_table(out)
    assert written.column_names == ["user_id", "ts", *NAMES]
    assert written.select(["user_id", "ts"]).equals(table)
    assert {name: written.column(name).to_pylist() for name in NAMES} == expected(rows, valued)
    assert pq.ParquetFile(out).metadata.num_row_groups == -(-rows // group)


@pytest.mark.parametrize(("rows", "group", "cuts"), [(40, 16, [5, 21]), (33, 33, []), (7, 3, [1])])
def test_rows_that_all_have_values_are_written_as_they_came(
    tmp_path: Path, rows: int, group: int, cuts: list[int]
) -> None:
    """The common case (every label row has values, in order), which skips the row lookup."""
    out = tmp_path / "out.parquet"
    write_features(labels(rows), COLUMNS, split(values_of(list(range(rows))), cuts), out, group)
    written = pq.read_table(out)
    assert {name: written.column(name).to_pylist() for name in NAMES} == expected(
        rows, list(range(rows))
    )


def test_the_same_values_in_other_batches_make_the_same_bytes(tmp_path: Path) -> None:
    items = values_of([0, 2, 3, 4, 9, 10, 11])
    write_features(labels(12), COLUMNS, [value_batch(items, 2)], tmp_path / "a", row_group_rows=5)
    write_features(labels(12), COLUMNS, split(items, [1, 2, 5]), tmp_path / "b", row_group_rows=5)
    assert (tmp_path / "a").read_bytes() == (tmp_path / "b").read_bytes()


def test_a_write_stopped_midway_leaves_the_file_before_it_whole(tmp_path: Path) -> None:
    """Found in an ML engineer's trial: Ctrl-C while a training set was rewritten left, at
    `--out`, a valid Parquet file of the row groups written so far (16,384 of 150,000 rows)
    in place of the complete one: the writer closed the file on the way out. The file is
    written beside `--out` and moved over it once complete."""
    out = tmp_path / "out.parquet"
    items = values_of(list(range(12)))
    write_features(labels(12), COLUMNS, [value_batch(items, 2)], out, row_group_rows=4)
    complete = out.read_bytes()

    def stopped_after_one_group() -> Iterator[pa.RecordBatch]:
        yield value_batch(items[:4], 2)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_features(labels(12), COLUMNS, stopped_after_one_group(), out, row_group_rows=4)
    assert out.read_bytes() == complete
    assert [path.name for path in tmp_path.iterdir()] == ["out.parquet"]


def test_parts_are_read_in_row_order_whatever_their_names(tmp_path: Path) -> None:
    # As an orderBy writes them: each part a range of rows, sorted; names say nothing of it.
    ranges = {"part-00000-b.parquet": [7, 8, 11], "part-00001-a.parquet": [0, 1, 5]}
    for name, rows in ranges.items():
        pq.write_table(pa.Table.from_batches([value_batch(values_of(rows), 2)]), tmp_path / name)
    pq.write_table(pa.Table.from_batches([value_batch([], 2)]), tmp_path / "part-00002.parquet")
    (tmp_path / "_SUCCESS").write_bytes(b"")
    read = [row for batch in read_parts(tmp_path) for row in batch.column("row").to_pylist()]
    assert read == [0, 1, 5, 7, 8, 11]


PANDAS_PROBE = """
import sys
from array import array
from pathlib import Path
import pyarrow.parquet as pq
from usersignals.offline.features_file import TextColumns, in_row_order, write_features

labels = pq.ParquetFile(sys.argv[1]).read()
offsets = array("q", [0, 1, 2, 3]).tobytes()
values = TextColumns([2, 0, 1], [(offsets, b"123")]).table()
write_features(labels, [("f", {})], in_row_order([values]), Path(sys.argv[2]))
print("pandas" in sys.modules, "pyarrow.compute" in sys.modules)
"""


def imported_by_a_write(tmp_path: Path) -> list[str]:
    """Whether pandas and pyarrow.compute were imported by writing a features file, in a
    fresh process (``PANDAS_PROBE``); the file is checked too."""
    source, out = tmp_path / "labels.parquet", tmp_path / "out.parquet"
    pq.write_table(labels(3), source)
    probe = subprocess.run(
        [sys.executable, "-c", PANDAS_PROBE, str(source), str(out)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert pq.read_table(out).column("f").to_pylist() == ["2", "3", "1"]
    return probe.stdout.split()


def test_writing_a_training_set_leaves_pandas_unimported(tmp_path: Path) -> None:
    """pyarrow imports pandas, when installed, at its first conversion of a Python sequence
    or to NumPy: 0.35 s in each process of a training set, measured. The native path's
    writer steps (a shard's value table from the core's buffers, the merge, the file) make
    none (the object path's ``value_batch`` still converts Python lists)."""
    pytest.importorskip("pandas")  # without pandas installed, this would prove nothing
    assert imported_by_a_write(tmp_path)[0] == "False"


def test_writing_a_training_set_leaves_pyarrow_compute_unimported(tmp_path: Path) -> None:
    """Its import was about 190 M instructions (callgrind) of a training set, for the one
    ``cast`` of each value column to ``string``; the native path's writer steps make none."""
    assert imported_by_a_write(tmp_path)[1] == "False"


@settings(max_examples=100, deadline=None)
@given(
    texts=st.lists(st.one_of(st.none(), st.text(max_size=5)), max_size=12),
    start=st.integers(0, 12),
    length=st.integers(0, 12),
)
def test_a_text_column_narrowed_to_string_is_its_cast(
    texts: list[str | None], start: int, length: int
) -> None:
    """A ``large_string`` without nulls has its offsets narrowed by NumPy and its texts
    shared; a ``string`` stays as it is; anything else takes the cast; every time, what the
    cast gives (slices included)."""
    for kind in (pa.large_string(), pa.string(), pa.large_binary()):
        column = pa.array(texts, kind).slice(start, length)
        narrowed = _as_string(column)
        assert narrowed.type == pa.string()
        narrowed.validate(full=True)
        assert narrowed.equals(column.cast(pa.string()))


@settings(max_examples=60, deadline=None)
@given(
    rows=st.permutations(list(range(12))),
    cut=st.integers(0, 12),
    sort_first=st.booleans(),
    split=st.integers(0, 12),
    group_rows=st.integers(1, 13),
)
def test_shard_tables_come_out_in_row_order(
    rows: list[int], cut: int, sort_first: bool, split: int, group_rows: int
) -> None:
    """The first shard's table as computed (any row order) and another shard's from its
    file (ascending), each possibly in several chunks that are slices of one batch: one
    stream of batches in ascending row order, ``group_rows`` rows a batch, each row's
    values kept."""
    first, second = rows[:cut], sorted(rows[cut:])
    if sort_first:
        first = sorted(first)
    tables = []
    for part in (first, second):
        batch = value_batch(values_of(part), len(NAMES))
        at = min(split, batch.num_rows)
        tables.append(pa.Table.from_batches([batch.slice(0, at), batch.slice(at)]))
    batches = list(in_row_order(tables, group_rows))
    assert all(batch.num_rows <= group_rows for batch in batches)
    merged = pa.Table.from_batches(batches)
    assert merged.column("row").to_pylist() == list(range(12))
    for index in range(len(NAMES)):
        assert merged.column(index + 1).to_pylist() == [f"{index}:{row}" for row in range(12)]


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(st.integers(0, 10**12), max_size=20, unique=True),
    columns=st.integers(0, 3),
    texts=st.data(),
)
def test_text_columns_come_back_from_their_file_as_written(
    tmp_path_factory: pytest.TempPathFactory, rows: list[int], columns: int, texts: st.DataObject
) -> None:
    """A shard's values as the core wrote them, through their file (written without pyarrow,
    read back memory-mapped): the same table as wrapping them in place."""
    from usersignals.offline.features_file import TextColumns, read_text_columns, write_text_columns

    written = []
    for _ in range(columns):
        values = [texts.draw(st.text(max_size=70)).encode() for _ in rows]
        offsets = array("q", [0])
        for value in values:
            offsets.append(offsets[-1] + len(value))
        written.append((offsets.tobytes(), b"".join(values)))
    path = tmp_path_factory.mktemp("values") / "values-1"
    write_text_columns(TextColumns(rows, written), path)
    assert read_text_columns(path).equals(TextColumns(rows, written).table())


def test_a_row_group_is_assembled_without_reading_the_next_batch() -> None:
    """A group whose rows end where a batch does takes nothing more from the stream: the next
    batch is gathered only when the group after needs it (so that it can be written into the
    memory of the group written before, see ``_sorted_batches``)."""
    batches = split(values_of(list(range(6))), [3])
    pulled: list[int] = []

    def stream() -> Iterator[pa.RecordBatch]:
        for index, batch in enumerate(batches):
            pulled.append(index)
            yield batch

    cursor = _RowCursor(stream())
    assert cursor.aligned(0, 3, len(NAMES))[0].to_pylist() == ["0:0", "0:1", "0:2"]
    assert pulled == [0]
    assert cursor.aligned(3, 3, len(NAMES))[1].to_pylist() == ["1:3", "1:4", "1:5"]
    assert pulled == [0, 1]
