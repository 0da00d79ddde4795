"""The import rule: a module may import its own layer and the layers below it, never above.

Every ``import`` in ``src/usersignals`` is read with ``ast`` (those inside functions and under
``TYPE_CHECKING`` too: a deferred import is still a dependency). docs/architecture.md explains
the layers; a new package or top-level module must be placed in one here, or this test fails.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import usersignals

PACKAGE = Path(usersignals.__file__).parent

#: What every layer may use: errors, value kinds, durations, settings, small helpers, and the
#: native core (which imports nothing of the package).
FOUNDATION = frozenset(
    {"_core", "_version", "backoff", "closing", "config", "config_validation"}
    | {"durations", "errors", "field_names", "input_files", "libc", "listening"}
    | {"consoles", "malloc_tuning", "optional_deps", "uninterrupted", "values"}
)

#: Bottom to top. A unit is a sub-package (``state``) or a top-level module (``config``).
LAYERS: list[tuple[str, frozenset[str]]] = [
    ("foundation", FOUNDATION),
    ("events", frozenset({"events"})),
    ("definitions", frozenset({"aggregations", "signals"})),
    ("state", frozenset({"state"})),
    ("enrich", frozenset({"enrich"})),
    ("ingest", frozenset({"ingest"})),
    ("processing", frozenset({"processing"})),
    ("serving", frozenset({"serving"})),
    ("testing", frozenset({"testing", "preview"})),
    ("app", frozenset({"app", "assembly", "worker"})),
    ("offline", frozenset({"offline"})),
    # What a person runs, and the public façade (``usersignals/__init__.py``) with the
    # example signal modules that import it the way a user's module does.
    (
        "entry points",
        frozenset(
            {
                "cli",
                "cli_run",
                "cli_serve",
                "cli_versions",
                "demo",
                "devtools",
                "examples",
                "__init__",
            }
        ),
    ),
]

LEVEL = {unit: level for level, (_, units) in enumerate(LAYERS) for unit in units}
LAYER_NAME = {unit: name for name, units in LAYERS for unit in units}

#: Known exceptions, each to be deleted when its cause is gone.
ALLOWED: set[tuple[str, str]] = set()


def unit_of(path: Path) -> str:
    """The layer unit a source file belongs to: its sub-package, or its own module name."""
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def imported_units(tree: ast.AST) -> set[str]:
    """The units of ``usersignals`` that a module imports, by any form of import."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "usersignals":
                # ``from usersignals import x``: a submodule, or a name of the façade.
                names = [
                    f"usersignals.{alias.name}"
                    if (PACKAGE / f"{alias.name}.py").exists() or (PACKAGE / alias.name).is_dir()
                    else "usersignals.__init__"
                    for alias in node.names
                ]
            else:
                names = [node.module]
        else:
            continue
        found.update(name.split(".")[1] for name in names if name.startswith("usersignals."))
    return found


def upward_imports() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = unit_of(path)
        relative = path.relative_to(PACKAGE).as_posix()
        for target in sorted(imported_units(ast.parse(path.read_text(), str(path)))):
            if target not in LEVEL:
                problems.append(f"{relative}: imports {target}, which is in no layer")
            elif LEVEL[target] > LEVEL[unit] and (relative, target) not in ALLOWED:
                problems.append(
                    f"{relative} ({LAYER_NAME[unit]}) imports {target} ({LAYER_NAME[target]})"
                )
    return problems


def test_every_unit_of_the_package_is_in_a_layer() -> None:
    units = {unit_of(path) for path in PACKAGE.rglob("*.py")}
    assert units - set(LEVEL) == set()


def test_no_module_imports_a_layer_above_its_own() -> None:
    assert upward_imports() == []


def test_the_rule_catches_an_upward_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The checker itself: a state module importing the engine is reported.
    (tmp_path / "state").mkdir()
    (tmp_path / "state" / "bad.py").write_text(
        "def f():\n    from usersignals.processing.engine import Engine\n"
    )
    (tmp_path / "errors.py").write_text("from usersignals import Signal\n")
    monkeypatch.setattr(f"{__name__}.PACKAGE", tmp_path)
    assert upward_imports() == [
        "errors.py (foundation) imports __init__ (entry points)",
        "state/bad.py (state) imports processing (processing)",
    ]


def test_every_allowed_exception_is_still_needed() -> None:
    # A stale exception would let the same import back in unnoticed.
    for relative, target in ALLOWED:
        assert target in imported_units(ast.parse((PACKAGE / relative).read_text())), relative
