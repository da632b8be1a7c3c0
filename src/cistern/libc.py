"""The C library functions Python's ``os`` module does not offer, looked up once through ``ctypes``.

Used for ``fallocate`` and ``fstatfs`` (:mod:`cistern.storage.file`: hole punching, the filesystem type
that decides inline I/O) and ``mallopt`` (:mod:`cistern.heap`).  The library is loaded with
``use_errno=True``, so a failed call's errno is ``ctypes.get_errno()``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
from typing import Any


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c") or "libc.so.6"
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


def function(name: str, argtypes: list[Any], restype: Any) -> Any:
    """The C library's function ``name`` with its argument and result types set, or None when there is no
    C library to load or it has no such function (musl lacks ``mallopt``, for example)."""
    libc = _libc()
    if libc is None:
        return None
    try:
        fn = getattr(libc, name)
    except AttributeError:
        return None
    fn.argtypes = argtypes
    fn.restype = restype
    return fn
