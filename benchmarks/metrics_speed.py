"""Time and peak memory of ``scm.tl.metacell_metrics`` on Kang (8,684 cells) and on a 100k-cell resample.

Partition: k-means (gamma = 15) on 50 PCs of log1p-CP10k HVGs. Side by side with the reference tools'
own way of computing the same numbers (dense pandas INV as MetacellAnalysisToolkit does; MetaQ's full
N x N correlation matrix), where it fits in memory.

    PYTHONPATH=src python benchmarks/metrics_speed.py [--cells 100000] [--runs 3]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import threading
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import psutil
import scanpy as sc
import scipy.sparse as sp

import scmetacell as scm

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kang2018_pbmc_5donors_raw.h5ad"


class PeakRSS:
    """Peak resident memory above the level at entry, sampled every 5 ms."""

    def __enter__(self):
        self.proc = psutil.Process()
        gc.collect()
        self.base = self.proc.memory_info().rss
        self.peak = self.base
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()
        return self

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.005)

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, self.proc.memory_info().rss)

    @property
    def mib(self) -> float:
        return (self.peak - self.base) / 2**20


def prepare(adata: ad.AnnData, gamma: int = 15, seed: int = 0) -> ad.AnnData:
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=2000)
    sc.pp.pca(adata, n_comps=50, mask_var="highly_variable", random_state=seed)
    k = adata.n_obs // gamma
    if adata.n_obs <= 20000:
        from sklearn.cluster import KMeans

        km = KMeans(k, n_init=1, random_state=seed)
    else:
        from sklearn.cluster import MiniBatchKMeans

        km = MiniBatchKMeans(k, n_init=1, random_state=seed, batch_size=8192)
    adata.obs["metacell"] = km.fit_predict(adata.obsm["X_pca"])
    return adata


def resample(adata: ad.AnnData, n: int, seed: int = 0) -> ad.AnnData:
    """Cells drawn with replacement, counts thinned binomially (p = 0.8) so no two cells are equal."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, adata.n_obs, n)
    x = sp.csr_matrix(adata.X[idx])
    x.data = rng.binomial(x.data.astype(np.int64), 0.8).astype(np.float32)
    x.eliminate_zeros()
    out = ad.AnnData(X=x, obs=adata.obs.iloc[idx].reset_index(drop=True), var=adata.var.copy())
    out.obs_names = [f"c{i}" for i in range(n)]
    return out


def timed(fn, runs: int) -> tuple[float, float, object]:
    times, peaks, res = [], [], None
    for _ in range(runs):
        with PeakRSS() as mem:
            t = time.perf_counter()
            res = fn()
            times.append(time.perf_counter() - t)
        peaks.append(mem.mib)
    return statistics.median(times), max(peaks), res


def dense_inv_reference(adata: ad.AnnData) -> pd.Series:
    """The review's (MetacellAnalysisToolkit) way: a dense cells x genes frame, pandas groupby."""
    x = adata.layers["counts"].toarray().astype(np.float64)
    lib = x.sum(axis=1)
    g = adata.obs["metacell"].to_numpy()
    med = pd.Series(lib).groupby(g).transform("median").to_numpy()
    frame = pd.DataFrame(x / lib[:, None] * med[:, None])
    mean = frame.groupby(g).mean()
    var = frame.groupby(g).var()
    inv = (var / mean).where(mean > 0, 1.0)
    return inv.quantile(0.95, axis=1)


def metaq_full_reference(adata: ad.AnnData) -> float:
    """MetaQ's way: the full N x N Pearson matrix of log1p-CP10k HVGs, then per-metacell loops."""
    x = adata.layers["counts"][:, adata.var["highly_variable"].to_numpy()].toarray().astype(np.float64)
    x = np.log1p(x / np.maximum(x.sum(axis=1, keepdims=True), 1) * 1e4)
    corr = np.corrcoef(x).astype(np.float32)
    g = adata.obs["metacell"].to_numpy()
    ids = np.unique(g)
    n, m = len(g), len(ids)
    comp = [corr[np.ix_(g == i, g == i)].mean() * (g == i).sum() / n * m for i in ids]
    return float(np.mean(comp))


def measure(data: ad.AnnData, tag: str, runs: int, baselines: bool) -> list[tuple]:
    g = data.obs["metacell"]
    hvg = data.var["highly_variable"].to_numpy()
    # warm-up: numba compiles scanpy's / pynndescent's kernels once per process
    scm.tl.metacell_metrics(data, counts_layer="counts", correlation_sample=200, inplace=False)
    call = lambda: scm.tl.metacell_metrics(data, label_key="cell_type", counts_layer="counts", inplace=False)
    t, mem, (_, summ) = timed(call, runs)
    m = summ["n_metacells"]
    rows = [(tag, data.n_obs, m, "scm.tl.metacell_metrics (all metrics)", t, mem)]
    parts = [
        ("  diffusion components (SEACells space)", lambda: scm.tl.diffusion_components(data.obsm["X_pca"])),
        ("  INV, all genes", lambda: scm.tl.inner_normalized_variance(data, g, layer="counts")),
        (
            "  MetaQ correlations, 5,000-cell sample",
            lambda: scm.tl.correlation_metrics(data, g, layer="counts", genes=hvg),
        ),
    ]
    if baselines:
        parts += [
            ("  baseline: INV dense pandas (MATK)", lambda: dense_inv_reference(data)),
            ("  baseline: MetaQ full N x N correlation", lambda: metaq_full_reference(data)),
        ]
    for name, fn in parts:
        t, mem, _ = timed(fn, runs)
        rows.append((tag, data.n_obs, m, name, t, mem))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--cells", type=int, default=0, help="also run on a resample of this many cells")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    sc.settings.verbosity = 0
    kang = ad.read_h5ad(DATA)
    rows = measure(prepare(kang.copy()), "Kang", args.runs, baselines=True)
    if args.cells:
        rows += measure(prepare(resample(kang, args.cells)), "resampled", 1, baselines=False)
    cols = ["data", "cells", "metacells", "what", "median s", "peak MiB above start"]
    table = pd.DataFrame(rows, columns=cols)
    with pd.option_context("display.width", 160, "display.max_colwidth", 60):
        print(table.round(2).to_string(index=False))


if __name__ == "__main__":
    main()
