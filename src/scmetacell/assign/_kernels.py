"""Compiled kernels of the assignment's streamed passes (numba, compiled lazily and cached on disk).

This module imports numba, so it is imported lazily (inside functions): ``import scmetacell`` compiles
nothing.
"""

from __future__ import annotations

from numba import njit


@njit(cache=True, nogil=True)
def accumulate_counts(indptr, indices, data, lut, labels, inv_lib, s, q):  # pragma: no cover - compiled
    """Add a chunk of CSR count rows to the per-metacell sums of the homogeneity statistic.

    Row ``r`` belongs to metacell ``labels[r]``; its entry at column ``c`` counts when ``lut[c] >= 0``
    (the statistic's gene position): ``s[k, g] += x`` and ``q[k, g] += x² · inv_lib[r]``. One pass
    over the chunk's entries, no temporaries (no column subset, no coordinate arrays).
    """
    for r in range(indptr.size - 1):
        k = labels[r]
        if k < 0:
            continue
        w = inv_lib[r]
        for j in range(indptr[r], indptr[r + 1]):
            g = lut[indices[j]]
            if g >= 0:
                v = float(data[j])
                s[k, g] += v
                q[k, g] += v * v * w
