"""The pieces of :func:`scmetacell.tl.qc`: gene masks, outlier bounds, the counts layer, chunked passes."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .. import _logging as logg
from ..data import (
    DataHandler,
    counts_problem,
    resolve_counts_key,
)

#: reasons a cell fails, in the order they are checked (``obs["qc_reason"]`` holds the first one)
QC_REASONS = ("low_genes", "counts_outlier", "genes_outlier", "high_mt", "high_ribo", "doublet")
_OUTLIER_KEYS = {"total_counts": "counts_outlier", "n_genes_by_counts": "genes_outlier"}
_CHROMOSOME_KEYS = ("chromosome", "chr", "chrom", "seqid", ".seqid", "seqname", "seqnames")
_MT_ALIASES = {"chrm", "mt", "m", "chrmt"}
#: ribosomal protein genes: RPS/RPL + number (+ letter/number, + L), RPLP0-2, RPSA, not RPS6K*; any case
_RIBO_PATTERN = re.compile(r"^rp(?!s6k)(?:[sl]\d+[a-z]?\d*(?:l\d*)?|lp\d|sa)$", re.IGNORECASE)
MAD_NORMAL = 1.482602218505602  # 1 / Phi^-1(3/4): makes the MAD a consistent estimator of a normal SD


# ---------------------------------------------------------------------------- outliers
def outlier_bounds(
    x: np.ndarray,
    mode: Literal["mads", "tukey"] = "mads",
    n: float = 5,
    *,
    mad_scale: float | Literal["normal"] = 1.0,
) -> tuple[float, float]:
    """Lower and upper bounds outside which a value is an outlier.

    Parameters
    ----------
    x
        Values (NaN ignored).
    mode
        ``"mads"``: ``median ± n × mad_scale × MAD`` with ``MAD = median(|x - median(x)|)``;
        ``"tukey"``: ``[Q1 - n × IQR, Q3 + n × IQR]`` (quartiles by linear interpolation).
    n
        Number of MADs or IQRs.
    mad_scale
        Factor on the raw MAD: ``1.0`` (default; the seed's ``exprmat`` and ``scipy``'s
        ``median_abs_deviation`` as used in the single-cell best-practices book) or ``"normal"``
        (1.4826, so that the scaled MAD estimates the standard deviation of normal data).

    Returns
    -------
    ``(lower, upper)``; values within ``[lower, upper]`` (inclusive) are not outliers.

    Examples
    --------
    >>> from scmetacell.tl._qc import outlier_bounds
    >>> outlier_bounds([1.0, 2.0, 3.0, 4.0, 100.0], "mads", 2)
    (1.0, 5.0)
    """
    x = np.asarray(x, dtype=np.float64)
    x = x[~np.isnan(x)]
    if x.size == 0:
        return (-np.inf, np.inf)
    if mode == "mads":
        scale = MAD_NORMAL if mad_scale == "normal" else float(mad_scale)
        med = float(np.median(x))
        mad = float(np.median(np.abs(x - med))) * scale
        return (med - n * mad, med + n * mad)
    if mode == "tukey":
        q1, q3 = (float(v) for v in np.quantile(x, [0.25, 0.75]))
        iqr = q3 - q1
        return (q1 - n * iqr, q3 + n * iqr)
    raise ValueError(f"outlier_mode={mode!r}: expected 'mads', 'tukey' or 'none'.")


# ---------------------------------------------------------------------------- gene sets
def _symbols(adata, gene_symbols: str | None) -> pd.Index:
    if gene_symbols is None:
        return pd.Index(adata.var_names.astype(str))
    if gene_symbols not in adata.var.columns:
        raise KeyError(f"gene_symbols={gene_symbols!r}: no such var column; columns are {list(adata.var)}.")
    return pd.Index(adata.var[gene_symbols].astype(str))


def _chromosome_column(var: pd.DataFrame, chromosome_key: str | None) -> str | None:
    if chromosome_key is not None:
        if chromosome_key not in var.columns:
            raise KeyError(
                f"chromosome_key={chromosome_key!r}: no such var column; columns are {list(var.columns)}."
            )
        return chromosome_key
    return next((k for k in _CHROMOSOME_KEYS if k in var.columns), None)


def mito_mask(
    adata,
    mt_seqid: str | None = "chrM",
    *,
    chromosome_key: str | None = None,
    mt_prefix: str = "MT-",
    gene_symbols: str | None = None,
) -> tuple[np.ndarray, str]:
    """Mitochondrial genes: by chromosome when ``var`` has one, else by symbol prefix.

    Returns the mask and a short description of how it was found. ``chrM``, ``MT``, ``M`` and
    ``chrMT`` name the same sequence (UCSC vs. Ensembl naming) and are matched case-insensitively.
    The prefix (default ``"MT-"``) is matched case-insensitively, so ``MT-CO1`` (human) and
    ``mt-Co1`` (mouse) both count.
    """
    col = _chromosome_column(adata.var, chromosome_key)
    if col is not None and mt_seqid is not None:
        seq = adata.var[col].astype(object).where(adata.var[col].notna(), "").astype(str).str.lower()
        target = str(mt_seqid).lower()
        wanted = _MT_ALIASES if target in _MT_ALIASES else {target}
        mask = seq.isin(wanted).to_numpy()
        if mask.any() or chromosome_key is not None:
            return mask, f"var[{col!r}] == {mt_seqid!r}"
        logg.warning(
            f"no gene has var[{col!r}] == {mt_seqid!r}; "
            f"falling back to gene names starting with {mt_prefix!r}."
        )
    symbols = _symbols(adata, gene_symbols)
    mask = np.asarray(symbols.str.lower().str.startswith(mt_prefix.lower()))
    return np.asarray(mask, dtype=bool), f"gene names starting with {mt_prefix!r} (any case)"


def ribo_mask(
    adata, ribo_genes: Sequence[str] | None = None, *, gene_symbols: str | None = None
) -> np.ndarray:
    """Ribosomal protein genes: ``ribo_genes`` (names or symbols), else RPS*/RPL* symbols.

    The default matches ``RPS``/``RPL`` + a number (+ an optional letter, number and ``L``), ``RPLP0-2``
    and ``RPSA`` in any case (``Rpl13a``, ``RPS4Y1``); unlike a bare prefix it leaves out the
    ``RPS6KA*`` kinases and readthrough transcripts.
    """
    symbols = _symbols(adata, gene_symbols)
    if ribo_genes is None:
        return np.asarray([bool(_RIBO_PATTERN.match(s)) for s in symbols], dtype=bool)
    if isinstance(ribo_genes, str):
        raise TypeError("ribo_genes: expected a list of gene names, got a single string.")
    wanted = pd.Index([str(g) for g in ribo_genes])
    mask = symbols.isin(wanted) | adata.var_names.isin(wanted)
    missing = wanted.difference(symbols).difference(adata.var_names)
    if len(missing):
        logg.warning(
            f"ribo_genes: {len(missing)} of {len(wanted)} genes not found, e.g. {list(missing[:5])}."
        )
    return np.asarray(mask, dtype=bool)


# ---------------------------------------------------------------------------- counts layer
COUNTS_TOL = 1e-4  # a metacell's counts are float sums: integers within this relative tolerance


def resolve_counts_layer(handler: DataHandler, layer: str | None) -> str | None:
    """Return the layer holding counts: ``layer`` when given, else ``layers["counts"]`` for metacells.

    The rule of :func:`scmetacell.data.resolve_counts_key`: with ``layer=None``, ``layers["counts"]``
    when it exists and either ``uns["metacell"]`` exists (an object made by
    :func:`scmetacell.tl.metacell`: ``X`` holds log means) or the first rows of ``X`` are not counts;
    otherwise ``X``.
    """
    return resolve_counts_key(
        handler, layer, arg="layer", metacells=True, head_rows=512, tol=COUNTS_TOL, required=False
    )


def _check_counts(block: sp.csr_matrix, layer: str | None, layer_arg: str | None) -> None:
    problem = counts_problem(block.data, tol=COUNTS_TOL)
    if problem is None:
        return
    kind, value = problem
    bad = f"negative values (min {value:g})" if kind == "negative" else f"non-integer values (e.g. {value:g})"
    name = "X" if layer is None else f"layers[{layer!r}]"
    raise ValueError(
        f"layer={layer_arg!r}: {name} does not hold counts ({bad}); QC needs raw counts "
        "(or a metacell's summed counts): pass layer= the counts layer, e.g. layer='counts'."
    )


# ---------------------------------------------------------------------------- chunked passes
def _axis_sums(block: sp.csr_matrix, axis: int) -> np.ndarray:
    # integers sum exactly in scipy's int64; floats (summed counts of metacells) in float64
    dtype = None if np.issubdtype(block.dtype, np.integer) else np.float64
    return np.asarray(block.sum(axis=axis, dtype=dtype), dtype=np.float64).ravel()


def _metrics_pass(src, mt: np.ndarray, ribo: np.ndarray, layer, layer_arg, chunk_size, progress):
    n_obs, n_vars = src.shape
    total = np.zeros(n_obs)
    n_genes = np.zeros(n_obs, dtype=np.int64)
    tot_mt = np.zeros(n_obs)
    tot_ribo = np.zeros(n_obs)
    g_total = np.zeros(n_vars)
    g_cells = np.zeros(n_vars, dtype=np.int64)
    mt_idx, ribo_idx = np.flatnonzero(mt), np.flatnonzero(ribo)
    for start, stop, block in src.iter_chunks(chunk_size, progress=progress, desc="QC metrics"):
        if not block.has_canonical_format:  # never change rows a source may share
            block = block.copy()
            block.sum_duplicates()
        _check_counts(block, layer, layer_arg)
        if not (block.data > 0).all():  # explicit zeros are not detections
            block = block.copy()
            block.eliminate_zeros()
        total[start:stop] = _axis_sums(block, 1)
        n_genes[start:stop] = np.diff(block.indptr)
        tot_mt[start:stop] = _axis_sums(block[:, mt_idx], 1)
        tot_ribo[start:stop] = _axis_sums(block[:, ribo_idx], 1)
        g_total += _axis_sums(block, 0)
        g_cells += np.bincount(block.indices, minlength=n_vars)
    return total, n_genes, tot_mt, tot_ribo, g_total, g_cells


def _detected_in(src, cells: np.ndarray, chunk_size, progress, *, all_cells: np.ndarray) -> np.ndarray:
    """Cells of ``cells`` (a mask) in which each gene is detected (``all_cells``: in every cell)."""
    if cells.all():
        return all_cells.copy()
    out = np.zeros(src.n_vars, dtype=np.int64)
    if not cells.any():
        return out
    for start, stop, block in src.iter_chunks(chunk_size, progress=progress, desc="QC genes"):
        keep = cells[start:stop]
        if not keep.any():
            continue
        nnz_keep = np.repeat(keep, np.diff(block.indptr)) & (block.data > 0)
        out += np.bincount(block.indices[nnz_keep], minlength=src.n_vars)
    return out


def _scrublet(
    src, cells: np.ndarray, random_state: int, obs_names, threshold: float | None
) -> tuple[np.ndarray, np.ndarray]:
    import anndata as ad
    import scanpy as sc

    idx = np.flatnonzero(cells)
    score = np.full(src.n_obs, np.nan)
    predicted = np.zeros(src.n_obs, dtype=bool)
    if idx.size < 50:
        logg.warning(f"doublet_method='scrublet': only {idx.size} cells pass QC; doublets not scored.")
        return score, predicted
    sub = ad.AnnData(X=src.take(idx).astype(np.float32))
    sub.obs_names = pd.Index(obs_names[idx]).astype(str)
    sc.pp.scrublet(sub, random_state=random_state, threshold=threshold, verbose=False)
    score[idx] = sub.obs["doublet_score"].to_numpy()
    predicted[idx] = sub.obs["predicted_doublet"].fillna(False).to_numpy(dtype=bool)
    return score, predicted


# ---------------------------------------------------------------------------- public
