"""Beyond one process: single process vs a dask ``LocalCluster`` vs Lightning DDP, side by side.

Runs ``scm.tl.metacell`` on the same ``.mmm`` input (real Kang 2018 cells **resampled**, built by
``benchmarks/scale.py``'s writer) three ways, each in a fresh subprocess:

- ``single``: one process (the default);
- ``dask``: ``client=`` a ``LocalCluster`` of ``--workers`` worker processes (1 thread each): the
  passes over the cells run as tasks on the workers;
- ``ddp``: ``trainer_kwargs={"strategy": "ddp", "devices": --workers}`` on CPU processes (gloo),
  ``max_train_cells=None`` so that training sees every cell.

It prints wall time, peak RSS of the launching process, and whether the partition equals the
single-process one (``ddp`` is compared with a single-process run with the same ``max_train_cells``),
the share of cells in the same metacell and the adjusted Rand index. Long DDP training on many cells
drifts from the single-process run by floating-point summation order (two half-batch gradients
averaged instead of one), by as much as changing the number of torch threads does.

    PYTHONPATH=src python benchmarks/multiprocess.py [--cells 50000] [--workers 2] [--gamma 20]

On a 2-core machine nothing is expected to get faster: the table measures the overhead of the
distributed paths and checks that they give the same metacells.
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

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def child(args) -> None:
    import scmetacell as scm

    kw = {"gamma": args.gamma, "progress": False, "random_seed": 0, "n_threads": 1, "device": "cpu"}
    if args.max_train_cells == 0:
        kw["max_train_cells"] = None
    out = Path(args.result)
    t0 = time.perf_counter()
    if args.mode == "dask":
        from distributed import Client, LocalCluster

        with (
            LocalCluster(
                n_workers=args.workers, threads_per_worker=1, processes=True, dashboard_address=None
            ) as cluster,
            Client(cluster) as client,
        ):
            mc = scm.tl.metacell(args.input, client=client, **kw)
    elif args.mode == "ddp":
        kw["trainer_kwargs"] = {"strategy": "ddp", "devices": args.workers, "accelerator": "cpu"}
        mc = scm.tl.metacell(args.input, **kw)
    else:
        mc = scm.tl.metacell(args.input, **kw)
    wall = time.perf_counter() - t0
    rank = os.environ.get("LOCAL_RANK", "0")
    if rank != "0":
        return
    d = mc.uns["metacell"]["diagnostics"]
    np.save(out.with_suffix(".npy"), mc.uns["metacell"]["cells"]["metacell"].astype(str))
    res = {"wall_s": wall, **{k: float(v) for k, v in d.items() if k.startswith("seconds_")}}
    res["epochs"] = int(d["epochs_run"])
    out.write_text(json.dumps(res))


def run(mode: str, path: Path, args, tag: str, max_train_cells: int) -> dict:
    result = Path(args.dir) / f"dist_{tag}.json"
    cmd = [
        sys.executable, __file__, "--child", "--mode", mode, "--input", str(path), "--result", str(result),
        "--gamma", str(args.gamma), "--workers", str(args.workers), "--max-train-cells", str(max_train_cells),
    ]  # fmt: skip
    env = dict(os.environ)
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE"):
        env.pop(var, None)
    p = subprocess.Popen(cmd, env=env, cwd=args.dir)
    _, status, usage = os.wait4(p.pid, 0)
    if status != 0:
        raise RuntimeError(f"{mode} failed ({status})")
    res = json.loads(result.read_text())
    res["peak_rss_gb"] = usage.ru_maxrss / 1024**2
    res["labels"] = np.load(result.with_suffix(".npy"), allow_pickle=True)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=50_000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--gamma", type=float, default=20.0)
    ap.add_argument("--dir", default="/tmp/scm_scale")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--mode", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--result", help=argparse.SUPPRESS)
    ap.add_argument("--max-train-cells", type=int, default=20_000, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    import scale

    Path(args.dir).mkdir(parents=True, exist_ok=True)
    path = scale.build(args.cells, Path(args.dir), ["mmm"])["mmm"]
    print(f"# {args.cells} real Kang 2018 cells resampled, γ = {args.gamma:g}, {args.workers} workers")
    print(f"# load average before: {os.getloadavg()}; cores: {os.cpu_count()}")
    rows = [
        ("single", "single", 20_000),
        ("dask", "dask", 20_000),
        ("single (all cells trained)", "single", 0),
        ("ddp (all cells trained)", "ddp", 0),
    ]
    res = {}
    for name, mode, mtc in rows:
        res[name] = run(mode, path, args, name.split()[0] + str(mtc), mtc)
    print(
        "| run | wall s | peak RSS GB | train s | embed s | aggregate s | epochs | same partition "
        "| same metacell | ARI |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    from sklearn.metrics import adjusted_rand_score

    ref = {20_000: res["single"]["labels"], 0: res["single (all cells trained)"]["labels"]}
    for name, _, mtc in rows:
        r = res[name]
        same = bool(np.array_equal(r["labels"], ref[mtc]))
        agree = float((r["labels"] == ref[mtc]).mean())
        ari = adjusted_rand_score(ref[mtc], r["labels"])
        print(
            f"| {name} | {r['wall_s']:.1f} | {r['peak_rss_gb']:.2f} | {r.get('seconds_train', 0):.1f} | "
            f"{r.get('seconds_embed', 0):.1f} | {r.get('seconds_aggregate', 0):.1f} | {r['epochs']} | "
            f"{'yes' if same else 'no'} | {100 * agree:.1f} % | {ari:.3f} |"
        )


if __name__ == "__main__":
    main()
