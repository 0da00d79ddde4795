"""Owning resources: one ``with`` protocol for everything that holds a handle.

A runner owns what it opened (its store, consumer, dead-letter sink) and closes all of it
when it stops or fails; :func:`close_all` closes each even when one of them fails, so an
error closing the consumer does not leave the store's lock held.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from contextlib import ExitStack
from typing import Protocol, Self


class SupportsClose(Protocol):
    def close(self) -> None: ...


class Closing(ABC):
    """Base for a resource owner: ``with owner:`` calls ``owner.close()`` on the way out."""

    @abstractmethod
    def close(self) -> None:
        """Release what the owner holds."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def close_all(resources: Iterable[SupportsClose]) -> None:
    """Close each of ``resources`` in order; all are closed even if some fail, then the
    failure propagates (a later one chained to an earlier)."""
    with ExitStack() as stack:
        for resource in reversed(list(resources)):
            stack.callback(resource.close)
