"""Which file a replay's progress belongs to: two files of one name are two sources, one
file replayed again (or grown since) is the same source."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from usersignals import Engine, Event, RocksStore, SignalRegistry
from usersignals.events import EventDecoder, EventPolicy, encode_events
from usersignals.ingest.dead_letter import DeadLetterFile
from usersignals.ingest.files import JsonlSource
from usersignals.processing.pipeline import PipelineStats
from usersignals.processing.replay import replay_file
from usersignals.state.codec import decode_record
from usersignals.state.keys import FILE_SOURCES_KEY

BASE = 1_767_225_600_000
HOUR = 3_600_000
MODULE = (
    "from usersignals import Count, Signal, days\n"
    "c = Signal(name='c', version=1, aggregate=Count(by=('action',)), retention=days(30))\n"
)


def events() -> list[Event]:
    """400 events of 20 users over 10 days: the later half is more than the de-duplication
    horizon (24 h) after the earlier one, so no id of it could rescue a skipped event."""
    return [
        Event(
            f"e{i}", f"u{i % 20}", f"i{i % 7}", ("click", "save")[i % 2], "home", BASE + i * 600_000
        )
        for i in range(400)
    ]


def write(path: Path, part: list[Event]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_events(part))
    return path


def states(store: RocksStore) -> dict[bytes, object]:
    """Each user's signal states (their progress differs with the files' names)."""
    return {key: decode_record(key, value).states for key, value in store.scan(b"u:")}


class Replayer:
    def __init__(self, root: Path) -> None:
        module = root / "signals.py"
        module.parent.mkdir(parents=True, exist_ok=True)
        module.write_text(MODULE)
        self.store = RocksStore(root / "store")
        self.engine = Engine(SignalRegistry.from_module(str(module)), self.store)
        self.dead = root / "dead.jsonl"

    def replay(self, path: Path) -> PipelineStats:
        with DeadLetterFile(self.dead) as dead:
            return replay_file(
                JsonlSource(path, block_size=50), EventDecoder(EventPolicy()), self.engine, dead
            )


def test_two_files_of_one_name_are_both_applied_in_full(tmp_path: Path) -> None:
    all_events = events()
    one = write(tmp_path / "d1" / "events.jsonl", all_events[:200])
    two = write(tmp_path / "d2" / "events.jsonl", all_events[200:])
    whole = write(tmp_path / "whole" / "events.jsonl", all_events)
    split, combined = Replayer(tmp_path / "split"), Replayer(tmp_path / "combined")
    try:
        assert split.replay(one).report.applied == {"c@1": 200}
        second = split.replay(two)
        assert second.report.duplicates == 0
        assert second.report.applied == {"c@1": 200}
        combined.replay(whole)
        assert states(split.store) == states(combined.store)
        # Each file replayed again is recognised, whichever came first: nothing applied.
        for path in (two, one):
            again = split.replay(path)
            assert (again.report.duplicates, again.report.applied) == (200, {})
        assert states(split.store) == states(combined.store)
    finally:
        split.store.close()
        combined.store.close()


def test_a_file_grown_since_its_replay_applies_only_its_new_lines(tmp_path: Path) -> None:
    all_events = events()
    path = write(tmp_path / "events.jsonl", all_events[:150])
    grown, whole = Replayer(tmp_path / "grown"), Replayer(tmp_path / "whole")
    try:
        grown.replay(path)
        with path.open("ab") as handle:
            handle.write(encode_events(all_events[150:]))
        again = grown.replay(path)
        assert (again.report.duplicates, again.report.applied) == (150, {"c@1": 250})
        whole.replay(write(tmp_path / "whole" / "events.jsonl", all_events))
        assert states(grown.store) == states(whole.store)
    finally:
        grown.store.close()
        whole.store.close()


def test_a_first_line_still_being_written_is_not_taken_for_the_files_identity(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Found in review: a replay while the writer was still at the first line fingerprinted
    the part written so far, so the finished file was taken for another file of its name
    (said so in a warning, and kept under a second source id)."""
    all_events = events()
    lines = encode_events(all_events)
    path = tmp_path / "events.jsonl"
    path.write_bytes(lines[:20])  # the writer part-way through its first line
    grown, whole = Replayer(tmp_path / "grown"), Replayer(tmp_path / "whole")
    try:
        assert grown.replay(path).bad == 1  # not an event yet: a dead letter
        path.write_bytes(lines)
        with caplog.at_level(logging.WARNING, logger="usersignals.ingest.file_sources"):
            again = grown.replay(path)
        assert "another file named" not in caplog.text
        assert (again.report.duplicates, again.report.applied) == (0, {"c@1": 400})
        whole.replay(write(tmp_path / "whole" / "events.jsonl", all_events))
        assert states(grown.store) == states(whole.store)
    finally:
        grown.store.close()
        whole.store.close()


def test_a_store_with_users_and_no_record_of_its_files_says_what_it_assumes(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A store replayed into before it kept its files' identities: the first file of a name
    is taken to be the one replayed then, which the replay cannot tell, so it says so."""
    all_events = events()
    replayer = Replayer(tmp_path)
    try:
        replayer.replay(write(tmp_path / "d1" / "events.jsonl", all_events[:200]))
        replayer.store.write({}, deletes=[FILE_SOURCES_KEY])  # as an older release left it
        with caplog.at_level(logging.WARNING, logger="usersignals.ingest.file_sources"):
            replayer.replay(write(tmp_path / "d2" / "events.jsonl", all_events[200:]))
        assert "no record of the files replayed into it" in caplog.text
        assert "--source-id" in caplog.text
    finally:
        replayer.store.close()
