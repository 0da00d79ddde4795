"""The event archive reader: every shape a data lake export takes, the live path's validation."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from usersignals import ConfigurationError, Event, EventDecoder, Position
from usersignals.ingest import archive
from usersignals.ingest.archive import ArchiveFile, EventArchive, file_blocks
from usersignals.ingest.dead_letter import DeadLetterFile

TS = 1_767_225_600_000
EVENT = {
    "event_id": "e1",
    "user_id": "u1",
    "item_id": "i1",
    "action": "save",
    "surface": "home",
    "ts": TS,
}


def read(location: Path | str, dead: Path | None = None) -> list[tuple[Event, Position]]:
    letters = DeadLetterFile(dead) if dead else None
    try:
        return [
            pair
            for block in EventArchive(location).decoded(EventDecoder(), letters)
            for pair in zip(block.events, block.positions, strict=True)
        ]
    finally:
        if letters is not None:
            letters.close()


def test_parquet_event_columns_with_timestamps_and_map_attrs(tmp_path: Path) -> None:
    table = pa.table(
        {
            "event_id": ["e1", "e2"],
            "user_id": ["u1", "u2"],
            "item_id": ["i1", "i2"],
            "action": ["save", "click"],
            "surface": ["home", "search"],
            "ts": pa.array(
                [datetime.fromtimestamp(TS / 1000, UTC)] * 2, pa.timestamp("us", tz="UTC")
            ),
            "attrs": pa.array([[("dwell", "5")], None], pa.map_(pa.string(), pa.string())),
            "exported_at": ["x", "y"],  # extra columns are ignored, as by the live decoder
        }
    )
    (tmp_path / "dt=2026-01-01").mkdir()
    pq.write_table(table, tmp_path / "dt=2026-01-01" / "part-0.parquet")
    (tmp_path / "_SUCCESS").write_text("")  # Spark's marker files are not data
    pairs = read(tmp_path)
    assert [e.event_id for e, _ in pairs] == ["e1", "e2"]
    assert pairs[0][0].ts == TS
    assert pairs[0][0].attrs == {"dwell": "5"}
    assert pairs[1][0].attrs is None
    assert [p for _, p in pairs] == [
        Position("archive:dt=2026-01-01/part-0.parquet", 1),
        Position("archive:dt=2026-01-01/part-0.parquet", 2),
    ]


def test_parquet_with_kafka_coordinates_gets_the_live_positions(tmp_path: Path) -> None:
    table = pa.table(
        {
            **{k: [v] for k, v in EVENT.items()},
            "topic": ["engagements"],
            "partition": [4],
            "offset": [1234],
        }
    )
    pq.write_table(table, tmp_path / "a.parquet")
    ((event, position),) = read(tmp_path / "a.parquet")
    assert event == msgspec.convert(EVENT, Event)
    assert position == Position("engagements/4", 1234)


def test_jsonl_envelopes_with_object_or_string_values_and_bad_records(tmp_path: Path) -> None:
    lines = [
        {"topic": "t", "partition": 0, "offset": 7, "value": EVENT},
        {
            "topic": "t",
            "partition": 0,
            "offset": 8,
            "value": json.dumps({**EVENT, "event_id": "e2"}),
        },
        {"topic": "t", "partition": 1, "offset": 3, "value": {**EVENT, "action": 5}},
        {"topic": "t", "partition": 1, "offset": "four", "value": EVENT},
    ]
    (tmp_path / "export.jsonl").write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    pairs = read(tmp_path / "export.jsonl", tmp_path / "dead.jsonl")
    assert [(e.event_id, p) for e, p in pairs] == [
        ("e1", Position("t/0", 7)),
        ("e2", Position("t/0", 8)),
    ]
    dead = [json.loads(line) for line in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(d["reason"], d["partition"], d["offset"]) for d in dead] == [
        ("wrong_type", "t/1", 3),
        # An unreadable envelope is passed to the decoder whole, positioned by file and line.
        ("missing_field", "archive:export.jsonl", 4),
    ]


# A JSONL file's lines: plain events, blank lines, and (as the first record, which decides
# the file's shape) a Kafka envelope.
_PLAIN = json.dumps(EVENT).encode() + b"\n"
_ENVELOPE = json.dumps({"topic": "t", "partition": 0, "offset": 5, "value": EVENT}).encode()


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.sampled_from([_PLAIN, b"\n", b"  \r\n"]), max_size=40),
    st.booleans(),
    st.booleans(),
    st.integers(1, 7),
    st.integers(1, 300),
)
def test_jsonl_blocks_hold_every_record_with_its_line_number(
    tmp_path_factory: pytest.TempPathFactory,
    lines: list[bytes],
    envelope_first: bool,
    last_unterminated: bool,
    block_size: int,
    read_bytes: int,
) -> None:
    # Lines end with a newline except, maybe, the file's last; the reader takes the file a
    # few lines at a time (read_bytes), so blocks and reads cut the lines anywhere.
    if envelope_first:
        lines = [_ENVELOPE + b"\n", *lines]
    if lines and last_unterminated:
        lines[-1] = lines[-1].rstrip(b"\r\n")
    path = tmp_path_factory.mktemp("archive") / "part.jsonl"
    path.write_bytes(b"".join(lines))
    expected = [(number, line) for number, line in enumerate(lines, 1) if line.strip()]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(archive, "_READ_BYTES", read_bytes)
        blocks = list(file_blocks(ArchiveFile(path, "part.jsonl"), block_size))
    assert all(len(block.lines) == block_size for block in blocks[:-1])
    assert all(0 < len(block.lines) <= block_size for block in blocks[-1:])
    got = [pair for block in blocks for pair in zip(block.positions, block.lines, strict=True)]
    assert len(got) == len(expected)
    for (position, raw), (number, line) in zip(got, expected, strict=True):
        if envelope_first and line.startswith(b"{"):
            # Every record of an export is opened as an envelope: the envelope's event,
            # at its Kafka position; a plain event line is passed on whole, by its line.
            if line.startswith(_ENVELOPE):
                assert (position, msgspec.json.decode(raw)) == (Position("t/0", 5), EVENT)
            else:
                assert (position, raw) == (Position("archive:part.jsonl", number), line)
        else:
            assert (position, raw) == (Position("archive:part.jsonl", number), line)


def test_glob_of_plain_jsonl_files_in_name_order(tmp_path: Path) -> None:
    for name, event_id in (("b.jsonl", "e2"), ("a.jsonl", "e1"), ("c.txt", "e3")):
        (tmp_path / name).write_text(json.dumps({**EVENT, "event_id": event_id}) + "\n")
    pairs = read(str(tmp_path / "*.jsonl"))
    assert [(e.event_id, p) for e, p in pairs] == [
        ("e1", Position("archive:a.jsonl", 1)),
        ("e2", Position("archive:b.jsonl", 1)),
    ]


@pytest.mark.parametrize("glob", [False, True])
def test_files_are_read_in_the_order_of_their_names(tmp_path: Path, glob: bool) -> None:
    """By relative name as text, so positions sort in the archive's order: ``a-b/`` before
    ``a/`` ('-' < '/'), though a path comparison, part by part, puts ``a`` first."""
    for folder, event_id in (("a", "e2"), ("a-b", "e1")):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "x.jsonl").write_text(json.dumps({**EVENT, "event_id": event_id}))
    pairs = read(str(tmp_path / "*" / "*.jsonl") if glob else tmp_path)
    assert [e.event_id for e, _ in pairs] == ["e1", "e2"]
    places = [(p.partition, p.offset) for _, p in pairs]
    assert places == sorted(places)


def test_an_archive_without_event_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "_SUCCESS").write_text("")  # skipped, as Spark's markers are
    with pytest.raises(ConfigurationError, match=r"no \.jsonl"):
        EventArchive(tmp_path)
    with pytest.raises(ConfigurationError, match=r"matches nothing"):
        EventArchive(tmp_path / "missing" / "*.parquet")
    with pytest.raises(ConfigurationError, match=r"events\.jsonl' does not exist"):
        EventArchive(tmp_path / "events.jsonl")


def test_a_glob_of_partition_directories_reads_the_files_in_them(tmp_path: Path) -> None:
    """``dt=2026-01-1*`` names Hive partitions (directories), as a day's files would."""
    for day, event_id in (("dt=2026-01-12", "e2"), ("dt=2026-01-11", "e1"), ("dt=2026-01-20", "x")):
        (tmp_path / day).mkdir()
        (tmp_path / day / "part.jsonl").write_text(json.dumps({**EVENT, "event_id": event_id}))
    pairs = read(str(tmp_path / "dt=2026-01-1*"))
    assert [(e.event_id, p) for e, p in pairs] == [
        ("e1", Position("archive:dt=2026-01-11/part.jsonl", 1)),
        ("e2", Position("archive:dt=2026-01-12/part.jsonl", 1)),
    ]


@pytest.mark.parametrize(
    "first",
    [
        json.dumps({**EVENT, "event_id": "e0"}).encode().replace(b'"i1"', b'"i\xff"'),  # not UTF-8
        b"[" * 3000 + b"]" * 3000,  # nested deeper than the decoder goes
        b'{"topic": "t", "partition": 0, "offset": 1, "value": {',  # a truncated envelope
    ],
)
@pytest.mark.parametrize("envelopes", [False, True])
def test_a_bad_first_record_is_a_dead_letter_and_the_file_is_read_as_its_shape(
    tmp_path: Path, first: bytes, envelopes: bool
) -> None:
    """Found by the offline differential fuzz: a first line that was not UTF-8, or nested
    too deeply, ended backfill and training-set with a traceback (the shape check caught
    only msgspec's DecodeError); a malformed first record of a Kafka export made every
    envelope after it a dead letter. The shape is decided by the first record that reads."""
    good = {**EVENT, "event_id": "e2"}
    line = {"topic": "t", "partition": 0, "offset": 2, "value": good} if envelopes else good
    (tmp_path / "a.jsonl").write_bytes(first + b"\n" + json.dumps(line).encode() + b"\n")
    pairs = read(tmp_path / "a.jsonl", tmp_path / "dead.jsonl")
    assert [event.event_id for event, _ in pairs] == ["e2"]
    assert pairs[0][1] == (Position("t/0", 2) if envelopes else Position("archive:a.jsonl", 2))
    dead = [json.loads(row) for row in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert len(dead) == 1


def test_envelopes_without_a_value_are_dead_letters_with_the_live_reasons(tmp_path: Path) -> None:
    """Found by the offline differential fuzz: an export envelope whose value was "" or
    blank was skipped silently, and a null value was a `wrong_type`; the live Kafka path
    dead-letters them as `empty_value` and `null_value`."""
    values: list[object] = [EVENT, "", "   ", None, {**EVENT, "event_id": "e2"}]
    lines = [{"topic": "t", "partition": 0, "offset": n, "value": v} for n, v in enumerate(values)]
    (tmp_path / "export.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    pairs = read(tmp_path / "export.jsonl", tmp_path / "dead.jsonl")
    assert [(e.event_id, p.offset) for e, p in pairs] == [("e1", 0), ("e2", 4)]
    dead = [json.loads(row) for row in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(d["reason"], d["partition"], d["offset"]) for d in dead] == [
        ("empty_value", "t/0", 1),
        ("empty_value", "t/0", 2),
        ("null_value", "t/0", 3),
    ]


def test_parquet_rows_without_a_value_are_dead_letters_with_the_live_reasons(
    tmp_path: Path,
) -> None:
    rows = [
        {"topic": "t", "partition": 0, "offset": n, "value": value}
        for n, value in enumerate([json.dumps(EVENT).encode(), b"", None])
    ]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "export.parquet")
    pairs = read(tmp_path / "export.parquet", tmp_path / "dead.jsonl")
    assert [(e.event_id, p.offset) for e, p in pairs] == [("e1", 0)]
    dead = [json.loads(row) for row in (tmp_path / "dead.jsonl").read_text().splitlines()]
    assert [(d["reason"], d["offset"]) for d in dead] == [("empty_value", 1), ("null_value", 2)]


def test_a_parquet_archive_without_pyarrow_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # pyarrow is an optional dependency (usersignals[parquet]); found in review: signals
    # preview, which now reads archives, ended in a ModuleNotFoundError traceback.
    import builtins

    real_import = builtins.__import__

    def without_pyarrow(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith("pyarrow"):
            raise ModuleNotFoundError(name)
        return real_import(name, *args, **kwargs)

    path = tmp_path / "events.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setattr(builtins, "__import__", without_pyarrow)
    with pytest.raises(ConfigurationError, match=r"pip install 'usersignals\[parquet\]'"):
        list(EventArchive(path).blocks())


@pytest.mark.parametrize("content", [b"not parquet", b"PAR1" + b"\0" * 8])
def test_a_file_that_is_not_parquet_is_refused_naming_it(tmp_path: Path, content: bytes) -> None:
    """A ``.parquet`` file that pyarrow cannot open (a partial upload, another format) is one
    line naming the file, not pyarrow's traceback from the middle of a job."""
    folder = tmp_path / "dt=2026-01-01"
    folder.mkdir()
    pq.write_table(pa.table({k: [v] for k, v in EVENT.items()}), folder / "a.parquet")
    (folder / "b.parquet").write_bytes(content)
    with pytest.raises(ConfigurationError, match=r"dt=2026-01-01/b\.parquet") as caught:
        read(tmp_path)
    assert "\n" not in str(caught.value)


def test_gzipped_jsonl_is_read_and_a_file_of_another_kind_is_refused(tmp_path: Path) -> None:
    """Found in an ML engineer's trial: a day's part gzipped (`.jsonl.gz`) was skipped
    without a word, and the training set counted 10 events where there were 20 (rc 0).
    A JSONL file compressed with gzip is read; a file of a kind the archive does not read
    is refused, named (Spark's and Hadoop's `_SUCCESS`, `.crc` and dot files stay skipped)."""
    import gzip

    (tmp_path / "day1.jsonl").write_text(json.dumps(EVENT) + "\n")
    (tmp_path / "day2.jsonl.gz").write_bytes(
        gzip.compress((json.dumps({**EVENT, "event_id": "e2"}) + "\n").encode())
    )
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".part.crc").write_text("")
    pairs = read(tmp_path)
    assert [(e.event_id, p) for e, p in pairs] == [
        ("e1", Position("archive:day1.jsonl", 1)),
        ("e2", Position("archive:day2.jsonl.gz", 1)),
    ]
    (tmp_path / "day3.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(ConfigurationError) as caught:
        EventArchive(tmp_path)
    assert "day3.jsonl.zst, notes.txt" in str(caught.value)


@pytest.mark.parametrize("content", [b"", b"not gzip at all\n"])
def test_a_gzipped_file_cut_short_or_not_gzip_is_refused_naming_it(
    tmp_path: Path, content: bytes
) -> None:
    """A review's find: gzip's own error (EOFError, BadGzipFile) named no file and was not
    the package's; the Parquet path already named the file in one line."""
    import gzip

    whole = gzip.compress((json.dumps(EVENT) + "\n").encode() * 1000)
    (tmp_path / "day.jsonl.gz").write_bytes(content or whole[: len(whole) // 2])
    with pytest.raises(ConfigurationError, match=r"cannot read the event archive's file day"):
        read(tmp_path)


def test_an_archive_of_only_unread_kinds_names_them(tmp_path: Path) -> None:
    (tmp_path / "day.jsonl.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    with pytest.raises(ConfigurationError, match=r"does not read: day\.jsonl\.zst"):
        EventArchive(tmp_path)


@pytest.mark.parametrize("location", ["events", "events/*.jsonl", "events/dt=*", "events/a.jsonl"])
def test_a_path_inside_an_archive_is_known_for_one(tmp_path: Path, location: str) -> None:
    """The dead-letter guard's question, for a directory, globs and a file (a review's find:
    a glob archive let the dead letters be written where the next job reads them)."""
    (tmp_path / "events").mkdir()
    (tmp_path / "events" / "a.jsonl").write_text(json.dumps(EVENT) + "\n")
    where = str(tmp_path / location)
    inside = tmp_path / "events" / ("a.jsonl" if location.endswith("a.jsonl") else "dead.jsonl")
    assert archive.inside_archive(where, inside)
    assert not archive.inside_archive(where, tmp_path / "dead.jsonl")
