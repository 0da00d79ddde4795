"""The fault catalogue in docs/operations.md names tests that exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_every_test_the_fault_catalogue_names_exists() -> None:
    text = (ROOT / "docs" / "operations.md").read_text()
    named = re.findall(r"`(tests/[\w/]+\.py)::(test_\w+)`|`::(test_\w+)`", text)
    assert len(named) >= 10
    current = ""
    for path, test, sibling in named:
        current = path or current
        source = (ROOT / current).read_text()
        assert f"def {test or sibling}(" in source, f"{current}::{test or sibling}"
