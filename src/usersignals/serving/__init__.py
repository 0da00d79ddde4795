"""Serving: reading users' signals with a request-time context."""

from usersignals.serving.reader import SignalReader

__all__ = ["SignalReader"]
