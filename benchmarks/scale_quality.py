"""Quality of the large-input path vs the flat model on the real datasets (same data, same seed).

``flat``: the default model (exact search, scikit-learn k-means init, training on all cells).
``two-level``: two-level search and hierarchical k-means forced for every codebook size
(``LARGE_K = 0``). ``two-level + sample``: additionally trained on a random half of the cells, the
full codebook fitted by k-means on all embeddings (the path taken above ``max_train_cells``).
Reported: mean and size-weighted cell-type purity of the metacells at γ = 20.

    PYTHONPATH=src python benchmarks/scale_quality.py
"""

from __future__ import annotations

import time
from pathlib import Path

import anndata as ad
import numpy as np

import scmetacell as scm
from scmetacell.assign import _search

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
DATASETS = {
    "pbmc3k": lambda: scm.datasets.pbmc3k(),
    "pancreas": lambda: ad.read_h5ad(next(SHARED.glob("*pancrea*.h5ad"))),
    "kang": lambda: ad.read_h5ad(SHARED / "kang2018_pbmc_5donors_raw.h5ad"),
}


def run(adata: ad.AnnData, variant: str) -> tuple[float, float, float]:
    large_k = _search.LARGE_K
    kw = {"gamma": 20, "progress": False, "random_seed": 0, "inplace": False}
    if variant != "flat":
        _search.LARGE_K = 0
    if variant == "two-level + sample":
        kw["max_train_cells"] = adata.n_obs // 2
    try:
        t = time.perf_counter()
        mc = scm.tl.metacell(adata, **kw)
        dt = time.perf_counter() - t
    finally:
        _search.LARGE_K = large_k
    p = mc.obs["cell_type_purity"]
    return float(p.mean()), float(np.average(p, weights=mc.obs["n_cells"])), dt


def main() -> None:
    print(f"{'dataset':<10} {'variant':<20} {'purity':>7} {'weighted':>8} {'seconds':>8}")
    for name, load in DATASETS.items():
        adata = load()
        keep = adata.obs["cell_type"].notna().to_numpy()
        adata = adata[keep].copy()
        for variant in ("flat", "two-level", "two-level + sample"):
            pm, pw, dt = run(adata, variant)
            print(f"{name:<10} {variant:<20} {pm:7.3f} {pw:8.3f} {dt:8.1f}", flush=True)


if __name__ == "__main__":
    main()
