"""Compactness and separation of a partition in an embedding (SEACells' and the review's definitions)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.spatial import cKDTree

from ._partition import encode_partition, indicator, partition_sizes


def _embedding_and_codes(embedding: Any, groups: Any) -> tuple[np.ndarray, np.ndarray, pd.Index]:
    x = np.asarray(embedding, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"embedding: expected cells × dimensions, got shape {x.shape}.")
    codes, ids = encode_partition(groups)
    if codes.size != x.shape[0]:
        raise ValueError(f"groups: {codes.size} ids for {x.shape[0]} cells of the embedding.")
    return x, codes, ids


def centroids(embedding: Any, groups: Any) -> pd.DataFrame:
    """Mean of the embedding over the cells of each metacell (outliers left out).

    Parameters
    ----------
    embedding
        Cells × dimensions.
    groups
        Metacell id per cell (``NaN``/``None``, or ``-1`` for numeric ids, = outlier).

    Returns
    -------
    Metacells × dimensions, indexed by metacell id.

    Examples
    --------
    >>> import scmetacell as scm
    >>> scm.tl.centroids([[0.0], [2.0], [5.0]], [0, 0, 1])[0].tolist()
    [1.0, 5.0]
    """
    x, codes, ids = _embedding_and_codes(embedding, groups)
    return pd.DataFrame(_centroids(x, codes, len(ids)), index=ids)


def _centroids(x: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    sizes = partition_sizes(codes, n_groups)
    return (indicator(codes, n_groups) @ x) / sizes[:, None]


def compactness(embedding: Any, groups: Any) -> pd.Series:
    """Per-metacell compactness: mean over dimensions of the within-metacell sample variance.

    SEACells' ``diffusion_component_variance`` in its diffusion space (see
    :func:`diffusion_components`), the review's compactness in PCA space. Sample variance with
    ``ddof = 1`` (centred on the metacell's centroid, two passes); singletons give ``NaN``. Lower is
    better; read it together with :func:`separation`.

    Parameters
    ----------
    embedding
        Cells × dimensions (pass the columns to use, e.g. ``X_pca[:, :30]``).
    groups
        Metacell id per cell (``NaN``/``None``, or ``-1`` for numeric ids, = outlier).

    Returns
    -------
    Compactness per metacell, indexed by metacell id.

    Examples
    --------
    >>> import scmetacell as scm
    >>> scm.tl.compactness([[0.0, 0.0], [2.0, 4.0], [5.0, 5.0]], [0, 0, 1]).tolist()
    [5.0, nan]
    """
    x, codes, ids = _embedding_and_codes(embedding, groups)
    return pd.Series(_compactness(x, codes, len(ids)), index=ids, name="compactness")


def _compactness(x: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    sizes = partition_sizes(codes, n_groups)
    cent = _centroids(x, codes, n_groups)
    keep = codes >= 0
    dev = x[keep] - cent[codes[keep]]
    ss = indicator(codes[keep], n_groups) @ (dev * dev)
    with np.errstate(invalid="ignore", divide="ignore"):
        var = ss / (sizes[:, None] - 1)
    var[sizes < 2] = np.nan
    return var.mean(axis=1)


def separation(embedding: Any, groups: Any) -> pd.Series:
    """Per-metacell separation: Euclidean distance from its centroid to the nearest other centroid.

    SEACells' ``diffusion_component_dist_to_NN`` (``nth_nbr = 1``) in its diffusion space, the
    review's separation in PCA space. Found with a k-d tree on the centroids (no metacells ×
    metacells matrix). A lone metacell gives ``NaN``. Higher is better.

    Parameters
    ----------
    embedding
        Cells × dimensions.
    groups
        Metacell id per cell (``NaN``/``None``, or ``-1`` for numeric ids, = outlier).

    Returns
    -------
    Separation per metacell, indexed by metacell id.

    Examples
    --------
    >>> import scmetacell as scm
    >>> scm.tl.separation([[0.0, 0.0], [2.0, 0.0], [4.0, 4.0]], [0, 0, 1]).tolist()
    [5.0, 5.0]
    """
    x, codes, ids = _embedding_and_codes(embedding, groups)
    return pd.Series(_separation(x, codes, len(ids)), index=ids, name="separation")


def _separation(x: np.ndarray, codes: np.ndarray, n_groups: int) -> np.ndarray:
    return nearest_other_distance(_centroids(x, codes, n_groups))


def nearest_other_distance(points: np.ndarray) -> np.ndarray:
    """Distance from each point to its nearest other point (``NaN`` for a single point)."""
    m = points.shape[0]
    if m < 2:
        return np.full(m, np.nan)
    dist, idx = cKDTree(points).query(points, k=2)
    # with duplicated points the query may return the twin first: either way the other one is right
    return np.where(idx[:, 0] == np.arange(m), dist[:, 1], dist[:, 0])
