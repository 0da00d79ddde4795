"""A local backfill's users shared out by their events: heavy users placed, the rest hashed."""

from __future__ import annotations

from pathlib import Path

import msgspec

from usersignals.ingest.archive import EventArchive
from usersignals.offline.balance import balanced, plan_user_shards
from usersignals.offline.common import shard_of


def test_heavy_users_go_heaviest_first_to_the_lightest_shard() -> None:
    counts = {"whale": 600, "big": 300, "mid": 250, **{f"u{i}": 1 for i in range(50)}}
    placed = balanced(counts, 2)
    assert set(placed) == {"whale", "big", "mid"}  # the light users go by the hash
    assert placed["big"] == placed["mid"] != placed["whale"]
    loads = [0, 0]
    for user, count in counts.items():
        loads[placed.get(user, shard_of(user, 2))] += count
    assert abs(loads[0] - loads[1]) <= 50


def test_one_shard_needs_no_plan() -> None:
    assert balanced({"a": 5}, 1) == {"a": 0}
    assert plan_user_shards(EventArchive(__file__), 1) == {}


def test_the_plan_samples_each_file_and_reads_users_as_the_router(tmp_path: Path) -> None:
    for day, users in (("dt=1", ["whale"] * 40 + ["x"]), ("dt=2", ["y"] * 30 + ["whale"])):
        folder = tmp_path / day
        folder.mkdir()
        lines = [msgspec.json.encode({"user_id": user, "ts": 1}) for user in users]
        (folder / "part.jsonl").write_bytes(b"\n".join([*lines, b"not json"]) + b"\n")
    placed = plan_user_shards(EventArchive(tmp_path), 2)
    assert set(placed) == {"whale", "y", "x"}
    assert placed["whale"] != placed["y"]


def test_the_sample_spreads_over_many_files(tmp_path: Path) -> None:
    # 100 files, one user each: the sample reads 64 of them, from first to last.
    for number in range(100):
        line = msgspec.json.encode({"user_id": f"u{number:03d}", "ts": 1})
        (tmp_path / f"part-{number:03d}.jsonl").write_bytes(line + b"\n")
    placed = plan_user_shards(EventArchive(tmp_path), 2)
    assert len(placed) == 64
    assert {"u000", "u098"} <= set(placed)
