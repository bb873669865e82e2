"""Large inputs: the model's training sample and the read-ahead of streamed model inputs.

- :class:`SampledNormalizer`: an :class:`~scmetacell.preprocess.HVGNormalizer` restricted to a random
  sample of cells, held in memory (sparse cells × HVGs). Training, the PCA and the codebook
  initialisation of a large input run on such a sample of at most ``max_train_cells`` cells (read with
  ``CellSource.take`` in a global random order); every cell is then embedded and assigned in a
  streamed pass. Training cost therefore stops growing with the number of cells beyond that sample.
- :func:`training_sample`: which cells.
- :func:`prefetched_rows`: chunks of model inputs, the next one read by a background thread.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .._memory import trim_heap
from ..data._executor import chunk_bounds
from ._rna import HVGNormalizer


class SampledNormalizer(HVGNormalizer):
    """The cells ``idx`` (sorted) of an :class:`HVGNormalizer`, cached in memory as sparse HVG rows.

    Row ``i`` of this normalizer is cell ``idx[i]`` of the parent. Statistics (``mean``, ``std``) and the
    projection are shared with the parent.
    """

    def __init__(self, parent: HVGNormalizer, idx: np.ndarray, *, chunk_size: int = 8192):
        super().__init__(parent.counts, parent.lognorm, parent.hvg_idx, parent.library_size[idx])
        self.parent = parent
        self.idx = np.asarray(idx, dtype=np.int64)
        self.mean, self.std = parent.mean, parent.std
        ln_parts, c_parts = [], []
        for s in range(0, self.idx.size, chunk_size):
            ln, c = parent.take(self.idx[s : s + chunk_size])
            ln_parts.append(ln)
            c_parts.append(sp.csr_matrix(c, dtype=np.float32))
        self._cache = (sp.vstack(ln_parts, format="csr"), sp.vstack(c_parts, format="csr"))

    @property
    def n_obs(self) -> int:
        """Number of sampled cells."""
        return int(self.idx.size)

    def set_projection(self, weight: np.ndarray, bias: np.ndarray) -> None:
        """Set the projection here and on the parent."""
        super().set_projection(weight, bias)
        self.parent._op = self._op


def training_sample(n_obs: int, max_cells: int | None, seed: int) -> np.ndarray | None:
    """Sorted random sample of ``max_cells`` of ``n_obs`` cells, or ``None`` when all cells are used."""
    if max_cells is None or n_obs <= max_cells:
        return None
    rng = np.random.default_rng([int(seed), 7])
    return np.sort(rng.choice(n_obs, int(max_cells), replace=False))


def prefetched_rows(norm: HVGNormalizer, chunk_size: int):
    """Yield ``(start, stop, (lognorm_hvg, counts_hvg))`` chunk by chunk, reading the next chunk ahead.

    A background thread reads (and normalises) chunk ``i + 1`` while the caller processes chunk ``i``;
    in-memory (cached) normalizers are read directly.
    """
    bounds = chunk_bounds(norm.n_obs, chunk_size)
    if norm._cache is not None or len(bounds) < 2:
        for s, e in bounds:
            yield s, e, norm.rows(s, e)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scm-prefetch") as pool:
        pending = pool.submit(norm.rows, *bounds[0])
        for i, (s, e) in enumerate(bounds):
            rows = pending.result()
            if i + 1 < len(bounds):
                pending = pool.submit(norm.rows, *bounds[i + 1])
            yield s, e, rows
            del rows
            trim_heap()
