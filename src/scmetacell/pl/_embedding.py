"""Several features on one embedding, one panel each (the seed's ``plot_multiple_embedding``)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from .. import _logging as logg
from ..data import DataHandler
from ._utils import (
    FALSE_COLOR,
    NA_COLOR,
    TRUE_COLOR,
    Feature,
    basis_key,
    basis_label,
    category_colors,
    finish,
    get_features,
)

CELL_COLOR = "#dcdcdc"


def _metacell_index(assign: pd.Series, metacell_names: pd.Index, *, arg: str) -> np.ndarray:
    """Position of each cell's metacell in ``metacell_names`` (-1: none)."""
    vals = assign.to_numpy()
    notna = pd.notna(vals)
    as_str = pd.Index(np.where(notna, vals.astype(str), ""))
    idx = metacell_names.astype(str).get_indexer(as_str)
    idx[~notna] = -1
    matched = (idx >= 0).sum()
    if matched == 0 and notna.any():
        num = pd.to_numeric(pd.Series(vals), errors="coerce").to_numpy()
        ok = np.isfinite(num) & (num >= 0) & (num < len(metacell_names)) & (num == np.round(num))
        if ok.any():
            idx = np.where(ok, np.nan_to_num(num), -1).astype(np.int64)
            matched = int(ok.sum())
    if matched == 0:
        raise ValueError(
            f"{arg}: no cell's value names a metacell of data (expected obs_names of the metacell object, "
            f"e.g. {list(metacell_names[:3])}, or their positions)."
        )
    return idx.astype(np.int64)


def _centroids(cell_xy: np.ndarray, idx: np.ndarray, n: int) -> np.ndarray:
    ok = idx >= 0
    cnt = np.bincount(idx[ok], minlength=n).astype(np.float64)
    out = np.full((n, 2), np.nan)
    for d in range(2):
        s = np.bincount(idx[ok], weights=cell_xy[ok, d], minlength=n)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[:, d] = s / cnt
    return out


def _density_contours(ax, xy: np.ndarray, *, bins: int = 120, sigma: float = 2.5) -> None:
    from scipy.ndimage import gaussian_filter

    xy = xy[np.isfinite(xy).all(axis=1)]
    if xy.shape[0] < 10:
        return
    (x0, y0), (x1, y1) = xy.min(axis=0), xy.max(axis=0)
    padx, pady = 0.05 * (x1 - x0 or 1), 0.05 * (y1 - y0 or 1)
    ex = np.linspace(x0 - padx, x1 + padx, bins + 1)
    ey = np.linspace(y0 - pady, y1 + pady, bins + 1)
    hist, _, _ = np.histogram2d(xy[:, 0], xy[:, 1], bins=[ex, ey])
    dens = gaussian_filter(hist, sigma=sigma)
    ix = np.clip(np.searchsorted(ex, xy[:, 0]) - 1, 0, bins - 1)
    iy = np.clip(np.searchsorted(ey, xy[:, 1]) - 1, 0, bins - 1)
    at_points = dens[ix, iy]
    # levels enclosing ~90 %, 70 %, 50 %, 30 % and 10 % of the points
    levels = np.unique(np.quantile(at_points, [0.1, 0.3, 0.5, 0.7, 0.9]))
    levels = levels[levels > 0]
    if levels.size == 0:
        return
    xc, yc = (ex[:-1] + ex[1:]) / 2, (ey[:-1] + ey[1:]) / 2
    ax.contour(xc, yc, dens.T, levels=levels, colors="#303030", linewidths=0.5, alpha=0.55, zorder=3)


def _label_centroids(ax, xy, cats: pd.Categorical, style: str) -> None:
    import matplotlib.patheffects as pe

    codes = cats.codes
    for k, name in enumerate(cats.categories):
        sel = (codes == k) & np.isfinite(xy).all(axis=1)
        if not sel.any():
            continue
        cx, cy = np.median(xy[sel, 0]), np.median(xy[sel, 1])
        text = str(k) if style == "index" else str(name)
        ax.text(
            cx, cy, text, ha="center", va="center", fontsize=8 if style == "text" else 9, weight="bold",
            color="#1a1a1a", zorder=6, path_effects=[pe.withStroke(linewidth=2.5, foreground="white")],
        )  # fmt: skip


def _default_size(n: int, panel_area: float) -> float:
    # a third of scanpy's 120000 / n for a 4 x 4 inch panel, scaled to the panel's area, kept readable
    return float(np.clip(40000.0 / max(n, 1) * panel_area / 16.0, 0.5, 40.0))


def embedding_multi(
    data: Any,
    *,
    features: str | Sequence[str],
    basis: str = "umap",
    mod: str = "rna",
    ncols: int = 4,
    annotate_style: Literal["index", "text", "none"] = "index",
    legend: bool = True,
    figsize: tuple[float, float] | None = None,
    dpi: int = 100,
    ptsize: float | None = None,
    contour_plot: bool = False,
    layer: str | None = None,
    gene_symbols: str | None = None,
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
    size_key: str | None = None,
    cells: Any = None,
    cells_mod: str = "rna",
    metacell_key: str = "metacell",
    sort_order: bool = True,
    show: bool | None = None,
    return_fig: bool | None = None,
    save: str | None = None,
    ax: Any = None,
):
    """Plot several features on an embedding, one panel per feature.

    A feature is an ``obs`` column (of the AnnData or modality, then of the MuData), a gene in
    ``var_names`` or a symbol in ``var[gene_symbols]``. Categories are coloured from
    ``uns[f"{key}_colors"]`` when present (else scanpy's palette) and can be labelled at their
    centroids; booleans are red (True) on grey; numbers use ``cmap`` with a colour bar.

    For metacells, ``size_key="n_cells"`` makes each point's area follow the metacell's size,
    and ``cells=`` draws the single cells in grey underneath with each metacell at the centroid of
    its cells in the cells' embedding (so the metacells need no embedding of their own).

    Parameters
    ----------
    data
        An :class:`~anndata.AnnData` or a :class:`~mudata.MuData`.
    features
        Feature names (one panel each).
    basis
        Embedding in ``obsm``: ``"umap"`` or ``"X_umap"`` alike.
    mod
        Modality of a MuData; ignored for an AnnData.
    ncols
        Panels per row.
    annotate_style
        Category labels at the category medians: ``"index"`` (numbers, explained in the legend),
        ``"text"`` (names) or ``"none"``.
    legend
        Show the legend of categorical features.
    figsize
        Size of the whole figure in inches (default: about 3.3 × 3 per panel).
    dpi
        Resolution of the figure.
    ptsize
        Marker area in points² (``None``: from the number of points and the panel size, as
        scanpy's ``120000 / n``). With ``size_key`` it is the area of a median-sized point.
    contour_plot
        Overlay density contours (smoothed 2-D histogram of the points, or of the cells when
        ``cells`` is given) enclosing about 90, 70, 50, 30 and 10 % of them.
    layer
        Matrix for gene values (``None``: ``X``).
    gene_symbols
        ``var`` column with gene symbols to look features up in.
    cmap
        Colormap of numeric features.
    vmin, vmax
        Colour limits of numeric features (``None``: the data's range).
    size_key
        ``obs`` column (e.g. ``"n_cells"``) the marker area is proportional to.
    cells
        Single-cell :class:`~anndata.AnnData` (or MuData, see ``cells_mod``) with the embedding
        ``basis`` and ``obs[metacell_key]``, drawn in grey under the metacells.
    cells_mod
        Modality of ``cells`` when it is a MuData.
    metacell_key
        Column of ``cells.obs`` naming each cell's metacell (an ``obs_name`` of ``data`` or its
        position; missing or ``-1``: no metacell).
    sort_order
        Draw higher values of numeric features on top.
    show
        Call ``plt.show()``.
    return_fig
        Return the Figure (``None``: unless ``show=True``).
    save
        Path to save the figure to.
    ax
        A matplotlib Axes to draw into (only with one feature).

    Returns
    -------
    The :class:`~matplotlib.figure.Figure` (see ``return_fig``). In a notebook, assign it
    (``fig = ...``) to avoid it being displayed twice.

    Examples
    --------
    >>> import scanpy as sc
    >>> import scmetacell as scm
    >>> adata = scm.datasets.pbmc3k()
    >>> sc.pp.normalize_total(adata)
    >>> sc.pp.log1p(adata)
    >>> sc.pp.pca(adata, n_comps=10)
    >>> sc.pp.neighbors(adata)
    >>> sc.tl.umap(adata)
    >>> fig = scm.pl.embedding_multi(adata, features=["cell_type", "CD79A"], ncols=2, annotate_style="text")
    """
    import matplotlib.pyplot as plt

    if isinstance(features, str):
        features = [features]
    features = list(features)
    if not features:
        raise ValueError("features: give at least one feature.")
    if annotate_style not in ("index", "text", "none", None):
        raise ValueError(f"annotate_style={annotate_style!r}: expected 'index', 'text' or 'none'.")
    if int(ncols) != ncols or ncols < 1:
        raise ValueError(f"ncols: must be a positive integer, got {ncols!r}.")
    if ax is not None and len(features) != 1:
        raise ValueError(f"ax: can only be given with one feature, got {len(features)}.")
    if ptsize is not None and not ptsize > 0:
        raise ValueError(f"ptsize: must be > 0, got {ptsize!r}.")

    handler = DataHandler(data, mod=mod)
    adata = handler.adata
    feats = get_features(handler, features, layer=layer, gene_symbols=gene_symbols)

    # ---- coordinates
    cell_xy = None
    if cells is not None:
        ch = DataHandler(cells, mod=cells_mod)
        ckey = basis_key(ch.adata, basis)
        cell_xy = np.asarray(ch.adata.obsm[ckey])[:, :2].astype(np.float64)
        assign = ch.obs_column(metacell_key, arg="metacell_key")
        idx = _metacell_index(assign, adata.obs_names, arg="metacell_key")
        xy = _centroids(cell_xy, idx, adata.n_obs)
        n_missing = int(np.isnan(xy[:, 0]).sum())
        if n_missing:
            logg.warning(f"{n_missing} metacells have no cells in `cells`; they are not drawn.")
        label = basis_label(ckey)
    else:
        key = basis_key(adata, basis)
        xy = np.asarray(adata.obsm[key])[:, :2].astype(np.float64)
        label = basis_label(key)

    # ---- layout
    n = len(feats)
    ncols = min(int(ncols), n)
    nrows = math.ceil(n / ncols)
    has_legend = legend and any(f.kind == "categorical" for f in feats)
    if ax is None:
        if figsize is None:
            figsize = (ncols * (3.3 + (1.4 if has_legend else 0.0)), nrows * 3.0)
        fig = plt.figure(figsize=figsize, dpi=dpi, layout="constrained")
        axes = list(fig.subplots(nrows, ncols, squeeze=False).ravel())
        for extra in axes[n:]:
            extra.remove()
        axes = axes[:n]
    else:
        fig, axes = ax.figure, [ax]
    w_in, h_in = fig.get_size_inches()
    panel_area = (w_in / ncols) * (h_in / nrows)

    # ---- sizes
    s0 = ptsize if ptsize is not None else _default_size(int(np.isfinite(xy[:, 0]).sum()), panel_area)
    sizes = np.full(adata.n_obs, float(s0))
    if size_key is not None:
        sz = pd.to_numeric(handler.obs_column(size_key, arg="size_key"), errors="coerce").to_numpy(float)
        med = np.nanmedian(sz[sz > 0]) if np.any(sz > 0) else np.nan
        if not np.isfinite(med):
            raise ValueError(f"size_key={size_key!r}: needs positive numbers.")
        sizes = s0 * np.clip(np.nan_to_num(sz, nan=med) / med, 0.1, 8.0)
    cell_size = 0.0
    if cell_xy is not None:  # the cells stay smaller than a median metacell
        cell_size = min(_default_size(cell_xy.shape[0], panel_area) * 0.5, 0.6 * s0)
    contour_xy = cell_xy if cell_xy is not None else xy

    for a, feat in zip(axes, feats, strict=True):
        if cell_xy is not None:
            a.scatter(cell_xy[:, 0], cell_xy[:, 1], s=cell_size, c=CELL_COLOR, linewidths=0, rasterized=True,
                      zorder=1)  # fmt: skip
        _draw_feature(
            fig, a, feat, xy, sizes, handler=handler, cmap=cmap, vmin=vmin, vmax=vmax, legend=legend,
            annotate_style=annotate_style or "none", sort_order=sort_order,
            edge=(cell_xy is not None or size_key is not None) and s0 >= 8,
        )  # fmt: skip
        if contour_plot:
            _density_contours(a, contour_xy)
        a.set_title(feat.name, fontsize=10)
        a.set_xticks([])
        a.set_yticks([])
        a.set_xlabel(f"{label}1", fontsize=8)
        a.set_ylabel(f"{label}2", fontsize=8)
        for sp in a.spines.values():
            sp.set_linewidth(0.6)
    return finish(fig, show=show, return_fig=return_fig, save=save)


def _draw_feature(fig, ax, feat: Feature, xy, sizes, *, handler, cmap, vmin, vmax, legend, annotate_style,
                  sort_order, edge) -> None:  # fmt: skip
    finite = np.isfinite(xy).all(axis=1)
    edge_kw = {"edgecolors": "#505050", "linewidths": 0.25} if edge else {"linewidths": 0}
    if feat.kind == "numeric":
        v = np.asarray(feat.values, dtype=np.float64)
        na = finite & ~np.isfinite(v)
        if na.any():
            ax.scatter(xy[na, 0], xy[na, 1], s=sizes[na], c=NA_COLOR, rasterized=True, zorder=2, **edge_kw)
        ok = finite & np.isfinite(v)
        order = np.flatnonzero(ok)
        if sort_order:
            order = order[np.argsort(v[order], kind="stable")]
        sc = ax.scatter(
            xy[order, 0], xy[order, 1], c=v[order], s=sizes[order], cmap=cmap, vmin=vmin, vmax=vmax,
            rasterized=True, zorder=2, plotnonfinite=False, **edge_kw,
        )  # fmt: skip
        # an inset colour bar hugs its panel whatever the other panels' legends need
        cax = ax.inset_axes([1.03, 0.15, 0.035, 0.7])
        cax.set_label("<colorbar>")
        cb = fig.colorbar(sc, cax=cax)
        cb.ax.tick_params(labelsize=7)
        cb.outline.set_linewidth(0.5)
        return
    if feat.kind == "bool":
        v = np.asarray(feat.values, dtype=bool)
        for mask, color, name in ((~v, FALSE_COLOR, "False"), (v, TRUE_COLOR, "True")):
            sel = mask & finite
            ax.scatter(xy[sel, 0], xy[sel, 1], s=sizes[sel], c=color, label=f"{name} ({int(sel.sum()):,})",
                       rasterized=True, zorder=2 if name == "False" else 2.5, **edge_kw)  # fmt: skip
        if legend:
            ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=7,
                      markerscale=1.5, handletextpad=0.2)  # fmt: skip
        return
    cats: pd.Categorical = feat.values
    cats = cats.remove_unused_categories()
    key = feat.name.split(":", 1)[-1] if feat.source == "mdata.obs" else feat.name
    colors = category_colors(handler.adata, key, list(cats.categories), handler.mdata)
    codes = cats.codes
    na = (codes < 0) & finite
    if na.any():
        ax.scatter(xy[na, 0], xy[na, 1], s=sizes[na], c=NA_COLOR, rasterized=True, zorder=2, **edge_kw)
    ok = (codes >= 0) & finite
    color_arr = np.asarray(colors, dtype=object)
    ax.scatter(xy[ok, 0], xy[ok, 1], s=sizes[ok], c=list(color_arr[codes[ok]]), rasterized=True, zorder=2,
               **edge_kw)  # fmt: skip
    if annotate_style in ("index", "text"):
        _label_centroids(ax, xy, cats, annotate_style)
    if legend and len(cats.categories) > 60:
        logg.hint(f"{feat.name!r} has {len(cats.categories)} categories: legend left out (too many to read).")
        legend = False
    if legend:
        from matplotlib.lines import Line2D

        handles = [
            Line2D([], [], marker="o", linestyle="", markersize=5, color=colors[k],
                   label=f"{k}: {name}" if annotate_style == "index" else str(name))
            for k, name in enumerate(cats.categories)
        ]  # fmt: skip
        if na.any():
            handles.append(Line2D([], [], marker="o", linestyle="", markersize=5, color=NA_COLOR, label="NA"))
        ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False, fontsize=7,
                  handletextpad=0.2, ncols=1 if len(handles) <= 14 else 2)  # fmt: skip
