"""Loading an embedded enrichment table from a JSONL or CSV file into the store."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec

from usersignals.enrich.sources import encode_table_record
from usersignals.errors import ConfigurationError
from usersignals.state.store import KeyValueTable

_BATCH = 10_000


def load_table(
    table: KeyValueTable,
    path: Path,
    key: str,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write every record of ``path`` into ``table`` under its ``key`` field; returns the count.

    JSONL and Parquet records keep their types (an embedding stays a list of floats); CSV
    values are strings, except that cells holding a JSON number or array are decoded.
    """
    if not path.is_file():
        raise ConfigurationError(f"table file {str(path)!r} does not exist")
    if path.suffix == ".jsonl":
        records = _jsonl(path)
    elif path.suffix == ".csv":
        records = _csv(path)
    elif path.suffix == ".parquet":
        records = _parquet(path)
    else:
        raise ConfigurationError(f"{path}: tables load from .jsonl, .csv or .parquet files")
    count = 0
    puts: dict[bytes, bytes] = {}
    for line, record in enumerate(records, 1):
        value = record.get(key)
        if value is None or value == "":
            raise ConfigurationError(f"{path}:{line}: record has no key field {key!r}")
        puts[str(value).encode()] = encode_table_record(record)
        if len(puts) >= _BATCH:
            table.write(puts)
            count += len(puts)
            puts = {}
            if progress:
                progress(count)
    if puts:
        table.write(puts)
        count += len(puts)
        if progress:
            progress(count)
    return count


def _jsonl(path: Path) -> Iterator[dict[str, Any]]:
    decoder = msgspec.json.Decoder(dict[str, Any])
    with path.open("rb") as handle:
        for line_number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield decoder.decode(line)
            except msgspec.DecodeError as exc:
                raise ConfigurationError(f"{path}:{line_number}: {exc}") from exc


def _csv(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(newline="") as handle:
        for row in csv.DictReader(handle):
            yield {name: _cell(value) for name, value in row.items()}


def _cell(value: str) -> Any:
    if value[:1] in "[-0123456789":
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _parquet(path: Path) -> Iterator[dict[str, Any]]:
    try:
        import pyarrow.parquet as parquet
    except ModuleNotFoundError:
        raise ConfigurationError(
            "loading Parquet needs pyarrow: pip install 'usersignals[parquet]'"
        ) from None
    for batch in parquet.ParquetFile(path).iter_batches(batch_size=_BATCH):
        yield from batch.to_pylist()
