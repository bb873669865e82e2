"""The one embedding every method is scored on, and the resampled inputs of the scaling run."""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp


def shared_pca(adata: ad.AnnData, *, n_hvg: int = 2000, n_comps: int = 50, seed: int = 0) -> np.ndarray:
    """Log1p CP10k, ``n_hvg`` HVGs (scanpy ``seurat``), scale (clip 10), ``n_comps`` PCs (arpack, seeded).

    ``adata.X`` holds raw counts; ``adata`` is not modified.
    """
    import scanpy as sc

    work = ad.AnnData(sp.csr_matrix(adata.X, dtype=np.float32), obs=adata.obs[[]], var=adata.var[[]])
    sc.pp.normalize_total(work, target_sum=1e4)
    sc.pp.log1p(work)
    sc.pp.highly_variable_genes(work, n_top_genes=min(n_hvg, work.n_vars), subset=True)
    work.X = work.X.toarray()  # HVGs only: cells x 2,000 dense
    sc.pp.scale(work, max_value=10)
    n_comps = min(n_comps, min(work.shape) - 1)
    sc.tl.pca(work, n_comps=n_comps, svd_solver="arpack", random_state=seed)
    return np.asarray(work.obsm["X_pca"], dtype=np.float32)


def poisson_resample(adata: ad.AnnData, n_cells: int, *, seed: int = 0) -> ad.AnnData:
    """Draw ``n_cells`` real cells with replacement and redraw each count as Poisson(count).

    Resampled, not new biology: every new cell is a noisy copy of a real one and keeps its ``obs``
    (labels, donor). Genes stay the same.
    """
    rng = np.random.default_rng(seed)
    src = rng.integers(0, adata.n_obs, size=n_cells)
    X = sp.csr_matrix(adata.X)[src]
    X = sp.csr_matrix((rng.poisson(X.data).astype(np.int32), X.indices, X.indptr), shape=X.shape)
    X.eliminate_zeros()
    obs = adata.obs.iloc[src].copy()
    obs["source_cell"] = adata.obs_names[src].to_numpy()
    obs.index = [f"r{i}" for i in range(n_cells)]
    return ad.AnnData(X, obs=obs, var=adata.var[[]].copy())
