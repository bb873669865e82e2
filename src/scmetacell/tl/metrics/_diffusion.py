"""SEACells' 9-dimensional multiscale diffusion space (palantir's diffusion maps, ``alpha = 0``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData
from scipy.sparse.linalg import eigs

from ... import _logging as logg
from ..._compat import check_pynndescent

PYNNDESCENT_MIN_CELLS = 8192


def knn_distances(embedding: Any, *, n_neighbors: int = 30, random_state: int = 0) -> sp.csr_matrix:
    """Distances to the nearest neighbours, exactly as :func:`scanpy.pp.neighbors` stores them.

    The embedding is used as is (``use_rep='X'``, Euclidean). scanpy keeps ``n_neighbors - 1``
    neighbours per cell: the cell itself counts as its first neighbour and is not stored.
    Below 8,192 cells scanpy computes exact neighbours, from 8,192 on approximate ones (pynndescent).
    """
    import scanpy as sc

    x = np.asarray(embedding)
    if x.shape[0] >= PYNNDESCENT_MIN_CELLS:
        msg = check_pynndescent()
        if msg is not None:
            raise RuntimeError(msg)
    tmp = AnnData(X=x)
    with sc.settings.verbosity.override("warning"):
        sc.pp.neighbors(tmp, n_neighbors=n_neighbors, use_rep="X", random_state=random_state)
    return sp.csr_matrix(tmp.obsp["distances"])


def diffusion_operator(
    distances: sp.csr_matrix, *, n_neighbors: int = 30
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Row-stochastic diffusion operator ``T = D^-1 (W + W^T)`` of palantir's adaptive kernel.

    ``sigma_i`` is the ``floor(n_neighbors / 3)``-th smallest stored distance of cell ``i`` (its
    10th neighbour other than itself for ``n_neighbors = 30``), ``W_ij = exp(-d_ij / sigma_i)`` over
    the stored non-zero distances (zero distances of duplicated cells drop out, as in palantir, which
    reads the graph with :func:`scipy.sparse.find`). Returns ``(T, sigma)``.
    """
    d = sp.csr_matrix(distances, dtype=np.float64)
    n = d.shape[0]
    adaptive_k = int(np.floor(n_neighbors / 3))
    lengths = np.diff(d.indptr)
    if lengths.min() < adaptive_k:
        raise ValueError(
            f"the kNN graph needs at least {adaptive_k} neighbours per cell, some cells have {lengths.min()}."
        )
    if np.all(lengths == lengths[0]):
        sigma = np.sort(d.data.reshape(n, lengths[0]), axis=1)[:, adaptive_k - 1]
    else:  # pragma: no cover - scanpy stores a fixed number of neighbours per cell
        sigma = np.array([np.sort(d.data[d.indptr[i] : d.indptr[i + 1]])[adaptive_k - 1] for i in range(n)])
    rows, cols, dist = sp.find(d)
    with np.errstate(divide="ignore", invalid="ignore"):
        w = np.exp(-dist / sigma[rows])
    weights = sp.csr_matrix((w, (rows, cols)), shape=(n, n))
    kernel = (weights + weights.T).tocsr()
    deg = np.ravel(kernel.sum(axis=1))
    inv = np.zeros_like(deg)
    inv[deg != 0] = 1.0 / deg[deg != 0]
    return sp.diags(inv) @ kernel, sigma


def diffusion_components(
    embedding: Any,
    *,
    n_neighbors: int = 30,
    n_components: int = 10,
    tol: float = 1e-4,
    random_state: int = 0,
    return_eigenvalues: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """SEACells' multiscale diffusion space of an embedding (what its ``evaluate.py`` measures in).

    Follows palantir's ``run_diffusion_maps`` (``knn=30``, ``alpha=0``) and
    ``determine_multiscale_space(n_eigs=10)``, as called by SEACells' compactness and separation:

    1. kNN graph with :func:`scanpy.pp.neighbors` on the embedding as is (``n_neighbors`` counts
       the cell itself, so 29 neighbours are stored per cell; see :func:`knn_distances`).
    2. ``sigma_i`` = distance to the ``floor(n_neighbors / 3)``-th stored neighbour (the 10th
       neighbour other than the cell itself).
    3. ``W_ij = exp(-d_ij / sigma_i)``, ``K = W + W^T`` (no density normalisation).
    4. ``T = D^-1 K``; the top ``n_components`` eigenpairs of ``T`` by
       :func:`scipy.sparse.linalg.eigs` (``tol``, ``maxiter=1000``, a seeded start vector), real
       parts, sorted by eigenvalue descending, each eigenvector scaled to unit L2 norm.
    5. Eigenvector 0 is dropped; eigenvectors ``1..n_components-1`` are scaled by
       ``lambda / (1 - lambda)``.

    Eigenvectors are defined up to sign; distances and variances in this space are not affected.

    Parameters
    ----------
    embedding
        Cells × dimensions (e.g. ``adata.obsm['X_pca']``, all columns as SEACells does).
    n_neighbors
        Neighbours of the kNN graph, the cell itself included (scanpy's convention).
    n_components
        Eigenpairs to compute; the space has ``n_components - 1`` dimensions.
    tol
        Relative accuracy of the eigenpairs (ARPACK); ``1e-4`` as in palantir.
    random_state
        Seed of the kNN search (from 8,192 cells on) and of ARPACK's start vector.
    return_eigenvalues
        Also return the ``n_components`` eigenvalues (sorted, descending).

    Returns
    -------
    Diffusion components, cells × ``n_components - 1`` (float64); with ``return_eigenvalues``, a
    tuple ``(components, eigenvalues)``.

    Examples
    --------
    >>> import numpy as np
    >>> import scmetacell as scm
    >>> emb = np.random.default_rng(0).normal(size=(300, 10))
    >>> scm.tl.diffusion_components(emb).shape
    (300, 9)
    """
    x = np.asarray(embedding)
    if x.ndim != 2:
        raise ValueError(f"embedding: expected cells × dimensions, got shape {x.shape}.")
    if n_components < 2:
        raise ValueError(f"n_components: must be at least 2, got {n_components}.")
    n = x.shape[0]
    if n < max(n_neighbors, n_components + 2):
        raise ValueError(
            f"embedding: diffusion components need at least "
            f"{max(n_neighbors, n_components + 2)} cells, got {n}."
        )
    if not np.all(np.isfinite(x)):
        raise ValueError("embedding: contains NaN or infinite values.")
    transition, _ = diffusion_operator(
        knn_distances(x, n_neighbors=n_neighbors, random_state=random_state), n_neighbors=n_neighbors
    )
    v0 = np.random.default_rng(random_state).random(n)
    vals, vecs = eigs(transition, k=n_components, tol=tol, maxiter=1000, v0=v0)
    vals, vecs = np.real(vals), np.real(vecs)
    order = np.argsort(vals)[::-1]
    vals, vecs = vals[order], vecs[:, order]
    vecs = vecs / np.linalg.norm(vecs, axis=0, keepdims=True)
    lam = vals[1:]
    if np.any(lam >= 1 - 1e-10):
        logg.warning(
            "diffusion components: the kNN graph has several connected components (eigenvalue 1 is "
            "repeated); some components are infinite."
        )
    with np.errstate(divide="ignore", invalid="ignore"):
        comps = vecs[:, 1:] * (lam / (1 - lam))
    return (comps, vals) if return_eigenvalues else comps
