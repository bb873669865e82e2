"""Write the results: ``results.csv``, ``results.md`` (a markdown table) and PNG plots."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import pandas as pd

COLUMNS = [
    ("dataset", "dataset", None),
    ("n_cells", "cells", "{:.0f}"),
    ("gamma", "γ", "{:.0f}"),
    ("method", "method", None),
    ("status", "status", None),
    ("wall_s", "wall s", "{:.1f}"),
    ("cpu_s", "CPU s", "{:.1f}"),
    ("peak_rss_mb", "peak RSS MB", "{:.0f}"),
    ("delivered", "delivered", None),
    ("n_outliers", "outliers", "{:.0f}"),
    ("sizes", "size min/med/max", None),
    ("purity_mean", "purity", "{:.3f}"),
    ("purity_weighted", "w. purity", "{:.3f}"),
    ("balanced_purity", "bal. purity", "{:.3f}"),
    ("rare", "rare recall", None),
    ("compactness_seacells_mean", "SEACells comp. ↓", "{:.4f}"),
    ("separation_seacells_mean", "SEACells sep. ↑", "{:.4f}"),
    ("compactness_pca_mean", "PCA comp. ↓", "{:.2f}"),
    ("separation_pca_mean", "PCA sep. ↑", "{:.2f}"),
    ("inv_mean", "INV ↓", "{:.2f}"),
    ("inv_weighted", "w. INV ↓", "{:.2f}"),
    ("notes", "notes", None),
]


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _fmt(value, spec: str | None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if spec is None:
        return str(value).replace("|", "/").replace("\n", " ")
    try:
        return spec.format(float(value))
    except (TypeError, ValueError):
        return str(value)


def _derived(row: pd.Series) -> pd.Series:
    row = row.copy()
    nm, nr = row.get("n_metacells"), row.get("n_requested")
    row["delivered"] = "" if pd.isna(nm) else f"{int(nm)}/{int(nr)}" if not pd.isna(nr) else f"{int(nm)}"
    smin, smed, smax = row.get("size_min"), row.get("size_median"), row.get("size_max")
    row["sizes"] = "" if pd.isna(smin) else f"{smin:.0f}/{smed:.0f}/{smax:.0f}"
    rec, n_rare = row.get("rare_type_recall"), row.get("n_rare_types_counted")
    if rec is None or pd.isna(rec):
        row["rare"] = ""
    elif n_rare is None or pd.isna(n_rare):
        row["rare"] = f"{rec:.2f}"
    else:  # e.g. "0.89 (8/9)": labels kept as the majority of a metacell / labels counted
        row["rare"] = f"{rec:.2f} ({round(rec * n_rare):.0f}/{n_rare:.0f})"
    return row


def markdown_table(frame: pd.DataFrame) -> str:
    """The results as a GitHub markdown table (one row per dataset x γ x method)."""
    derived = ("delivered", "sizes", "rare")
    cols = [c for c in COLUMNS if c[0] in frame.columns or c[0] in derived]
    lines = ["| " + " | ".join(h for _, h, _ in cols) + " |", "|" + "---|" * len(cols)]
    for _, row in frame.iterrows():
        row = _derived(row)
        lines.append("| " + " | ".join(_fmt(row.get(c), spec) for c, _, spec in cols) + " |")
    return "\n".join(lines) + "\n"


def write_tables(frame: pd.DataFrame, out: Path, stem: str = "results", header: str = "") -> None:
    """Write ``{stem}.csv`` and ``{stem}.md`` atomically."""
    _atomic_write(out / f"{stem}.csv", lambda p: frame.to_csv(p, index=False))
    text = (header + "\n\n" if header else "") + markdown_table(frame)
    _atomic_write(out / f"{stem}.md", lambda p: Path(p).write_text(text))


COLORS = {
    "scmetacell": "tab:blue",
    "scmetacell-trained": "tab:purple",
    "scmetacell-e0": "tab:cyan",
    "mc2": "tab:orange",
    "seacells": "tab:brown",
    "metaq": "tab:green",
    "kmeans": "tab:red",
    "random": "tab:purple",
}
LOG_AXES = {"wall_s", "cpu_s", "compactness_seacells_mean"}


def rewrite_table(out: Path, stem: str) -> None:
    """Re-render ``{stem}.md`` from ``{stem}.csv``, keeping the header written by the run."""
    md = out / f"{stem}.md"
    header = ""
    if md.exists():
        lines = md.read_text().splitlines()
        header = "\n".join(lines[: next((i for i, ln in enumerate(lines) if ln.startswith("| ")), 0)]).strip()
    write_tables(pd.read_csv(out / f"{stem}.csv"), out, stem, header)


PLOT_METRICS = [
    ("purity_mean", "purity (mean over metacells) ↑"),
    ("purity_weighted", "purity (mean over cells) ↑"),
    ("balanced_purity", "balanced purity ↑"),
    ("rare_type_recall", "rare-type recall ↑"),
    ("compactness_seacells_mean", "SEACells compactness ↓"),
    ("separation_seacells_mean", "SEACells separation ↑"),
    ("inv_mean", "INV ↓"),
    ("cpu_s", "CPU time (s) ↓"),
]


def plot_metrics(frame: pd.DataFrame, out: Path) -> list[Path]:
    """One PNG per dataset: each metric against γ, one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    ok = frame[frame["status"].astype(str).str.startswith("ok")]
    for dataset, sub in ok.groupby("dataset", sort=False):
        fig, axes = plt.subplots(2, 4, figsize=(17, 7), constrained_layout=True)
        for ax, (col, title) in zip(axes.ravel(), PLOT_METRICS, strict=True):
            if col not in sub.columns:  # a results.csv from before the column existed
                ax.set_title(f"{title} (not in results)")
                continue
            for method, m in sub.groupby("method", sort=False):
                m = m.sort_values("gamma")
                ax.plot(m["gamma"], m[col], marker="o", label=method, color=COLORS.get(method))
            ax.set_title(title)
            ax.set_xlabel("γ (cells per metacell)")
            if col in LOG_AXES:
                ax.set_yscale("log")
        axes[0, 0].legend(fontsize=8)
        fig.suptitle(f"{dataset}: metrics vs γ (same embedding, scmetacell's metric code)")
        path = out / f"metrics_vs_gamma_{dataset}.png"
        _atomic_write(path, lambda p, f=fig: f.savefig(p, dpi=110, format="png"))
        plt.close(fig)
        paths.append(path)
    return paths


def plot_scaling(frame: pd.DataFrame, out: Path, name: str, title: str) -> Path | None:
    """Wall time and peak RSS against number of cells (log-log), one line per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = frame[frame["status"].astype(str).str.startswith("ok")]
    if ok.empty:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for method, m in ok.groupby("method", sort=False):
        m = m.groupby("n_cells", as_index=False)[["wall_s", "peak_rss_mb"]].median().sort_values("n_cells")
        axes[0].plot(m["n_cells"], m["wall_s"], marker="o", label=method, color=COLORS.get(method))
        axes[1].plot(m["n_cells"], m["peak_rss_mb"], marker="o", label=method, color=COLORS.get(method))
    for ax, lab in zip(axes, ["wall time (s)", "peak RSS (MB)"], strict=True):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("cells")
        ax.set_ylabel(lab)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    path = out / f"{name}.png"
    _atomic_write(path, lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return path
