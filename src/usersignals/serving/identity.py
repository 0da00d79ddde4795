"""Which signals wrote a store, so that a reader never serves it with other ones.

A processor records its signals module and a digest of each signal version's compiled
definition in the store (:mod:`usersignals.signals.identity`). A serving worker, configured
with its own module, refuses to start on a store it would misread, and goes not-ready (its
reads answer 503) if a processor with conflicting signals starts writing while it runs: a
rolling deployment that reached the processors first, or the readers first, is visible at
once rather than served as empty or misread answers. Shadow versions the writer does not
compute yet, and signals the reader does not serve, are no conflict.
"""

from __future__ import annotations

from dataclasses import dataclass

from usersignals.signals.identity import identity_problem
from usersignals.signals.registry import SignalRegistry
from usersignals.state.versions import undeclared_problem


def mismatch(recorded: bytes | None, module: str, registry: SignalRegistry) -> str | None:
    """``None`` if a store whose writer recorded ``recorded`` may be read with ``module``'s
    signals; else why not. A store nobody has recorded signals in yet may be read."""
    if recorded is None:
        return None
    return identity_problem(recorded, module, registry)


@dataclass
class WriterCheck:
    """A serving worker's view of whether the store is still written with its signals."""

    module: str
    registry: SignalRegistry
    problem: str | None = None

    def observe(self, recorded: bytes | None) -> None:
        """``recorded``: the writer's record of its signals. The registry's served versions
        are the store's as of the worker's last refresh: a cut-over to a version this module
        does not declare is a problem too (it would answer the name with another version)."""
        self.problem = mismatch(recorded, self.module, self.registry) or undeclared_problem(
            self.registry.served_undeclared
        )
