"""A file a command reads (events, a table, a signals module), checked before anything opens.

One place for the two messages: a path that is a directory was reported as missing, where
the user's mistake is the kind of path, not its absence.
"""

from __future__ import annotations

from pathlib import Path

from usersignals.errors import ConfigurationError


def check_input_file(path: Path, what: str) -> None:
    """Refuse ``path`` unless it is a file, naming it as ``what`` ("events file")."""
    if path.is_dir():
        raise ConfigurationError(f"{what} {str(path)!r} is a directory")
    if not path.is_file():
        raise ConfigurationError(f"{what} {str(path)!r} does not exist")
