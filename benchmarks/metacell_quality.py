"""Metacell quality: scm.tl.metacell vs k-means on 50 PCs, on the three shared datasets at gamma 10 and 30.

Each run happens in a fresh subprocess (peak RSS from ``resource.getrusage``). Metrics are the package's
own (``scm.tl.metacell_metrics``) on one embedding per dataset (50 PCs of scaled log1p-CP10k HVGs): mean
purity over metacells and over cells vs ``cell_type``, balanced purity, SEACells compactness/separation in
the diffusion space, INV, sizes, delivered/requested. ``kmeans50pc+floor`` is the k-means baseline with the
same size floor as scmetacell's default (``enforce_min_size``, ceil(γ/4) cells), for a like-for-like
comparison: one-cell metacells are always "pure" and inflate the mean purity over metacells.

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
    if method.endswith("+floor"):
        from scmetacell.assign import enforce_min_size
        floor = max(2, int(np.ceil(0.25 * adata.n_obs / k)))
        labels, _, _ = enforce_min_size(b.obsm["X_pca"].astype(np.float32), labels, k, floor)
secs = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
np.save(out, labels)
print(json.dumps(dict(seconds=secs, peak_rss_mb=rss, k=k)))
"""


def metrics(adata, labels, k):
    import scmetacell as scm

    adata.obs["mc"] = labels.astype(str)
    _, m = scm.tl.metacell_metrics(
        adata,
        "mc",
        label_key="cell_type",
        use_rep="X_pca",
        n_requested=k,
        correlation_sample=None,
        progress=False,
    )
    keys = (
        "purity_mean", "purity_weighted", "balanced_purity", "compactness_seacells_mean",
        "separation_seacells_mean", "inv_mean", "size_min", "size_median", "size_max",
    )  # fmt: skip
    out = {key: m[key] for key in keys}
    out["delivered"] = f"{m['n_metacells']}/{k}"
    return out


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
        sc.pp.pca(ref, n_comps=50, random_state=0)
        adata.obsm["X_pca"] = ref.obsm["X_pca"]
        for gamma in args.gammas:
            for method in ("scmetacell", "kmeans50pc", "kmeans50pc+floor"):
                out = f"{args.tmp}/{name}_{gamma:g}_{method}.npy"
                code = CHILD.format(src=str(ROOT / "src"))
                res = subprocess.run(
                    [sys.executable, "-c", code, method, str(FILES[name]), str(gamma), out],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                info = json.loads(res.stdout.strip().splitlines()[-1])
                m = metrics(adata, np.load(out), info["k"])
                rows.append(dict(dataset=name, gamma=gamma, method=method, **m, **info))
                print(rows[-1], file=sys.stderr)
    cols = [
        "dataset", "gamma", "method", "purity_mean", "purity_weighted", "balanced_purity",
        "compactness_seacells_mean", "separation_seacells_mean", "inv_mean",
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
