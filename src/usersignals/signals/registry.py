"""Finding the signals of a module, and compiling them to stable JSON."""

from __future__ import annotations

import importlib
import importlib.util
import json
import logging
import sys
import traceback
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import ModuleType

from usersignals.durations import iso_utc
from usersignals.errors import (
    ConfigurationError,
    SignalNotFoundError,
    SignalRetiredError,
    UserSignalsError,
)
from usersignals.input_files import check_input_file
from usersignals.signals.definition import Signal, validate_signals

logger = logging.getLogger(__name__)


class SignalRegistry:
    """The signals one deployment computes and serves.

    Iterating, ``names`` and ``get(name)`` give the version of each name served by default;
    ``computed`` gives every version the engine runs, shadow versions included, and
    ``get("name@version")`` any one of them. The module declares the default (the version not
    marked ``shadow=True``); ``serve`` moves it (the cut-over, read from the store's version
    table by every worker — see :mod:`usersignals.state.versions`).
    """

    def __init__(self, signals: Sequence[Signal]) -> None:
        validate_signals(signals)
        for signal in signals:
            signal.compiled  # noqa: B018 - a user-defined compile() that fails, said here
        self._by_key = {signal.key: signal for signal in signals}
        self._declared = {signal.name: signal for signal in signals if not signal.shadow}
        self._served = self._order(self._declared)
        #: ``name@version`` → when (ms) its grace period after a cut-over was over.
        self._retired: dict[str, int] = {}
        #: ``name@version`` → when (ms) its grace period after a cut-over is over: a version
        #: replaced by a cut-over and still served when named.
        self._retiring: dict[str, int] = {}
        #: Name → the version the store serves by default that this module does not declare.
        self._undeclared: dict[str, str] = {}
        #: Retired versions the module no longer declares, with when.
        self._gone: dict[str, int] = {}

    def _order(self, chosen: dict[str, Signal]) -> dict[str, Signal]:
        """``chosen`` in the module's order of names (a name's first version decides)."""
        names = dict.fromkeys(signal.name for signal in self._by_key.values())
        return {name: chosen[name] for name in names if name in chosen}

    def __iter__(self) -> Iterator[Signal]:
        return iter(self._served.values())

    def __len__(self) -> int:
        return len(self._served)

    @property
    def names(self) -> list[str]:
        return list(self._served)

    @property
    def served(self) -> Mapping[str, Signal]:
        """The served version of each name. :meth:`serve` replaces the mapping, never changes
        it in place, so a cache holding it can tell by identity that nothing moved."""
        return self._served

    @property
    def computed(self) -> list[Signal]:
        """Every declared version, served or shadow: what the engine computes."""
        return list(self._by_key.values())

    @property
    def known(self) -> list[str]:
        """What a request may name: the served names, and each ``name@version`` not
        retired that is not served under its name alone (every version of a name declared
        in several: each may be named)."""
        versions = Counter(signal.name for signal in self._by_key.values())
        return self.names + [
            key
            for key, signal in self._by_key.items()
            if key not in self._retired and (self.label(signal) == key or versions[signal.name] > 1)
        ]

    def get(self, name: str) -> Signal:
        """The served version of ``name``, or exactly ``name@version``."""
        found = self._by_key.get(name) if "@" in name else self._served.get(name)
        if found is None:
            gone = self._gone.get(name)
            if gone is None:
                raise SignalNotFoundError(name, self.known)
            advice = self._instead(name.split("@")[0])
            raise SignalRetiredError(name, iso_utc(gone, "seconds"), advice, self.known)
        if found.key in self._retired:
            advice = self._instead(found.name)
            at = iso_utc(self._retired[found.key], "seconds")
            raise SignalRetiredError(found.key, at, advice, self.known)
        return found

    def _instead(self, name: str) -> str | None:
        """What a request for a retired version of ``name`` is to read instead: the version
        served by default, unless that is retired too (a module rolled back past a cut-over,
        the store serving a version it does not declare)."""
        served = self._served.get(name)
        if served is not None and served.key not in self._retired:
            return f"read {served.name!r} ({served.key}) instead"
        undeclared = self._undeclared.get(name)
        if undeclared is None:
            return None
        return (
            f"the store serves {undeclared} by default, which this module does not declare: "
            "deploy the module that declares it"
        )

    def label(self, signal: Signal) -> str:
        """How answers name ``signal`` when the request names none: its name when it is served
        by default, else its key."""
        return signal.name if self._served.get(signal.name) is signal else signal.key

    def labels(self, names: Sequence[str] | None, signals: Sequence[Signal]) -> list[str]:
        """How answers name ``signals``, resolved from ``names`` (``None``: every signal, by
        :meth:`label`). A signal asked for as ``name@version`` is answered under that key,
        whichever version is served by default (a client pinning a version keeps reading
        its key across a cut-over); by its name alone, under the name."""
        if names is None:
            return [self.label(signal) for signal in signals]
        return [
            signal.key if "@" in name else signal.name
            for name, signal in zip(names, signals, strict=True)
        ]

    def serve(self, versions: Mapping[str, int]) -> None:
        """Serve these versions by default (name → version) over the module's defaults. A
        version the module does not declare is not served (the module's default is); of a
        name the module declares, it is remembered for a retired version's 410
        (:meth:`get`), and the processor refuses such a module
        (:func:`~usersignals.state.versions.served_undeclared`)."""
        chosen = dict(self._declared)
        for name, version in versions.items():
            signal = self._by_key.get(f"{name}@{version}")
            if signal is not None:
                chosen[name] = signal
        self._undeclared = self.undeclared(versions)
        served = self._order(chosen)
        if served.keys() == self._served.keys() and all(
            served[name] is self._served[name] for name in served
        ):
            return  # unchanged: keep the mapping, which caches of served queries key on
        # One assignment: a reader thread sees the old or the new mapping, never a mix.
        self._served = served

    def undeclared(self, versions: Mapping[str, int]) -> dict[str, str]:
        """Of ``versions`` (name → version, a cut-over's choice), the ones of a name this
        module declares (shadow only, too) in a version it does not: name → ``name@version``.
        A module rolled back past a cut-over."""
        names = {signal.name for signal in self._by_key.values()}
        return {
            name: f"{name}@{version}"
            for name, version in sorted(versions.items())
            if name in names and f"{name}@{version}" not in self._by_key
        }

    @property
    def lookup_sources(self) -> list[str]:
        """The lookup sources the computed signals enrich from, by name, sorted."""
        return sorted({lookup.name for signal in self.computed for lookup in signal.lookups})

    @property
    def served_undeclared(self) -> list[str]:
        """The versions (``name@version``) the store serves by default, as :meth:`serve` was
        last told, that this module does not declare: see :meth:`undeclared`."""
        return list(self._undeclared.values())

    @property
    def retired(self) -> dict[str, int]:
        """The versions :meth:`retire` refuses, with when (ms) their grace period was over:
        the module's, and those it no longer declares."""
        return {**self._gone, **self._retired}

    @property
    def retiring(self) -> dict[str, int]:
        """The versions a cut-over replaced that are in their grace period, with when (ms)
        it is over: served still when named (and cutting back to them is instant)."""
        return dict(self._retiring)

    def retire(self, dropped: Mapping[str, int], retiring: Mapping[str, int] | None = None) -> None:
        """Refuse the versions whose grace period after a cut-over is over (``name@version``
        → when, ms): :meth:`get` raises :class:`SignalRetiredError` for them. A change
        replaces the served mapping with an equal one, so that the caches keyed on it (the
        resolved queries) resolve their names again. ``retiring``: the versions replaced
        whose grace period is not over yet (those the module declares are listed as such)."""
        self._retiring = {key: at for key, at in (retiring or {}).items() if key in self._by_key}
        retired = {key: at for key, at in dropped.items() if key in self._by_key}
        # Deleted from the module since (as the README says to, once cut over): still a 410
        # naming the version to read, not an unknown signal.
        self._gone = {key: at for key, at in dropped.items() if key not in self._by_key}
        if retired == self._retired:
            return
        self._retired = retired
        self._served = dict(self._served)

    def to_json(self) -> str:
        """Every signal's compiled definition, as stable, diffable JSON text."""
        document = {"signals": [signal.to_json() for signal in self.computed]}
        return json.dumps(document, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_module(cls, target: str) -> SignalRegistry:
        return cls(signals_of(load_module(target)))


def listed_names(texts: Iterable[str]) -> list[str]:
    """Signal names as a caller lists them, each text comma-separated (``names=a,b``,
    ``--signal a,b --signal c``), blanks dropped: a trial's ``--signal a,b`` was once
    "unknown signal 'a,b'"."""
    return [name.strip() for text in texts for name in text.split(",") if name.strip()]


def load_module(target: str) -> ModuleType:
    """Import a module by dotted name (``usersignals.examples.reference``) or file path."""
    try:
        if target.endswith(".py") or "/" in target:
            path = Path(target)
            check_input_file(path, "signals module file")
            name = f"{_FILE_MODULE_PREFIX}{abs(hash(path.resolve()))}"
            spec = importlib.util.spec_from_file_location(name, path)
            if spec is None or spec.loader is None:
                raise ConfigurationError(f"cannot load {target!r} as a Python module")
            module = importlib.util.module_from_spec(spec)
            module.__dict__[_SHOWN_AS] = target
            # The modules beside it are importable (an author keeps an aggregation in a file
            # of its own), as for `python path/to/module.py`; but appended, where Python puts
            # the folder first, so that a file there never shadows an installed library (a
            # library of the same name shadows the file instead).
            folder = str(path.resolve().parent)
            if folder not in sys.path:
                sys.path.append(folder)
            sys.modules[name] = module
            spec.loader.exec_module(module)
            return module
        return importlib.import_module(target)
    except UserSignalsError:  # ours, a signal's definition say: already says what is wrong
        raise
    except ModuleNotFoundError as exc:
        raise ConfigurationError(_not_found(target, exc)) from exc
    except SyntaxError as exc:
        raise ConfigurationError(
            f"signals module {target!r} has a syntax error: {exc.msg} "
            f"({exc.filename}, line {exc.lineno})"
        ) from exc
    except Exception as exc:  # the module's own code raised: say what, and where in it
        logger.debug("signals module %r failed to import", target, exc_info=True)
        raise ConfigurationError(
            f"signals module {target!r} failed to import: {type(exc).__name__}: {exc}"
            f"{_line_in(exc, target)}"
        ) from exc


def _not_found(target: str, error: ModuleNotFoundError) -> str:
    """Why ``target`` did not import: it is not found itself (a dotted name, perhaps meant
    as a file), or a module it imports is not."""
    missing = error.name or ""
    is_file = target.endswith(".py") or "/" in target
    if not is_file and (target == missing or target.startswith(f"{missing}.")):
        return f"cannot import signals module {target!r}: {error}{_file_hint(target)}"
    return (
        f"signals module {target!r} imports {missing!r}, which is not installed (or not on "
        f"the Python path){_line_in(error, target)}"
    )


def _file_hint(target: str) -> str:
    """What a dotted name that failed to import may have meant: a file of the current
    directory (a module name is looked up on the Python path, not there)."""
    if Path(target).is_file():
        return f" ({target!r} is a file, not a .py file)"
    if Path(f"{target}.py").is_file():
        return f" (to load the file here, give the file: {target}.py)"
    return ""


#: The name a module loaded from a file is imported under (a file has no dotted name).
_FILE_MODULE_PREFIX = "usersignals_user_signals_"
#: The attribute holding what a module loaded from a file is called in messages: its path.
_SHOWN_AS = "__usersignals_shown_as__"


def _line_in(error: BaseException, target: str) -> str:
    """`` (line N)``: the last line of the module file ``target`` that the error passed
    through; nothing for a module imported by dotted name."""
    if not (target.endswith(".py") or "/" in target):
        return ""
    path = Path(target).resolve()
    frames = traceback.extract_tb(error.__traceback__)
    own = [frame for frame in frames if Path(frame.filename).resolve() == path]
    return f" (line {own[-1].lineno})" if own else ""


def shown_name(module: ModuleType) -> str:
    """What messages call ``module``: the path it was loaded from, else its dotted name."""
    return str(module.__dict__.get(_SHOWN_AS, module.__name__))


def signals_of(module: ModuleType) -> list[Signal]:
    """A module's signals: its ``SIGNALS`` list if it has one, else every module-level Signal."""
    name = shown_name(module)
    declared = getattr(module, "SIGNALS", None)
    if declared is not None:
        if not isinstance(declared, list | tuple):
            raise ConfigurationError(
                f"signals module {name!r}: SIGNALS must be a list of Signal, "
                f"not a {type(declared).__name__}"
            )
        for value in declared:
            if not isinstance(value, Signal):
                raise ConfigurationError(
                    f"signals module {name!r}: SIGNALS holds a {type(value).__name__} "
                    f"({value!r}), not a Signal"
                )
        signals = list(declared)
    else:
        # Each Signal once: a module-level alias (`also = clicks`) is not a second one.
        found = (value for value in vars(module).values() if isinstance(value, Signal))
        signals = list({id(signal): signal for signal in found}.values())
    if not signals:
        raise ConfigurationError(f"signals module {name!r} defines no Signal")
    return signals
