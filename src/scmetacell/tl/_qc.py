"""Quality control of cells and genes (the seed's ``rna.qc``), in scanpy's names; removes nothing unasked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd

from .. import _logging as logg
from ..data import DEFAULT_CHUNK_SIZE, DataHandler, as_source, update_mudata
from ._qc_parts import (
    _OUTLIER_KEYS,
    MAD_NORMAL,
    QC_REASONS,
    _detected_in,
    _metrics_pass,
    _scrublet,
    mito_mask,
    outlier_bounds,
    resolve_counts_layer,
    ribo_mask,
)

__all__ = ["MAD_NORMAL", "QC_REASONS", "mito_mask", "outlier_bounds", "qc", "ribo_mask"]


def qc(
    data: Any,
    *,
    mod: str = "rna",
    layer: str | None = None,
    mt_seqid: str | None = "chrM",
    mt_percent: float | None = 0.15,
    ribo_genes: Sequence[str] | None = None,
    ribo_percent: float | None = None,
    outlier_mode: Literal["mads", "tukey", "none"] = "mads",
    outlier_n: float = 5,
    mad_scale: float | Literal["normal"] = 1.0,
    outlier_keys: Sequence[str] = ("total_counts",),
    outlier_log: bool = False,
    doublet_method: Literal["no", "scrublet"] = "no",
    doublet_threshold: float | None = None,
    min_cells: int = 3,
    min_genes: int = 300,
    chromosome_key: str | None = None,
    mt_prefix: str = "MT-",
    gene_symbols: str | None = None,
    filter: bool = False,
    random_state: int = 0,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool | None = None,
    inplace: bool = True,
    copy: bool = False,
) -> Any:
    """Quality control of cells and genes: metrics, pass/fail flags and reasons; filters only if asked.

    Computes scanpy's QC metrics (the names of :func:`scanpy.pp.calculate_qc_metrics` with
    ``qc_vars=["mt", "ribo"]``) in chunked passes over cells, then flags each cell:

    1. ``low_genes``: fewer than ``min_genes`` detected genes (cells without counts always fail);
    2. ``counts_outlier`` / ``genes_outlier``: the ``outlier_keys`` metric outside the bounds of
       ``outlier_mode`` (computed over all cells, see :func:`~scmetacell.tl._qc.outlier_bounds`);
    3. ``high_mt``: mitochondrial fraction ``>= mt_percent``;
    4. ``high_ribo``: ribosomal fraction ``>= ribo_percent``;
    5. ``doublet``: called by scrublet among the cells that passed 1-4.

    A gene passes when it is detected in at least ``min_cells`` of the cells that pass. Unlike
    ``exprmat``'s ``qc``, nothing is removed unless ``filter=True``.

    Parameters
    ----------
    data
        An :class:`~anndata.AnnData` or a :class:`~mudata.MuData`: cells or metacells.
    mod
        Modality of a MuData; ignored for an AnnData.
    layer
        Matrix of counts: ``"X"`` or a key of ``layers``. ``None``: ``layers["counts"]`` when it
        exists and the object is a metacell object (``uns["metacell"]``, whose ``X`` holds log
        means and ``layers["counts"]`` the summed counts) or ``X`` is not integer-valued;
        else ``X``. The matrix must hold non-negative integers (a ``ValueError`` says otherwise).
    mt_seqid
        Mitochondrial sequence name matched against the chromosome column of ``var``
        (``chromosome_key``); ``chrM``/``MT``/``M``/``chrMT`` are treated alike. Without such a
        column (or when nothing matches), genes whose symbol starts with ``mt_prefix`` (any case).
        ``None``: use the prefix only.
    mt_percent
        Mitochondrial *fraction* a cell must stay below (0.15 = 15 %, as in the seed; the stored
        ``pct_counts_mt`` is in percent, like scanpy's). ``None``: no mitochondrial filter.
    ribo_genes
        Ribosomal genes (names or symbols); ``None``: RPS/RPL symbols, any case.
    ribo_percent
        Ribosomal fraction a cell must stay below; ``None`` (default): computed, not used to filter.
    outlier_mode
        ``"mads"``: median ± ``outlier_n`` × MAD; ``"tukey"``: IQR fences with ``outlier_n`` IQRs
        (1.5 is Tukey's classic); ``"none"``: no outlier filter.
    outlier_n
        Number of MADs or IQRs.
    mad_scale
        Factor on the MAD: ``1.0`` (default: the raw MAD, as the seed's ``exprmat`` and the
        best-practices book, which uses ``scipy.stats.median_abs_deviation``) or ``"normal"``
        (1.4826: the MAD estimates a normal SD; bounds are ~1.5× wider).
    outlier_keys
        Metrics tested for outliers: ``"total_counts"`` (the seed's) and/or ``"n_genes_by_counts"``.
    outlier_log
        Compute the bounds on ``log1p`` of the metric (the best-practices book's choice); the
        bounds stored in ``uns["qc"]`` are transformed back to counts.
    doublet_method
        ``"no"`` or ``"scrublet"`` (:func:`scanpy.pp.scrublet` on the cells passing the other
        checks; adds ``obs["doublet_score"]`` and ``obs["predicted_doublet"]``).
    doublet_threshold
        Doublet-score threshold of scrublet; ``None``: scrublet's automatic threshold, which needs
        ``scikit-image``.
    min_cells
        Minimum number of passing cells a gene must be detected in.
    min_genes
        Minimum number of detected genes per cell.
    chromosome_key
        ``var`` column with chromosome names; ``None``: the first of ``chromosome``, ``chr``,
        ``chrom``, ``seqid``, ``.seqid``, ``seqname``, ``seqnames`` that exists.
    mt_prefix
        Symbol prefix of mitochondrial genes (case-insensitive) when no chromosome is known.
    gene_symbols
        ``var`` column with gene symbols (default: ``var_names``).
    filter
        Remove the failing cells and genes (in place, or in the copy).
    random_state
        Seed of scrublet.
    chunk_size
        Cells read per chunk.
    progress
        Show progress bars (``None``: follow :attr:`scmetacell.settings.progress_bar`).
    inplace
        Write the results into ``data``; ``False``: return them and leave ``data`` untouched.
    copy
        Work on a copy of ``data`` and return it.

    Returns
    -------
    With ``inplace`` (default) ``None``, with ``copy=True`` the copy, and these are added:

    ``obs``
        ``total_counts``, ``log1p_total_counts``, ``n_genes_by_counts``,
        ``log1p_n_genes_by_counts``, ``total_counts_mt``, ``log1p_total_counts_mt``,
        ``pct_counts_mt``, the same three for ``ribo``, ``qc`` (bool, passed) and ``qc_reason``
        (categorical: ``"pass"`` or the first failed check); with scrublet also
        ``doublet_score`` and ``predicted_doublet``. For a MuData they are also written to
        ``mdata.obs`` as ``"{mod}:{name}"``.
    ``var``
        ``mt``, ``ribo`` (bool), ``n_cells_by_counts``, ``mean_counts``, ``log1p_mean_counts``,
        ``pct_dropout_by_counts``, ``total_counts``, ``log1p_total_counts``,
        ``n_cells_by_counts_qc`` (detected in passing cells) and ``qc`` (bool, gene passes).
    ``uns["qc"]``
        The settings, the thresholds per metric (``uns["qc"]["thresholds"][metric] = [low, high]``,
        NaN where there is none; used by :func:`scmetacell.pl.qc`) and the numbers of cells
        failing each check.

    With ``inplace=False``: a tuple ``(obs_metrics, var_metrics)`` of DataFrames.

    Examples
    --------
    >>> import scmetacell as scm
    >>> adata = scm.datasets.pbmc3k()
    >>> scm.tl.qc(adata, mt_seqid=None, min_genes=200, mt_percent=0.05)
    >>> int(adata.obs["qc"].sum())
    2551
    """
    # ---- validate at the boundary
    outlier_keys = _check_args(
        copy=copy, inplace=inplace, filter=filter, outlier_mode=outlier_mode, doublet_method=doublet_method,
        doublet_threshold=doublet_threshold, outlier_n=outlier_n, mad_scale=mad_scale,
        outlier_keys=outlier_keys, mt_percent=mt_percent, ribo_percent=ribo_percent, min_cells=min_cells,
        min_genes=min_genes,
    )  # fmt: skip

    handler = DataHandler(data, mod=mod)
    adata = handler.adata
    if filter and not copy and getattr(adata, "isbacked", False):
        raise ValueError("filter=True: a backed AnnData cannot be subset in place; use copy=True or load it.")
    if doublet_method == "scrublet" and "metacell" in adata.uns:
        logg.warning("doublet_method='scrublet' on metacells: scrublet simulates doublets of single cells.")
    used_layer = resolve_counts_layer(handler, layer)
    if layer is None and used_layer is not None:
        logg.info(f"using layers[{used_layer!r}] as counts (X does not hold counts).")

    mt, mt_how, ribo = _gene_masks(
        adata, mt_seqid, ribo_genes, chromosome_key=chromosome_key, mt_prefix=mt_prefix,
        gene_symbols=gene_symbols, mt_percent=mt_percent,
    )  # fmt: skip

    # ---- pass 1: metrics
    src = as_source(adata, used_layer)
    total, n_genes, tot_mt, tot_ribo, g_total, g_cells = _metrics_pass(
        src, mt, ribo, used_layer, layer, chunk_size, progress
    )
    n_obs, n_vars = src.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        pct_mt = tot_mt / total * 100
        pct_ribo = tot_ribo / total * 100

    # ---- flags
    fails, thresholds, passed, doublet_score, predicted = _flag_cells(
        src, adata, total, n_genes, pct_mt, pct_ribo, min_genes=min_genes, outlier_mode=outlier_mode,
        outlier_keys=outlier_keys, outlier_n=outlier_n, mad_scale=mad_scale, outlier_log=outlier_log,
        mt_percent=mt_percent, ribo_percent=ribo_percent, doublet_method=doublet_method,
        random_state=random_state, doublet_threshold=doublet_threshold,
    )  # fmt: skip

    # ---- pass 2: genes detected in passing cells
    g_cells_pass = _detected_in(src, passed, chunk_size, progress, all_cells=g_cells)
    gene_pass = g_cells_pass >= int(min_cells)

    # ---- tables (scanpy's names)
    obs_df, var_df = _tables(
        adata, fails, passed, doublet_score, predicted, n_genes, total, tot_mt, tot_ribo, pct_mt, pct_ribo,
        mt, ribo, g_cells, g_total, g_cells_pass, gene_pass, n_obs,
    )  # fmt: skip

    n_pass, g_pass = int(passed.sum()), int(gene_pass.sum())
    logg.info(f"raw dataset contains {n_obs} cells, {n_vars} genes")
    logg.info(f"filtered dataset contains {n_pass} cells, {g_pass} genes")
    if not inplace:
        return obs_df, var_df

    # ---- write (all work has succeeded)
    if copy:
        data = handler.data.copy()
        handler = DataHandler(data, mod=mod)
        adata = handler.adata
    for col in obs_df.columns:
        handler.set_obs(col, obs_df[col].to_numpy() if col != "qc_reason" else obs_df[col].values)
    for col in var_df.columns:
        adata.var[col] = var_df[col].to_numpy()
    handler.set_uns("qc", _record(
        used_layer, mt_how, mt, ribo, outlier_mode, outlier_n, mad_scale, outlier_keys, outlier_log,
        doublet_method, min_cells, min_genes, thresholds, fails, n_obs, n_vars, n_pass, g_pass,
    ))  # fmt: skip
    if filter:
        adata._inplace_subset_var(gene_pass)
        adata._inplace_subset_obs(passed)
        logg.info(f"removed {n_obs - n_pass} cells and {n_vars - g_pass} genes that failed QC.")
    if handler.mdata is not None:
        update_mudata(handler.mdata)
    return data if copy else None


def _check_args(
    *, copy, inplace, filter, outlier_mode, doublet_method, doublet_threshold, outlier_n, mad_scale,
    outlier_keys, mt_percent, ribo_percent, min_cells, min_genes,
) -> tuple[str, ...]:  # fmt: skip
    """Validate the keywords at the boundary; return ``outlier_keys`` as a tuple."""
    if copy and not inplace:
        raise ValueError("copy=True returns the annotated copy; it cannot be combined with inplace=False.")
    if filter and not inplace:
        raise ValueError("filter=True modifies the data; it cannot be combined with inplace=False.")
    if outlier_mode not in ("mads", "tukey", "none", None):
        raise ValueError(f"outlier_mode={outlier_mode!r}: expected 'mads', 'tukey' or 'none'.")
    if doublet_method not in ("no", "scrublet", None):
        raise ValueError(f"doublet_method={doublet_method!r}: expected 'no' or 'scrublet'.")
    if doublet_method == "scrublet" and doublet_threshold is None:
        import importlib.util

        if importlib.util.find_spec("skimage") is None:
            raise ImportError(
                "doublet_method='scrublet': its automatic threshold needs scikit-image "
                "(pip install scikit-image); or pass doublet_threshold=, e.g. 0.25."
            )
    if not (isinstance(outlier_n, int | float) and np.isfinite(outlier_n) and outlier_n > 0):
        raise ValueError(f"outlier_n: must be a positive number, got {outlier_n!r}.")
    if not (mad_scale == "normal" or (isinstance(mad_scale, int | float) and mad_scale > 0)):
        raise ValueError(f"mad_scale: expected a positive number or 'normal', got {mad_scale!r}.")
    if isinstance(outlier_keys, str):
        outlier_keys = (outlier_keys,)
    for key in outlier_keys:
        if key not in _OUTLIER_KEYS:
            raise ValueError(f"outlier_keys: {key!r} is not one of {list(_OUTLIER_KEYS)}.")
    for name, val in (("mt_percent", mt_percent), ("ribo_percent", ribo_percent)):
        if val is not None and not (0 < val <= 1):
            raise ValueError(
                f"{name}: a fraction in (0, 1] is expected (0.15 = 15 %), got {val!r}; or None for no filter."
            )
    for name, val in (("min_cells", min_cells), ("min_genes", min_genes)):
        if int(val) != val or val < 0:
            raise ValueError(f"{name}: must be a non-negative integer, got {val!r}.")
    return tuple(outlier_keys)


def _flag_cells(
    src, adata, total, n_genes, pct_mt, pct_ribo, *, min_genes, outlier_mode, outlier_keys, outlier_n,
    mad_scale, outlier_log, mt_percent, ribo_percent, doublet_method, random_state, doublet_threshold,
):  # fmt: skip
    """Return each check's failing cells, the thresholds, the passing cells and the doublet calls."""
    n_obs = total.size
    metrics = {"total_counts": total, "n_genes_by_counts": n_genes.astype(np.float64)}
    fails: dict[str, np.ndarray] = {r: np.zeros(n_obs, dtype=bool) for r in QC_REASONS}
    thresholds: dict[str, list[float]] = {
        "total_counts": [np.nan, np.nan],
        "n_genes_by_counts": [float(min_genes), np.nan],
        "pct_counts_mt": [np.nan, np.nan if mt_percent is None else 100.0 * mt_percent],
        "pct_counts_ribo": [np.nan, np.nan if ribo_percent is None else 100.0 * ribo_percent],
    }
    fails["low_genes"] = n_genes < max(int(min_genes), 1)
    if outlier_mode not in ("none", None):
        for key in outlier_keys:
            x = metrics[key]
            lo, hi = outlier_bounds(
                np.log1p(x) if outlier_log else x, outlier_mode, outlier_n, mad_scale=mad_scale
            )
            if outlier_log:
                lo, hi = float(np.expm1(lo)), float(np.expm1(hi))
            fails[_OUTLIER_KEYS[key]] = (x < lo) | (x > hi)
            thresholds[key] = [float(np.nanmax([thresholds[key][0], lo])), float(hi)]
    if mt_percent is not None:
        fails["high_mt"] = ~(pct_mt < 100.0 * mt_percent)
    if ribo_percent is not None:
        fails["high_ribo"] = ~(pct_ribo < 100.0 * ribo_percent)
    passed = ~np.logical_or.reduce([fails[r] for r in QC_REASONS if r != "doublet"])

    doublet_score = predicted = None
    if doublet_method == "scrublet":
        doublet_score, predicted = _scrublet(src, passed, random_state, adata.obs_names, doublet_threshold)
        fails["doublet"] = predicted
        passed = passed & ~predicted

    return fails, thresholds, passed, doublet_score, predicted


def _reasons(fails: dict[str, np.ndarray], n_obs: int) -> tuple[np.ndarray, list[str]]:
    """Return each cell's first failed check (``'pass'``) and the reasons that occur."""
    reason = np.full(n_obs, "pass", dtype=object)
    for r in reversed(QC_REASONS):  # the first failed check wins
        reason[fails[r]] = r
    used_reasons = ["pass", *[r for r in QC_REASONS if fails[r].any()]]

    return reason, used_reasons


def _tables(
    adata, fails, passed, doublet_score, predicted, n_genes, total, tot_mt, tot_ribo, pct_mt, pct_ribo, mt,
    ribo, g_cells, g_total, g_cells_pass, gene_pass, n_obs,
) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Return the cells' and the genes' QC tables (scanpy's names)."""
    reason, used_reasons = _reasons(fails, n_obs)
    obs_df = pd.DataFrame(index=adata.obs_names)
    obs_df["n_genes_by_counts"] = n_genes
    obs_df["log1p_n_genes_by_counts"] = np.log1p(n_genes)
    obs_df["total_counts"] = total
    obs_df["log1p_total_counts"] = np.log1p(total)
    for name, tot, pct in (("mt", tot_mt, pct_mt), ("ribo", tot_ribo, pct_ribo)):
        obs_df[f"total_counts_{name}"] = tot
        obs_df[f"log1p_total_counts_{name}"] = np.log1p(tot)
        obs_df[f"pct_counts_{name}"] = pct
    if doublet_score is not None:
        obs_df["doublet_score"] = doublet_score
        obs_df["predicted_doublet"] = predicted
    obs_df["qc"] = passed
    obs_df["qc_reason"] = pd.Categorical(reason, categories=used_reasons)

    var_df = pd.DataFrame(index=adata.var_names)
    var_df["mt"] = mt
    var_df["ribo"] = ribo
    var_df["n_cells_by_counts"] = g_cells
    var_df["mean_counts"] = g_total / max(n_obs, 1)
    var_df["log1p_mean_counts"] = np.log1p(var_df["mean_counts"].to_numpy())
    var_df["pct_dropout_by_counts"] = (1 - g_cells / max(n_obs, 1)) * 100
    var_df["total_counts"] = g_total
    var_df["log1p_total_counts"] = np.log1p(g_total)
    var_df["n_cells_by_counts_qc"] = g_cells_pass
    var_df["qc"] = gene_pass

    return obs_df, var_df


def _record(
    used_layer, mt_how, mt, ribo, outlier_mode, outlier_n, mad_scale, outlier_keys, outlier_log,
    doublet_method, min_cells, min_genes, thresholds, fails, n_obs, n_vars, n_pass, g_pass,
) -> dict:  # fmt: skip
    """Return ``uns['qc']``: the settings, thresholds and counts of the run."""
    return {
        "layer": "X" if used_layer is None else used_layer,
        "mt_genes": mt_how,
        "n_mt_genes": int(mt.sum()),
        "n_ribo_genes": int(ribo.sum()),
        "outlier_mode": str(outlier_mode),
        "outlier_n": float(outlier_n),
        "mad_scale": float(MAD_NORMAL if mad_scale == "normal" else mad_scale),
        "outlier_keys": list(outlier_keys),
        "outlier_log": bool(outlier_log),
        "doublet_method": str(doublet_method),
        "min_cells": int(min_cells),
        "min_genes": int(min_genes),
        "thresholds": {k: np.asarray(v, dtype=np.float64) for k, v in thresholds.items()},
        "n_failed": {r: int(fails[r].sum()) for r in QC_REASONS},
        "n_cells": int(n_obs),
        "n_genes": int(n_vars),
        "n_cells_pass": n_pass,
        "n_genes_pass": g_pass,
    }


def _gene_masks(adata, mt_seqid, ribo_genes, *, chromosome_key, mt_prefix, gene_symbols, mt_percent):
    """Return the mitochondrial mask (and how it was found) and the ribosomal mask, logged."""
    mt, mt_how = mito_mask(
        adata, mt_seqid, chromosome_key=chromosome_key, mt_prefix=mt_prefix, gene_symbols=gene_symbols
    )
    ribo = ribo_mask(adata, ribo_genes, gene_symbols=gene_symbols)
    logg.info(f"found {int(mt.sum())} mitochondrial genes ({mt_how})")
    logg.info(f"found {int(ribo.sum())} ribosomal genes")
    if mt_percent is not None and not mt.any():
        logg.warning("no mitochondrial genes found: the mt_percent filter has no effect.")
    return mt, mt_how, ribo
