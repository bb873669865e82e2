"""``python benchmarks/run_peers.py`` (or ``python -m benchmarks.peers``): scmetacell against MetaCell-2,
SEACells, MetaQ and two baselines.

Every method runs in its own subprocess (peers in their own virtual environment, see :mod:`venv`), on the
same raw counts, at the same γ (number of metacells = round(cells / γ); MetaCell-2 gets target size γ).
All partitions are scored by ``scmetacell.tl.metacell_metrics`` on one shared PCA per dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import report, venv
from .embedding import poisson_resample, shared_pca
from .measure import run_measured
from .score import metrics_available, score

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
DATA = REPO.parent / "shared" / "data"
LABEL = "cell_type"
NAMES = {
    "pbmc3k_raw_labeled": "pbmc3k",
    "mouse_pancreas_endocrinogenesis_raw": "pancreas",
    "kang2018_pbmc_5donors_raw": "kang2018",
}
# scmetacell: defaults (untrained, train_epoch=0); scmetacell-trained: train_epoch=30 (the former default);
# scmetacell-e0: an explicit train_epoch=0, for re-running rows of tables measured when the default trained.
# All three run by run_baseline.py; a plain run does not repeat the defaults as scmetacell-e0.
METHODS = [
    "scmetacell",
    "scmetacell-trained",
    "scmetacell-e0",
    "mc2",
    "seacells",
    "metaq",
    "kmeans",
    "random",
]
DEFAULT_METHODS = [m for m in METHODS if m != "scmetacell-e0"]
PEER_SCRIPTS = {"mc2": "run_mc2.py", "seacells": "run_seacells.py", "metaq": "run_metaq.py"}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/run_peers.py", description=__doc__)
    p.add_argument("command", nargs="?", default="run", choices=["run", "setup", "plot", "rescore"])
    p.add_argument("--quick", action="store_true", help="PBMC 3k at γ = 75 only, MetaQ 10 epochs")
    p.add_argument("--datasets", nargs="+", help="names (pbmc3k pancreas kang2018) or .h5ad paths")
    p.add_argument("--gammas", nargs="+", type=float, default=[10, 30, 75])
    p.add_argument("--methods", nargs="+", default=DEFAULT_METHODS, choices=METHODS)
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    p.add_argument("--timeout", type=float, default=1800, help="per-run limit in seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--metaq-epochs", type=int, help="MetaQ train_epoch (default 300, --quick 10)")
    p.add_argument(
        "--metaq-time-budget", type=float, default=0, help="stop MetaQ training after s (0 = none)"
    )
    p.add_argument("--seacells-max-iter", type=int, default=50)
    p.add_argument("--scaling", action="store_true", help="time/memory vs cells on resampled cells instead")
    p.add_argument("--scaling-sizes", nargs="+", type=int, default=[10_000, 25_000, 50_000, 100_000])
    p.add_argument("--scaling-gamma", type=float, default=75)
    p.add_argument("--scaling-source", default="kang2018")
    p.add_argument("--append", action="store_true", help="keep other rows of results.csv / scaling.csv")
    p.add_argument("--no-setup", action="store_true", help="do not create the peers' venv if missing")
    return p


def _datasets(args) -> list[tuple[str, Path]]:
    if args.quick and not args.datasets:
        args.datasets = ["pbmc3k"]
    files = sorted(DATA.glob("*.h5ad"))
    if not args.datasets:
        return [(NAMES.get(f.stem, f.stem), f) for f in files]
    out = []
    for d in args.datasets:
        path = Path(d)
        if path.suffix == ".h5ad" and path.exists():
            out.append((NAMES.get(path.stem, path.stem), path))
            continue
        match = [f for f in files if NAMES.get(f.stem, f.stem) == d or f.stem == d]
        if not match:
            raise SystemExit(
                f"--datasets: {d!r} is neither a known name ({sorted(NAMES.values())}) nor a file"
            )
        out.append((d, match[0]))
    return out


def _load(path: Path) -> ad.AnnData:
    """Raw counts (CSR) and the label column only; every method reads this same file."""
    src = ad.read_h5ad(path)
    obs = pd.DataFrame(index=src.obs_names.astype(str))
    obs[LABEL] = src.obs[LABEL].to_numpy() if LABEL in src.obs else np.nan
    adata = ad.AnnData(sp.csr_matrix(src.X), obs=obs, var=pd.DataFrame(index=src.var_names.astype(str)))
    adata.obs_names_make_unique()
    adata.var_names_make_unique()
    return adata


def _scm_status() -> str:
    try:
        import scmetacell as scm
    except Exception as err:
        return f"not available: {err}"
    return "ok" if hasattr(scm.tl, "metacell") else "not available: scm.tl.metacell not implemented yet"


def _command(method: str, inp: Path, n: int, gamma: float, out: Path, args) -> tuple[list[str], dict]:
    common = ["--input", str(inp), "--n-metacells", str(n), "--gamma", str(gamma), "--out", str(out)]
    common += ["--seed", str(args.seed)]
    env = dict(os.environ)
    if method in PEER_SCRIPTS:
        env.pop("PYTHONPATH", None)  # the peers' venv must not see this checkout's packages
        cmd = [str(venv.python()), str(HERE / PEER_SCRIPTS[method]), *common]
        if method == "metaq":
            cmd += ["--max-epochs", str(args.metaq_epochs), "--time-budget-s", str(args.metaq_time_budget)]
        if method == "seacells":
            cmd += ["--max-iter", str(args.seacells_max_iter)]
        return cmd, env
    import scmetacell

    src = str(Path(scmetacell.__file__).resolve().parents[1])  # the same scmetacell as this process
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    return [sys.executable, str(HERE / "run_baseline.py"), "--method", method, *common], env


def _run_one(method, inp, n, gamma, work, args, availability) -> tuple[dict, pd.Series | None]:
    row: dict = {"method": method}
    if availability[method] != "ok":
        row["status"] = availability[method]
        return row, None
    out = work / f"{method}"
    cmd, env = _command(method, inp, n, gamma, out, args)
    res = run_measured(cmd, timeout_s=args.timeout, log_path=out / "log.txt", env=env)
    row.update(status=res.status, wall_s=res.wall_s, cpu_s=res.cpu_s, peak_rss_mb=res.peak_rss_mb)
    if res.status != "ok":
        return row, None
    info = json.loads((out / "info.json").read_text())
    row.update(method_wall_s=info["method_wall_s"], version=info["version"], notes=info["notes"])
    assign = pd.read_csv(out / "assignment.csv", dtype={"cell": str}).set_index("cell")["metacell"]
    return row, assign


def _availability(args) -> dict[str, str]:
    peers = venv.probe()
    scm_ok = _scm_status()
    return {
        "scmetacell": scm_ok,
        "scmetacell-trained": scm_ok,
        "scmetacell-e0": scm_ok,
        "mc2": peers["mc2"],
        "seacells": peers["seacells"],
        "metaq": peers["metaq"],
        "kmeans": "ok",
        "random": "ok",
    }


def _machine() -> str:
    mem = ""
    try:
        kb = int(next(ln for ln in open("/proc/meminfo") if ln.startswith("MemTotal")).split()[1])
        mem = f", {kb / 2**20:.0f} GiB RAM"
    except (OSError, StopIteration):
        pass
    return f"{platform.machine()} Linux, {os.cpu_count()} cores{mem}, CPU only"


def _header(args, versions: dict, what: str) -> str:
    cmd = "python benchmarks/run_peers.py " + " ".join(sys.argv[1:])
    vers = ", ".join(f"{k} {v}" for k, v in versions.items())
    return (
        f"# {what}\n\n- command: `{cmd.strip()}`\n- machine: {_machine()}\n- date: "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}\n- versions: {vers}\n"
        "- wall s = whole subprocess (start, imports, read, method, write); CPU s = user+sys; peak RSS = "
        "`os.wait4` ru_maxrss of the run's process tree (largest single process)\n"
        "- metrics: `scm.tl.metacell_metrics` on one shared PCA per dataset (log1p CP10k, 2,000 HVGs, "
        "scale, 50 PCs, seed 0); ↓ lower is better, ↑ higher is better"
    )


def _versions(availability) -> dict:
    out = {}
    try:
        import scmetacell

        out["scmetacell"] = scmetacell.__version__
    except Exception:
        pass
    out.update(venv.versions())
    return out


def _ordered(rows: list[dict]) -> pd.DataFrame:
    """Rows sorted by dataset (first seen), γ and method (``METHODS`` order)."""
    frame = pd.DataFrame(rows)
    first = {d: i for i, d in enumerate(dict.fromkeys(frame["dataset"]))}
    order = frame["dataset"].map(first) * 1e6 + frame["gamma"].astype(float) * 10
    order += frame["method"].map({m: i for i, m in enumerate(METHODS)}).fillna(len(METHODS))
    return frame.iloc[np.argsort(order.to_numpy(), kind="stable")].reset_index(drop=True)


def run_table(args) -> pd.DataFrame:
    availability = _availability(args)
    m_ok = metrics_available()
    if m_ok != "ok":
        raise SystemExit(f"cannot score: {m_ok}")
    versions = _versions(availability)
    header = _header(args, versions, "scmetacell vs peers: quality and speed")
    rows: list[dict] = []
    if args.append and (args.out / "results.csv").exists():
        rows = pd.read_csv(args.out / "results.csv").to_dict("records")
    gammas = [75.0] if args.quick and args.gammas == [10, 30, 75] else args.gammas
    for name, path in _datasets(args):
        adata = _load(path)
        work = args.out / "work" / name
        work.mkdir(parents=True, exist_ok=True)
        inp = work / "input.h5ad"
        adata.write_h5ad(inp)
        t0 = time.perf_counter()
        pca = shared_pca(adata, seed=args.seed)
        took = time.perf_counter() - t0
        print(f"[{name}] {adata.n_obs} cells x {adata.n_vars} genes; shared PCA {took:.1f} s")
        for gamma in gammas:
            n = max(1, round(adata.n_obs / gamma))
            for method in args.methods:
                row, assign = _run_one(method, inp, n, gamma, work / f"g{gamma:g}", args, availability)
                row = {"dataset": name, "n_cells": adata.n_obs, "gamma": gamma, "n_requested": n, **row}
                if assign is not None:
                    try:
                        row.update(score(adata, pca, assign, n_requested=n, label_key=LABEL))
                    except Exception as err:  # a bad partition is a result, not a crash
                        row["status"] = f"scoring failed: {err}"
                same = (name, float(gamma), method)
                rows = [r for r in rows if (r["dataset"], float(r["gamma"]), r["method"]) != same] + [row]
                wall = row.get("wall_s", float("nan"))
                print(f"  γ={gamma:g} {method:10s} {row['status'][:60]:60s} {wall:8.1f} s")
                report.write_tables(_ordered(rows), args.out, "results", header)
    frame = _ordered(rows)
    report.plot_metrics(frame, args.out)
    report.plot_scaling(
        frame, args.out, "time_vs_cells_real", "real datasets: time and memory vs cells (all γ)"
    )
    return frame


def _by_size(rows: list[dict]) -> pd.DataFrame:
    """Scaling rows ordered by cells, then by method in the usual order."""
    frame = pd.DataFrame(rows)
    rank = {m: i for i, m in enumerate(METHODS)}
    key = frame["n_cells"].astype(int) * 100 + frame["method"].map(rank).fillna(99).astype(int)
    return frame.iloc[np.argsort(key.to_numpy(), kind="stable")].reset_index(drop=True)


def run_scaling(args) -> pd.DataFrame:
    availability = _availability(args)
    versions = _versions(availability)
    header = _header(args, versions, "scmetacell vs peers: time and memory vs cells") + (
        f"\n- inputs: Poisson resampling of the real cells of {args.scaling_source} "
        "(resampled, not new biology); γ = " + f"{args.scaling_gamma:g}"
    )
    src = _load(
        dict(_datasets(argparse.Namespace(datasets=[args.scaling_source], quick=False)))[args.scaling_source]
    )
    rows: list[dict] = []
    if args.append and (args.out / "scaling.csv").exists():
        rows = pd.read_csv(args.out / "scaling.csv").to_dict("records")
    dead: dict[str, str] = {}
    for size in sorted(args.scaling_sizes):
        work = args.out / "work" / f"scaling_{size}"
        work.mkdir(parents=True, exist_ok=True)
        inp = work / "input.h5ad"
        poisson_resample(src, size, seed=args.seed).write_h5ad(inp)
        n = max(1, round(size / args.scaling_gamma))
        for method in args.methods:
            base = {
                "dataset": f"{args.scaling_source} resampled",
                "n_cells": size,
                "gamma": args.scaling_gamma,
            }
            base["n_requested"] = n
            same = (size, method)
            rows = [r for r in rows if (int(r["n_cells"]), r["method"]) != same]
            if method in dead:
                rows.append({**base, "method": method, "status": f"skipped ({dead[method]} at fewer cells)"})
                continue
            row, assign = _run_one(method, inp, n, args.scaling_gamma, work, args, availability)
            if not row["status"].startswith("ok") and availability[method] == "ok":
                dead[method] = row["status"].split(":")[0]
            if assign is not None:
                ids = assign.to_numpy()
                row["n_metacells"] = len(np.unique(ids[ids >= 0]))
                row["n_outliers"] = int((ids < 0).sum())
            rows.append({**base, **row})
            print(
                f"  {size:7d} {method:10s} {row['status'][:60]:60s} {row.get('wall_s', float('nan')):8.1f} s"
            )
            report.write_tables(_by_size(rows), args.out, "scaling", header)
    frame = _by_size(rows)
    report.plot_scaling(frame, args.out, "scaling", "time and memory vs cells (Poisson-resampled real cells)")
    return frame


def rescore(args) -> pd.DataFrame:
    """Score every finished row of ``results.csv`` again from its stored assignment.

    Rows written by different runs (``--append``) may have been scored by different versions of the
    metric code; this puts every row on the current ``scm.tl.metacell_metrics``. Timings are kept.
    """
    out = args.out.resolve()
    frame = pd.read_csv(out / "results.csv")
    paths = dict(_datasets(argparse.Namespace(datasets=None, quick=False)))
    for name in frame["dataset"].unique():
        if name not in paths:
            print(f"[{name}] dataset not found; rows kept as they are")
            continue
        adata = _load(paths[name])
        pca = shared_pca(adata, seed=args.seed)
        for i in frame.index[(frame["dataset"] == name) & frame["status"].astype(str).eq("ok")]:
            row = frame.loc[i]
            f = out / "work" / name / f"g{float(row['gamma']):g}" / row["method"] / "assignment.csv"
            if not f.exists():
                print(f"  γ={row['gamma']:g} {row['method']}: no stored assignment; row kept")
                continue
            assign = pd.read_csv(f, dtype={"cell": str}).set_index("cell")["metacell"]
            for k, v in score(
                adata, pca, assign, n_requested=int(row["n_requested"]), label_key=LABEL
            ).items():
                frame.loc[i, k] = v
            print(f"  [{name}] γ={row['gamma']:g} {row['method']:10s} rescored")
    report._atomic_write(out / "results.csv", lambda p: frame.to_csv(p, index=False))
    report.rewrite_table(out, "results")
    report.plot_metrics(frame, out)
    return frame


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "setup":
        print(json.dumps(venv.setup(), indent=1))
        return 0
    if args.command == "rescore":  # every row scored by the current metric code
        rescore(args)
        return 0
    if args.command == "plot":  # redraw the plots and tables from the CSVs of --out
        out = args.out.resolve()
        if (out / "results.csv").exists():
            frame = pd.read_csv(out / "results.csv")
            report.rewrite_table(out, "results")
            report.plot_metrics(frame, out)
            report.plot_scaling(frame, out, "time_vs_cells_real", "real datasets: time and memory vs cells")
        if (out / "scaling.csv").exists():
            title = "time and memory vs cells (Poisson-resampled real cells)"
            report.plot_scaling(pd.read_csv(out / "scaling.csv"), out, "scaling", title)
            report.rewrite_table(out, "scaling")
        return 0
    if args.metaq_epochs is None:
        args.metaq_epochs = 10 if args.quick else 300
    if not args.no_setup and not venv.python().exists() and set(args.methods) & set(PEER_SCRIPTS):
        print("creating the peers' virtual environment (once):", venv.VENV)
        venv.setup()
    args.out = args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.scaling:
        run_scaling(args)
    else:
        run_table(args)
    print("results in", args.out)
    return 0
