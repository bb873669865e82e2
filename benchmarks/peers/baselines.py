"""Baselines that any metacell method must beat: random equal-size groups and k-means on 50 PCs."""

from __future__ import annotations

import numpy as np


def random_grouping(n_cells: int, n_groups: int, *, seed: int = 0) -> np.ndarray:
    """Assign cells to ``n_groups`` groups of equal size (sizes differ by at most one), at random.

    Parameters
    ----------
    n_cells
        Number of cells.
    n_groups
        Number of groups, ``1 <= n_groups <= n_cells``.
    seed
        Seed of the permutation.

    Returns
    -------
    Integer group id of each cell (``0 .. n_groups - 1``).
    """
    if not 1 <= n_groups <= n_cells:
        raise ValueError(f"n_groups must be in [1, n_cells={n_cells}], got {n_groups}")
    rng = np.random.default_rng(seed)
    labels = np.arange(n_cells, dtype=np.int64) % n_groups
    return labels[rng.permutation(n_cells)]


def kmeans_grouping(embedding: np.ndarray, n_groups: int, *, seed: int = 0) -> np.ndarray:
    """K-means (scikit-learn, k-means++ init, one run, seeded) of the rows of ``embedding``.

    Parameters
    ----------
    embedding
        Cells x dimensions (e.g. 50 PCs).
    n_groups
        Number of clusters.
    seed
        ``random_state`` of :class:`sklearn.cluster.KMeans`.

    Returns
    -------
    Integer cluster id of each cell.
    """
    from sklearn.cluster import KMeans

    if not 1 <= n_groups <= embedding.shape[0]:
        raise ValueError(f"n_groups must be in [1, n_cells={embedding.shape[0]}], got {n_groups}")
    km = KMeans(n_clusters=n_groups, n_init=1, random_state=seed)
    return km.fit_predict(np.asarray(embedding, dtype=np.float64)).astype(np.int64)
