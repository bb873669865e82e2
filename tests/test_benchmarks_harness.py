"""The benchmark harness's own pieces (no peer is installed or run here)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from peers import report  # noqa: E402
from peers.baselines import kmeans_grouping, random_grouping  # noqa: E402
from peers.embedding import poisson_resample  # noqa: E402
from peers.measure import run_measured  # noqa: E402


def test_random_grouping_equal_sizes_and_seeded():
    labels = random_grouping(2700, 36, seed=3)
    sizes = np.bincount(labels)
    assert len(sizes) == 36 and sizes.sum() == 2700
    assert sizes.max() - sizes.min() <= 1  # equal sizes: 2700 / 36 = 75
    assert np.array_equal(labels, random_grouping(2700, 36, seed=3))
    assert not np.array_equal(labels, random_grouping(2700, 36, seed=4))
    with pytest.raises(ValueError, match="n_groups"):
        random_grouping(10, 11)


def test_kmeans_grouping_recovers_separated_blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=50, size=(5, 10))
    truth = np.repeat(np.arange(5), 40)
    x = centres[truth] + rng.normal(size=(200, 10))
    labels = kmeans_grouping(x, 5, seed=0)
    # the same partition up to renaming: each true blob maps to one cluster and back
    table = pd.crosstab(truth, labels)
    assert (table.gt(0).sum(axis=1) == 1).all() and (table.gt(0).sum(axis=0) == 1).all()
    assert np.array_equal(labels, kmeans_grouping(x, 5, seed=0))


def test_kmeans_on_real_pcs(pbmc3k):
    from peers.embedding import shared_pca

    pca = shared_pca(pbmc3k[:600].copy(), n_comps=20)
    assert pca.shape == (600, 20)
    labels = kmeans_grouping(pca, 20, seed=0)
    assert len(np.unique(labels)) == 20


def test_poisson_resample_keeps_labels_and_counts_scale(pbmc3k):
    small = pbmc3k[:300].copy()
    big = poisson_resample(small, 1000, seed=1)
    assert big.shape == (1000, small.n_vars)
    src = big.obs["source_cell"].to_numpy()
    assert big.obs["cell_type"].astype(str).tolist() == small.obs.loc[src, "cell_type"].astype(str).tolist()
    # Poisson keeps the expected library size: totals of copies track their source cells
    ratio = np.asarray(big.X.sum(axis=1)).ravel().sum() / np.asarray(small[src].X.sum(axis=1)).ravel().sum()
    assert abs(ratio - 1) < 0.01
    assert big.X.dtype == np.int32 and (big.X.data > 0).all()


def test_write_tables_markdown_and_csv(tmp_path):
    frame = pd.DataFrame(
        [
            {
                "dataset": "d",
                "gamma": 30.0,
                "method": "random",
                "status": "ok",
                "wall_s": 1.234,
                "n_metacells": 90,
                "n_requested": 90,
                "size_min": 30,
                "size_median": 30.0,
                "size_max": 30,
                "purity_mean": 0.51234,
                "notes": "a|b",
            },
            {"dataset": "d", "gamma": 30.0, "method": "seacells", "status": "timeout (10 s)"},
        ]
    )
    report.write_tables(frame, tmp_path, "results", header="# title")
    back = pd.read_csv(tmp_path / "results.csv")
    assert back["method"].tolist() == ["random", "seacells"]
    md = (tmp_path / "results.md").read_text().splitlines()
    assert md[0] == "# title"
    rows = [ln for ln in md if ln.startswith("| d ")]
    assert len(rows) == 2
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    header = [c.strip() for c in md[2].strip("|").split("|")]
    assert len(cells) == len(header)
    got = dict(zip(header, cells, strict=True))
    assert got["delivered"] == "90/90" and got["size min/med/max"] == "30/30/30"
    assert got["purity"] == "0.512" and got["notes"] == "a/b"  # a pipe must not break the table
    assert "timeout (10 s)" in rows[1]
    assert not list(tmp_path.glob("*.tmp"))


def test_run_measured_timeout_and_failure(tmp_path):
    ok = run_measured(
        [sys.executable, "-c", "x = bytearray(50 * 2**20)"], timeout_s=60, log_path=tmp_path / "a"
    )
    assert ok.status == "ok" and ok.peak_rss_mb > 50
    # the child's peak is its own, not the (larger) parent's at fork time
    big = bytearray(300 * 2**20)  # noqa: F841 - makes this process large
    tiny = run_measured([sys.executable, "-c", "pass"], timeout_s=60, log_path=tmp_path / "t")
    assert tiny.peak_rss_mb < 100
    slow = run_measured(
        [sys.executable, "-c", "import time; time.sleep(30)"], timeout_s=1, log_path=tmp_path / "b"
    )
    assert slow.status.startswith("timeout") and slow.wall_s < 10
    bad = run_measured(
        [sys.executable, "-c", "raise SystemExit('boom')"], timeout_s=60, log_path=tmp_path / "c"
    )
    assert bad.status == "failed: boom"


@pytest.mark.parametrize("cmd", [["benchmarks/run_peers.py"], ["-m", "benchmarks.peers"]])
def test_peers_entry_points_reach_the_package(cmd):
    """No ``benchmarks/peers.py`` shadows the package; the script and ``-m`` run its command line."""
    import subprocess

    assert not (BENCH / "peers.py").exists()
    assert (BENCH / "peers" / "__init__.py").exists()
    out = subprocess.run(
        [sys.executable, *cmd, "--help"], cwd=BENCH.parent, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert "usage: python benchmarks/run_peers.py" in out.stdout


def test_new_columns_weighted_purity_and_rare_recall_in_the_table(tmp_path):
    frame = pd.DataFrame(
        [
            {
                "dataset": "d",
                "gamma": 10.0,
                "method": "scmetacell-e0",
                "status": "ok",
                "purity_mean": 0.9,
                "purity_weighted": 0.8766,
                "balanced_purity": 0.7,
                "rare_type_recall": 8 / 9,
                "n_rare_types_counted": 9,
            },
            {"dataset": "d", "gamma": 10.0, "method": "seacells", "status": "ok", "purity_mean": 0.8},
        ]
    )
    md = report.markdown_table(frame).splitlines()
    header = [c.strip() for c in md[0].strip("|").split("|")]
    assert header.index("purity") < header.index("w. purity") < header.index("bal. purity")
    assert header.index("bal. purity") < header.index("rare recall")
    rows = [dict(zip(header, [c.strip() for c in ln.strip("|").split("|")], strict=True)) for ln in md[2:]]
    assert rows[0]["w. purity"] == "0.877" and rows[0]["rare recall"] == "0.89 (8/9)"
    assert rows[0]["method"] == "scmetacell-e0"
    assert rows[1]["w. purity"] == "" and rows[1]["rare recall"] == ""  # an older row: blank, not NaN
    # the plots draw the new metrics, and a results.csv without them does not crash plotting
    assert {"purity_weighted", "rare_type_recall"} <= {c for c, _ in report.PLOT_METRICS}
    assert report.plot_metrics(frame.drop(columns=["purity_weighted"]), tmp_path)


def test_score_reports_weighted_purity_and_rare_type_recall():
    import anndata as ad
    import scipy.sparse as sp
    from peers.score import SUMMARY_KEYS, score

    assert {"purity_weighted", "rare_type_recall", "n_rare_types_counted"} <= set(SUMMARY_KEYS)
    rng = np.random.default_rng(0)
    # 3 types: 120 "a", 60 "b", 12 "c" (rare); one-cell metacells of "a" inflate the per-metacell mean
    labels = np.array(["a"] * 120 + ["b"] * 60 + ["c"] * 12)
    centres = rng.normal(scale=1.5, size=(3, 10))  # overlapping: one connected kNN graph
    pca = centres[pd.factorize(labels)[0]] + rng.normal(size=(len(labels), 10))
    groups = np.concatenate([np.arange(20), np.repeat(np.arange(20, 30), 10), np.repeat([30, 31, 32], 24)])
    groups[180:] = 31  # "c" is swallowed by a "b"-majority metacell: not recalled
    names = [f"c{i}" for i in range(len(labels))]
    counts = ad.AnnData(
        sp.csr_matrix(rng.poisson(1.0, size=(len(labels), 30)).astype(np.float32)),
        obs=pd.DataFrame({"cell_type": labels}, index=names),
    )
    out = score(counts, pca, pd.Series(groups, index=names), n_requested=33)
    assert out["n_rare_types_counted"] == 3
    assert out["rare_type_recall"] == pytest.approx(2 / 3)
    assert out["purity_weighted"] <= out["purity_mean"]


def test_trained_and_e0_variants_are_methods_run_by_the_baseline_runner(tmp_path):
    import argparse

    from peers import cli

    assert cli.METHODS[:3] == ["scmetacell", "scmetacell-trained", "scmetacell-e0"]
    assert "scmetacell-e0" not in cli._parser().parse_args([]).methods  # the defaults are not run twice
    assert "scmetacell-trained" in cli._parser().parse_args([]).methods
    args = cli._parser().parse_args(["--methods", "scmetacell", "scmetacell-e0", "kmeans"])
    assert args.methods == ["scmetacell", "scmetacell-e0", "kmeans"]
    ns = argparse.Namespace(seed=0)
    for method in ("scmetacell-e0", "scmetacell-trained"):
        cmd, env = cli._command(method, tmp_path / "in.h5ad", 5, 10.0, tmp_path / "o", ns)
        assert cmd[1].endswith("run_baseline.py") and cmd[cmd.index("--method") + 1] == method
        assert env["PYTHONPATH"]  # the same scmetacell as the harness's
    src = (BENCH / "peers" / "run_baseline.py").read_text()
    assert '"scmetacell-e0": {"train_epoch": 0}' in src and '"scmetacell-trained": {"train_epoch": 30}' in src
    rank = cli._ordered(
        [{"dataset": "d", "gamma": 10, "method": m} for m in ["kmeans", "scmetacell-e0", "scmetacell"]]
    )
    assert rank["method"].tolist() == ["scmetacell", "scmetacell-e0", "kmeans"]
