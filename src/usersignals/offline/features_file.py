"""The training set's output file, written one row group at a time.

The feature values arrive as Arrow record batches — a ``row`` column (the label's index in
the label file) and one JSON text column per feature, in ascending row order — from
wherever they were computed: the local runner's shards (the first one's table in memory,
the others' files: the core's text columns as it wrote them, :func:`write_text_columns`, or
the object path's Arrow table, :func:`write_values`; merged by :func:`in_row_order`), or the
Parquet parts that Spark's executors wrote (:func:`read_parts`). :func:`write_features`
lines them up with the label table's rows one row group at a time, so it never holds more
than a row group's values, and both runners go through it: they write the same file, byte
for byte.
"""

from __future__ import annotations

import os
from array import array
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from usersignals._core import TextGather

if TYPE_CHECKING:
    from typing_extensions import Buffer

    from usersignals._core import TextBuffer

#: Label rows per row group of the output (and per batch read back from Spark's parts).
ROW_GROUP_ROWS = 16_384
ROW = "row"


def value_names(count: int) -> list[str]:
    """The value columns' names in transit (the real names may be any text: ``a[window=7d]``)."""
    return [f"f{index}" for index in range(count)]


def value_batch(rows: Sequence[tuple[int, Sequence[bytes]]], count: int) -> Any:
    """A record batch of label rows and their ``count`` values (JSON as UTF-8 bytes), in the
    order given."""
    import pyarrow as pa

    arrays = [pa.array([row for row, _ in rows], pa.int64())]
    # Bytes to Arrow binary, then one validating cast to text: a fraction of the cost of
    # building a Python str per value.
    arrays += [
        pa.array([values[i] for _, values in rows], pa.large_binary()).cast(pa.large_string())
        for i in range(count)
    ]
    return pa.RecordBatch.from_arrays(arrays, names=[ROW, *value_names(count)])


def rows_table(rows: Sequence[tuple[int, Sequence[bytes]]], count: int) -> Any:
    """A table of label rows and their ``count`` values (JSON as UTF-8 bytes)."""
    import pyarrow as pa

    batches = [
        value_batch(rows[start : start + ROW_GROUP_ROWS], count)
        for start in range(0, len(rows), ROW_GROUP_ROWS)
    ]
    return pa.Table.from_batches(batches, schema=value_batch([], count).schema)


@dataclass(frozen=True)
class TextColumns:
    """Label rows and the value columns the core wrote for them (``label_rows``): per
    column, its ``len(rows) + 1`` native-endian int64 offsets and its JSON texts one after
    another, an Arrow string column's buffers. Not wrapped by Arrow yet: a shard in a
    process of its own writes them as they are (:func:`write_text_columns`), so that over a
    JSONL archive it never imports pyarrow, 0.13 s of its start-up on the training set's
    critical path (a Parquet archive, or a label left to the object path, still needs it)."""

    rows: Sequence[int]
    columns: Sequence[tuple[bytes, TextBuffer]]

    def table(self) -> Any:
        """The Arrow table: no copy of the texts (the core writes valid UTF-8)."""
        return _text_table(array("q", self.rows), len(self.rows), self.columns)


def _text_table(rows: Buffer, count: int, columns: Sequence[tuple[Buffer, Buffer]]) -> Any:
    """A value table from its buffers: ``count`` rows' int64 numbers, and per column its
    offsets and texts; wrapped as they are."""
    import pyarrow as pa

    # From a buffer, not ``pa.array(rows)``: pyarrow's first conversion of a Python
    # sequence imports pandas when it is installed (pyspark's extra installs it), 0.35 s in
    # every shard process.
    arrays = [pa.Array.from_buffers(pa.int64(), count, [None, pa.py_buffer(rows)])]
    for offsets, data in columns:
        texts = pa.Array.from_buffers(
            pa.large_string(), count, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        )
        texts.validate()  # the offsets' count and bounds; not the texts (full=True would)
        arrays.append(texts)
    return pa.Table.from_arrays(arrays, names=[ROW, *value_names(len(columns))])


def write_text_columns(values: TextColumns, path: Path) -> None:
    """A shard's :class:`TextColumns` as a file for :func:`read_text_columns`, without
    pyarrow: a JSON header line (the row count, each buffer's length), then the row
    numbers and each column's offsets and texts, each section starting at a multiple of
    64 bytes (Arrow's alignment)."""
    buffers: list[Buffer] = [array("q", values.rows)]
    for offsets, data in values.columns:
        buffers += [offsets, data]
    lengths = [memoryview(buffer).nbytes for buffer in buffers]
    header = msgspec.json.encode({"rows": len(values.rows), "lengths": lengths}) + b"\n"
    with path.open("wb") as out:
        out.write(header)
        out.write(bytes(_padding(len(header))))
        for buffer, length in zip(buffers, lengths, strict=True):
            out.write(buffer)
            out.write(bytes(_padding(length)))


def read_text_columns(path: Path) -> Any:
    """The value table of a :func:`write_text_columns` file, memory-mapped: no copy."""
    import pyarrow as pa

    with path.open("rb") as handle:
        header = handle.readline()
    layout = msgspec.json.decode(header)
    mapped = pa.memory_map(str(path)).read_buffer()
    at = len(header) + _padding(len(header))
    sections = []
    for length in layout["lengths"]:
        sections.append(mapped.slice(at, length))
        at += length + _padding(length)
    pairs = list(zip(sections[1::2], sections[2::2], strict=True))
    return _text_table(sections[0], layout["rows"], pairs)


def _padding(length: int) -> int:
    """The bytes after a section of ``length`` bytes up to the next multiple of 64."""
    return -length % 64


def _sorted_batches(tables: Sequence[Any], group_rows: int) -> Iterator[Any]:
    """The value tables' batches in ascending row order (the rows distinct), ``group_rows``
    rows at a time: each text column gathered by the core (:class:`TextGather`), which
    sizes its output once, reads the tables' chunks where they lie, and writes a batch's
    texts into the memory of a batch the file's writer is done with (page faults were 70 %
    of the gather into new memory). Arrow's ``take`` grew its output by doubling, and the
    tables were first joined into one copy: at 1 M events and 50,000 labels (380 MB of
    texts then), without transparent huge pages (as the offline commands run), the ordering
    took 0.33-0.39 s against 0.26-0.34 s with the core's first gather, and the whole write
    1.03-1.32 s against 0.87-1.01 s.

    The order and the row numbers by NumPy, not ``pyarrow.compute``: importing it (0.04 s)
    was its only use in a training set's process."""
    import numpy as np
    import pyarrow as pa

    row_chunks = [chunk for table in tables for chunk in table.column(ROW).chunks]
    rows = np.concatenate([_row_numbers(chunk) for chunk in row_chunks])
    order = np.argsort(rows, kind="stable").astype(np.int64, copy=False)
    names = tables[0].column_names[1:]
    chunks = {
        name: [_text_buffers(chunk) for table in tables for chunk in table.column(name).chunks]
        for name in names
    }
    # A batch's columns' memory is lent again two batches later: the file's writer holds
    # one batch while the next is gathered.
    gather = TextGather(len(names))
    for start in range(0, len(order), group_rows):
        picked = order[start : start + group_rows]  # a contiguous int64 view
        indices = picked.data  # its buffer, as TextGather reads it
        texts = []
        for name in names:
            offsets, data = gather.take(chunks[name], indices)
            texts.append(
                pa.Array.from_buffers(
                    pa.large_string(),
                    len(picked),
                    [None, pa.py_buffer(offsets), pa.py_buffer(data)],
                )
            )
        taken = pa.py_buffer(rows[picked].data)
        numbers = pa.Array.from_buffers(pa.int64(), len(picked), [None, taken])
        yield pa.RecordBatch.from_arrays([numbers, *texts], names=[ROW, *names])


def _text_buffers(texts: Any) -> tuple[Any, Any]:
    """A ``large_string`` array without nulls (a value column's chunk) as its buffers, the
    offsets exactly its own (an array may be a slice of its buffers)."""
    import pyarrow as pa

    if texts.type != pa.large_string() or texts.null_count:
        raise ValueError(f"value texts must be large_string without nulls, not {texts.type}")
    _, offsets, data = texts.buffers()
    return offsets.slice(8 * texts.offset, 8 * (len(texts) + 1)), data


def text_batches(values: Any, rows: int) -> Iterator[Any]:
    """A value table's batches of at most ``rows`` rows, its texts as Arrow ``string`` (not
    ``large_string``): the type a Spark schema's ``string`` takes."""
    import pyarrow as pa

    schema = pa.schema(
        [
            pa.field(ROW, pa.int64()),
            *(pa.field(name, pa.string()) for name in values.column_names[1:]),
        ]
    )
    for batch in values.to_batches(rows):
        yield batch.cast(schema)


def value_rows(values: Any) -> dict[int, list[str]]:
    """A value table's texts by label row, as Python strings: for small tables."""
    columns = [values.column(name).to_pylist() for name in values.column_names]
    return {row: list(texts) for row, *texts in zip(*columns, strict=True)}


def write_values(values: Any, path: Path) -> None:
    """One shard's value table as an Arrow IPC file at ``path``, in the order computed, for
    :func:`read_values` (a shard in a process of its own; the first shard runs in the
    parent's process and hands its table over as it is). Not sorted here: the parent sorts
    the shards' rows together (:func:`in_row_order`), so a sort here was done twice.

    A file, not the table handed back: the JSON texts are large (a LastN of 500 entries is
    several KB), and a shard in a process of its own returned 117 MB through the process
    pool's pipe at about 150 MB/s, as Python bytes or as an Arrow table alike (0.7-0.8 s
    with the parent waiting, about as long as the output file's whole write). Written to
    the scratch directory and memory-mapped back, the same takes a tenth of that."""
    import pyarrow as pa

    with pa.OSFile(str(path), "wb") as sink, pa.ipc.new_file(sink, values.schema) as writer:
        writer.write_table(values)


def read_values(path: Path) -> Any:
    """A shard's value table from its file (:func:`write_values`), memory-mapped."""
    import pyarrow as pa

    return pa.ipc.open_file(pa.memory_map(str(path))).read_all()


def in_row_order(tables: Sequence[Any], group_rows: int = ROW_GROUP_ROWS) -> Iterator[Any]:
    """The value batches of the shards' tables (the rows of different tables distinct) in
    ascending row order, ``group_rows`` rows a batch, as :func:`write_features` takes them:
    a lone table whose rows ascend already as it is, anything else gathered into order."""
    import numpy as np

    filled = [table for table in tables if table.num_rows]
    if not filled:
        return
    if len(filled) == 1:
        # NumPy, not pyarrow.compute: its import (0.04 s) was the job's only use of it.
        rows = np.concatenate([_row_numbers(chunk) for chunk in filled[0].column(ROW).chunks])
        if bool(np.all(rows[:-1] < rows[1:])):
            yield from filled[0].to_batches(group_rows)
            return
    yield from _sorted_batches(filled, group_rows)


def write_features(
    table: Any,
    columns: Sequence[tuple[str, Mapping[str, str]]],
    batches: Iterable[Any],
    out: Path,
    row_group_rows: int = ROW_GROUP_ROWS,
) -> None:
    """The label table with a JSON text column per feature (``columns``: each its name and
    its field's metadata), in the label file's row order.

    ``batches`` hold each valid label's values (see :func:`value_batch`), rows ascending;
    a row without values (no user or no time in the label file) gets nulls.

    Each row group is put together on one helper thread while the one before is written:
    both steps run in Arrow with the GIL released, so a second core overlaps them. Putting a
    group together copies its values into row order (sorting the shards' values), which
    took 2.9 of the 6.4 s the file took at 1 M events and 100,000 labels from 2 shards, with
    the write the rest (timed per phase, py-spy)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    fields = [pa.field(name, pa.string(), metadata=dict(meta)) for name, meta in columns]
    names = [name for name, _ in columns]
    schema = pa.schema([*table.schema, *fields], metadata=table.schema.metadata)
    cursor = _RowCursor(iter(batches))

    def group(start: int) -> Any:
        labels = table.slice(start, row_group_rows).combine_chunks()
        values = cursor.aligned(start, labels.num_rows, len(names))
        return pa.Table.from_arrays([*labels.columns, *values], schema=schema)

    out.parent.mkdir(parents=True, exist_ok=True)
    starts = range(0, table.num_rows, row_group_rows)
    # Written beside `out` and moved over it once whole: a job stopped midway (Ctrl-C) left
    # at `out` a valid file of the groups written so far, in place of the complete one.
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    try:
        # One thread: the cursor walks the batches in order, so the groups come in order.
        with pq.ParquetWriter(partial, schema) as writer, ThreadPoolExecutor(1) as assembler:
            pending = deque(assembler.submit(group, start) for start in starts[:1])
            for following in starts[1:]:
                pending.append(assembler.submit(group, following))  # made while one writes
                writer.write_table(pending.popleft().result(), row_group_size=row_group_rows)
            for last in pending:
                writer.write_table(last.result(), row_group_size=row_group_rows)
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)


class _RowCursor:
    """Walks the value batches in row order, one span of label rows at a time."""

    def __init__(self, batches: Iterator[Any]) -> None:
        self._batches = batches
        self._pending: Any = None

    def aligned(self, start: int, count: int, columns: int) -> list[Any]:
        """Each value column for label rows ``start`` to ``start + count``, nulls where a
        row has no values."""
        import numpy as np
        import pyarrow as pa

        taken = self._take_below(start + count)
        if not taken:
            return [pa.nulls(count, pa.string()) for _ in range(columns)]
        values = pa.Table.from_batches(taken).combine_chunks()
        rows = _row_numbers(values.column(ROW).chunk(0))
        if len(rows) == count and rows[0] == start and rows[-1] == start + count - 1:
            # Every row has values, in order (rows ascend without repeats): the columns are
            # the answer as they are. The common case, and ``take`` copied every JSON text
            # (a tenth of a training set's time, measured with py-spy).
            return [_as_string(values.column(name).chunk(0)) for name in value_names(columns)]
        # Where each label row's values are, or -1 (a null in ``take``) for none.
        where = np.full(count, -1, dtype=np.int64)
        where[rows - start] = np.arange(len(rows), dtype=np.int64)
        indices = pa.array(where, mask=where < 0)
        return [
            values.column(name).take(indices).combine_chunks().cast(pa.string())
            for name in value_names(columns)
        ]

    def _take_below(self, end: int) -> list[Any]:
        import numpy as np

        taken: list[Any] = []
        while True:
            batch = self._pending if self._pending is not None else next(self._batches, None)
            self._pending = None
            if batch is None:
                return taken
            rows = _row_numbers(batch.column(ROW))
            cut = int(np.searchsorted(rows, end))
            if cut:
                taken.append(batch.slice(0, cut))
            if cut < batch.num_rows:
                self._pending = batch.slice(cut)
                return taken
            if cut and rows[cut - 1] == end - 1:
                # Rows ascend: none below ``end`` can follow. Not reading the next batch
                # yet keeps one batch fewer alive, and lets the next be gathered into the
                # memory of the one written before (see ``_sorted_batches``).
                return taken


def _as_string(texts: Any) -> Any:
    """A ``large_string`` array as ``string``, the texts' buffer shared: only the offsets
    are narrowed, by NumPy. Not ``cast``: its first call imported ``pyarrow.compute``,
    about 190 M instructions (callgrind), a training set's only use of it. A ``string``
    array (Spark's parts) is the answer as it is; one with nulls or of another type, or
    with more than 2 GiB of texts (where the cast raises), takes the cast."""
    import numpy as np
    import pyarrow as pa

    if texts.type == pa.string():
        return texts
    if texts.type != pa.large_string():
        return texts.cast(pa.string())
    _, offsets_buffer, data = texts.buffers()
    offsets = np.frombuffer(offsets_buffer, np.int64, len(texts) + 1, 8 * texts.offset)
    if texts.null_count or data is None or int(offsets[-1] - offsets[0]) > np.iinfo(np.int32).max:
        return texts.cast(pa.string())
    narrowed = (offsets - offsets[0]).astype(np.int32)
    texts_buffer = data.slice(int(offsets[0]), int(offsets[-1] - offsets[0]))
    return pa.Array.from_buffers(
        pa.string(), len(texts), [None, pa.py_buffer(narrowed), texts_buffer]
    )


def _row_numbers(rows: Any) -> Any:
    """An Arrow ``int64`` array without nulls (a value table's rows) as a NumPy view of its
    buffer. Not ``to_numpy()``: pyarrow's first conversion to NumPy or from a Python
    sequence imports pandas when it is installed, 0.35 s in each process."""
    import numpy as np

    return np.frombuffer(rows.buffers()[1], np.int64, len(rows), 8 * rows.offset)


def read_parts(directory: Path) -> Iterator[Any]:
    """The value batches of a directory of Parquet parts, each sorted by row and holding a
    range of rows (as a Spark ``orderBy`` writes them), in row order: a row group at a time."""
    import pyarrow.parquet as pq

    parts = []
    for path in sorted(directory.glob("*.parquet")):
        if path.name.startswith((".", "_")):
            continue
        handle = pq.ParquetFile(path)
        if handle.metadata.num_rows:
            first = handle.read_row_group(0, columns=[ROW]).column(0)[0].as_py()
            parts.append((first, path, handle))
    for _, _, handle in sorted(parts, key=lambda part: part[0]):
        yield from handle.iter_batches(batch_size=ROW_GROUP_ROWS)
