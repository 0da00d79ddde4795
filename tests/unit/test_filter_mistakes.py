"""Mistakes an author makes writing a filter or a one-field parameter are refused where they
are written, naming what to write instead, never accepted to match nothing or to crash later.

Found by the signal-author trial: ``action.isin("save")`` filtered on the letters
{"s", "a", "v", "e"} and matched nothing; ``action.eq("save") and surface.eq("home")`` was
Python's ``and`` of two objects, i.e. only the second filter; ``attr("dwell_ms").gt("5000")``
compared numbers with a string and matched nothing; ``DecayedScores(key=("category",))``
(the tuple the README shows for ``by``) passed validation and ended a replay with an
AttributeError; ``FirstSeen(by=["action"])`` with a TypeError.
"""

from __future__ import annotations

from typing import Any

import pytest

from usersignals import (
    Count,
    DecayedScores,
    Distinct,
    FirstSeen,
    LastSeen,
    Signal,
    SignalDefinitionError,
    action,
    attr,
    surface,
)


@pytest.mark.parametrize("make", [lambda: action.isin("save"), lambda: action.notin("save")])
def test_a_string_where_a_list_of_values_belongs_is_refused(make: Any) -> None:
    with pytest.raises(SignalDefinitionError, match=r"a list of values.*\['save'\]"):
        make()


def test_a_filter_is_not_a_python_truth_value() -> None:
    with pytest.raises(SignalDefinitionError, match="&"):
        bool(action.eq("save"))
    with pytest.raises(SignalDefinitionError, match="&"):
        _ = action.eq("save") and surface.eq("home")


@pytest.mark.parametrize("op", ["gt", "ge", "lt", "le"])
@pytest.mark.parametrize("value", ["5000", None, True])
def test_an_ordering_compares_with_a_number(op: str, value: Any) -> None:
    with pytest.raises(SignalDefinitionError, match="a number"):
        getattr(attr("dwell_ms"), op)(value)


def test_orderings_and_lists_still_take_what_they_should() -> None:
    assert attr("dwell_ms").gt(5000).to_json()["value"] == 5000
    assert attr("score").le(0.5).to_json()["value"] == 0.5
    assert action.isin(["save", "click"]).to_json()["value"] == ["click", "save"]
    assert action.isin(("save",)).to_json()["value"] == ["save"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: DecayedScores(key=("category",)),  # type: ignore[arg-type]
        lambda: Distinct(of=("item_id",)),  # type: ignore[arg-type]
        lambda: LastSeen(by=7),  # type: ignore[arg-type]
        lambda: FirstSeen(by=["action"]),  # type: ignore[arg-type]
        lambda: LastSeen(by=("action", "surface")),  # type: ignore[arg-type]
    ],
)
def test_a_one_field_parameter_given_something_else_is_a_definition_error(make: Any) -> None:
    with pytest.raises(SignalDefinitionError, match="one field name"):
        Signal(name="s", version=1, aggregate=make())


def test_count_still_takes_a_tuple_of_fields() -> None:
    assert Signal(name="s", version=1, aggregate=Count(by=("action", "surface")))


# -- a user-defined aggregation's contract, checked where the signal is defined ---------------


def _uda(**overrides: Any) -> Any:
    from test_signal_failures import Dwell

    return type("Custom", (Dwell,), overrides)()


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"kind": None}, "kind"),
        ({"kind": ""}, "kind"),
        ({"context_parameters": lambda self: ["window"]}, "context_parameters"),
        ({"context_parameters": lambda self: frozenset({"windw"})}, "windw"),
    ],
)
def test_a_user_defined_aggregation_breaking_its_contract_is_a_definition_error(
    overrides: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(SignalDefinitionError, match=fragment):
        Signal(name="s", version=1, aggregate=_uda(**overrides))


# -- a module's or an enrichment's shape ----------------------------------------------------


def test_an_enrichment_that_is_not_a_list_of_lookup_fields_is_a_definition_error() -> None:
    from usersignals import Lookup

    items = Lookup("items", key="item_id", provides=("category",))
    for enrich in (items.fields("category"), [items], ["category"]):
        with pytest.raises(SignalDefinitionError, match="enrich must be a list"):
            Signal(name="s", version=1, aggregate=Count(), enrich=enrich)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("source", "fragment"),
    [
        ("SIGNALS = [clicks, 'saves']", "SIGNALS holds a str"),
        ("SIGNALS = clicks", "SIGNALS must be a list"),
    ],
)
def test_a_module_s_signals_list_of_the_wrong_shape_says_what_is_wrong(
    tmp_path: Any, source: str, fragment: str
) -> None:
    from usersignals.errors import ConfigurationError
    from usersignals.signals import load_module, signals_of

    module = tmp_path / "mine.py"
    module.write_text(
        "from usersignals import Count, Signal\n"
        "clicks = Signal(name='clicks', version=1, aggregate=Count())\n" + source + "\n"
    )
    with pytest.raises(ConfigurationError, match=fragment):
        signals_of(load_module(str(module)))


def test_a_module_level_alias_of_a_signal_is_one_signal(tmp_path: Any) -> None:
    from usersignals.signals import load_module, signals_of

    module = tmp_path / "aliased.py"
    module.write_text(
        "from usersignals import Count, Signal\n"
        "clicks = Signal(name='clicks', version=1, aggregate=Count())\nalso = clicks\n"
    )
    assert [signal.key for signal in signals_of(load_module(str(module)))] == ["clicks@1"]
