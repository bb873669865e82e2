"""Kang 2018 (8,684 cells) at gamma = 15, end to end: median of 3 runs, side by side with k-means on 50 PCs
and MetaCell-2.

Each run is a fresh subprocess: "cold" = interpreter start to result, i.e. reading the file + ``import
scmetacell`` + the call (which imports torch, and lightning when it trains); "call" = ``scm.tl.metacell``
alone. The k-means baseline is timed from raw counts (normalize, log1p, 2,000 HVGs, scale, 50 PCs, KMeans
n_init=1). MetaCell-2 (``--mc2``) runs the peers' runner ``benchmarks/peers/run_mc2.py`` in the peers'
virtual environment (``python benchmarks/run_peers.py setup`` builds it): "cold" = its whole subprocess,
"call" = its ``method_wall_s`` (reading the file to the assignment, without the interpreter start and imports
before it). Purity = mean over metacells of the majority ``cell_type`` share (MC2's outliers left out).

Usage: ``python benchmarks/kang_speed.py [--runs 3] [--mc2] [--only NAME ...]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
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


VARIANTS = {  # name -> (method, keywords of scm.tl.metacell as JSON)
    "scmetacell defaults": ("scmetacell", "{}"),
    "scmetacell n_threads=1": ("scmetacell", '{"n_threads": 1}'),
    "scmetacell train_epoch=30": ("scmetacell", '{"train_epoch": 30}'),
    "kmeans50pc": ("kmeans50pc", "{}"),
}


def _mc2_run(tmp: Path) -> dict:
    import pandas as pd

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from peers import venv

    out = Path(tempfile.mkdtemp(dir=tmp))
    n = round(8684 / 15)
    cmd = [str(venv.python()), str(ROOT / "benchmarks" / "peers" / "run_mc2.py"), "--input", str(KANG)]
    cmd += ["--n-metacells", str(n), "--gamma", "15", "--out", str(out), "--seed", "0"]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    t0 = time.perf_counter()
    subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
    cold = time.perf_counter() - t0
    info = json.loads((out / "info.json").read_text())
    lab = pd.read_csv(out / "assignment.csv", index_col=0)["metacell"]
    import anndata as ad

    ct = ad.read_h5ad(KANG, backed="r").obs["cell_type"].astype(str).reindex(lab.index)
    keep = lab.to_numpy() >= 0
    df = pd.DataFrame({"m": lab.to_numpy()[keep], "c": ct.to_numpy()[keep]})
    pur = df.groupby("m")["c"].agg(lambda s: s.value_counts().iloc[0] / len(s)).mean()
    return {"cold": cold, "call": float(info["method_wall_s"]), "purity": float(pur)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--mc2", action="store_true", help="add MetaCell-2 (needs benchmarks/.peers-venv)")
    ap.add_argument("--only", nargs="+", choices=[*VARIANTS, "mc2"], help="run these rows only")
    args = ap.parse_args()
    code = CHILD.format(src=str(ROOT / "src"), path=str(KANG))
    names = args.only or [*VARIANTS, *(["mc2"] if args.mc2 else [])]
    print("| method | runs | median call (s) | median cold (s) | purity |")
    print("|---|---|---|---|---|")
    medians = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            res = []
            for _ in range(args.runs):
                if name == "mc2":
                    res.append(_mc2_run(Path(tmp)))
                    continue
                method, kwargs = VARIANTS[name]
                cmd = [sys.executable, "-c", code, method, kwargs]
                out = subprocess.run(cmd, capture_output=True, text=True, check=True)
                res.append(json.loads(out.stdout.strip().splitlines()[-1]))
            call = statistics.median(r["call"] for r in res)
            cold = statistics.median(r["cold"] for r in res)
            medians[name] = cold
            print(f"| {name} | {args.runs} | {call:.2f} | {cold:.2f} | {res[0]['purity']:.4f} |", flush=True)
    base = medians.get("scmetacell defaults")
    if base:
        for other in ("kmeans50pc", "mc2"):
            if other in medians:
                print(f"cold time ratio {other} / scmetacell defaults: {medians[other] / base:.2f}")


if __name__ == "__main__":
    main()
