"""Kang 2018 (8,684 cells) at gamma = 15, end to end: median of 3 runs, side by side with k-means on 50 PCs.

Each run is a fresh subprocess: "cold" = reading the file + ``import scmetacell`` + the call (which imports
torch and lightning on first use); "call" = ``scm.tl.metacell`` alone. The k-means baseline is timed from
raw counts (normalize, log1p, 2,000 HVGs, scale, 50 PCs, KMeans n_init=1).

Usage: ``PYTHONPATH=src python benchmarks/kang_speed.py [--runs 3]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KANG = ROOT.parent / "shared" / "data" / "kang2018_pbmc_5donors_raw.h5ad"

CHILD = r"""
import json, sys, time
t0 = time.perf_counter()
sys.path.insert(0, {src!r})
import anndata as ad
import numpy as np
adata = ad.read_h5ad({path!r})
method = sys.argv[1]
t1 = time.perf_counter()
if method == "scmetacell":
    import scmetacell as scm
    kw = json.loads(sys.argv[2])
    scm.tl.metacell(adata, gamma=15, random_seed=0, progress=False, **kw)
    labels = adata.obs["metacell"].astype(str).to_numpy()
else:
    import scanpy as sc
    from sklearn.cluster import KMeans
    b = adata.copy()
    sc.pp.normalize_total(b, target_sum=1e4); sc.pp.log1p(b)
    sc.pp.highly_variable_genes(b, flavor="seurat", n_top_genes=2000)
    b = b[:, b.var["highly_variable"]].copy(); sc.pp.scale(b, max_value=10)
    sc.pp.pca(b, n_comps=50, random_state=0)
    km = KMeans(n_clusters=round(b.n_obs / 15), n_init=1, random_state=0)
    labels = km.fit_predict(b.obsm["X_pca"])
t2 = time.perf_counter()
ct = adata.obs["cell_type"].astype(str).to_numpy()
import pandas as pd
grouped = pd.DataFrame({{"m": labels, "c": ct}}).groupby("m")["c"]
pur = grouped.agg(lambda s: s.value_counts().iloc[0] / len(s)).mean()
print(json.dumps({{"cold": t2 - t0, "call": t2 - t1, "purity": pur}}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args()
    code = CHILD.format(src=str(ROOT / "src"), path=str(KANG))
    print("| method | runs | median call (s) | median cold (s) | purity |")
    print("|---|---|---|---|---|")
    variants = (
        ("scmetacell", "{}"),
        ("scmetacell", '{"n_threads": 1}'),
        ("scmetacell", '{"train_epoch": 0}'),
        ("kmeans50pc", "{}"),
    )
    for method, kwargs in variants:
        res = []
        for _ in range(args.runs):
            cmd = [sys.executable, "-c", code, method, kwargs]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            res.append(json.loads(out.stdout.strip().splitlines()[-1]))
        call = statistics.median(r["call"] for r in res)
        cold = statistics.median(r["cold"] for r in res)
        name = (
            method if method != "scmetacell" else f"scmetacell {kwargs if kwargs != '{}' else '(defaults)'}"
        )
        print(f"| {name} | {args.runs} | {call:.2f} | {cold:.2f} | {res[0]['purity']:.4f} |")


if __name__ == "__main__":
    main()
