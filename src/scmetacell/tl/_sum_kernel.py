"""Compiled kernel of :class:`~scmetacell.tl._sparse_sum.RowBlockSum`: add rows into a CSR block.

This module imports numba, so it is imported lazily (by :mod:`scmetacell.tl._sparse_sum`'s methods):
``import scmetacell`` compiles nothing. The kernel is compiled once per dtype and cached on disk.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def merge_rows(
    s_indptr, s_indices, s_data, n_rows, n_cols, p_len, p_indices, p_data, p_rows
):  # pragma: no cover - compiled
    """Return the CSR ``(indptr, indices, data)`` of a block plus pending rows.

    The block (``n_rows`` rows, canonical: sorted column indices, no duplicates) is given by
    ``s_indptr, s_indices, s_data``. Pending row ``i`` has ``p_len[i]`` entries (consecutive in
    ``p_indices, p_data``, in any column order, repeats allowed) and is added to block row
    ``p_rows[i]``. The result is canonical. Time: O(stored + pending entries + sorting each row's
    new columns); a dense accumulator of ``n_cols`` values is reused across rows.
    """
    m = p_rows.size
    p_start = np.empty(m + 1, np.int64)
    p_start[0] = 0
    for i in range(m):
        p_start[i + 1] = p_start[i] + p_len[i]
    # pending rows grouped by their target row (counting sort)
    first = np.zeros(n_rows + 1, np.int64)
    for i in range(m):
        first[p_rows[i] + 1] += 1
    for r in range(n_rows):
        first[r + 1] += first[r]
    fill = first[:-1].copy()
    order = np.empty(m, np.int64)
    for i in range(m):
        r = p_rows[i]
        order[fill[r]] = i
        fill[r] += 1
    # pass 1: entries per output row (the union of the row's columns)
    mark = np.full(n_cols, -1, np.int64)
    indptr = np.zeros(n_rows + 1, np.int64)
    for r in range(n_rows):
        c = s_indptr[r + 1] - s_indptr[r]
        if first[r] == first[r + 1]:  # nothing pending: the stored row's length
            indptr[r + 1] = indptr[r] + c
            continue
        for j in range(s_indptr[r], s_indptr[r + 1]):
            mark[s_indices[j]] = r
        for t in range(first[r], first[r + 1]):
            i = order[t]
            for j in range(p_start[i], p_start[i + 1]):
                g = p_indices[j]
                if mark[g] != r:
                    mark[g] = r
                    c += 1
        indptr[r + 1] = indptr[r] + c
    nnz = indptr[n_rows]
    indices = np.empty(nnz, s_indices.dtype)
    data = np.empty(nnz, s_data.dtype)
    # pass 2: values in a dense accumulator, new columns sorted and merged with the stored (sorted) ones
    mark[:] = -1
    acc = np.zeros(n_cols, s_data.dtype)
    new = np.empty(n_cols, s_indices.dtype)
    for r in range(n_rows):
        a, b = s_indptr[r], s_indptr[r + 1]
        if first[r] == first[r + 1]:  # nothing pending: the stored row is copied
            w = indptr[r]
            for j in range(a, b):
                indices[w] = s_indices[j]
                data[w] = s_data[j]
                w += 1
            continue
        for j in range(a, b):
            g = s_indices[j]
            mark[g] = r
            acc[g] = s_data[j]
        n_new = 0
        for t in range(first[r], first[r + 1]):
            i = order[t]
            for j in range(p_start[i], p_start[i + 1]):
                g = p_indices[j]
                if mark[g] != r:
                    mark[g] = r
                    acc[g] = p_data[j]
                    new[n_new] = g
                    n_new += 1
                else:
                    acc[g] += p_data[j]
        fresh = np.sort(new[:n_new])
        w = indptr[r]
        j, k = a, 0
        while j < b or k < n_new:  # merge the sorted stored columns with the sorted new ones
            if k == n_new or (j < b and s_indices[j] < fresh[k]):
                g = s_indices[j]
                j += 1
            else:
                g = fresh[k]
                k += 1
            indices[w] = g
            data[w] = acc[g]
            w += 1
    return indptr, indices, data
