"""Memory-mapped ``.mmm`` matrices: :class:`MMMatrix` (one file) and the shared read API."""

from __future__ import annotations

import mmap
from abc import ABC, abstractmethod
from collections.abc import Iterator
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._errors import MMMFormatError, MMMGeneIndexError, MMMValueError
from ._format import (
    CELL_NAME_FILES,
    GENE_NAME_FILES,
    MAX_NAMED_GENES,
    parse_header,
    sidecar_dir,
    sidecar_names,
)

DEFAULT_CHUNK_SIZE = 8192


RELEASE_MIN_BYTES = 1 << 20  # decoded byte ranges at least this large are released from memory


class MMMatrixBase(ABC):
    """Read API shared by :class:`MMMatrix` and :class:`~scmetacell.io.MMMCollection`.

    Rows are profiles (cells), columns genes: reads return ``profiles × genes`` CSR matrices with
    ``int32`` values (counts) and ``int32`` indices. Only :meth:`to_numpy_matrix` follows the old
    ``genes × profiles`` orientation.
    """

    profiles_count: int
    """The number of profiles (cells, rows)."""
    genes_count: int
    """The number of genes (columns)."""
    path: Path

    _obs_names: pd.Index | None = None
    _var_names: pd.Index | None = None
    _entries: int | None = None

    # ---- shape and names -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        """``(profiles_count, genes_count)``."""
        return (self.profiles_count, self.genes_count)

    @property
    def n_obs(self) -> int:
        """The number of profiles (alias of :attr:`profiles_count`)."""
        return self.profiles_count

    @property
    def n_vars(self) -> int:
        """The number of genes (alias of :attr:`genes_count`)."""
        return self.genes_count

    def __len__(self) -> int:
        return self.profiles_count

    def _names_dir(self) -> Path | None:
        return sidecar_dir(self.path)

    @property
    def obs_names(self) -> pd.Index:
        """Cell names from the container's barcode / name file when present, else ``"0", "1", …``."""
        if self._obs_names is None:
            names = sidecar_names(self._names_dir(), CELL_NAME_FILES, self.profiles_count)
            self._obs_names = pd.Index(names if names is not None else _numbered(self.profiles_count))
        return self._obs_names

    @property
    def var_names(self) -> pd.Index:
        """Gene names from the container's gene name file when present, else ``"0", "1", …``.

        Raises :class:`~scmetacell.io.MMMFormatError` beyond 4,194,304 genes: such a ``genes_count`` is
        almost surely a corrupted header, and the names alone would take gigabytes.
        """
        if self._var_names is None:
            if self.genes_count > MAX_NAMED_GENES:
                raise MMMFormatError(
                    f"genes_count {self.genes_count} is implausibly large (more than {MAX_NAMED_GENES} "
                    "genes; a corrupted header?); read rows with MMMatrix / MMMCollection instead",
                    52,
                    self.path,
                )
            names = sidecar_names(self._names_dir(), GENE_NAME_FILES, self.genes_count)
            self._var_names = pd.Index(names if names is not None else _numbered(self.genes_count))
        return self._var_names

    # ---- reads -----------------------------------------------------------------------------------
    @abstractmethod
    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` (profiles) as a ``profiles × genes`` CSR matrix with int32 values."""

    @abstractmethod
    def take(self, idx: np.ndarray) -> sp.csr_matrix:
        """Rows ``idx`` (any order, repeats allowed) as CSR, in the order given."""

    def _check_range(self, start: int, stop: int) -> tuple[int, int]:
        start, stop = int(start), int(stop)
        if not 0 <= start <= stop <= self.profiles_count:
            raise IndexError(f"rows {start}:{stop}: out of range for {self.profiles_count} profiles.")
        return start, stop

    def _check_idx(self, idx) -> np.ndarray:
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (self.profiles_count,):
                raise IndexError(
                    f"idx: boolean mask of shape {idx.shape}, expected ({self.profiles_count},)."
                )
            return np.flatnonzero(idx)
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise IndexError(f"idx: integer row indices expected, got dtype {idx.dtype}.")
        idx = idx.astype(np.int64, copy=False).ravel()
        if idx.size:
            lo, hi = int(idx.min()), int(idx.max())
            if lo < -self.profiles_count or hi >= self.profiles_count:
                raise IndexError(f"idx: row indices must lie in [0, {self.profiles_count}), got {lo}..{hi}.")
            if lo < 0:
                idx = np.where(idx < 0, idx + self.profiles_count, idx)
        return idx

    def __getitem__(self, key) -> sp.csr_matrix:
        if isinstance(key, slice):
            start, stop, step = key.indices(self.profiles_count)
            if step == 1:
                return self.read_rows(start, max(start, stop))
            return self.take(np.arange(start, stop, step))
        if isinstance(key, (int, np.integer)):
            i = int(key)
            if i < 0:
                i += self.profiles_count
            self._check_range(i, i + 1)
            return self.read_rows(i, i + 1)
        return self.take(key)

    def iter_chunks(self, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Iterator[tuple[int, int, sp.csr_matrix]]:
        """Yield ``(start, stop, rows)`` for consecutive blocks of ``chunk_size`` profiles."""
        if int(chunk_size) < 1:
            raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}.")
        for start in range(0, self.profiles_count, int(chunk_size)):
            stop = min(start + int(chunk_size), self.profiles_count)
            yield start, stop, self.read_rows(start, stop)

    def to_csr(self) -> sp.csr_matrix:
        """Return the whole matrix as a ``profiles × genes`` CSR matrix (int32 values)."""
        return self.read_rows(0, self.profiles_count)

    # ---- the old MemoryMappedMatrix API ------------------------------------------------------------
    def entries_count(self) -> int:
        """Return the number of non-zero entries (distinct genes with a positive sum, over all profiles)."""
        if self._entries is None:
            total = 0
            for _, _, block in self.iter_chunks(65536):
                total += block.nnz
            self._entries = total
        return self._entries

    def add_profile_data(self, profile_index: int, array: np.ndarray) -> np.ndarray:
        """Add profile ``profile_index``'s values into ``array`` (length ``genes_count``), in place.

        Values accumulate (``array[gene] += value``), as in the old ``MemoryMappedMatrix``.

        Returns
        -------
        ``array``, for chaining.
        """
        i = int(profile_index)
        if not 0 <= i < self.profiles_count:
            raise IndexError(
                f"profile_index={profile_index}: out of range for {self.profiles_count} profiles."
            )
        if not isinstance(array, np.ndarray) or array.shape != (self.genes_count,):
            raise ValueError(
                f"array: a numpy array of shape ({self.genes_count},) expected, "
                f"got {getattr(array, 'shape', type(array).__name__)}."
            )
        row = self.read_rows(i, i + 1)
        array[row.indices] += row.data.astype(array.dtype, copy=False)
        return array

    def to_numpy_matrix(self) -> np.ndarray:
        """Return the full matrix as a dense ``genes × profiles`` int32 array (the old orientation).

        The array is column-major, so each profile's column is contiguous. This is the transpose of
        the AnnData ``X`` returned by :func:`~scmetacell.io.read_mmmatrix`.
        """
        return self.to_csr().toarray().T

    # ---- resources -------------------------------------------------------------------------------
    @abstractmethod
    def close(self) -> None:
        """Release the memory map(s)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.path)!r}, "
            f"profiles_count={self.profiles_count}, genes_count={self.genes_count})"
        )


def _numbered(n: int) -> np.ndarray:
    """``"0", "1", …, str(n - 1)`` as an object array (what ``pd.Index(np.arange(n).astype(str))`` holds)."""
    return np.array(list(map(str, range(n))), dtype=object)


def _row_id(rows, row: int) -> int:
    return int(rows + row) if np.isscalar(rows) else int(rows[row])


def _csr(indptr, indices, data, n_rows: int, n_cols: int) -> sp.csr_matrix:
    m = sp.csr_matrix((n_rows, n_cols), dtype=data.dtype)
    m.indptr, m.indices, m.data = indptr, indices, data
    return m


class MMMatrix(MMMatrixBase):
    """A read-only, memory-mapped ``.mmm`` file (``METACELL SPARSE MEMORY MAPPED MATRIX VERSION 0``).

    Opening validates the header, the offsets index and the padding against the file size (no pair
    stream is read). Rows are decoded on demand from the memory map by a compiled kernel; a gene
    index at or past ``genes_count`` raises :class:`~scmetacell.io.MMMGeneIndexError` when its row is read.
    Reads release the GIL and may run from several threads at once. Replacing the file (writes are
    atomic renames) does not disturb an open matrix: it keeps reading the contents it opened.

    Parameters
    ----------
    path
        The ``.mmm`` file.

    Examples
    --------
    >>> import numpy as np, scipy.sparse as sp, tempfile, os
    >>> import scmetacell as scm
    >>> path = os.path.join(tempfile.mkdtemp(), "counts.mmm")
    >>> scm.io.write_mmmatrix(path, sp.csr_matrix(np.array([[0, 3, 0], [700, 0, 1]])))
    >>> with scm.io.MMMatrix(path) as m:
    ...     print(m.shape, m.entries_count(), m.read_rows(1, 2).toarray())
    (2, 3) 3 [[700   0   1]]
    """

    def __init__(self, path: str | PathLike):
        self.path = Path(path)
        self._mmap = None
        with open(self.path, "rb") as f:
            size = f.seek(0, 2)
            if size == 0:
                buf = np.zeros(0, dtype=np.uint8)
            else:
                self._mmap = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                buf = np.frombuffer(self._mmap, dtype=np.uint8)
        try:
            self.profiles_count, self.genes_count, self._index, self._data_end = parse_header(buf, self.path)
        except BaseException:
            del buf
            self.close()
            raise
        self._buf = buf
        self.nbytes = size
        self._release(self._data_end, size)  # the index was copied: its pages need not stay resident

    def __reduce__(self):
        # pickles as its path (e.g. into DataLoader worker processes), reopened there
        return (type(self), (str(self.path),))

    def close(self) -> None:
        """Release the memory map (reads after closing raise ``ValueError``)."""
        self._buf = None
        if self._mmap is not None:
            try:
                self._mmap.close()
            except BufferError:  # pragma: no cover - a caller still holds a view; released with it
                pass
            self._mmap = None

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return getattr(self, "_buf", None) is None

    def _buffer(self) -> np.ndarray:
        if self.closed:
            raise ValueError(f"{self.path}: the MMMatrix is closed.")
        return self._buf

    def _decode(self, starts: np.ndarray, stops: np.ndarray, rows) -> sp.csr_matrix:
        from . import _codec, _parallel

        buf = self._buffer()
        n = starts.size
        nbytes = stops - starts
        pairs = int(nbytes.sum()) // 2
        k = _parallel.n_blocks(2 * pairs) if n > 1 else 1
        if k == 1:
            # one thread: decode into room for one entry per pair (the untouched tail costs nothing)
            bounds = np.array([0, n], dtype=np.int64)
            bases = np.array([0, pairs], dtype=np.int64)
        else:
            # threads over row blocks of about equal bytes: count each block's entries, then every
            # block decodes straight to its place in the result
            cum = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(nbytes, out=cum[1:])
            bounds = _parallel.split(cum, k)
            words = _parallel.words(buf)
            counts = _parallel.run_blocks(
                lambda j: _codec.count_entries(words, starts, stops, bounds[j], bounds[j + 1]), k
            )
            bases = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        nnz_max = int(bases[-1])
        wide = nnz_max > _codec.INT32_MAX
        indptr = np.empty(n + 1, dtype=np.int64 if wide else np.int32)
        indptr[0] = 0
        indices = np.empty(nnz_max, dtype=np.int64 if wide else np.int32)
        data = np.empty(nnz_max, dtype=np.int32)
        out = _parallel.run_blocks(
            lambda j: _codec.decode_block(
                buf,
                starts,
                stops,
                bounds[j],
                bounds[j + 1],
                self.genes_count,
                indptr,
                indices,
                data,
                bases[j],
                bases[j + 1],
            ),
            k,
        )
        for status, row, pos, _ in out:  # blocks in row order: the first failing block has the first bad row
            if status == _codec.GENE_OUT_OF_RANGE:
                raise MMMGeneIndexError(
                    f"a pair moves profile {_row_id(rows, row)}'s gene index to genes_count "
                    f"({self.genes_count}) or beyond",
                    int(pos),
                    self.path,
                )
            if status == _codec.VALUE_OVERFLOW:
                raise MMMValueError(
                    f"profile {_row_id(rows, row)} has a value above the int32 maximum", int(pos), self.path
                )
            if status != _codec.OK:  # pragma: no cover
                raise MMMFormatError(f"decoder status {status}", int(pos), self.path)
        nnz = int(out[-1][3])
        if k > 1 and any(
            int(o[3]) != int(b) for o, b in zip(out, bases[1:], strict=True)
        ):  # pragma: no cover
            raise MMMFormatError("decoder count mismatch", None, self.path)
        if nnz < nnz_max // 2:  # do not keep a much larger buffer alive
            indices, data = indices[:nnz].copy(), data[:nnz].copy()
        else:
            indices, data = indices[:nnz], data[:nnz]
        if wide and nnz <= _codec.INT32_MAX:
            indptr, indices = indptr.astype(np.int32), indices.astype(np.int32)
        return _csr(indptr, indices, data, n, self.genes_count)

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` as a ``profiles × genes`` CSR matrix (int32 values)."""
        start, stop = self._check_range(start, stop)
        offsets = self._index[start : stop + 1].astype(np.int64)
        out = self._decode(offsets[:-1], offsets[1:], start)
        if stop > start:
            self._release(int(offsets[0]), int(offsets[-1]))
        return out

    def take(self, idx) -> sp.csr_matrix:
        """Rows ``idx`` (any order, repeats allowed, or a boolean mask) as CSR, in the order given."""
        idx = self._check_idx(idx)
        starts, stops = self._index[idx].astype(np.int64), self._index[idx + 1].astype(np.int64)
        out = self._decode(starts, stops, idx)
        if idx.size:
            self._release(int(starts.min()), int(stops.max()))
        return out

    def _release(self, lo: int, hi: int) -> None:
        """Drop the mapped pages of bytes ``lo:hi`` from this process's memory once they are decoded.

        The pages stay in the operating system's file cache (a later read faults them back in), but they
        no longer count in the process's resident memory: a pass over a file larger than memory keeps
        the process at the size of a chunk instead of growing by the file's size.
        """
        if self._mmap is None or hi - lo < RELEASE_MIN_BYTES or not hasattr(mmap, "MADV_DONTNEED"):
            return
        lo -= lo % mmap.PAGESIZE
        try:
            self._mmap.madvise(mmap.MADV_DONTNEED, lo, min(hi, self.nbytes) - lo)
        except (OSError, ValueError):  # pragma: no cover - advice only
            pass

    def row_nbytes(self) -> np.ndarray:
        """Return the encoded size in bytes of each profile's pair stream (int64)."""
        return np.diff(self._index.astype(np.int64))
