"""Finding the signals of a module, and compiling them to stable JSON."""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType

from usersignals.errors import ConfigurationError, SignalNotFoundError
from usersignals.signals.definition import Signal, validate_signals


class SignalRegistry:
    """The signals one deployment computes and serves, by name."""

    def __init__(self, signals: Sequence[Signal]) -> None:
        validate_signals(signals)
        self._by_name = {signal.name: signal for signal in signals}

    def __iter__(self) -> Iterator[Signal]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    @property
    def names(self) -> list[str]:
        return list(self._by_name)

    def get(self, name: str) -> Signal:
        try:
            return self._by_name[name]
        except KeyError:
            raise SignalNotFoundError(name, self.names) from None

    def to_json(self) -> str:
        """Every signal's compiled definition, as stable, diffable JSON text."""
        document = {"signals": [signal.to_json() for signal in self]}
        return json.dumps(document, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_module(cls, target: str) -> SignalRegistry:
        return cls(signals_of(load_module(target)))


def load_module(target: str) -> ModuleType:
    """Import a module by dotted name (``usersignals.examples.reference``) or file path."""
    try:
        if target.endswith(".py") or "/" in target:
            path = Path(target)
            if not path.is_file():
                raise ConfigurationError(f"signals module file {target!r} does not exist")
            name = f"usersignals_user_signals_{abs(hash(path.resolve()))}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ConfigurationError(f"cannot load {target!r} as a Python module")
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(target)
    except ModuleNotFoundError as exc:
        raise ConfigurationError(f"cannot import signals module {target!r}: {exc}") from exc
    except SyntaxError as exc:
        raise ConfigurationError(
            f"signals module {target!r} has a syntax error: {exc.msg} "
            f"({exc.filename}, line {exc.lineno})"
        ) from exc


def signals_of(module: ModuleType) -> list[Signal]:
    """A module's signals: its ``SIGNALS`` list if it has one, else every module-level Signal."""
    declared = getattr(module, "SIGNALS", None)
    if declared is not None:
        signals = list(declared)
    else:
        signals = [value for value in vars(module).values() if isinstance(value, Signal)]
    if not signals or not all(isinstance(signal, Signal) for signal in signals):
        raise ConfigurationError(f"module {module.__name__!r} defines no Signal")
    return signals
