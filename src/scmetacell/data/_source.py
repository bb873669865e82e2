"""Chunked cell sources: every pass over cells reads rows in chunks, never one dense N × genes array.

A :class:`CellSource` exposes the shape, the names and two reads: a contiguous block of rows
(:meth:`CellSource.read_rows`) and arbitrary rows (:meth:`CellSource.take`), both returned as
CSR. :meth:`CellSource.iter_chunks` walks all cells with a progress bar.

Implementations: :class:`AnnDataSource` (in-memory dense / sparse, backed ``.h5ad``, dask arrays) and
:class:`~scmetacell.data.MMMSource` (memory-mapped ``.mmm`` files and shard collections).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .._memory import trim_heap
from .._progress import progress_bar

DEFAULT_CHUNK_SIZE = 8192


def to_csr(block: Any, dtype=None) -> sp.csr_matrix:
    """Convert a block of rows (dense, scipy sparse, sparse array, dask, backed) to ``csr_matrix``."""
    if hasattr(block, "compute") and not sp.issparse(block):  # dask array
        block = block.compute()
    if hasattr(block, "to_memory"):  # anndata backed sparse dataset
        block = block.to_memory()
    if sp.issparse(block):
        out = sp.csr_matrix(block)
    else:
        out = sp.csr_matrix(np.asarray(block))
    if dtype is not None and out.dtype != dtype:
        out = out.astype(dtype)
    return out


class CellSource(ABC):
    """Abstract chunked source of cells (rows) × genes (columns)."""

    n_obs: int
    n_vars: int

    @property
    def shape(self) -> tuple[int, int]:
        """``(n_obs, n_vars)``."""
        return (self.n_obs, self.n_vars)

    @property
    def obs_names(self) -> pd.Index:
        """Cell names (numbered when the source has none)."""
        return pd.Index([str(i) for i in range(self.n_obs)])

    @property
    def var_names(self) -> pd.Index:
        """Gene names (numbered when the source has none)."""
        return pd.Index([str(i) for i in range(self.n_vars)])

    @abstractmethod
    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` as CSR."""

    def take(self, idx: np.ndarray) -> sp.csr_matrix:
        """Rows ``idx`` (any order, repeats allowed) as CSR, in the order given."""
        idx = np.asarray(idx, dtype=np.int64)
        if idx.size == 0:
            return sp.csr_matrix((0, self.n_vars))
        order = np.argsort(idx, kind="stable")
        sidx = idx[order]
        uniq, inverse = np.unique(sidx, return_inverse=True)
        block = self._take_sorted_unique(uniq)
        out = block[inverse]
        # undo the sort
        inv_order = np.empty_like(order)
        inv_order[order] = np.arange(order.size)
        return out[inv_order]

    def _take_sorted_unique(self, idx: np.ndarray) -> sp.csr_matrix:
        # default: read the spanning blocks and pick rows; subclasses override when they do better
        parts = []
        lo = 0
        while lo < idx.size:
            start = int(idx[lo])
            stop = min(start + DEFAULT_CHUNK_SIZE, self.n_obs)
            hi = np.searchsorted(idx, stop, side="left")
            block = self.read_rows(start, stop)
            parts.append(block[idx[lo:hi] - start])
            lo = hi
        return sp.vstack(parts, format="csr")

    def iter_chunks(
        self,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        *,
        progress: bool | None = None,
        desc: str = "reading cells",
        prefetch: bool = True,
    ) -> Iterator[tuple[int, int, sp.csr_matrix]]:
        """Yield ``(start, stop, rows)`` for consecutive chunks of ``chunk_size`` cells.

        With ``prefetch`` the next chunk is read by a background thread while the caller works on the
        current one (disk reads and decompression overlap with compute; at most two chunks are held).
        """
        if chunk_size < 1:
            raise ValueError(f"chunk_size: must be >= 1, got {chunk_size}.")
        starts = range(0, self.n_obs, chunk_size)

        def _read(start: int) -> sp.csr_matrix:
            return self.read_rows(start, min(start + chunk_size, self.n_obs))

        with progress_bar(total=self.n_obs, desc=desc, progress=progress) as bar:
            if not prefetch or len(starts) < 2:
                for start in starts:
                    stop = min(start + chunk_size, self.n_obs)
                    yield start, stop, _read(start)
                    bar.update(stop - start)
                    trim_heap()
                return
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scm-prefetch") as pool:
                pending = pool.submit(_read, starts[0])
                for i, start in enumerate(starts):
                    block = pending.result()
                    if i + 1 < len(starts):
                        pending = pool.submit(_read, starts[i + 1])
                    stop = min(start + chunk_size, self.n_obs)
                    yield start, stop, block
                    del block
                    bar.update(stop - start)
                    trim_heap()

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources (files, memory maps)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class AnnDataSource(CellSource):
    """Cells of an AnnData's ``X`` or a layer: dense, sparse, backed (``.h5ad``) or dask.

    Parameters
    ----------
    adata
        The AnnData (may be opened with ``backed='r'``).
    layer
        ``None`` or ``"X"`` for ``X``, else a key of ``layers``.
    """

    def __init__(self, adata: AnnData, layer: str | None = None):
        self.adata = adata
        self.layer = None if layer == "X" else layer
        if self.layer is None:
            if adata.X is None:
                raise ValueError("layer: the AnnData has no X.")
            self._mat = adata.X
        else:
            if self.layer not in adata.layers:
                raise KeyError(f"layer={layer!r}: no such layer; layers are {list(adata.layers)}.")
            self._mat = adata.layers[self.layer]
        self.n_obs, self.n_vars = adata.n_obs, adata.n_vars

    def __getstate__(self) -> dict:
        # a backed AnnData travels as its path (to dask workers) and is reopened read-only there
        state = self.__dict__.copy()
        if getattr(self.adata, "isbacked", False):
            state.update(adata=None, _mat=None, _backed_path=str(self.adata.filename))
        return state

    def __setstate__(self, state: dict) -> None:
        path = state.pop("_backed_path", None)
        self.__dict__.update(state)
        if path is not None:
            import anndata as ad

            self.adata = ad.read_h5ad(path, backed="r")
            self._mat = self.adata.X if self.layer is None else self.adata.layers[self.layer]

    @property
    def obs_names(self) -> pd.Index:
        return self.adata.obs_names

    @property
    def var_names(self) -> pd.Index:
        return self.adata.var_names

    @property
    def is_backed(self) -> bool:
        """Whether rows are read from disk."""
        return bool(getattr(self.adata, "isbacked", False)) and self.layer is None

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        return to_csr(self._mat[start:stop])

    def _take_sorted_unique(self, idx: np.ndarray) -> sp.csr_matrix:
        m = self._mat
        if sp.issparse(m) or isinstance(m, np.ndarray):
            return to_csr(m[idx])
        return super()._take_sorted_unique(idx)
