"""Turning raw settings (TOML, environment, overrides) into a validated settings object.

The types and bounds live on the settings classes themselves (``Literal`` choices,
``msgspec.Meta`` ranges); this module only applies them, field by field, so that a bad value
is reported with the setting's dotted name, the value and what is allowed — not as a
``$.enrich.sources[...]`` path without the value. Duration settings (marked with
``Meta(extra={"unit": ...})``) also accept a string such as ``"250ms"`` or ``"10s"`` or a
``timedelta``; a bare number keeps meaning the unit in the setting's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any, TypeVar

import msgspec
import msgspec.inspect as mi

from usersignals.durations import to_duration
from usersignals.errors import ConfigurationError, InvalidSettingError

_S = TypeVar("_S", bound=msgspec.Struct)
_UNIT_MS = {"ms": 1, "s": 1_000}


def convert_settings(data: Mapping[str, Any], cls: type[_S]) -> _S:
    """``data`` checked field by field against ``cls``, then converted as a whole."""
    checked = _check_struct(data, cls, "")
    try:
        return msgspec.convert(checked, cls, strict=False)
    except msgspec.ValidationError as exc:  # a shape no field check saw (a section not a table)
        raise ConfigurationError(f"invalid settings: {exc}") from exc


def _check_struct(data: Mapping[str, Any], cls: type[msgspec.Struct], prefix: str) -> Any:
    if not isinstance(data, Mapping):
        return data  # the whole-object conversion reports "expected an object" with the path
    fields = {field.encode_name: field for field in msgspec.structs.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in data.items():
        field = fields.get(key)
        if field is None and cls.__struct_config__.forbid_unknown_fields:
            raise _unknown_setting(prefix.rstrip("."), key, fields)
        out[key] = value if field is None else _check_value(value, field.type, prefix + key)
    return out


def _unknown_setting(section: str, key: str, known: Mapping[str, object]) -> ConfigurationError:
    """A setting no section has, named as a file and as the environment write it (a typo
    in an environment variable's name was reported as a field without the variable); a
    name with dots is no setting at all, but a property of a table such as
    ``[kafka.consumer]``, which no environment variable spells."""
    setting = f"{section}.{key}" if section else key
    where = f"{section} has" if section else "the settings have"
    names = ", ".join(sorted(known))
    if "." in key:
        return ConfigurationError(
            f"unknown setting {key!r} in {section or 'the settings'}: {where} {names} "
            "(a librdkafka property goes in [kafka.consumer] or [kafka.producer])"
        )
    variable = "USERSIGNALS_" + setting.upper().replace(".", "__")
    return ConfigurationError(
        f"unknown setting {setting} ({variable} in the environment): {where} {names}"
    )


def _check_value(value: Any, annotation: Any, setting: str) -> Any:
    info = mi.type_info(annotation)
    if isinstance(info, mi.StructType):
        return _check_struct(value, info.cls, setting + ".")
    if isinstance(info, mi.DictType) and isinstance(value, Mapping):
        entries = info.value_type
        if isinstance(entries, mi.StructType):
            return {k: _check_struct(v, entries.cls, f"{setting}.{k}.") for k, v in value.items()}
    unit = _unit_of(info)
    if unit is not None and isinstance(value, str | timedelta) and not _is_number(value):
        value = _to_unit(value, unit, setting, info)
    try:
        return msgspec.to_builtins(msgspec.convert(value, annotation, strict=False))
    except msgspec.ValidationError:
        raise InvalidSettingError(setting, value, describe(info)) from None


def _unit_of(info: mi.Type) -> str | None:
    if isinstance(info, mi.Metadata) and info.extra:
        unit = info.extra.get("unit")
        return unit if isinstance(unit, str) else None
    return None


def _is_number(value: object) -> bool:
    """Environment variables are strings: "250" is the number, in the setting's unit."""
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def _to_unit(value: str | timedelta, unit: str, setting: str, info: mi.Type) -> float | int:
    try:
        ms = int(to_duration(value))
    except ValueError:
        raise InvalidSettingError(setting, value, describe(info)) from None
    return ms // _UNIT_MS[unit] if ms % _UNIT_MS[unit] == 0 else ms / _UNIT_MS[unit]


def describe(info: mi.Type) -> str:
    """What a settings type allows, in words: ``an integer >= 1``, ``one of 'a', 'b'``."""
    if isinstance(info, mi.Metadata):
        unit = _unit_of(info)
        inner = describe(info.type)
        if unit is None:
            return inner
        return f'{inner} of {_UNIT_NAMES[unit]}, or a duration such as "250ms", "10s", "1m"'
    if isinstance(info, mi.LiteralType):
        return "one of " + ", ".join(repr(value) for value in info.values)
    if isinstance(info, mi.IntType | mi.FloatType):
        noun = "an integer" if isinstance(info, mi.IntType) else "a number"
        return noun + _bounds(info)
    if isinstance(info, mi.DictType):
        return f"a table of names to {_plural(info.value_type)}"
    return _PLAIN.get(type(info), "a value of the documented form")


def _plural(info: mi.Type) -> str:
    """What a table's values may be, in the plural: ``texts, numbers or true/false``."""
    if isinstance(info, mi.UnionType):
        kinds = list(dict.fromkeys(_plural(member) for member in info.types))
        return ", ".join(kinds[:-1]) + " or " + kinds[-1] if len(kinds) > 1 else kinds[0]
    if isinstance(info, mi.StrType):
        return "texts"
    if isinstance(info, mi.IntType | mi.FloatType):
        return "numbers"
    if isinstance(info, mi.BoolType):
        return "true/false"
    return "values"


def _bounds(info: mi.IntType | mi.FloatType) -> str:
    parts = [
        f"{symbol} {bound}"
        for symbol, bound in ((">=", info.ge), (">", info.gt), ("<=", info.le), ("<", info.lt))
        if bound is not None
    ]
    return " " + " and ".join(parts) if parts else ""


_UNIT_NAMES = {"ms": "milliseconds", "s": "seconds"}
_PLAIN: dict[type, str] = {
    mi.BoolType: "true or false",
    mi.StrType: "a string",
    mi.ListType: "a list (comma-separated in an environment variable)",
}
