"""The squared-distance kernels of every nearest-entry search and k-means of the assignment.

- :func:`squared_distances`: the full cells × entries matrix (``‖x‖² − 2 x·c + ‖c‖²``, clamped at 0).
- :func:`pairwise_sq`: the same with the other order of sums (``‖x‖² + ‖y‖² − 2 x·y``) and the
  entries' squared norms passed in when known: the form k-means++ seeding and the two-level index use.
  The two orders round differently in the last bit; each caller keeps its own, so partitions stay
  byte-identical for a seed.
- :func:`nearest_centre`: the nearest row only, in cache-sized row blocks (``‖c‖² − 2 x·c`` as one
  fused product, ``‖x‖²`` added to the minimum only).
"""

from __future__ import annotations

import torch

BLOCK_ENTRIES = 1 << 20  # distance blocks of at most this many entries (4 MB: they stay in cache)


def squared_distances(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (cells × entries), clamped at 0.

    ``(‖z‖² − 2 z·c) + ‖c‖²`` computed in place on the product (``−2 z·c + ‖z‖²`` is the same float as
    ``‖z‖² − 2 z·c``): one cells × entries block instead of four (half the time on 4,096 × 8,684).
    """
    d2 = z @ codes.T
    d2.mul_(-2.0).add_((z * z).sum(1, keepdim=True)).add_((codes * codes).sum(1)[None, :])
    return d2.clamp_min_(0.0)


def pairwise_sq(x: torch.Tensor, y: torch.Tensor, y_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances between rows of ``x`` (n × d) and rows of ``y`` (m × d)."""
    if y_sq is None:
        y_sq = (y * y).sum(1)
    d = (x * x).sum(1, keepdim=True) + y_sq[None, :] - 2.0 * (x @ y.T)
    return d.clamp_min_(0.0)


def nearest_centre(x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(squared distance, index) of the nearest row of ``c`` for each row of ``x``.

    Computed in row blocks of at most :data:`BLOCK_ENTRIES` distances, as ``‖c‖² − 2 x·c`` (one fused
    matrix product; ``‖x‖²`` does not change the nearest row and is added to the minimum only): the
    temporaries stay a few MB whatever the number of rows and centres, and stay in cache (measured on
    70,000 × 3,500 rows × centres: 10 times faster than the whole distance matrix).
    """
    c_sq = (c * c).sum(1)
    n = x.shape[0]
    dmin = torch.empty(n, dtype=x.dtype, device=x.device)
    lab = torch.empty(n, dtype=torch.long, device=x.device)
    step = max(1, BLOCK_ENTRIES // max(1, c.shape[0]))
    for s in range(0, n, step):
        xb = x[s : s + step]
        m, a = torch.addmm(c_sq[None, :], xb, c.T, alpha=-2.0).min(1)
        dmin[s : s + step] = (m + (xb * xb).sum(1)).clamp_min_(0.0)
        lab[s : s + step] = a
    return dmin, lab
