"""Plots of metacell sizes and quality metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..data import DataHandler
from ..tl.metrics import encode_partition, partition_sizes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

# column, title, direction
_PANELS = (
    ("size", "cells per metacell", None),
    ("purity", "purity", "higher is better"),
    ("compactness_seacells", "compactness (SEACells)", "lower is better"),
    ("separation_seacells", "separation (SEACells)", "higher is better"),
    ("compactness_pca", "compactness (PCA)", "lower is better"),
    ("separation_pca", "separation (PCA)", "higher is better"),
    ("inv", "INV", "lower is better"),
    ("compactness_metaq", "compactness (MetaQ)", "higher is better"),
    ("separation_metaq", "separation (MetaQ)", "higher is better"),
)


def _finish(fig: Figure, show: bool | None, return_fig: bool | None) -> Figure | None:
    import matplotlib.pyplot as plt
    import scanpy as sc

    if show is None:
        show = bool(sc.settings.autoshow) and not return_fig
    if show:
        plt.show()
        return fig if return_fig else None
    return fig


def metacell_sizes(
    data: Any,
    key: str = "metacell",
    *,
    bins: int | str = "auto",
    mod: str = "rna",
    ax: Axes | None = None,
    show: bool | None = None,
    return_fig: bool | None = None,
) -> Figure | None:
    """Histogram of metacell sizes with the graining ``gamma`` (cells / metacells) as a line.

    Parameters
    ----------
    data
        AnnData or MuData of cells with ``obs[key]`` (outliers, ``NaN``, left out), or a table of
        :func:`scmetacell.tl.metacell_metrics` (its ``size`` column).
    key
        ``obs`` column with the metacell ids.
    bins
        Histogram bins (as :func:`numpy.histogram_bin_edges`).
    mod
        Modality of a MuData.
    ax
        Axes to draw on; a new figure otherwise.
    show
        Show the figure (``None``: scanpy's ``autoshow`` unless ``return_fig``).
    return_fig
        Return the figure even when it is shown.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`, unless it was shown (and ``return_fig`` is not set).

    Examples
    --------
    >>> import numpy as np
    >>> import scmetacell as scm
    >>> adata = scm.datasets.pbmc3k()
    >>> adata.obs["metacell"] = np.arange(adata.n_obs) % 120
    >>> fig = scm.pl.metacell_sizes(adata, show=False)
    """
    import matplotlib.pyplot as plt

    if isinstance(data, pd.DataFrame):
        if "size" not in data.columns:
            raise KeyError("data: a table needs a 'size' column (from tl.metacell_metrics).")
        sizes = data["size"].to_numpy()
    else:
        h = DataHandler(data, mod)
        codes, ids = encode_partition(h.obs_column(key, arg="key"), arg="key")
        if len(ids) == 0:
            raise ValueError(f"key={key!r}: no cell has a metacell id.")
        sizes = partition_sizes(codes, len(ids))
    new = ax is None
    if new:
        fig, ax = plt.subplots(figsize=(5, 3.5))
    else:
        fig = ax.figure
    gamma = sizes.sum() / sizes.size
    ax.hist(sizes, bins=np.histogram_bin_edges(sizes, bins=bins), color="#7a9cc6", edgecolor="white")
    ax.axvline(gamma, color="#c0392b", linestyle="--", linewidth=1.5, label=f"γ = {gamma:.1f}")
    ax.set_xlabel("cells per metacell")
    ax.set_ylabel("metacells")
    ax.set_title(f"{sizes.size:,} metacells, {int(sizes.sum()):,} cells")
    ax.legend(frameon=False)
    if new:
        fig.tight_layout()
    return _finish(fig, show, return_fig)


def metacell_metrics(
    data: Any,
    key: str = "metacell_metrics",
    *,
    metrics: list[str] | None = None,
    ncols: int = 4,
    mod: str = "rna",
    show: bool | None = None,
    return_fig: bool | None = None,
) -> Figure | None:
    """Distributions over metacells of the metrics of :func:`scmetacell.tl.metacell_metrics`.

    One violin per metric (with its median marked and whether lower or higher is better); the
    metrics present in the table are drawn, in the order: size, purity, SEACells compactness and
    separation, PCA-space compactness and separation, INV, MetaQ's compactness and separation.

    Parameters
    ----------
    data
        The table returned by :func:`scmetacell.tl.metacell_metrics`, or an AnnData/MuData where it
        stored its results (``uns[key]['table']``).
    key
        ``uns`` key of the stored results.
    metrics
        Columns to draw (default: all known ones present).
    ncols
        Panels per row.
    mod
        Modality of a MuData.
    show
        Show the figure (``None``: scanpy's ``autoshow`` unless ``return_fig``).
    return_fig
        Return the figure even when it is shown.

    Returns
    -------
    The :class:`~matplotlib.figure.Figure`, unless it was shown (and ``return_fig`` is not set).

    Examples
    --------
    >>> import numpy as np
    >>> import pandas as pd
    >>> import scmetacell as scm
    >>> table = pd.DataFrame({"size": [10, 12, 15], "inv": [0.9, 1.1, 1.3]})
    >>> fig = scm.pl.metacell_metrics(table, show=False)
    """
    import matplotlib.pyplot as plt

    if isinstance(data, pd.DataFrame):
        table = data
    else:
        h = DataHandler(data, mod)
        stored = h.adata.uns.get(key)
        if not isinstance(stored, dict) or "table" not in stored:
            raise KeyError(f"key={key!r}: no metrics in uns; run scmetacell.tl.metacell_metrics first.")
        table = stored["table"]
    titles = {c: (t, d) for c, t, d in _PANELS}
    if metrics is None:
        metrics = [c for c, _, _ in _PANELS if c in table.columns and table[c].notna().any()]
    missing = [m for m in metrics if m not in table.columns]
    if missing:
        raise KeyError(f"metrics: {missing} not in the table; it has {list(table.columns)}.")
    if not metrics:
        raise ValueError("metrics: nothing to plot.")
    ncols = max(1, min(ncols, len(metrics)))
    nrows = int(np.ceil(len(metrics) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(2.6 * ncols, 3.0 * nrows), squeeze=False)
    for ax, col in zip(axes.ravel(), metrics, strict=False):
        vals = pd.to_numeric(table[col], errors="coerce").to_numpy(dtype=float)
        vals = vals[np.isfinite(vals)]
        title, direction = titles.get(col, (col, None))
        if vals.size:
            parts = ax.violinplot(vals, showmedians=True, showextrema=False)
            for body in parts["bodies"]:
                body.set_facecolor("#7a9cc6")
                body.set_alpha(0.7)
            jitter = np.random.default_rng(0).uniform(-0.08, 0.08, vals.size)
            ax.scatter(1 + jitter, vals, s=3, color="#2c3e50", alpha=0.4, linewidths=0)
            ax.set_xlabel(f"median {np.median(vals):.3g}", fontsize=8)
        ax.set_xticks([])
        ax.set_title(title if direction is None else f"{title}\n({direction})", fontsize=9)
        ax.tick_params(labelsize=8)
    for ax in axes.ravel()[len(metrics) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return _finish(fig, show, return_fig)
