"""QC distributions with their thresholds (the seed's ``plot_qc``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data import DataHandler
from ._utils import finish

#: colours of ``obs["qc_reason"]``: passing cells grey, each failure its own colour
REASON_COLORS = {
    "pass": "#b3b3b3",
    "low_genes": "#1f77b4",
    "counts_outlier": "#ff7f0e",
    "genes_outlier": "#9467bd",
    "high_mt": "#d62728",
    "high_ribo": "#8c564b",
    "doublet": "#e377c2",
}
_PANELS = (
    ("total_counts", "Total counts", "counts per cell"),
    ("n_genes_by_counts", "Genes detected", "genes per cell"),
    ("pct_counts_mt", "Mitochondrial", "% of counts"),
    ("pct_counts_ribo", "Ribosomal", "% of counts"),
)


def _point_size(n: int) -> float:
    return float(np.clip(6000.0 / max(n, 1), 0.8, 14.0))


def _layout(n_violins: int, n_groups: int, figsize, dpi):
    """Lay out a row of violins and the scatter; with groups, violins in two rows and the scatter beside."""
    import matplotlib.pyplot as plt

    if n_groups == 0 or n_violins <= 2:
        if figsize is None:
            figsize = (2.6 * n_violins + 3.6, 3.2)
        fig = plt.figure(figsize=figsize, dpi=dpi, layout="constrained")
        axes = list(fig.subplots(1, n_violins + 1, width_ratios=[1] * n_violins + [1.35]))
        return fig, axes
    per = max(2.6, 0.32 * n_groups + 0.9)
    ncol = (n_violins + 1) // 2
    if figsize is None:
        figsize = (per * ncol + 3.8, 6.4)
    fig = plt.figure(figsize=figsize, dpi=dpi, layout="constrained")
    mosaic = [[f"v{2 * 0 + c}" if c < ncol else "s" for c in range(ncol + 1)], []]
    mosaic[0] = [f"v{c}" for c in range(ncol)] + ["s"]
    mosaic[1] = [f"v{ncol + c}" if ncol + c < n_violins else "." for c in range(ncol)] + ["s"]
    named = fig.subplot_mosaic(mosaic, width_ratios=[per] * ncol + [3.8])
    return fig, [named[f"v{i}"] for i in range(n_violins)] + [named["s"]]


def _reasons(obs: pd.DataFrame) -> pd.Series:
    if "qc_reason" in obs.columns:
        return obs["qc_reason"].astype(str)
    if "qc" in obs.columns:
        return obs["qc"].map({True: "pass", False: "fail"}).astype(str)
    return pd.Series("pass", index=obs.index)


def _hline(ax, y: float, *, text: str, orientation: str = "h") -> None:
    style = {"color": "#c00000", "linestyle": "--", "linewidth": 1.0, "zorder": 4}
    if orientation == "h":
        ax.axhline(y, **style)
        ax.annotate(
            text, (1.0, y), xycoords=("axes fraction", "data"), xytext=(-2, 2), textcoords="offset points",
            ha="right", va="bottom", fontsize=7, color="#c00000", zorder=5,
        )  # fmt: skip
    else:
        ax.axvline(y, **style)
        ax.annotate(
            text, (y, 1.0), xycoords=("data", "axes fraction"), xytext=(2, -2), textcoords="offset points",
            ha="left", va="top", fontsize=7, color="#c00000", rotation=90, zorder=5,
        )  # fmt: skip


def _log_ticks(lo: float, hi: float) -> np.ndarray:
    """Ticks at 1, 2, 5 x 10^k (only 10^k when that gives too many) between log10 values lo and hi."""
    cands = np.array([m * 10.0**k for k in range(0, 10) for m in (1, 2, 5)])
    inside = cands[(np.log10(cands) >= lo - 0.05) & (np.log10(cands) <= hi + 0.05)]
    if inside.size > 6:
        inside = inside[np.isclose(np.log10(inside) % 1, 0)]
    return np.log10(inside)


def _bounds(thresholds, key: str) -> tuple[float, float]:
    """``(low, high)`` of a metric from ``uns["qc"]["thresholds"]``; NaN where there is none."""
    vals = [float(v) for v in np.ravel(thresholds.get(key, []))]
    vals += [np.nan] * (2 - len(vals))
    return vals[0], vals[1]


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


def qc(
    data: Any,
    *,
    mod: str = "rna",
    groupby: str | None = None,
    log: bool = False,
    figsize: tuple[float, float] | None = None,
    dpi: int = 100,
    show: bool | None = None,
    return_fig: bool | None = None,
    save: str | None = None,
):
    """Plot QC distributions with the thresholds of :func:`scmetacell.tl.qc`.

    One violin (per group) each of total counts, detected genes, mitochondrial and ribosomal
    percentages, the cells drawn as jittered points coloured by ``obs["qc_reason"]``, and a
    counts-vs-genes scatter. Thresholds stored in ``uns["qc"]["thresholds"]`` are drawn as dashed
    red lines with their values. Works on the metrics of :func:`scanpy.pp.calculate_qc_metrics`
    as well (then without thresholds).

    Parameters
    ----------
    data
        An :class:`~anndata.AnnData` or a :class:`~mudata.MuData` annotated by :func:`scmetacell.tl.qc`.
    mod
        Modality of a MuData; ignored for an AnnData.
    groupby
        An ``obs`` column (e.g. ``"sample"``): one violin per group.
    log
        Logarithmic axes for counts and genes (useful for metacells, whose counts span decades).
    figsize
        Size of the whole figure in inches (default: 2.6 per panel × 3).
    dpi
        Resolution of the figure.
    show
        Call ``plt.show()``.
    return_fig
        Return the Figure (``None``: unless ``show=True``).
    save
        Path to save the figure to.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (see ``return_fig``).

    Examples
    --------
    >>> import scmetacell as scm
    >>> adata = scm.datasets.pbmc3k()
    >>> scm.tl.qc(adata, mt_seqid=None, min_genes=200, mt_percent=0.05)
    >>> fig = scm.pl.qc(adata)
    >>> len(fig.axes)
    5
    """
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    handler = DataHandler(data, mod=mod)
    obs = handler.adata.obs
    for key in ("total_counts", "n_genes_by_counts"):
        if key not in obs.columns:
            raise KeyError(
                f"obs[{key!r}] not found{handler._where()}: run scmetacell.tl.qc "
                "(or sc.pp.calculate_qc_metrics) first."
            )
    panels = [p for p in _PANELS if p[0] in obs.columns]
    info = handler.adata.uns.get("qc", {})
    thresholds = info.get("thresholds", {}) if isinstance(info, dict) else {}
    if groupby is not None:
        groups = handler.obs_column(groupby, arg="groupby").astype("category")
        labels = [str(c) for c in groups.cat.categories]
        codes = groups.cat.codes.to_numpy()
    else:
        labels, codes = [""], np.zeros(len(obs), dtype=int)

    reasons = _reasons(obs)
    order = [r for r in REASON_COLORS if r in set(reasons)] + sorted(set(reasons) - set(REASON_COLORS))
    colors = reasons.map(lambda r: REASON_COLORS.get(r, "#404040")).to_numpy()
    # passing cells first so that failing ones are drawn on top
    draw = np.argsort((reasons != "pass").to_numpy(), kind="stable")
    psize = _point_size(len(obs))
    fig, axes = _layout(len(panels), len(labels) if groupby is not None else 0, figsize, dpi)
    rng = np.random.default_rng(0)
    jitter = rng.uniform(-0.28, 0.28, size=len(obs))

    for ax, (key, title, ylabel) in zip(axes[:-1], panels, strict=True):
        is_log = log and key in ("total_counts", "n_genes_by_counts")
        y = obs[key].to_numpy(dtype=np.float64)
        yplot = np.log10(np.maximum(y, 1)) if is_log else y
        finite = np.isfinite(yplot)
        data_g = [yplot[(codes == g) & finite] for g in range(len(labels))]
        pos = [g for g, d in enumerate(data_g) if d.size > 1 and np.ptp(d) > 0]
        if pos:
            parts = ax.violinplot([data_g[g] for g in pos], positions=pos, widths=0.8, showextrema=False)
            for body in parts["bodies"]:
                body.set_facecolor("#cfd8e3")
                body.set_edgecolor("#5b6b7f")
                body.set_linewidth(0.8)
                body.set_alpha(1.0)
        ax.scatter(
            codes[draw] + jitter[draw], yplot[draw], c=colors[draw], s=psize, linewidths=0,
            alpha=0.9, rasterized=True, zorder=3,
        )  # fmt: skip
        for g, d in enumerate(data_g):
            if d.size:
                ax.hlines(np.median(d), g - 0.3, g + 0.3, color="k", linewidth=1.2, zorder=4)
        lo, hi = _bounds(thresholds, key)
        unit = " %" if key.startswith("pct_") else ""
        for val, word in ((lo, "min"), (hi, "max")):
            if np.isfinite(val) and not (word == "min" and val <= 0):
                _hline(ax, np.log10(max(val, 1)) if is_log else val, text=f"{word} {_fmt(val)}{unit}")
        if is_log and finite.any():
            ax.yaxis.set_major_locator(FixedLocator(_log_ticks(np.nanmin(yplot), np.nanmax(yplot))))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{10**v:,.0f}"))
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel + (" (log scale)" if is_log else ""), fontsize=8)
        if groupby is None:
            ax.set_xticks([])
        else:
            ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right", rotation_mode="anchor")
        ax.set_xlim(-0.6, len(labels) - 0.4)
        ax.tick_params(labelsize=7)
        ax.spines[["top", "right"]].set_visible(False)

    ax = axes[-1]
    x = obs["total_counts"].to_numpy(dtype=np.float64)
    y = obs["n_genes_by_counts"].to_numpy(dtype=np.float64)
    ax.scatter(x[draw], y[draw], c=colors[draw], s=psize * 1.5, linewidths=0, alpha=0.8, rasterized=True)
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
            axis.set_minor_formatter(NullFormatter())
    lo, hi = _bounds(thresholds, "total_counts")
    for val, word in ((lo, "min"), (hi, "max")):
        if np.isfinite(val) and val > 0:
            _hline(ax, val, text=f"{word} {_fmt(val)}", orientation="v")
    gmin = _bounds(thresholds, "n_genes_by_counts")[0]
    if np.isfinite(gmin) and gmin > 0:
        _hline(ax, gmin, text=f"min {_fmt(gmin)}")
    ax.set_xlabel("total counts", fontsize=8)
    ax.set_ylabel("genes detected", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.spines[["top", "right"]].set_visible(False)
    n_pass = int((reasons == "pass").sum())
    ax.set_title("Counts vs genes", fontsize=10)
    counts = reasons.value_counts()
    handles = [
        Line2D([], [], marker="o", linestyle="", markersize=5, color=REASON_COLORS.get(r, "#404040"),
               label=f"{r.replace('_', ' ')} ({counts.get(r, 0):,})")
        for r in order
    ]  # fmt: skip
    ax.legend(
        handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False, fontsize=7,
        title=f"{n_pass:,} of {len(obs):,} pass", title_fontsize=7, alignment="left",
    )  # fmt: skip
    return finish(fig, show=show, return_fig=return_fig, save=save)
