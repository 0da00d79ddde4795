"""Serving is built by the composition root and never imports it (no import cycle), and is
made of small functions: read from the source with ``ast``."""

from __future__ import annotations

import ast
from pathlib import Path

import usersignals

PACKAGE = Path(usersignals.__file__).parent
ROOT = "usersignals.app"


def module_file(name: str) -> Path | None:
    parts = name.split(".")[1:]
    candidate = PACKAGE.joinpath(*parts)
    if (candidate / "__init__.py").exists():
        return candidate / "__init__.py"
    if candidate.with_suffix(".py").exists():
        return candidate.with_suffix(".py")
    return None


def imported_by(path: Path) -> set[str]:
    """The usersignals modules ``path`` imports (at the top or inside a function), with the
    packages an import runs on the way."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    found = set()
    for name in names:
        if name == "usersignals" or name.startswith("usersignals."):
            parts = name.split(".")
            found.update(".".join(parts[:n]) for n in range(1, len(parts) + 1))
    return {name for name in found if module_file(name) is not None}


def reachable_from(start: list[str]) -> dict[str, str]:
    """Every usersignals module the ``start`` modules import, directly or not: name → the
    module that first imported it."""
    seen = dict.fromkeys(start, "")
    queue = list(start)
    while queue:
        name = queue.pop()
        path = module_file(name)
        assert path is not None, name
        for imported in sorted(imported_by(path)):
            if imported not in seen:
                seen[imported] = name
                queue.append(imported)
    return seen


def serving_modules() -> list[str]:
    return sorted(
        f"usersignals.serving.{path.stem}"
        for path in (PACKAGE / "serving").glob("*.py")
        if path.stem != "__init__"
    )


def test_serving_does_not_import_the_composition_root() -> None:
    reached = reachable_from(serving_modules())
    chain = []
    name = ROOT
    while name in reached and name:
        chain.append(name)
        name = reached[name]
    assert ROOT not in reached, " <- ".join(chain)


def test_the_walk_sees_the_composition_root_where_it_is_imported() -> None:
    # The check above is only as good as the walk: the worker entry point imports the root.
    assert ROOT in reachable_from(["usersignals.worker"])
    assert len(serving_modules()) >= 10


def test_no_function_in_the_package_is_over_60_lines() -> None:
    """A function a reader cannot see whole on one screen is split into named steps."""
    long = [
        f"{path.relative_to(PACKAGE)}:{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for path in sorted(PACKAGE.rglob("*.py"))
        for node in ast.walk(ast.parse(path.read_text(), str(path)))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > 60
    ]
    assert long == []
