"""Handing freed heap memory back to the OS between the chunks of long passes.

glibc keeps freed blocks of the heap for reuse, and after the first large ``free`` it raises its mmap
threshold (up to 32 MiB), so the many mid-sized temporaries of a chunked pass (sparse sums, distance
blocks) end up on the heap: the resident memory of a long pass creeps up by hundreds of MB that are free
but not returned (measured on 1M cells: 0.1–0.5 GB per stage). :func:`trim_heap` calls
``malloc_trim(0)`` — a one-off request, no setting is changed — where available (glibc), and does
nothing elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import time

_TRIM = None
_LAST = 0.0
MIN_INTERVAL = 0.25  # seconds between two trims (a trim walks the heap: ~1 ms per 100 MB)


def _load():
    global _TRIM
    if _TRIM is None:
        _TRIM = False
        if sys.platform.startswith("linux"):
            try:
                fn = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
                fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
                _TRIM = fn
            except (OSError, AttributeError):  # pragma: no cover - not glibc
                _TRIM = False
    return _TRIM


def trim_heap(*, force: bool = False) -> None:
    """Return free heap memory to the OS (glibc ``malloc_trim``); at most every :data:`MIN_INTERVAL` s."""
    global _LAST
    fn = _load()
    if not fn:
        return
    now = time.monotonic()
    if force or now - _LAST >= MIN_INTERVAL:
        fn(0)
        _LAST = time.monotonic()
