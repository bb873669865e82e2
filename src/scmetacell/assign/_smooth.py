"""kNN smoothing of the cells' embeddings, so that metacells follow the data's manifold.

Each step moves every cell half-way to the mean embedding of its ``n_neighbors`` nearest cells
(``z ← (1 − α) z + α W z``, ``W`` the row-normalised kNN graph of the initial embedding, fixed for the
whole fit; 30 neighbours by default, as SEACells' graph, 15 before 2026-12-08). Noise orthogonal to
the manifold averages out, so a continuous trajectory is cut along its length rather than across it,
and cells at the border of two populations move towards their own.
Measured on mouse pancreas (γ = 10, k-means + a floor of 2 cells, shared 50-PC embedding): mean
purity 0.874 → 0.899, SEACells compactness 0.024 → 0.008, INV 2.11 → 2.06 with two steps.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._search import nearest_topk

N_NEIGHBORS = 30  # tl.metacell's n_neighbors default
ALPHA = 0.5
DENSITY_NEIGHBORS = 30  # the local radius of density weights: distance to the 30th nearest other cell


def knn_graph(z: np.ndarray, n_neighbors: int = N_NEIGHBORS, *, device=None) -> sp.csr_matrix:
    """Row-normalised graph of each cell's ``n_neighbors`` nearest other cells (exact search)."""
    n = z.shape[0]
    k = int(min(n_neighbors, n - 1))
    idx, _ = nearest_topk(z, z, k + 1, device=device)
    # drop each cell itself (the nearest, at distance 0; with duplicates it may sit in another column)
    self_col = idx == np.arange(n)[:, None]
    drop = np.where(self_col.any(1), self_col.argmax(1), k)
    keep = np.ones_like(idx, dtype=bool)
    keep[np.arange(n), drop] = False
    cols = idx[keep].reshape(n, k)
    return sp.csr_matrix(
        (np.full(n * k, 1.0 / k, dtype=np.float32), cols.ravel(), np.arange(0, n * k + 1, k)), shape=(n, n)
    )


def smooth_embedding(z: np.ndarray, graph: sp.csr_matrix | None, n_steps: int, alpha: float = ALPHA):
    """``n_steps`` smoothing steps of ``z`` over ``graph`` (float32; ``z`` itself when no step)."""
    if graph is None or n_steps <= 0:
        return z
    out = np.asarray(z, dtype=np.float32)
    for _ in range(int(n_steps)):
        out = ((1.0 - alpha) * out + alpha * (graph @ out)).astype(np.float32)
    return out


def density_weights(
    z: np.ndarray, exponent: float, n_neighbors: int = DENSITY_NEIGHBORS, *, device=None
) -> np.ndarray:
    """Return each cell's k-means weight ``(r_i / median r) ** exponent`` (float64, all > 0).

    ``r_i`` is the distance from cell ``i`` to its ``n_neighbors``-th nearest other cell (exact search):
    large where cells are sparse. Weighted k-means puts its centres where the weighted cells are, so
    cells of sparse regions get more metacells (fewer cells each) and dense regions fewer, larger
    ones. Radii are floored at 1e-3 × their median (duplicated cells would have radius 0).
    """
    n = z.shape[0]
    k = int(min(n_neighbors, n - 1))
    if exponent == 0 or k < 1:
        return np.ones(n)
    _, d2 = nearest_topk(z, z, k + 1, device=device)  # nearest first; column 0 is the cell itself
    r = np.sqrt(np.maximum(d2[:, k].astype(np.float64), 0.0))
    med = float(np.median(r))
    if not med > 0:
        med = float(r.mean()) if r.mean() > 0 else 1.0
    return (np.maximum(r, 1e-3 * med) / med) ** float(exponent)
