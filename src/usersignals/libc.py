"""The C library's functions, through ctypes, where the process needs one that Python does
not wrap (``mallopt``, ``prctl``)."""

from __future__ import annotations

import ctypes
from typing import Any


def libc_function(name: str, *argtypes: Any) -> Any:
    """The C library's function ``name`` (returning an int), or None where it has none."""
    try:
        function = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError):
        return None
    function.argtypes = list(argtypes)
    function.restype = ctypes.c_int
    return function
