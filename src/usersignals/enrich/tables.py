"""Loading an embedded enrichment table from a JSONL or CSV file into the store."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import msgspec

from usersignals.enrich.sources import encode_table_record
from usersignals.errors import ConfigurationError
from usersignals.input_files import check_input_file
from usersignals.optional_deps import require_pyarrow
from usersignals.state.store import KeyValueTable

_BATCH = 10_000


#: Kinds a CSV column can be declared as (``types={"embedding": "vector"}``).
CSV_KINDS = ("string", "number", "vector", "json")


def check_table_input(path: Path, types: Mapping[str, str] | None = None) -> None:
    """Refuses a table file that is not there, or a column kind that does not exist (a
    command checks before it opens the store, so that a mistake leaves no empty store)."""
    for column, kind in (types or {}).items():
        if kind not in CSV_KINDS:
            raise ConfigurationError(
                f"column {column!r}: unknown kind {kind!r}; kinds: {', '.join(CSV_KINDS)}"
            )
    check_input_file(path, "table file")


def load_table(
    table: KeyValueTable,
    path: Path,
    key: str,
    progress: Callable[[int], None] | None = None,
    types: Mapping[str, str] | None = None,
) -> int:
    """Write every record of ``path`` into ``table`` under its ``key`` field; returns the count.

    JSONL and Parquet records keep their types (an embedding stays a list of floats). CSV
    cells are typed: a column declared in ``types`` must hold its kind (``string``,
    ``number``, ``vector`` — a JSON array of numbers — or ``json``); an undeclared cell holding
    a JSON number (no leading zeros: ids like ``007`` stay strings), array or object is decoded,
    and a cell that looks like an array or object but is not JSON (``[0.5 -0.25]``, as
    ``str(numpy_array)`` writes it) refuses the file, naming the column and line: loaded as a
    string, it would make a ``MeanVector`` silently empty.
    """
    check_table_input(path, types)
    if path.suffix == ".jsonl":
        records = _jsonl(path)
    elif path.suffix == ".csv":
        records = _csv(path, dict(types or {}))
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


def _csv(path: Path, types: dict[str, str]) -> Iterator[dict[str, Any]]:
    with path.open(newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), 2):
            record: dict[str, Any] = {}
            for name, value in row.items():
                try:
                    record[name] = _typed(value, types.get(name))
                except ValueError as exc:
                    raise ConfigurationError(f"{path}:{line}: column {name!r}: {exc}") from None
            yield record


def _typed(value: str, kind: str | None) -> Any:
    text = value.strip()
    if kind == "string":
        return value
    if kind is None:
        if text[:1] in ("[", "{"):
            return _json_cell(text, "a JSON array or object")
        if text[:1] in "-0123456789" and text:
            try:
                return json.loads(text)
            except ValueError:
                return value  # "007", "12ab": a string
        return value
    decoded = _json_cell(text, f"a {kind}")
    if kind == "number" and (isinstance(decoded, bool) or not isinstance(decoded, int | float)):
        raise ValueError(f"{text!r} is not a number")
    if kind == "vector" and not (
        isinstance(decoded, list)
        and all(isinstance(x, int | float) and not isinstance(x, bool) for x in decoded)
    ):
        raise ValueError(f"{text!r} is not a JSON array of numbers")
    return decoded


def _json_cell(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise ValueError(f"{text[:40]!r} is not {what}") from None


def _parquet(path: Path) -> Iterator[dict[str, Any]]:
    require_pyarrow("loading Parquet")
    import pyarrow.parquet as parquet

    for batch in parquet.ParquetFile(path).iter_batches(batch_size=_BATCH):
        yield from batch.to_pylist()
