"""A running sum of sparse (metacells × genes) rows in linear time and with bounded extra memory.

Aggregating N cells into K metacells chunk by chunk adds each cell's row to its metacell's row of a running
sum. ``acc = acc + part`` copies the whole sum at every chunk: O(chunks × output) time (quadratic in the
cells at a fixed number of cells per metacell) and twice the output in memory during each addition.

:class:`RowBlockSum` splits the rows (metacells) into blocks. The cells' rows are handed to their block's
pending list (:meth:`RowBlockSum.add_rows`: no per-chunk metacells × genes product is formed); a block
absorbs its pending rows, in one compiled pass (:func:`~scmetacell.tl._sum_kernel.merge_rows`: a dense
accumulator per row, the result kept canonical), once they hold ``slack`` × the block's stored entries.
Every stored entry is therefore copied O(1 / slack) times in all — linear time — and memory stays at the
sum itself plus ``slack`` of it, plus one block in transit. :meth:`RowBlockSum.result` finalises block by
block (scaling, dtype) into one preallocated CSR, freeing each block as it is copied.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from .._memory import trim_heap

MIN_MERGE = 1 << 15  # a block's pending rows are merged once they hold at least this many entries
N_BLOCKS = 64  # rows are split into about this many blocks (at least MIN_ROWS_PER_BLOCK rows each)
MIN_ROWS_PER_BLOCK = 1024
TRIM_BYTES = 64 << 20  # finalising: freed blocks go back to the OS whenever this much has been freed


def _csr_bytes(m) -> int:
    return (
        sum(a.nbytes for a in m)
        if isinstance(m, tuple)
        else m.data.nbytes + m.indices.nbytes + m.indptr.nbytes
    )


class RowBlockSum:
    """Running sum of sparse ``n_rows × n_cols`` rows: :meth:`add_rows` (cells to metacells), :meth:`add`.

    Parameters
    ----------
    n_rows, n_cols
        Shape of the sum.
    dtype
        Accumulation dtype (float, integer or complex: a complex sum carries two sums in one pattern).
    rows_per_block
        Rows per block (the unit of merging); default ``n_rows / N_BLOCKS``, at least
        :data:`MIN_ROWS_PER_BLOCK`.
    slack
        A block merges its pending rows once they hold ``slack`` × its stored entries (or
        :data:`MIN_MERGE`): memory ≤ (1 + slack) × the sum, each entry copied about ``1 / slack`` times.
    """

    def __init__(
        self,
        n_rows: int,
        n_cols: int,
        dtype,
        *,
        rows_per_block: int | None = None,
        slack: float = 0.5,
    ):
        self.shape = (int(n_rows), int(n_cols))
        self.dtype = np.dtype(dtype)
        if rows_per_block is None:
            rows_per_block = max(MIN_ROWS_PER_BLOCK, -(-int(n_rows) // N_BLOCKS))
        self.step = step = max(1, int(rows_per_block))
        self.starts = np.arange(0, max(n_rows, 1), step, dtype=np.int64)
        self.stops = np.minimum(self.starts + step, n_rows)
        # a block: None, or its canonical CSR as a tuple (indptr int64, indices, data)
        self.blocks: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = [None] * self.starts.size
        # pending rows of a block: (entries per row, indices, data, local row) pieces
        self.pending: list[list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]] = [
            [] for _ in self.starts
        ]
        self.pending_nnz = np.zeros(self.starts.size, dtype=np.int64)
        self.slack = float(slack)

    def add(self, part: sp.spmatrix) -> None:
        """Add one ``n_rows × n_cols`` part (its rows to the same rows of the sum)."""
        if part.shape != self.shape:
            raise ValueError(f"part of shape {part.shape}; expected {self.shape}.")
        part = sp.csr_matrix(part)
        rows = np.flatnonzero(np.diff(part.indptr))
        self.add_rows(part[rows], rows)

    def add_rows(self, rows: sp.spmatrix, labels: np.ndarray) -> None:
        """Add row ``i`` of ``rows`` (``len(labels) × n_cols``) to row ``labels[i]`` of the sum.

        Rows labelled ``-1`` are skipped.
        """
        rows = sp.csr_matrix(rows)
        labels = np.asarray(labels, dtype=np.int64)
        if rows.shape[1] != self.shape[1] or rows.shape[0] != labels.size:
            raise ValueError(
                f"rows of shape {rows.shape} with {labels.size} labels; "
                f"expected {labels.size} × {self.shape[1]}."
            )
        if labels.size and (labels.max() >= self.shape[0] or labels.min() < -1):
            raise ValueError(f"labels: must be in [-1, {self.shape[0] - 1}].")
        block = np.where(labels >= 0, labels // self.step, -1)
        order = np.argsort(block, kind="stable")
        bounds = np.searchsorted(block[order], np.arange(-1, self.starts.size + 1))
        keep = order[bounds[1] :]  # rows grouped by block (skipped rows dropped)
        rows, labels, bounds = rows[keep], labels[keep], bounds[1:] - bounds[1]
        indptr = rows.indptr
        for b in np.flatnonzero(np.diff(bounds)):
            lo, hi = int(bounds[b]), int(bounds[b + 1])
            a, e = int(indptr[lo]), int(indptr[hi])
            if a == e:
                continue
            piece = (  # copies: pending pieces never hold the caller's chunk alive
                np.diff(indptr[lo : hi + 1]).astype(np.int64),
                rows.indices[a:e].copy(),
                rows.data[a:e].astype(self.dtype, copy=True),
                labels[lo:hi] - int(self.starts[b]),
            )
            nnz = e - a
            self.pending[b].append(piece)
            self.pending_nnz[b] += nnz
            stored = 0 if self.blocks[b] is None else self.blocks[b][1].size
            if self.pending_nnz[b] >= max(MIN_MERGE, self.slack * stored):
                self._merge(b)

    def _merge(self, b: int) -> None:
        parts = self.pending[b]
        if not parts:
            return
        from ._sum_kernel import merge_rows  # numba: compiled (once, cached) on first use

        self.pending[b] = []
        self.pending_nnz[b] = 0
        n_rows = int(self.stops[b] - self.starts[b])
        cat = [np.concatenate([p[i] for p in parts]) if len(parts) > 1 else parts[0][i] for i in range(4)]
        del parts
        idx_dtype = cat[1].dtype
        stored = self.blocks[b]
        if stored is None:
            stored = (np.zeros(n_rows + 1, np.int64), np.empty(0, idx_dtype), np.empty(0, self.dtype))
        elif stored[1].dtype != idx_dtype:
            idx_dtype = np.promote_types(idx_dtype, stored[1].dtype)
            stored = (stored[0], stored[1].astype(idx_dtype), stored[2])
            cat[1] = cat[1].astype(idx_dtype, copy=False)
        self.blocks[b] = merge_rows(*stored, n_rows, self.shape[1], cat[0], cat[1], cat[2], cat[3])

    def result(
        self,
        *,
        row_scale: np.ndarray | None = None,
        out_dtype=None,
        transform: Callable[[sp.csr_matrix], sp.csr_matrix] | None = None,
    ) -> sp.csr_matrix:
        """Return the sum as one canonical CSR matrix (no explicit zeros); the accumulator is emptied.

        ``row_scale``: rows multiplied by these factors (e.g. ``1 / sizes`` for means); ``out_dtype``:
        dtype of the result (default the accumulation dtype); ``transform``: applied to each block first.
        """
        return self.results([(transform, row_scale, out_dtype)])[0]

    def results(
        self,
        outputs: list[tuple[Callable[[sp.csr_matrix], sp.csr_matrix] | None, np.ndarray | None, object]],
    ) -> list[sp.csr_matrix]:
        """Return several matrices derived from the sum, e.g. the real and imaginary parts of a complex sum.

        Each output is ``(transform, row_scale, out_dtype)`` as in :meth:`result`. The sum is finalised
        block by block (each accumulation block freed once all its outputs are made), then each output is
        copied into one preallocated CSR, freeing its blocks as it goes: the peak is the outputs plus
        one block, plus at most :data:`TRIM_BYTES` freed but not yet handed back to the OS (a trim every
        few blocks instead would leave a fixed fraction of the output on the heap). The accumulator is
        emptied.
        """
        n_cols = self.shape[1]
        done: list[list[sp.csr_matrix | None]] = [[] for _ in outputs]
        freed = 0
        for b in range(self.starts.size):  # finalise block by block
            self._merge(b)
            s, e = int(self.starts[b]), int(self.stops[b])
            blk = self.blocks[b]
            self.blocks[b] = None
            freed += 0 if blk is None else _csr_bytes(blk)
            if blk is None:
                blk = sp.csr_matrix((e - s, n_cols), dtype=self.dtype)
            else:
                blk = _as_csr(blk, (e - s, n_cols))
            for i, (transform, row_scale, out_dtype) in enumerate(outputs):
                out = blk if transform is None else sp.csr_matrix(transform(blk))
                out_dtype = out.dtype if out_dtype is None else np.dtype(out_dtype)
                if row_scale is not None:
                    out = sp.csr_matrix(out, dtype=np.result_type(out.dtype, np.float64), copy=True)
                    out.data *= np.repeat(np.asarray(row_scale[s:e], dtype=np.float64), np.diff(out.indptr))
                out = sp.csr_matrix(out, dtype=out_dtype, copy=out is blk and len(outputs) > 1)
                out.sum_duplicates()  # canonical already: a check
                out.eliminate_zeros()
                done[i].append(out)
                del out
            del blk
            if freed >= TRIM_BYTES:  # the accumulation blocks just freed go back to the OS
                trim_heap(force=True)
                freed = 0
        return [self._assemble(blocks) for blocks in done]

    def _assemble(self, blocks: list[sp.csr_matrix | None]) -> sp.csr_matrix:
        """Copy finalised row blocks into one preallocated CSR, freeing each block as it is copied."""
        n_rows, n_cols = self.shape
        nnz = int(sum(blk.nnz for blk in blocks))
        idx_dtype = np.int32 if max(nnz, n_cols) < np.iinfo(np.int32).max else np.int64
        data = np.empty(nnz, dtype=blocks[0].dtype if blocks else self.dtype)
        indices = np.empty(nnz, dtype=idx_dtype)
        indptr = np.zeros(n_rows + 1, dtype=idx_dtype)
        pos = freed = 0
        for b, blk in enumerate(blocks):
            s, e = int(self.starts[b]), int(self.stops[b])
            data[pos : pos + blk.nnz] = blk.data
            indices[pos : pos + blk.nnz] = blk.indices
            indptr[s + 1 : e + 1] = pos + blk.indptr[1:]
            pos += blk.nnz
            freed += _csr_bytes(blk)
            blocks[b] = blk = None
            if freed >= TRIM_BYTES:  # the finalised blocks just copied go back to the OS
                trim_heap(force=True)
                freed = 0
        return sp.csr_matrix((data, indices, indptr), shape=self.shape, copy=False)


def _as_csr(blk: tuple[np.ndarray, np.ndarray, np.ndarray], shape: tuple[int, int]) -> sp.csr_matrix:
    """Return a canonical block tuple as a scipy CSR, flagged canonical (no copy of the indices)."""
    indptr, indices, data = blk
    if indptr[-1] <= np.iinfo(indices.dtype).max:
        indptr = indptr.astype(indices.dtype, copy=False)
    m = sp.csr_matrix(shape, dtype=data.dtype)
    m.data, m.indices, m.indptr = data, indices, indptr
    m.has_canonical_format = True
    return m
