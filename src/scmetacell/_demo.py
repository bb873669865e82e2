"""``scmetacell demo``: metacells of the bundled PBMC 3k, a few metrics, an ``.h5ad`` and a figure."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path


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
    sizes = mc.obs["n_cells"].to_numpy()
    d = mc.uns["metacell"]["diagnostics"]
    _, m = tl.metacell_metrics(
        adata, "metacell", label_key="cell_type", use_rep=None, correlation_sample=None, progress=False
    )
    print(f"PBMC 3k: {adata.n_obs} cells -> {d['n_delivered']}/{d['n_requested']} metacells in {secs:.1f} s")
    print(f"  sizes min/median/max: {m['size_min']}/{m['size_median']:g}/{m['size_max']}")
    print(
        f"  purity vs cell_type: {m['purity_mean']:.3f} mean over metacells, "
        f"{m['purity_weighted']:.3f} over cells, {m['balanced_purity']:.3f} balanced"
    )
    print(f"  mean INV: {m['inv_mean']:.3f}")
    print(f"  epochs: {d['epochs_run']} ({d['stop_reason']})")

    h5 = out / "pbmc3k_metacells.h5ad"
    fd, tmp = tempfile.mkstemp(suffix=".h5ad", dir=out)
    os.close(fd)
    mc.write_h5ad(tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, h5)

    view = mc.copy()
    view.X = view.X.toarray()  # 270 metacells: dense is small, and scaling needs it
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
