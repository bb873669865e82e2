"""A running sum of sparse (metacells × genes) parts in linear time and with bounded extra memory.

Aggregating N cells into K metacells chunk by chunk adds one sparse part per chunk to a running sum.
``acc = acc + part`` copies the whole sum at every chunk: O(chunks × output) time (quadratic in the cells
at a fixed number of cells per metacell) and twice the output in memory during each addition.

:class:`RowBlockSum` splits the rows (metacells) into blocks. Each part's rows join their block's pending
list; a block absorbs its pending parts (a pairwise tree of CSR additions) once they hold ``slack`` × the
block's stored entries. Every stored entry is therefore copied O(1 / slack) times in all — linear time —
and memory stays at the sum itself plus ``slack`` of it, plus one block in transit. :meth:`result`
finalises block by block (scaling, dtype) into one preallocated CSR, freeing each block as it is copied.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from .._memory import trim_heap

MIN_MERGE = 1 << 15  # a block's pending parts are merged once they hold at least this many entries
N_BLOCKS = 64  # rows are split into about this many blocks (at least MIN_ROWS_PER_BLOCK rows each)
MIN_ROWS_PER_BLOCK = 1024
TRIM_BYTES = 64 << 20  # finalising: freed blocks go back to the OS whenever this much has been freed


def _tree_sum(parts: list[sp.csr_matrix]) -> sp.csr_matrix:
    """Sum of CSR matrices by pairwise addition (each entry copied O(log len(parts)) times)."""
    while len(parts) > 1:
        nxt = [parts[i] + parts[i + 1] for i in range(0, len(parts) - 1, 2)]
        if len(parts) % 2:
            nxt.append(parts[-1])
        parts = nxt
    return sp.csr_matrix(parts[0])


def _csr_bytes(m: sp.csr_matrix) -> int:
    return m.data.nbytes + m.indices.nbytes + m.indptr.nbytes


class RowBlockSum:
    """Running sum of sparse ``n_rows × n_cols`` parts (CSR), added with :meth:`add`.

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
        A block merges its pending parts once they hold ``slack`` × its stored entries (or
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
        step = max(1, int(rows_per_block))
        self.starts = np.arange(0, max(n_rows, 1), step, dtype=np.int64)
        self.stops = np.minimum(self.starts + step, n_rows)
        self.blocks: list[sp.csr_matrix | None] = [None] * self.starts.size
        self.pending: list[list[sp.csr_matrix]] = [[] for _ in self.starts]
        self.pending_nnz = np.zeros(self.starts.size, dtype=np.int64)
        self.slack = float(slack)

    def add(self, part: sp.spmatrix) -> None:
        """Add one ``n_rows × n_cols`` part."""
        if part.shape != self.shape:
            raise ValueError(f"part of shape {part.shape}; expected {self.shape}.")
        part = sp.csr_matrix(part, dtype=self.dtype)
        row_nnz = np.diff(part.indptr)
        for b in np.flatnonzero(np.add.reduceat(row_nnz, self.starts) if row_nnz.size else []):
            sub = part[int(self.starts[b]) : int(self.stops[b])]
            self.pending[b].append(sub)
            self.pending_nnz[b] += sub.nnz
            stored = 0 if self.blocks[b] is None else self.blocks[b].nnz
            if self.pending_nnz[b] >= max(MIN_MERGE, self.slack * stored):
                self._merge(b)

    def _merge(self, b: int) -> None:
        parts = self.pending[b]
        if not parts:
            return
        self.pending[b] = []
        self.pending_nnz[b] = 0
        new = _tree_sum(parts)  # the pending parts first: the (large) block is copied once per merge
        self.blocks[b] = new if self.blocks[b] is None else sp.csr_matrix(self.blocks[b] + new)

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
            for i, (transform, row_scale, out_dtype) in enumerate(outputs):
                out = blk if transform is None else sp.csr_matrix(transform(blk))
                out_dtype = out.dtype if out_dtype is None else np.dtype(out_dtype)
                if row_scale is not None:
                    out = sp.csr_matrix(out, dtype=np.result_type(out.dtype, np.float64), copy=True)
                    out.data *= np.repeat(np.asarray(row_scale[s:e], dtype=np.float64), np.diff(out.indptr))
                out = sp.csr_matrix(out, dtype=out_dtype, copy=out is blk and len(outputs) > 1)
                out.sum_duplicates()
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
