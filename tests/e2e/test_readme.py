"""The README's Python examples run, as a reader would paste them.

The in-process examples run in order in one namespace; the client example runs against a
real service (processor + HTTP server on a loopback port), at the address it names.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
sys.path.insert(0, str(README.parent / "tests" / "integration"))

from service_helpers import start_service, stop_service  # noqa: E402


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def test_readme_has_python_examples() -> None:
    assert len(python_blocks()) >= 3


def test_readme_in_process_examples_run() -> None:
    """The blocks run in order in one namespace; the tests they define are then called."""
    namespace: dict[str, object] = {"__name__": "readme"}
    for block in python_blocks():
        if "Client(" not in block:
            exec(compile(block, str(README), "exec"), namespace)  # the examples are the test
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert len(tests) >= 2
    for test in tests:
        assert callable(test)
        test()


def test_readme_client_example_runs_against_a_live_service(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (block,) = [block for block in python_blocks() if "Client(" in block]
    service = start_service(tmp_path)
    try:
        port_free_block = block.replace("http://127.0.0.1:8080", service.base_url)
        namespace: dict[str, object] = {"__name__": "readme"}
        exec(compile(port_free_block, str(README), "exec"), namespace)
    finally:
        stop_service(service)
    assert len(namespace["users"]) == 2  # type: ignore[arg-type]
    assert "'total'" in capsys.readouterr().out


def test_quick_start_is_exactly_two_commands() -> None:
    text = README.read_text()
    section = text.split("## Quick start", 1)[1].split("##", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.DOTALL)
    assert block is not None
    commands = [line.split("#")[0].strip() for line in block.group(1).splitlines()]
    assert [c for c in commands if c] == ["./dev demo", "./dev test"]


def test_readme_says_what_the_processor_consumes_today() -> None:
    """Kafka ingestion exists: the README must not announce it as coming "next"."""
    text = README.read_text()
    serving = text.split("## Serving over HTTP", 1)[1].split("\n## ", 1)[0]
    assert "next" not in serving
    assert "--kafka" in serving


def test_readme_lists_every_table_format_that_tables_load_reads(tmp_path: Path) -> None:
    from usersignals.enrich.tables import load_table
    from usersignals.errors import ConfigurationError
    from usersignals.state.memory import MemoryStore

    (row,) = [
        line
        for line in README.read_text().splitlines()
        if line.startswith("| `usersignals tables load")
    ]
    unsupported = tmp_path / "items.xml"
    unsupported.write_text("<items/>")
    with pytest.raises(ConfigurationError) as info:
        load_table(MemoryStore().table("items"), unsupported, key="item_id")
    formats = re.findall(r"\.(\w+)", str(info.value).split(":", 1)[1])
    assert formats == ["jsonl", "csv", "parquet"]
    for name in formats:
        assert {"jsonl": "JSONL", "csv": "CSV", "parquet": "Parquet"}[name] in row
