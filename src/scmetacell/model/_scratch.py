"""Per-cell working arrays of the final pass, kept out of memory for large inputs.

The final pass holds a few arrays with one row per cell: the embeddings (``n_latent`` float32) and the
``k`` nearest entries with their squared distances. Kept in memory they cost ~300 bytes per cell (3 GB at
10M cells) beyond the result. Above :data:`SCRATCH_MIN_BYTES` they are memory-mapped temporary files
(in ``$TMPDIR``, unlinked at once, so nothing is left behind even when the process is killed), and the
passes that walk them hand each chunk's pages back to the OS afterwards (:func:`release`): the pages stay
in the file cache (not counted in the process's resident memory) and the resident working set stays a
few chunks, whatever the number of cells.
"""

from __future__ import annotations

import mmap
import os
import tempfile

import numpy as np

from .._memory import trim_heap

SCRATCH_MIN_BYTES = 8 * 2**20  # smaller arrays stay in memory


def scratch_array(shape: tuple[int, ...], dtype, *, min_bytes: int | None = None) -> np.ndarray:
    """Return an uninitialised array: in memory when small, else a memory-mapped temporary (unlinked) file."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape)) * dtype.itemsize
    limit = SCRATCH_MIN_BYTES if min_bytes is None else int(min_bytes)
    if nbytes < max(limit, 1):
        return np.empty(shape, dtype=dtype)
    fd, path = tempfile.mkstemp(prefix="scmetacell-", suffix=".tmp")
    try:
        os.ftruncate(fd, nbytes)
        arr = np.memmap(path, dtype=dtype, mode="r+", shape=tuple(shape))
    finally:
        os.close(fd)
        os.unlink(path)  # the mapping keeps the data; the file disappears with the process
    return arr


def is_scratch(arr) -> bool:
    """Whether ``arr`` is (a view of) a memory-mapped scratch array."""
    return isinstance(getattr(arr, "_mmap", None), mmap.mmap)


def release(*arrays) -> None:
    """Hand the resident pages of memory-mapped arrays, and free heap memory, back to the OS.

    Data is kept: written pages go to the file cache and are read back on the next access. In-memory
    arrays are untouched.
    """
    trim_heap()
    for arr in arrays:
        mm = getattr(arr, "_mmap", None)
        if isinstance(mm, mmap.mmap) and hasattr(mmap, "MADV_DONTNEED"):
            try:
                mm.madvise(mmap.MADV_DONTNEED)
            except (OSError, ValueError):  # pragma: no cover - closed map or unsupported platform
                pass
