"""Metacell quality over several seeds: scmetacell variants vs the best peer, row by row.

One seed's figures move by ±0.005–0.02 in mean purity (PBMC 3k, γ = 10: 0.917 at seed 0, 0.9075 over
seeds 0–2), as large as the differences between settings. This script runs ``scm.tl.metacell`` with
each variant's keywords and k-means on the shared 50 PCs (scikit-learn, ``n_init=1``) at every seed,
scores each partition with the peers table's own ``benchmarks/peers/score.py`` on the shared PCA, and
prints the means (± sd) with a win / tie / loss letter for each metric against the best peer of the row.
The best peer is the best of the seed-mean k-means of this run and the rows of ``--peers`` (default
``benchmarks/peer_reference.csv``: MetaCell-2 and SEACells from ``docs/benchmarks.md``; their own
k-means rows are replaced by this run's). The rules are those of docs/benchmarks.md: purity tie within
0.005; INV and SEACells compactness win only strictly below the best; SEACells separation win at
≥ the best, tie at ≥ 0.95 × the best.

Usage (about 1.5 min per variant on 2 cores for 3 datasets × 3 γ × 3 seeds)::

    PYTHONPATH=src python benchmarks/quality_seeds.py \
        --variants '{"defaults": {}, "dw2": {"density_weight": 2}}'
    PYTHONPATH=src python benchmarks/quality_seeds.py --datasets pbmc3k --gammas 10 30 --seeds 0 1 2 3 4
    PYTHONPATH=src python benchmarks/quality_seeds.py --subset 0.6 \
        --variants '{"30": {}, "15": {"n_neighbors": 15}}'

``--subset 0.6``: each seed runs on its own random 60 % of the cells (drawn with seed ``100 + seed``,
the same for every variant and for k-means), with the shared PCA recomputed on it: data the settings
were not chosen on. The peers' reference rows hold for the whole datasets only, so the best peer is then
this run's k-means alone.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.peers.cli import DATA, NAMES  # noqa: E402 - the peers table's datasets, by short name

FILES = {short: DATA / f"{stem}.h5ad" for stem, short in NAMES.items()}
KEYS = ["purity_mean", "inv_mean", "compactness_seacells_mean", "separation_seacells_mean"]
WEIGHTED = ["purity_weighted", "inv_weighted"]  # means over cells, printed beside k-means' (no letters)
SHORT = {"purity_mean": "purity", "inv_mean": "INV", "compactness_seacells_mean": "comp.",
         "separation_seacells_mean": "sep."}  # fmt: skip


def best_of(rows: pd.DataFrame) -> dict[str, tuple[float, str]]:
    """Best value and method per metric (higher purity / separation, lower INV / compactness)."""
    out = {}
    for k in KEYS:
        r = rows.dropna(subset=[k])
        i = r[k].idxmin() if k in ("inv_mean", "compactness_seacells_mean") else r[k].idxmax()
        out[k] = (float(r.loc[i, k]), str(r.loc[i, "method"]))
    return out


def letter(key: str, mine: float, best: float) -> str:
    """W / T / L of ``mine`` against ``best`` under the docs' rules."""
    if key == "purity_mean":
        return "W" if mine > best + 0.005 else ("T" if mine >= best - 0.005 else "L")
    if key == "separation_seacells_mean":
        return "W" if mine >= best else ("T" if mine >= 0.95 * best else "L")
    return "W" if mine < best else "L"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", default='{"defaults": {}}', help="JSON: name -> keywords of tl.metacell")
    ap.add_argument("--datasets", nargs="+", default=list(FILES), choices=list(FILES))
    ap.add_argument("--gammas", nargs="+", type=int, default=[10, 30, 75])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--peers", default=str(ROOT / "benchmarks" / "peer_reference.csv"))
    ap.add_argument("--csv", default=None, help="write every run's scores here")
    ap.add_argument("--subset", type=float, default=None, help="each seed: a random fraction of the cells")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")  # peers' and scanpy's warnings would bury the table

    import anndata as ad
    from benchmarks.peers.embedding import shared_pca
    from benchmarks.peers.score import score
    from sklearn.cluster import KMeans

    import scmetacell as scm

    variants = json.loads(args.variants)
    if args.subset is not None and not 0 < args.subset <= 1:
        ap.error(f"--subset {args.subset}: must be in (0, 1]")
    ref = pd.read_csv(args.peers)
    ref = ref[ref.method != "kmeans"]
    if args.subset is not None:  # the reference rows are of the whole datasets
        ref = ref.iloc[:0]
    runs, table = [], []
    totals = {v: {k: [] for k in KEYS} for v in variants}
    for ds in args.datasets:
        whole = ad.read_h5ad(FILES[ds])
        inputs = {}  # seed -> (cells, shared PCA): the whole dataset, or this seed's subset

        def cells_of(seed, g, whole=whole, inputs=inputs):
            """Return the cells of ``seed``, their shared PCA and the number of metacells at ``g``."""
            if args.subset is None:
                seed = None
            if seed not in inputs:
                a = whole
                if seed is not None:
                    m = max(2, round(args.subset * whole.n_obs))
                    rows = np.random.default_rng(100 + seed).choice(whole.n_obs, m, replace=False)
                    a = whole[np.sort(rows)].copy()
                inputs[seed] = (a, shared_pca(a))
            a, pca = inputs[seed]
            return a, pca, round(a.n_obs / g)

        for g in args.gammas:

            def scored(labels, name, seed, secs, ds=ds, g=g):
                a0, pca, n = cells_of(seed, g)
                s = score(a0, pca, pd.Series(labels, index=a0.obs_names), n_requested=n)
                row = {"dataset": ds, "gamma": g, "method": name, "seed": seed, "seconds": secs,
                       "size_min": int(np.bincount(labels).min()),
                       **{k: float(s[k]) for k in KEYS + WEIGHTED},
                       "rare_type_recall": s.get("rare_type_recall")}  # fmt: skip
                runs.append(row)
                return row

            km = []
            for seed in args.seeds:
                a0, pca, n = cells_of(seed, g)
                t = time.perf_counter()
                lab = KMeans(n, n_init=1, random_state=seed).fit_predict(pca)
                km.append(scored(lab, "kmeans", seed, time.perf_counter() - t))
            km_mean = {"method": "kmeans", **{k: float(np.mean([r[k] for r in km])) for k in KEYS + WEIGHTED}}
            peers = pd.concat(
                [ref[(ref.dataset == ds) & (ref.gamma == g)], pd.DataFrame([km_mean])], ignore_index=True
            )
            best = best_of(peers)
            for name, kw in variants.items():
                rs = []
                for seed in args.seeds:
                    a0, _, n = cells_of(seed, g)
                    a = a0.copy()
                    t = time.perf_counter()
                    scm.tl.metacell(a, n_metacell=n, random_seed=seed, progress=False, **kw)
                    lab = a.obs["metacell"].cat.codes.to_numpy()
                    rs.append(scored(lab, name, seed, time.perf_counter() - t))
                mean = {k: float(np.mean([r[k] for r in rs])) for k in KEYS + WEIGHTED}
                sd = float(np.std([r["purity_mean"] for r in rs]))
                res = {k: letter(k, mean[k], best[k][0]) for k in KEYS}
                for k in KEYS:
                    totals[name][k].append(res[k])
                table.append(
                    f"| {ds} | {g} | {name} | {min(r['size_min'] for r in rs)} | "
                    f"{mean['purity_mean']:.4f} ± {sd:.4f} "
                    f"**{res['purity_mean']}** | {mean['inv_mean']:.4f} **{res['inv_mean']}** | "
                    f"{mean['compactness_seacells_mean']:.4f} **{res['compactness_seacells_mean']}** | "
                    f"{mean['separation_seacells_mean']:.3f} **{res['separation_seacells_mean']}** | "
                    + " / ".join(f"{best[k][0]:.4g} {best[k][1]}" for k in KEYS)
                    + f" | {km_mean['purity_mean']:.4f} | {mean['purity_weighted']:.4f} / "
                    f"{mean['inv_weighted']:.4f} | {km_mean['purity_weighted']:.4f} / "
                    f"{km_mean['inv_weighted']:.4f} |"
                )
                print(table[-1], flush=True)
    if args.subset is None:
        print(f"\nseeds {args.seeds}; best peer = best of MC2 / SEACells ({Path(args.peers).name}) and "
              "this run's seed-mean k-means\n")  # fmt: skip
    else:
        print(f"\nseeds {args.seeds}, each on its own random {args.subset:g} of the cells; best peer = "
              "this run's seed-mean k-means\n")  # fmt: skip
    print("| dataset | γ | variant | min size | mean purity ± sd | INV ↓ | SEACells comp. ↓ "
          "| SEACells sep. ↑ | best peer: purity / INV / comp. / sep. "
          "| k-means purity (seed mean) | w. purity / w. INV | k-means w. purity / w. INV |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(table))
    print("\n| variant | " + " | ".join(SHORT[k] + " W / T / L" for k in KEYS) + " |")
    print("|---|" + "---|" * len(KEYS))
    for v, t in totals.items():
        cells = [f"{x.count('W')} / {x.count('T')} / {x.count('L')}" for x in t.values()]
        print(f"| {v} | " + " | ".join(cells) + " |")
    if args.csv:
        pd.DataFrame(runs).to_csv(args.csv, index=False)


if __name__ == "__main__":
    main()
