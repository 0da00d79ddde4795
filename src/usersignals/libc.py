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


def prctl(option: int, argument: int) -> bool:
    """Linux's ``prctl(option, argument)``; False where there is none or it refused."""
    function = libc_function("prctl", ctypes.c_int, *[ctypes.c_ulong] * 4)
    return function is not None and function(option, argument, 0, 0, 0) == 0
