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
import weakref

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
    except BaseException:
        os.close(fd)
        raise
    finally:
        os.unlink(path)  # the mapping keeps the data; the file disappears with the process
    arr._scm_fd = fd  # scattered rows are read / written through the descriptor (take_rows, put_rows)
    weakref.finalize(arr, os.close, fd)
    return arr


def _row_io(op, fd: int, rows: np.ndarray, block: np.ndarray) -> None:
    """Read or write the rows ``rows`` (sorted) of a scratch file, one call per run of consecutive rows.

    ``op`` is ``os.preadv`` or ``os.pwritev``; ``block`` holds one row per entry of ``rows``.
    """
    if rows.size == 0:
        return
    rb = block.strides[0] if block.ndim > 1 else block.itemsize
    buf = memoryview(block.reshape(-1).view(np.uint8))
    brk = np.flatnonzero(np.diff(rows) != 1) + 1
    for a, b in zip(np.r_[0, brk].tolist(), np.r_[brk, rows.size].tolist(), strict=True):
        op(fd, [buf[a * rb : b * rb]], int(rows[a]) * rb)


def take_rows(arr: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``arr[rows]`` (a copy) for sorted ``rows``; scratch files are read with ``preadv``.

    A gather through the memory map would map far more than it reads (the kernel maps whole folios
    around each faulting page: 7,700 scattered rows of a 600 MB file mapped all of it), so scattered
    reads of scratch arrays go through the file descriptor, which maps nothing.
    """
    fd = getattr(arr, "_scm_fd", None)
    rows = np.asarray(rows)
    if fd is None or rows.dtype == bool:
        return np.asarray(arr[rows])
    out = np.empty((rows.size, *arr.shape[1:]), dtype=arr.dtype)
    _row_io(os.preadv, fd, rows, out)
    return out


def put_rows(arr: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
    """``arr[rows] = values`` for sorted ``rows``; scratch files are written with ``pwritev``."""
    fd = getattr(arr, "_scm_fd", None)
    rows = np.asarray(rows)
    if fd is None:
        arr[rows] = values
        return
    vals = np.ascontiguousarray(values, dtype=arr.dtype).reshape((rows.size, *arr.shape[1:]))
    _row_io(os.pwritev, fd, rows, vals)


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
