"""Which signals wrote a store, so that a reader never serves it with other ones.

A processor records its signals module and a digest of their compiled definitions (names,
versions, filters, aggregations) in the store. A serving worker, configured with its own
module, refuses to start on a store recorded with other signals, and goes not-ready (its
reads answer 503) if a processor with other signals starts writing while it runs: a rolling
deployment that reached the processors first, or the readers first, is visible at once
rather than served as empty or misread answers.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from usersignals.signals.registry import SignalRegistry
from usersignals.state.keys import meta_key

SIGNALS_KEY = meta_key("signals")


def signals_identity(module: str, registry: SignalRegistry) -> bytes:
    """What a writer records: the module and a digest of the compiled definitions."""
    digest = hashlib.sha256(registry.to_json().encode()).hexdigest()
    return json.dumps({"module": module, "sha256": digest}, sort_keys=True).encode()


def mismatch(recorded: bytes | None, expected: bytes) -> str | None:
    """``None`` if a store recorded with ``recorded`` may be read as ``expected``; else why not.

    A store nobody has recorded signals in yet (no processor has run) may be read.
    """
    if recorded is None or recorded == expected:
        return None
    mine = json.loads(expected)
    return (
        f"the store is written with {_describe(recorded)}, but this reader is configured with "
        f"module {mine['module']!r} (definitions {mine['sha256'][:12]}); serve the signals "
        "the processor runs (set `signals` / USERSIGNALS_SIGNALS to the same module and version)"
    )


def _describe(recorded: bytes) -> str:
    try:
        theirs = json.loads(recorded)
        return f"module {theirs['module']!r} (definitions {theirs['sha256'][:12]})"
    except (ValueError, KeyError, TypeError):
        return "signals this version cannot read"


@dataclass
class WriterCheck:
    """A serving worker's view of whether the store is still written with its signals."""

    expected: bytes
    problem: str | None = None

    def observe(self, recorded: bytes | None) -> None:
        self.problem = mismatch(recorded, self.expected)
