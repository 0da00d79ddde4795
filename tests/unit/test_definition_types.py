"""What a signals module's author's type checker says of the DSL's documented forms."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from usersignals import Count, LastN, Lookup, Sum

ROOT = Path(__file__).resolve().parents[2]

#: Each documented way to name fields (README, "Defining signals": "one name may be
#: written as a string"), which the runtime takes.
MODULE = """\
from usersignals import Count, LastN, Lookup, Sum

items = Lookup("items", key="item_id", provides="category")
more = Lookup("items", key="item_id", provides=["category", "creator_id"])
clicks = Count(by="surface")
grouped = Count(by=["action", "surface"])
spent = Sum(of="attrs.price", by="surface", decimals=2)
recent = LastN(100, keep="item_id", dedupe_by="item_id")
both = LastN(10, keep=["item_id", "action"])
assert isinstance(clicks.by, tuple) and isinstance(recent.keep, tuple)
"""


def test_a_field_name_given_as_a_string_or_a_list_type_checks(tmp_path: Path) -> None:
    """Found in a newcomer's trial: the README's own ``Count(by="surface")`` failed
    ``mypy --strict`` (the fields were declared ``tuple[str, ...]``, which the constructor
    coerces to but the annotation is what the checker reads), in a package that ships
    ``py.typed``. Run with the project's settings, so mypy's cache of the package is the one
    the checks left."""
    module = tmp_path / "author_signals.py"
    module.write_text(MODULE)
    done = subprocess.run(
        [sys.executable, "-m", "mypy", str(module)],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    exec(compile(MODULE, str(module), "exec"), {})  # and it runs


@pytest.mark.parametrize("definition", [Count, Sum, LastN, Lookup])
def test_the_checkers_constructor_takes_every_field(definition: type) -> None:
    """The constructors the type checker reads are written out (they take a string where
    a field holds a tuple): each must take the dataclass's fields, in order."""
    import ast
    import inspect

    source = ast.parse(inspect.getsource(definition))
    (init,) = [
        node for node in ast.walk(source)
        if isinstance(node, ast.FunctionDef) and node.name == "__init__"
    ]  # fmt: skip
    taken = [arg.arg for arg in init.args.args[1:] + init.args.kwonlyargs]
    assert taken == [f.name for f in fields(definition) if f.init]
