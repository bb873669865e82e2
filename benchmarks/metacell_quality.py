"""Metacell quality: scm.tl.metacell vs k-means on 50 PCs, on the three shared datasets at gamma 10 and 30.

Each run happens in a fresh subprocess (peak RSS from ``resource.getrusage``). Metrics (own
implementations until ``scm.tl.metacell_metrics`` lands, labelled): mean purity vs ``cell_type``
(max-label proportion, cells without a label left out), INV (spec: 95th percentile over genes of
var/mean of median-library-scaled raw counts, mean over metacells with >= 2 cells), PCA-space
compactness / separation (review variant, 30 PCs of the standard scanpy PCA), sizes, delivered/requested.

Usage: ``PYTHONPATH=src python benchmarks/metacell_quality.py [--datasets kang pbmc3k] [--gammas 10 30]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
FILES = {
    "pbmc3k": DATA / "pbmc3k_raw_labeled.h5ad",
    "pancreas": DATA / "mouse_pancreas_endocrinogenesis_raw.h5ad",
    "kang": DATA / "kang2018_pbmc_5donors_raw.h5ad",
}

CHILD = r"""
import json, resource, sys, time
import numpy as np
sys.path.insert(0, {src!r})
import anndata as ad
method, path, gamma, out = sys.argv[1], sys.argv[2], float(sys.argv[3]), sys.argv[4]
adata = ad.read_h5ad(path)
k = max(1, round(adata.n_obs / gamma))
t0 = time.perf_counter()
if method == "scmetacell":
    import scmetacell as scm
    scm.tl.metacell(adata, n_metacell=k, random_seed=0, progress=False)
    labels = adata.obs["metacell"].cat.codes.to_numpy()
else:
    import scanpy as sc
    from sklearn.cluster import KMeans
    b = adata.copy()
    sc.pp.normalize_total(b, target_sum=1e4)
    sc.pp.log1p(b)
    sc.pp.highly_variable_genes(b, flavor="seurat", n_top_genes=2000)
    b = b[:, b.var["highly_variable"]].copy()
    sc.pp.scale(b, max_value=10)
    sc.pp.pca(b, n_comps=50, random_state=0)
    t1 = time.perf_counter()
    labels = KMeans(n_clusters=k, n_init=1, random_state=0).fit_predict(b.obsm["X_pca"])
secs = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
np.save(out, labels)
print(json.dumps(dict(seconds=secs, peak_rss_mb=rss, k=k)))
"""


def metrics(adata, labels, pcs, k):
    import pandas as pd
    import scipy.sparse as sp

    ok = adata.obs["cell_type"].notna().to_numpy()
    df = pd.DataFrame({"m": labels[ok], "l": adata.obs["cell_type"].astype(str).to_numpy()[ok]})
    purity = df.groupby("m")["l"].agg(lambda s: s.value_counts().iloc[0] / len(s)).mean()
    counts = sp.csr_matrix(adata.X)
    invs, comp, cents = [], [], []
    for m in np.unique(labels):
        idx = np.flatnonzero(labels == m)
        cents.append(pcs[idx].mean(0))
        if idx.size < 2:
            continue
        comp.append(pcs[idx].var(0, ddof=1).mean())
        x = counts[idx].toarray().astype(np.float64)
        lib = x.sum(1, keepdims=True)
        x = x / np.maximum(lib, 1) * np.median(lib)
        mean, var = x.mean(0), x.var(0, ddof=1)
        invs.append(np.percentile(np.where(mean > 0, var / np.where(mean > 0, mean, 1), 1.0), 95))
    cents = np.asarray(cents)
    d2 = ((cents[:, None] - cents[None]) ** 2).sum(-1)
    np.fill_diagonal(d2, np.inf)
    sizes = np.bincount(labels)
    sizes = sizes[sizes > 0]
    return dict(
        purity=purity,
        inv=float(np.mean(invs)),
        compactness_pca=float(np.mean(comp)),
        separation_pca=float(np.sqrt(d2.min(1)).mean()),
        size_min=int(sizes.min()),
        size_median=float(np.median(sizes)),
        size_max=int(sizes.max()),
        delivered=f"{sizes.size}/{k}",
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--datasets", nargs="+", default=["pbmc3k", "pancreas", "kang"])
    ap.add_argument("--gammas", nargs="+", type=float, default=[10, 30])
    ap.add_argument("--tmp", default="/tmp/scm_bench")
    args = ap.parse_args()
    import anndata as ad
    import scanpy as sc

    Path(args.tmp).mkdir(exist_ok=True)
    rows = []
    for name in args.datasets:
        adata = ad.read_h5ad(FILES[name])
        ref = adata.copy()
        sc.pp.normalize_total(ref, target_sum=1e4)
        sc.pp.log1p(ref)
        sc.pp.highly_variable_genes(ref, flavor="seurat", n_top_genes=2000)
        ref = ref[:, ref.var["highly_variable"]].copy()
        sc.pp.scale(ref, max_value=10)
        sc.pp.pca(ref, n_comps=30, random_state=0)
        pcs = ref.obsm["X_pca"]
        for gamma in args.gammas:
            for method in ("scmetacell", "kmeans50pc"):
                out = f"{args.tmp}/{name}_{gamma:g}_{method}.npy"
                code = CHILD.format(src=str(ROOT / "src"))
                res = subprocess.run(
                    [sys.executable, "-c", code, method, str(FILES[name]), str(gamma), out],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                info = json.loads(res.stdout.strip().splitlines()[-1])
                m = metrics(adata, np.load(out), pcs, info["k"])
                rows.append(dict(dataset=name, gamma=gamma, method=method, **m, **info))
                print(rows[-1], file=sys.stderr)
    cols = [
        "dataset", "gamma", "method", "purity", "inv", "compactness_pca", "separation_pca",
        "size_min", "size_median", "size_max", "delivered", "seconds", "peak_rss_mb",
    ]  # fmt: skip
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        cells = [
            f"{r[c]:.4f}" if isinstance(r[c], float) and c not in ("gamma",) else str(r[c]) for c in cols
        ]
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
