"""``tl.metacell_metrics``: every metacell quality metric of the field, under names that say which."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ... import _logging as logg
from ...data import DataHandler, as_source
from ._correlation import correlation_metrics
from ._diffusion import diffusion_components
from ._geometry import _compactness, _separation
from ._inner_variance import inner_normalized_variance
from ._partition import encode_partition, partition_sizes
from ._purity import balanced_purity, purity, rare_type_recall

_MIN_DIFFUSION_CELLS = 30


def metacell_metrics(
    data: Any,
    key: str = "metacell",
    *,
    label_key: str | None = None,
    use_rep: str | None = "X_pca",
    n_pcs: int = 30,
    counts_layer: str | None = None,
    hvg_key: str | None = None,
    n_requested: int | None = None,
    correlation_sample: int | None = 5000,
    mod: str = "rna",
    random_state: int = 0,
    key_added: str | None = None,
    inplace: bool = True,
    progress: bool | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Quality metrics of a metacell partition, as SEACells, SuperCell, MetaQ and the review compute them.

    Outlier cells (``NaN``/``None`` id, or ``-1`` for numeric ids) are left out everywhere. Per
    metacell (one row each, index = metacell id):

    - ``size``: cells.
    - ``purity`` (max proportion of one label; higher is better), ``purity_label`` (that label),
      ``entropy`` (SuperCell, natural log; lower is better), ``n_labelled``: with ``label_key``;
      unlabelled cells (``NaN``) are left out of purity. See :func:`purity`, :func:`balanced_purity`.
    - ``compactness_seacells``, ``separation_seacells``: SEACells' ``evaluate.py`` in its 9-dim
      diffusion space of ``obsm[use_rep]`` (all columns; :func:`diffusion_components`), built on the
      non-outlier cells (``NaN`` with fewer than 30 of them). The kNN graph comes from
      :func:`scanpy.pp.neighbors`, whose numba kernels compile on first use in a process.
    - ``compactness_pca``, ``separation_pca``: the review's variants on the first ``n_pcs`` columns of
      ``obsm[use_rep]`` (:func:`compactness`, :func:`separation`). Compactness is lower-is-better,
      separation higher-is-better; dense regions favour the first and hurt the second: read them
      together.
    - ``inv``: inner normalised variance, 95th percentile over all genes of the raw counts
      (:func:`inner_normalized_variance`; singletons ``NaN``). Lower is better.
    - ``compactness_metaq``, ``separation_metaq``: MetaQ's correlation metrics on a random sample of
      ``correlation_sample`` cells (:func:`correlation_metrics`; ``NaN`` for unsampled metacells).
      Different definitions under the same names: both higher-is-better.

    Parameters
    ----------
    data
        AnnData or MuData of cells, with ``obs[key]`` = metacell id per cell.
    key
        ``obs`` column with the metacell ids (a MuData's ``mdata.obs`` is looked up too).
    label_key
        ``obs`` column of true labels for purity; ``None`` leaves the purity columns out.
    use_rep
        ``obsm`` embedding for the SEACells and PCA-space metrics; ``None`` skips them.
    n_pcs
        The PCA-space variants use the first ``n_pcs`` columns (the review's default, PCs 1..30).
    counts_layer
        Layer with raw counts for INV and MetaQ's metrics (``None`` = ``X``); must be non-negative.
    hvg_key
        Boolean ``var`` column of the genes for MetaQ's correlations; ``None`` uses
        ``var['highly_variable']`` when present, else all genes.
    n_requested
        Metacells requested, for the delivered fraction. Default: what :func:`scmetacell.tl.metacell`
        stored in ``uns[key]`` or ``uns[key]['params']`` (``n_requested``, ``n_metacell`` or
        ``n_metacells``), else the number of delivered (non-empty) metacells.
    correlation_sample
        Cells sampled for MetaQ's correlation metrics; ``None`` or 0 skips them.
    mod
        Modality of a MuData.
    random_state
        Seed of the kNN search (from 8,192 cells), the eigensolver's start vector and the sample.
    key_added
        Results go to ``uns[key_added]`` (default ``f"{key}_metrics"``) as
        ``{'table': DataFrame, 'summary': dict, 'params': dict}`` (writable to ``.h5ad``).
    inplace
        Store the results in ``uns``; nothing is written before all metrics succeed.
    progress
        Show progress bars (``None`` = :attr:`scmetacell.settings.progress_bar`).

    Returns
    -------
    ``(table, summary)``: the per-metacell table and a dict with ``n_cells``, ``n_outliers``,
    ``n_metacells`` (delivered), ``n_requested``, ``delivered_fraction``, ``size_min``,
    ``size_median``, ``size_max``, ``gamma`` (cells / metacells), and when computed
    ``purity_mean``, ``purity_weighted`` (purity averaged over labelled cells rather than metacells:
    metacells of one cell, always "pure", do not inflate it), ``entropy_mean``, ``balanced_purity`` (over
    cells), ``rare_type_recall`` (labels with ≥ max(3, ⌈γ/4⌉) cells that are the majority of ≥ 1
    metacell, :func:`rare_type_recall`) and ``n_rare_types_counted``, ``compactness_seacells_mean``,
    ``separation_seacells_mean``, ``compactness_pca_mean``, ``separation_pca_mean``, ``inv_mean``,
    ``inv_median``, ``inv_weighted`` (INV averaged over cells rather than metacells: a partition into many
    pairs and a few large metacells does not lower it by the pairs' near-1 INV alone),
    ``compactness_metaq_mean``, ``separation_metaq_mean``, ``correlation_sample``.
    Means are over metacells, ``NaN`` values (singletons) left out.

    Examples
    --------
    >>> import numpy as np
    >>> import scanpy as sc
    >>> import scmetacell as scm
    >>> adata = scm.datasets.pbmc3k()
    >>> adata.layers["counts"] = adata.X.copy()
    >>> sc.pp.normalize_total(adata, target_sum=1e4)
    >>> sc.pp.log1p(adata)
    >>> sc.pp.highly_variable_genes(adata, n_top_genes=1000)
    >>> sc.pp.pca(adata, n_comps=30, mask_var="highly_variable")
    >>> adata.obs["metacell"] = np.arange(adata.n_obs) // 30  # any partition
    >>> table, summary = scm.tl.metacell_metrics(
    ...     adata, "metacell", label_key="cell_type", counts_layer="counts", correlation_sample=1000
    ... )
    >>> summary["n_metacells"], round(summary["gamma"], 1)
    (90, 30.0)
    """
    h = DataHandler(data, mod)
    adata = h.adata
    ids_col = h.obs_column(key, arg="key")
    codes, ids = encode_partition(ids_col, arg="key")
    n_groups = len(ids)
    if n_groups == 0:
        raise ValueError(f"key={key!r}: no cell has a metacell id (all are missing/outliers).")
    labels = h.obs_column(label_key, arg="label_key") if label_key is not None else None
    embedding = _embedding(h, use_rep) if use_rep is not None else None
    if n_pcs < 1:
        raise ValueError(f"n_pcs: must be at least 1, got {n_pcs}.")
    h.matrix(counts_layer, arg="counts_layer")  # clear error for a missing layer
    genes = _hvg_mask(h, hvg_key)
    if n_requested is None:
        n_requested = _stored_n_requested(adata.uns.get(key))
    if n_requested is not None and n_requested < 1:
        raise ValueError(f"n_requested: must be positive, got {n_requested}.")

    keep = codes >= 0
    sizes = partition_sizes(codes, n_groups)
    table = pd.DataFrame({"size": sizes}, index=ids)
    table.index.name = key
    summary: dict[str, Any] = {
        "n_cells": int(keep.sum()),
        "n_outliers": int((~keep).sum()),
        "n_metacells": int(n_groups),
        "n_requested": int(n_requested if n_requested is not None else n_groups),
    }
    summary["delivered_fraction"] = summary["n_metacells"] / summary["n_requested"]
    summary.update(
        size_min=int(sizes.min()),
        size_median=float(np.median(sizes)),
        size_max=int(sizes.max()),
        gamma=summary["n_cells"] / n_groups,
    )

    if labels is not None:
        _add_purity(table, summary, codes, ids, labels)
    if embedding is not None:
        _add_geometry(table, summary, embedding, codes, n_groups, use_rep=use_rep, n_pcs=n_pcs,
                      random_state=random_state)  # fmt: skip

    source = as_source(adata, counts_layer)
    table["inv"] = inner_normalized_variance(source, codes, progress=progress).to_numpy()
    summary["inv_mean"] = _mean(table["inv"])
    summary["inv_median"] = float(np.nanmedian(table["inv"])) if table["inv"].notna().any() else float("nan")
    summary["inv_weighted"] = _weighted_mean(table["inv"], sizes)

    if correlation_sample:
        cor = correlation_metrics(
            source, codes, genes=genes, n_sample=correlation_sample, random_state=random_state
        )
        table["compactness_metaq"] = cor["compactness_metaq"].to_numpy()
        table["separation_metaq"] = cor["separation_metaq"].to_numpy()
        summary["compactness_metaq_mean"] = _mean(table["compactness_metaq"])
        summary["separation_metaq_mean"] = _mean(table["separation_metaq"])
        summary["correlation_sample"] = int(min(correlation_sample, summary["n_cells"]))

    if inplace:
        params = {
            "key": key,
            "label_key": label_key if label_key is not None else "",
            "use_rep": use_rep if use_rep is not None else "",
            "n_pcs": int(n_pcs),
            "counts_layer": counts_layer if counts_layer is not None else "X",
            "correlation_sample": int(correlation_sample or 0),
            "random_state": int(random_state),
        }
        h.set_uns(key_added or f"{key}_metrics", {"table": table, "summary": dict(summary), "params": params})
        logg.info(f"    added uns[{key_added or f'{key}_metrics'!r}] (table, summary, params)")
    return table, summary


def _mean(values: pd.Series) -> float:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _embedding(h: DataHandler, use_rep: str) -> np.ndarray:
    adata = h.adata
    if use_rep in adata.obsm:
        emb = adata.obsm[use_rep]
    elif h.mdata is not None and use_rep in h.mdata.obsm:
        pos = h.mdata.obs_names.get_indexer(adata.obs_names)
        emb = np.asarray(h.mdata.obsm[use_rep])[pos]
    else:
        where = f" of modality {h.mod!r}" if h.mod is not None else ""
        raise KeyError(f"use_rep={use_rep!r}: no such key in obsm{where}; obsm has {list(adata.obsm)}.")
    emb = np.asarray(emb.to_numpy() if isinstance(emb, pd.DataFrame) else emb)
    if emb.ndim != 2 or emb.shape[0] != adata.n_obs:
        raise ValueError(f"use_rep={use_rep!r}: expected cells × dimensions, got shape {emb.shape}.")
    if not np.all(np.isfinite(emb)):
        raise ValueError(f"use_rep={use_rep!r}: the embedding contains NaN or infinite values.")
    return emb


def _hvg_mask(h: DataHandler, hvg_key: str | None) -> np.ndarray | None:
    if hvg_key is None:
        if "highly_variable" not in h.adata.var.columns:
            return None
        hvg_key = "highly_variable"
    return h.var_mask(hvg_key, arg="hvg_key")


_REQUESTED_KEYS = ("n_requested", "n_metacell", "n_metacells")


def _stored_n_requested(stored: Any) -> int | None:
    """Return the requested metacells that :func:`scmetacell.tl.metacell` stored in ``uns[key]``."""
    if not isinstance(stored, Mapping):
        return None
    for where in (stored, stored.get("params")):
        if isinstance(where, Mapping):
            for name in _REQUESTED_KEYS:
                if name in where:
                    return int(where[name])
    return None


def _add_purity(
    table: pd.DataFrame, summary: dict, codes: np.ndarray, ids: pd.Index, labels: pd.Series
) -> None:
    """Add the label purity columns and their summaries."""
    pur = purity(pd.Series(codes), labels.to_numpy())
    pur.index = ids
    for col in ("n_labelled", "purity", "purity_label", "entropy"):
        table[col] = pur[col].array
    summary["purity_mean"] = _mean(pur["purity"])
    # weighted by labelled cells: singletons (always "pure") do not inflate it
    summary["purity_weighted"] = _weighted_mean(pur["purity"], pur["n_labelled"].to_numpy())
    summary["entropy_mean"] = _mean(pur["entropy"])
    summary["balanced_purity"] = balanced_purity(pd.Series(codes), labels.to_numpy())
    summary["rare_type_recall"], summary["n_rare_types_counted"] = rare_type_recall(
        pd.Series(codes), labels.to_numpy()
    )


def _weighted_mean(values: pd.Series, weights: np.ndarray) -> float:
    """Mean of ``values`` over metacells weighted by ``weights`` (their cells), ``NaN`` values left out."""
    v = values.to_numpy(dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    ok = np.isfinite(v) & (w > 0)
    return float(np.sum(v[ok] * w[ok]) / w[ok].sum()) if ok.any() else float("nan")


def _add_geometry(table, summary, embedding, codes, n_groups, *, use_rep, n_pcs, random_state) -> None:
    """Add compactness / separation in SEACells' diffusion components and in the first PCs."""
    keep = codes >= 0
    emb = embedding[keep]
    sub = codes[keep]
    if emb.shape[0] >= _MIN_DIFFUSION_CELLS:
        logg.info(f"computing SEACells' diffusion components of {use_rep!r} ({emb.shape[1]} dims)")
        dc = diffusion_components(emb, random_state=random_state)
        table["compactness_seacells"] = _compactness(dc, sub, n_groups)
        table["separation_seacells"] = _separation(dc, sub, n_groups)
    else:
        logg.warning(
            f"SEACells' compactness/separation need at least {_MIN_DIFFUSION_CELLS} cells "
            f"(a 30-neighbour graph), got {emb.shape[0]}: left as NaN."
        )
        table["compactness_seacells"] = table["separation_seacells"] = np.nan
    n_use = min(n_pcs, emb.shape[1])
    if n_use < n_pcs:
        logg.warning(f"n_pcs={n_pcs}: obsm[{use_rep!r}] has {emb.shape[1]} columns; using all of them.")
    pcs = np.asarray(emb[:, :n_use], dtype=np.float64)
    table["compactness_pca"] = _compactness(pcs, sub, n_groups)
    table["separation_pca"] = _separation(pcs, sub, n_groups)
    for col in ("compactness_seacells", "separation_seacells", "compactness_pca", "separation_pca"):
        summary[f"{col}_mean"] = _mean(table[col])
