"""The optional dependencies: a command or setting that needs one it lacks stops with one
line naming the install that brings it, not a traceback."""

from __future__ import annotations

from usersignals.errors import ConfigurationError


def require_pyarrow(what: str) -> None:
    """pyarrow (``usersignals[parquet]``) importable, or a :class:`ConfigurationError` saying
    that ``what`` (e.g. "reading the Parquet file x.parquet") needs it."""
    try:
        # The package first: one set aside (None in sys.modules) fails here, though its
        # submodule may be imported already.
        import pyarrow
        import pyarrow.parquet  # noqa: F401
    except ModuleNotFoundError:
        raise ConfigurationError(
            f"{what} needs pyarrow: pip install 'usersignals[parquet]'"
        ) from None
