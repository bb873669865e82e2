"""Scale benchmark: ``scm.tl.metacell`` at γ = 20 on 10k, 100k and 1M cells streamed from disk.

Inputs are **real cells resampled** (``benchmarks/_synth.py``: Kang 2018 cells drawn with replacement,
counts Poisson-resampled; labels kept) — not new biology. Each size is written once to ``.mmm``
(``scm.io.MMMWriter``) and ``.h5ad`` (streamed writer), then every run is a fresh subprocess that
streams the file from disk (``.mmm`` path, or ``anndata.read_h5ad(..., backed='r')``) and reports wall
time, peak RSS (``os.wait4`` of the child), the size of the result held in memory (metacells' ``X``,
``layers['counts']`` and ``obsm`` (the codebook), the cells' results; GiB, like the RSS), peak RSS
minus it, the size of the cell annotations passed as ``obs=`` (the caller's, held throughout), the stage times
recorded in ``uns['metacell']['diagnostics']`` and the cell-type purity of the metacells.

    PYTHONPATH=src python benchmarks/scale.py [--cells 10000 100000 1000000] [--formats mmm h5ad]
        [--gamma 20] [--dir /tmp/scm_scale] [--train-epoch 0] [--max-train-cells 20000]
        [--device auto|cpu|cuda]

10M cells: ``--cells 10000000`` (about 10 GB of disk per format).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

STAGES = (
    "seconds_scan",
    "seconds_hvg_stats",
    "seconds_init",
    "seconds_train",
    "seconds_embed",
    "seconds_assign",
    "seconds_aggregate",
)


def build(n: int, out: Path, formats: list[str]) -> dict[str, Path]:
    """Write ``n`` resampled cells to ``.mmm`` / ``.h5ad`` (+ labels) unless already there."""
    import _synth
    import pandas as pd

    import scmetacell as scm

    paths = {"mmm": out / f"cells_{n}.mmm", "h5ad": out / f"cells_{n}.h5ad", "obs": out / f"obs_{n}.pkl"}
    ref = None
    if "mmm" in formats and not paths["mmm"].exists():
        ref = ref or _synth.load_reference()
        obs_parts = []
        with scm.io.MMMWriter(paths["mmm"], ref.n_vars) as w:
            for block, obs in _synth.resampled_chunks(ref, n, seed=0):
                w.append(block)
                obs_parts.append(obs[["cell_type", "donor"]])
        pd.concat(obs_parts).to_pickle(paths["obs"])
    if "h5ad" in formats and not paths["h5ad"].exists():
        ref = ref or _synth.load_reference()
        _synth.write_h5ad_streaming(
            paths["h5ad"], _synth.resampled_chunks(ref, n, seed=0), ref.var[[]], ref.n_vars
        )
    return paths


def child(args) -> None:
    """One run (in a fresh process): stream the input from disk, write the figures as JSON."""
    import anndata as ad
    import pandas as pd

    import scmetacell as scm

    t0 = time.perf_counter()
    kw = {
        "gamma": args.gamma,
        "progress": False,
        "random_seed": 0,
        "train_epoch": args.train_epoch,
        "max_train_cells": args.max_train_cells,
    }
    if args.device is not None:
        kw["device"] = args.device
    obs_bytes = 0
    if args.input.endswith(".mmm"):
        obs = pd.read_pickle(args.obs)
        obs_bytes = int(obs.memory_usage(deep=True).sum())  # the caller's annotations, held throughout
        mc = scm.tl.metacell(args.input, obs=obs, **kw)
    else:
        adata = ad.read_h5ad(args.input, backed="r")
        mc = scm.tl.metacell(adata, inplace=False, **kw)
    wall = time.perf_counter() - t0
    diag = mc.uns["metacell"]["diagnostics"]

    def _nbytes(m):
        return m.data.nbytes + m.indices.nbytes + m.indptr.nbytes

    cells = mc.uns["metacell"].get("cells", {})
    res = {
        "output_gb": (
            _nbytes(mc.X)
            + _nbytes(mc.layers["counts"])
            + sum(np.asarray(v).nbytes for v in mc.obsm.values())  # the codebook: one row per metacell
            + sum(np.asarray(v).nbytes for v in cells.values())
        )
        / 1024**3,
        "obs_gb": obs_bytes / 1024**3,
        "wall_s": wall,
        "n_metacells": int(mc.n_obs),
        "purity_mean": float(mc.obs["cell_type_purity"].mean()),
        "purity_weighted": float(np.average(mc.obs["cell_type_purity"], weights=mc.obs["n_cells"])),
        "epochs": int(diag["epochs_run"]),
        "n_train_cells": int(diag["n_train_cells"]),
        **{k: float(diag.get(k, float("nan"))) for k in STAGES},
    }
    Path(args.result).write_text(json.dumps(res))


def run_one(path: Path, obs: Path, args) -> dict:
    """Run :func:`child` in a subprocess; add its peak RSS."""
    result = Path(args.dir) / "result.json"
    cmd = [
        sys.executable, __file__, "--child", "--input", str(path), "--obs", str(obs), "--result", str(result),
        "--gamma", str(args.gamma), "--train-epoch", str(args.train_epoch),
        "--max-train-cells", str(args.max_train_cells),
    ]  # fmt: skip
    if args.device is not None:
        cmd += ["--device", args.device]
    p = subprocess.Popen(cmd)
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        raise RuntimeError(f"child failed ({status}): {' '.join(cmd)}")
    res = json.loads(result.read_text())
    res["peak_rss_gb"] = usage.ru_maxrss / 1024**2  # KiB on Linux
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    ap.add_argument("--formats", nargs="+", default=["mmm", "h5ad"], choices=["mmm", "h5ad"])
    ap.add_argument("--gamma", type=float, default=20.0)
    ap.add_argument("--dir", default="/tmp/scm_scale")
    ap.add_argument("--train-epoch", type=int, default=0, help="0 = the package default (untrained)")
    ap.add_argument("--max-train-cells", type=int, default=20_000)
    ap.add_argument("--device", choices=["auto", "cpu", "cuda"], default=None, help="tl.metacell's device")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--obs", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import _synth

    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    print(f"# {_synth.NOTE} (Kang 2018, 8,684 cells x 2,511 genes); gamma = {args.gamma:g}")
    print(f"# load average before: {os.getloadavg()}; cores: {os.cpu_count()}")
    malloc_env = {k: v for k, v in os.environ.items() if k.startswith("MALLOC_")}
    if malloc_env:  # e.g. MALLOC_MMAP_THRESHOLD_=1048576 (see docs/scaling.md)
        print(f"# glibc malloc settings from the environment: {malloc_env}")
    rows = []
    for n in args.cells:
        t = time.perf_counter()
        paths = build(n, out, args.formats)
        print(f"# built {n} cells in {time.perf_counter() - t:.0f} s")
        for fmt in args.formats:
            res = run_one(paths[fmt], paths["obs"], args)
            res.update(cells=n, format=fmt, load=os.getloadavg()[0], device=args.device or "default")
            rows.append(res)
            stages = " ".join(f"{k[8:]}={res[k]:.1f}" for k in STAGES)
            print(
                f"{n:>9} {fmt:>5} wall={res['wall_s']:7.1f}s rss={res['peak_rss_gb']:5.2f}GB "
                f"output={res['output_gb']:5.2f}GB rss-output={res['peak_rss_gb'] - res['output_gb']:5.2f}GB "
                f"obs={res['obs_gb']:5.2f}GB "
                f"K={res['n_metacells']} purity={res['purity_mean']:.3f} epochs={res['epochs']} "
                f"train_cells={res['n_train_cells']} load={res['load']:.1f} | {stages}",
                flush=True,
            )
    for fmt in args.formats:
        w = {r["cells"]: r["wall_s"] for r in rows if r["format"] == fmt}
        if 100_000 in w and 1_000_000 in w:
            print(f"# {fmt}: time(1M) / time(100k) = {w[1_000_000] / w[100_000]:.2f}")
    (out / "scale_results.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
