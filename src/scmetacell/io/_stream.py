"""Incremental ``.mmm`` writing: append blocks of cells, commit atomically (:class:`MMMWriter`)."""

from __future__ import annotations

import json
import os
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from ._errors import MMMWriteError
from ._format import HEADER_SIZE, MAX_FILE_BYTES, MAX_GENES, file_size, header_bytes
from ._writer import (
    COLLECTION_FILE,
    COLLECTION_FORMAT,
    _as_csr,
    _Block,
    _canonical,
    _encode_rows_into,
    _lengths_into,
    _tmp_name,
    remove_quietly,
    swap_into_place,
)


class MMMWriter:
    """Write a ``.mmm`` file block by block (for data that does not fit in memory), atomically.

    Blocks of cells are validated, encoded canonically and appended to a temporary file beside
    ``path``; :meth:`close` (or leaving the ``with`` block normally) moves the result into place. An
    error (a bad value in any block) or an interrupt drops everything: nothing appears at ``path``.
    Past the 4 GiB limit of one file, a new shard is started and ``path`` becomes a shard directory,
    exactly as :func:`~scmetacell.io.write_mmmatrix` writes it: both give identical bytes.

    Parameters
    ----------
    path
        The file to write.
    genes_count
        The number of genes (columns) of every block.

    Examples
    --------
    >>> import os, tempfile
    >>> import scmetacell as scm
    >>> adata = scm.datasets.pbmc3k()
    >>> path = os.path.join(tempfile.mkdtemp(), "cells.mmm")
    >>> with scm.io.MMMWriter(path, adata.n_vars) as w:
    ...     for start in range(0, adata.n_obs, 1000):
    ...         w.append(adata.X[start : start + 1000])
    >>> scm.io.read_mmmatrix(path).shape
    (2700, 32738)
    """

    def __init__(self, path: str | PathLike, genes_count: int, *, _shard_bytes: int = MAX_FILE_BYTES):
        self.path = Path(path)
        genes_count = int(genes_count)
        if not 0 <= genes_count <= MAX_GENES:
            raise ValueError(f"genes_count={genes_count}: must lie in [0, {MAX_GENES}].")
        limit = int(_shard_bytes)
        if not file_size(0, 0) <= limit <= MAX_FILE_BYTES:
            raise ValueError(
                f"_shard_bytes={_shard_bytes}: must lie in [{file_size(0, 0)}, {MAX_FILE_BYTES}]."
            )
        if not self.path.parent.is_dir():
            raise FileNotFoundError(
                f"path={str(self.path)!r}: the directory {str(self.path.parent)!r} does not exist."
            )
        self.genes_count = genes_count
        self._limit = limit
        self._tmp = _tmp_name(self.path)
        self._tmp.mkdir()
        self._shards: list[dict] = []
        self._file = None
        self._lengths: list[np.ndarray] = []  # stream lengths of the current shard's rows
        self._rows = 0  # rows in the current shard
        self._data = 0  # data bytes in the current shard
        self.profiles_count = 0
        self._state = "open"
        self._open_shard()

    # ---- shards ------------------------------------------------------------------------------------
    def _open_shard(self) -> None:
        name = f"shard-{len(self._shards):05d}.mmm"
        self._file = open(self._tmp / name, "wb")  # closed in _close_shard / abort
        self._file.write(header_bytes(0, self.genes_count))
        self._shards.append({"file": name, "profiles_count": 0})
        self._lengths, self._rows, self._data = [], 0, 0

    def _close_shard(self) -> None:
        f = self._file
        f.write(b"\x00" * (-self._data % 4))
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, dtype=np.int64)
        index = np.empty(self._rows + 1, dtype=np.int64)
        index[0] = HEADER_SIZE
        np.cumsum(lengths, out=index[1:])
        index[1:] += HEADER_SIZE
        f.write(index.astype("<u4").tobytes())
        f.seek(48)
        f.write(np.array([self._rows], dtype="<u4").tobytes())
        f.close()
        self._file = None
        self._shards[-1]["profiles_count"] = self._rows

    def _fits(self, rows: int, data: int) -> bool:
        return file_size(data, rows) <= self._limit

    # ---- public ------------------------------------------------------------------------------------
    def append(self, rows: Any) -> None:
        """Append a block of cells (scipy sparse, dense array; cells × ``genes_count``).

        The block is validated first (non-negative integer counts up to 2³¹ − 1); a bad block raises
        :class:`~scmetacell.io.MMMWriteError` and abandons the whole write.
        """
        if self._state != "open":
            raise ValueError(f"{self.path}: the MMMWriter is {self._state}.")
        try:
            m = _as_csr(rows)
            if m.shape[1] != self.genes_count:
                raise ValueError(f"rows: {m.shape[1]} genes, the writer has genes_count={self.genes_count}.")
            if not m.has_canonical_format:
                m = _canonical(m)
            n = m.shape[0]
            first = self.profiles_count
            blk = _Block(0, n, m, f"rows (cells {first}:{first + n})")
            lengths = np.zeros(n, dtype=np.int64)
            _lengths_into(blk, 0, n, lengths)
            cum = np.concatenate([[0], np.cumsum(lengths)])
            r = 0
            while r < n:
                # the most rows [r, r2) that still fit the current shard (the greedy rule of
                # write_mmmatrix: data + 4 bytes per row within limit - header - last entry - padding)
                budget = self._limit - HEADER_SIZE - 4 - 3 - self._data - 4 * self._rows
                k = cum[r:] - cum[r] + 4 * np.arange(n - r + 1)
                r2 = r + int(np.searchsorted(k, budget, side="right")) - 1
                if r2 == r:
                    if self._rows == 0:
                        raise MMMWriteError(
                            f"rows: cell {first + r} encodes to {int(lengths[r])} bytes, more than one "
                            f".mmm file can hold ({self._limit} bytes)."
                        )
                    self._close_shard()
                    self._open_shard()
                    continue
                out = np.empty(int(cum[r2] - cum[r]), dtype=np.uint8)
                _encode_rows_into(blk, r, r2, cum[r : r2 + 1] - cum[r], out)
                self._file.write(out.data)
                self._lengths.append(lengths[r:r2])
                self._rows += r2 - r
                self._data += out.size
                self.profiles_count += r2 - r
                r = r2
        except BaseException:
            self.abort()
            raise

    def close(self) -> None:
        """Finish the last shard and move the result to ``path`` atomically."""
        if self._state != "open":
            return
        try:
            self._close_shard()
            if len(self._shards) == 1:
                single = self._tmp / self._shards[0]["file"]
                moved = _tmp_name(self.path)
                os.replace(single, moved)
                try:
                    swap_into_place(moved, self.path)
                finally:
                    remove_quietly(moved)
                remove_quietly(self._tmp)
            else:
                meta = {
                    "format": COLLECTION_FORMAT,
                    "version": 1,
                    "profiles_count": self.profiles_count,
                    "genes_count": self.genes_count,
                    "shards": self._shards,
                }
                (self._tmp / COLLECTION_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
                swap_into_place(self._tmp, self.path)
            self._state = "closed"
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Drop everything written so far; nothing appears at ``path``."""
        if self._state == "open":
            if self._file is not None:
                try:
                    self._file.close()
                except OSError:  # pragma: no cover
                    pass
                self._file = None
            remove_quietly(self._tmp)
        self._state = "aborted"

    def __del__(self) -> None:
        # never closed: drop the temporary files (nothing was committed)
        if getattr(self, "_state", None) == "open":
            self.abort()

    def __enter__(self) -> MMMWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()
