"""No file the project tracks holds a merge-conflict marker: one slipped into the README once,
unseen, because nothing reads the README's prose."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MARKER = re.compile(rb"^(<{7} |={7}$|>{7} )", re.MULTILINE)


def test_no_tracked_file_holds_a_conflict_marker() -> None:
    listed = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True
    ).stdout.split(b"\0")
    paths = [ROOT / name.decode() for name in listed if name]
    assert len(paths) > 100
    marked = [
        str(path.relative_to(ROOT))
        for path in paths
        if path.is_file() and MARKER.search(path.read_bytes())
    ]
    assert marked == []
