"""What a writer records about the signals it applies, and whether a reader may serve them.

The processor records its module's name and a digest of each signal version's compiled
definition. A serving worker (or an admin command) configured with a module of its own checks
that record before it reads: it never imports a module named by the store (whoever can write
the store must not choose the code a reader runs), and it refuses to read what it would
misread. A reader may declare shadow versions the writer does not compute yet (their states
are simply absent), and the writer may compute signals the reader does not serve.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from usersignals.signals.registry import SignalRegistry


def _digest(definition: dict[str, object]) -> str:
    return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()


def definition_digests(registry: SignalRegistry) -> dict[str, str]:
    """``name@version`` → a digest of what that version's state depends on (its meaning:
    not its description, nor whether it is deployed in shadow)."""
    return {signal.key: _digest(signal.meaning_json()) for signal in registry.computed}


def _accepted(registry: SignalRegistry) -> dict[str, set[str]]:
    """Per version, the digests that mean its definition: this release's, and the previous
    release's (the whole compiled definition, description and shadow flag included), so a
    store written before still matches."""
    accepted = {}
    for signal in registry.computed:
        whole = signal.definition_json()
        legacy = {_digest(whole), _digest({**whole, "shadow": True})}
        accepted[signal.key] = {_digest(signal.meaning_json()), *legacy}
    return accepted


def _changed(theirs: dict[str, object], registry: SignalRegistry) -> list[str]:
    """The versions whose recorded definition differs from ``registry``'s: by the meanings
    when the writer recorded them, else by the previous release's digests."""
    meanings = theirs.get("meanings")
    if isinstance(meanings, dict):
        ours = definition_digests(registry)
        shared = ours.keys() & meanings.keys()
        return sorted(key for key in shared if str(meanings[key]) != ours[key])
    recorded = theirs.get("signals")
    written = {str(k): str(v) for k, v in recorded.items()} if isinstance(recorded, dict) else {}
    accepted = _accepted(registry)
    shared = accepted.keys() & written.keys()
    return sorted(key for key in shared if written[key] not in accepted[key])


def signals_identity(module: str, registry: SignalRegistry) -> bytes:
    """The writer's record: ``meanings`` (this release's digests, which a reader of this
    release compares) and ``signals``, the previous release's digests of the whole compiled
    definition, kept so that a reader not yet upgraded goes on serving."""
    legacy = {signal.key: _digest(signal.to_json()) for signal in registry.computed}
    record = {"module": module, "signals": legacy, "meanings": definition_digests(registry)}
    return json.dumps(record, sort_keys=True).encode()


def changed_definitions(recorded: bytes, registry: SignalRegistry) -> list[str]:
    """The versions ``registry`` computes whose definition differs from the one the store's
    writer recorded under the same ``name@version`` (none when it recorded nothing usable)."""
    theirs = _writer_record(recorded)
    return _changed(theirs, registry) if theirs is not None else []


def identity_problem(recorded: bytes, module: str, registry: SignalRegistry) -> str | None:
    """Why a reader configured with ``module`` must not read a store whose writer recorded
    ``recorded``; ``None`` when it may."""
    theirs = _writer_record(recorded)
    if theirs is None:
        written_by = _module_named(recorded)
        return (
            f"the store was written with module {written_by!r}, whose record of its signal "
            f"definitions this version cannot read; this reader is configured with module "
            f"{module!r}: serve the signals the processor runs"
        )
    written_by = str(theirs.get("module"))
    written = {str(key): str(value) for key, value in theirs["signals"].items()}
    changed = _changed(theirs, registry)
    missing = sorted(signal.key for signal in registry if signal.key not in written)
    if not changed and not missing:
        return None
    reasons = []
    if changed:
        reasons.append(f"other definitions under the same version: {', '.join(changed)}")
    if missing:
        reasons.append(f"served here but not computed by the writer: {', '.join(missing)}")
    return (
        f"the store was written with module {written_by!r}, and this reader, configured with "
        f"module {module!r}, does not match its signal definitions ({'; '.join(reasons)}); "
        "serve the signals the processor runs (give the same module: a command's --signals, "
        "`signals` in the configuration or USERSIGNALS_SIGNALS)"
    )


def not_computed_by_writer(recorded: bytes | None, key: str) -> str | None:
    """Why the processor that recorded ``recorded`` does not compute the version ``key``
    (``name@version``); ``None`` when it does, or when no processor has recorded what it
    computes in a form this release reads (nothing to go by)."""
    theirs = _writer_record(recorded) if recorded is not None else None
    if theirs is None or key in theirs["signals"]:
        return None
    module = theirs.get("module")
    by = f" (module {str(module)!r})" if module else ""
    return f"the processor writing this store{by} does not compute it"


def _writer_record(recorded: bytes) -> dict[str, Any] | None:
    """The writer's record as this release reads it (a JSON object with its ``signals``), or
    ``None`` when it is not one."""
    try:
        theirs = json.loads(recorded)
    except ValueError:
        return None
    if not isinstance(theirs, dict) or not isinstance(theirs.get("signals"), dict):
        return None
    return theirs


def _module_named(recorded: bytes) -> object:
    """The module an unreadable record names, if it names one (for the message)."""
    try:
        theirs = json.loads(recorded)
    except ValueError:
        return None
    return theirs.get("module") if isinstance(theirs, dict) else None
