"""Threads over row blocks for the ``.mmm`` codec (the compiled kernels release the GIL).

The kernels of :mod:`._codec` are ``nogil``: a large read or write is cut into contiguous row blocks of
about equal work, a few per thread, which plain Python threads started for the call take in turn (a
thread that the machine's other work slows down takes fewer blocks). No pool outlives the call, so
forked processes and concurrent callers are safe; numba's own threading layer is not used. Small
inputs run in the calling thread. The number of threads is
:attr:`scmetacell.settings.io_threads <scmetacell._settings._Settings.io_threads>`.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable, Sequence

import numpy as np

MIN_WORK_PER_BLOCK = 1 << 18  # bytes (decode) or entries (encode) below which a block is not worth a thread
BLOCKS_PER_THREAD = 4  # blocks per thread (the threads take them in turn)


def available_cores() -> int:
    """Return the number of CPU cores this process may run on (its affinity mask), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def io_threads() -> int:
    """Return the number of threads the codec may use (the setting, else every available core)."""
    from .._settings import settings

    n = getattr(settings, "io_threads", None)
    if n is None:
        return available_cores()
    n = int(n)
    if n < 1:
        raise ValueError(f"scmetacell.settings.io_threads={n}: must be None or >= 1.")
    return n


def n_blocks(work: int) -> int:
    """Return how many row blocks ``work`` units are cut into (1: stay in the calling thread)."""
    threads = io_threads()
    if threads == 1:
        return 1
    return int(max(1, min(BLOCKS_PER_THREAD * threads, work // max(1, MIN_WORK_PER_BLOCK))))


def split(cum: np.ndarray, k: int) -> np.ndarray:
    """Return ``k + 1`` row bounds cutting rows into ``k`` contiguous blocks of about equal work.

    ``cum`` is the running work before each row and after the last (length ``rows + 1``, starting at 0).
    """
    rows = cum.size - 1
    if k <= 1:
        return np.array([0, rows], dtype=np.int64)
    targets = cum[0] + (cum[-1] - cum[0]) * np.arange(1, k) / k
    inner = np.searchsorted(cum, targets, side="left")
    bounds = np.concatenate([[0], np.clip(inner, 0, rows), [rows]]).astype(np.int64)
    return np.maximum.accumulate(bounds)


def words(buf: np.ndarray) -> np.ndarray:
    """Return the bytes ``buf`` as little-endian 16-bit words, one per pair (a view on little-endian CPUs)."""
    w = buf[: buf.size - buf.size % 2].view("<u2")
    return w if w.dtype.isnative else w.astype(np.uint16)


def run_blocks(fn: Callable[[int], object], k: int) -> Sequence[object]:
    """Run ``fn(0) … fn(k - 1)`` on up to :func:`io_threads` threads; return their results in block order.

    The calling thread is one of the threads; each takes the next block not yet taken. An exception in
    any block is raised (the first block's, in block order) once the threads have finished.
    """
    if k <= 1:
        return [fn(0)]
    results: list[object] = [None] * k
    errors: list[BaseException | None] = [None] * k
    blocks = itertools.count()  # next() on a count is atomic under the GIL
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                j = next(blocks)
            if j >= k:
                return
            try:
                results[j] = fn(j)
            except BaseException as e:  # re-raised in the caller
                errors[j] = e

    threads = [threading.Thread(target=work, daemon=True) for _ in range(min(io_threads(), k) - 1)]
    for t in threads:
        t.start()
    work()
    for t in threads:
        t.join()
    for e in errors:
        if e is not None:
            raise e
    return results
