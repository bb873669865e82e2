"""``scmetacell demo``: metacells of the bundled PBMC 3k, a few metrics, an ``.h5ad`` and a figure."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _purity(labels, groups) -> float:
    import pandas as pd

    df = pd.DataFrame({"g": np.asarray(groups), "l": np.asarray(labels, dtype=object)}).dropna()
    return float(df.groupby("g", observed=True)["l"].agg(lambda s: s.value_counts().iloc[0] / len(s)).mean())


def _inv(counts, labels) -> float:
    """Mean INV (95th percentile over genes of the within-metacell variance/mean of median-scaled counts)."""
    import scipy.sparse as sp

    counts = sp.csr_matrix(counts)
    vals = []
    for m in np.unique(labels):
        x = counts[np.flatnonzero(labels == m)].toarray().astype(np.float64)
        if x.shape[0] < 2:
            continue
        lib = x.sum(1, keepdims=True)
        x = x / np.maximum(lib, 1) * np.median(lib)
        mean = x.mean(0)
        var = x.var(0, ddof=1)
        inv = np.where(mean > 0, var / np.where(mean > 0, mean, 1), 1.0)
        vals.append(np.percentile(inv, 95))
    return float(np.mean(vals))


def run_demo(out_dir: str | os.PathLike) -> int:
    """Run metacells on PBMC 3k, print metrics, write ``pbmc3k_metacells.h5ad`` and ``pbmc3k_metacells.png``.

    Returns
    -------
    The process exit code (0 on success).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import scanpy as sc

    from . import datasets, tl

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    adata = datasets.pbmc3k()
    t0 = time.perf_counter()
    # one torch thread: robust on busy laptops/servers (OpenMP spin contention), ample for 2,700 cells
    mc = tl.metacell(adata, gamma=10, random_seed=0, progress=False, n_threads=1)
    secs = time.perf_counter() - t0
    labels = adata.obs["metacell"].cat.codes.to_numpy()
    sizes = mc.obs["n_cells"].to_numpy()
    d = mc.uns["metacell"]["diagnostics"]
    print(f"PBMC 3k: {adata.n_obs} cells -> {d['n_delivered']}/{d['n_requested']} metacells in {secs:.1f} s")
    print(f"  sizes min/median/max: {sizes.min()}/{np.median(sizes):g}/{sizes.max()}")
    print(f"  mean purity (cell_type): {_purity(adata.obs['cell_type'], labels):.3f}")
    print(f"  mean INV: {_inv(adata.X, labels):.3f}")
    print(f"  epochs: {d['epochs_run']} ({d['stop_reason']})")

    h5 = out / "pbmc3k_metacells.h5ad"
    fd, tmp = tempfile.mkstemp(suffix=".h5ad", dir=out)
    os.close(fd)
    mc.write_h5ad(tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, h5)

    view = mc.copy()
    sc.pp.scale(view, max_value=10)
    sc.pp.pca(view, n_comps=min(30, view.n_obs - 1))
    sc.pp.neighbors(view, n_neighbors=15)
    sc.tl.umap(view, random_state=0)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    axes[0].hist(sizes, bins=30, color="#4c72b0")
    axes[0].set_xlabel("cells per metacell")
    axes[0].set_ylabel("metacells")
    axes[0].set_title("metacell sizes")
    sc.pl.umap(
        view, color="cell_type", ax=axes[1], show=False, size=60, title="metacells (majority cell type)"
    )
    fig.tight_layout()
    png = out / "pbmc3k_metacells.png"
    fd, tmp = tempfile.mkstemp(suffix=".png", dir=out)
    os.close(fd)
    fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)
    os.chmod(tmp, 0o644)
    os.replace(tmp, png)
    print(f"wrote {h5} and {png}")
    return 0
