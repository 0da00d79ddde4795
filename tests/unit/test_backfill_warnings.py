"""What the backfill command says of a hand-over it could not make whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from usersignals.offline import BackfillSummary
from usersignals.offline.commands import _print_backfill


def test_the_stream_ahead_of_an_archive_without_coordinates_is_warned_of(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    _print_backfill(BackfillSummary(stream_ahead=3), tmp_path / "dead.jsonl", ["s@2"])
    said = capsys.readouterr().err
    assert "warning: for 3 users the store holds events the stream applied after" in said
    assert "miss those events" in said
    _print_backfill(BackfillSummary(), tmp_path / "dead.jsonl", ["s@2"])
    assert "warning" not in capsys.readouterr().err
