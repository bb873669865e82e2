"""Read / write speed of the native .mmm format vs uncompressed .h5ad, on real-like counts.

The matrix is real data resampled: cells of the bundled PBMC 3k (or Kang 2018) drawn with replacement
until the matrix holds at least ``--nnz`` non-zeros. Each format is written and read ``--runs`` times
(one core; the page cache is warm for reads, as in an interactive session); the table shows medians.

    PYTHONPATH=src python benchmarks/io_speed.py [--nnz 20000000] [--runs 3] [--dataset pbmc3k|kang]
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np

import scmetacell as scm


def _load(name: str) -> ad.AnnData:
    if name == "pbmc3k":
        return scm.datasets.pbmc3k()
    path = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "kang2018_pbmc_5donors_raw.h5ad"
    return ad.read_h5ad(path)


def _timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.iterdir())
    return path.stat().st_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nnz", type=float, default=20e6)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dataset", choices=["pbmc3k", "kang"], default="pbmc3k")
    args = parser.parse_args()

    base = _load(args.dataset)
    X0 = base.X.tocsr()
    per_cell = X0.nnz / X0.shape[0]
    n = int(np.ceil(args.nnz / per_cell))
    rng = np.random.default_rng(0)
    X = X0[rng.integers(0, X0.shape[0], n)]
    adata = ad.AnnData(X=X)
    adata.obs_names = [f"c{i}" for i in range(n)]
    adata.var_names = base.var_names
    print(
        f"data: {args.dataset} ({X0.shape[0]} cells x {X0.shape[1]} genes, {X0.nnz:,} non-zeros) resampled "
        f"with replacement to {n:,} cells: {X.nnz:,} non-zeros, {X.dtype} counts, max {X.data.max()}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="scm_io_bench_"))
    mmm, h5 = tmp / "x.mmm", tmp / "x.h5ad"
    try:
        # warm-up (numba compiles or loads its cache once)
        scm.io.write_mmmatrix(mmm, X[:100])
        scm.io.read_mmmatrix(mmm)
        rows = {"mmm": {"write": [], "read": []}, "h5ad": {"write": [], "read": []}}
        for _ in range(args.runs):
            t, _ = _timed(lambda: scm.io.write_mmmatrix(mmm, adata))
            rows["mmm"]["write"].append(t)
            t, back = _timed(lambda: scm.io.read_mmmatrix(mmm))
            rows["mmm"]["read"].append(t)
            assert (back.X != X).nnz == 0
            del back
            t, _ = _timed(lambda: adata.write_h5ad(h5))
            rows["h5ad"]["write"].append(t)
            t, back = _timed(lambda: ad.read_h5ad(h5))
            rows["h5ad"]["read"].append(t)
            del back
        sizes = {"mmm": _size(mmm), "h5ad": _size(h5)}
        with scm.io.MMMatrix(mmm) as m:
            decode = [_timed(m.to_csr)[0] for _ in range(args.runs)]
        idx = rng.integers(0, n, 10_000)
        with scm.io.MMMatrix(mmm) as m:
            take = [_timed(lambda: m.take(idx))[0] for _ in range(args.runs)]
        back = ad.read_h5ad(h5, backed="r")
        take_h5 = [_timed(lambda: back.X[np.sort(idx)])[0] for _ in range(args.runs)]
        back.file.close()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    nnz = X.nnz
    print(f"\nmedian of {args.runs} runs, one process, warm page cache, {os.cpu_count()} CPUs on the machine")
    head = ("format", "write s", "write Mnnz/s", "read s", "read Mnnz/s", "size MB", "size/h5ad")
    widths = (8, 9, 14, 9, 13, 10, 11)
    print(head[0].ljust(widths[0]) + "".join(h.rjust(w) for h, w in zip(head[1:], widths[1:], strict=True)))
    for fmt in ("mmm", "h5ad"):
        w, r = np.median(rows[fmt]["write"]), np.median(rows[fmt]["read"])
        print(
            f"{fmt:<8}{w:>9.3f}{nnz / w / 1e6:>14.0f}{r:>9.3f}{nnz / r / 1e6:>13.0f}"
            f"{sizes[fmt] / 1e6:>10.1f}{sizes[fmt] / sizes['h5ad']:>11.2f}"
        )
    w_ratio = np.median(rows["h5ad"]["write"]) / np.median(rows["mmm"]["write"])
    r_ratio = np.median(rows["h5ad"]["read"]) / np.median(rows["mmm"]["read"])
    print(f"mmm vs h5ad: write {w_ratio:.1f}x faster, read {r_ratio:.1f}x faster")
    print(f"decode only (MMMatrix.to_csr, no AnnData): {nnz / np.median(decode) / 1e6:.0f} M non-zeros/s")
    print(
        f"random access, 10,000 rows: MMMatrix.take {np.median(take) * 1e3:.1f} ms, "
        f"backed h5ad X[sorted idx] {np.median(take_h5) * 1e3:.1f} ms"
    )


if __name__ == "__main__":
    main()
