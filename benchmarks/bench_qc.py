"""QC speed and memory: scmetacell.tl.qc vs scanpy's calculate_qc_metrics (+ filter masks), side by side.

Usage: PYTHONPATH=src python benchmarks/bench_qc.py [--cells 50000] [--repeats 3]

The large input is RESAMPLED from the real mouse pancreas cells (cells drawn with replacement,
counts binomially thinned with p = 0.8): not new biology, only a bigger matrix of realistic sparsity.
"""

from __future__ import annotations

import argparse
import time
import tracemalloc
from pathlib import Path

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp

import scmetacell as scm

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def resampled_pancreas(n_cells: int, seed: int = 0) -> ad.AnnData:
    base = ad.read_h5ad(DATA / "mouse_pancreas_endocrinogenesis_raw.h5ad")
    rng = np.random.default_rng(seed)
    X = base.X[rng.integers(0, base.n_obs, n_cells)].tocsr()
    X.data = rng.binomial(X.data.astype(np.int64), 0.8).astype(np.int32)
    X.eliminate_zeros()
    out = ad.AnnData(X=sp.csr_matrix(X), var=base.var.copy())
    out.obs_names = [f"c{i}" for i in range(n_cells)]
    return out


def scanpy_qc(adata: ad.AnnData) -> None:
    """The same work with scanpy: metrics, MAD bounds, cell and gene masks (no filtering)."""
    adata.var["mt"] = adata.var["chromosome"].astype(str) == "chrM"
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mt"], percent_top=None, inplace=True)
    x = adata.obs["total_counts"].to_numpy()
    med = np.median(x)
    mad = np.median(np.abs(x - med))
    ok = (x >= med - 5 * mad) & (x <= med + 5 * mad) & (adata.obs["n_genes_by_counts"] >= 300)
    ok &= adata.obs["pct_counts_mt"] < 15
    adata.obs["qc"] = ok.to_numpy()
    adata.var["qc"] = np.asarray((adata.X[ok.to_numpy()] > 0).sum(0)).ravel() >= 3


def ours(adata: ad.AnnData) -> None:
    scm.tl.qc(adata, mt_seqid="chrM", min_genes=300, progress=False)


def measure(fn, make, repeats: int) -> tuple[float, float]:
    times = []
    for _ in range(repeats):
        a = make()
        t0 = time.perf_counter()
        fn(a)
        times.append(time.perf_counter() - t0)
    a = make()
    tracemalloc.start()
    fn(a)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return float(np.median(times)), peak / 2**20


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cells", type=int, default=50_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    sc.settings.verbosity = 0
    pbmc = scm.datasets.pbmc3k()
    pbmc.var["chromosome"] = np.where(pbmc.var_names.str.startswith("MT-"), "chrM", "chr1")
    big = resampled_pancreas(args.cells)
    rows = []
    for name, base in (
        ("PBMC 3k (2,700 x 32,738)", pbmc),
        (f"pancreas resampled ({args.cells:,} x 2,000)", big),
    ):
        t_ours, m_ours = measure(ours, base.copy, args.repeats)
        t_sc, m_sc = measure(scanpy_qc, base.copy, args.repeats)
        rows.append((name, t_ours, t_sc, m_ours, m_sc))
    print(
        f"{'dataset':<36} {'scm.tl.qc s':>12} {'scanpy s':>10} {'ratio':>7} {'scm MiB':>9} {'scanpy MiB':>11}"
    )
    for name, t1, t2, m1, m2 in rows:
        print(f"{name:<36} {t1:>12.3f} {t2:>10.3f} {t1 / t2:>7.2f} {m1:>9.1f} {m2:>11.1f}")
    print(f"median of {args.repeats} runs; peak = tracemalloc peak of Python allocations in one more run")


if __name__ == "__main__":
    main()
