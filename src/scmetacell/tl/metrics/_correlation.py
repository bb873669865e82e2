"""MetaQ's correlation-based compactness and separation, on a random sample of cells."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ...data import as_source
from ._partition import encode_partition

_ROW_BLOCK = 1024
_DENSE_MAX = 25_000_000  # sample cells x genes densified when at most this (200 MB of float64)


def correlation_metrics(
    counts: Any,
    groups: Any,
    *,
    layer: str | None = None,
    genes: np.ndarray | None = None,
    n_sample: int | None = 5000,
    random_state: int = 0,
) -> pd.DataFrame:
    """MetaQ's compactness and separation from cell-cell Pearson correlations (on a sample).

    On ``log1p(CP10k)`` of the counts of ``genes`` (MetaQ uses its HVGs), ``C`` = the Pearson
    correlation between cells (over genes), ``N`` cells and ``M`` non-empty metacells:

    - ``compactness_m = mean(C[m, m]) * |m| / N * M`` (diagonal included; higher is better);
    - ``separation_m = mean_{i in m}(1 - max_{j not in m} C_ij) * |m| / N * M`` (higher is better).

    These are quadratic in the cells: they are computed on a uniform random sample of at most
    ``n_sample`` non-outlier cells, with ``N``, ``M`` and the metacells restricted to the sample
    (all cells when there are fewer). Correlations are formed in blocks of rows (never the whole
    ``N × N`` matrix at once), from the standardised rows when the sample × genes fits in 200 MB,
    else from the sparse normalised counts. A cell whose expression is constant
    over the genes has no correlation; it gets 0 with every cell. Metacells outside the sample get
    ``NaN``; with a single metacell in the sample the separation is ``NaN``.

    Parameters
    ----------
    counts
        Raw counts: an AnnData (``X`` or ``layer``), a matrix or a :class:`~scmetacell.data.CellSource`.
    groups
        Metacell id per cell (``NaN``/``None``, or ``-1`` for numeric ids, = outlier).
    layer
        Layer of an AnnData holding the counts (``None`` = ``X``).
    genes
        Boolean mask of the genes to use (e.g. ``adata.var['highly_variable']``); ``None`` = all.
    n_sample
        Largest number of cells to use; ``None`` = all cells (quadratic time).
    random_state
        Seed of the sample.

    Returns
    -------
    Table indexed by metacell id with columns ``compactness_metaq`` and ``separation_metaq``.

    Examples
    --------
    >>> import scmetacell as scm
    >>> adata = scm.datasets.pbmc3k()
    >>> res = scm.tl.correlation_metrics(adata, adata.obs["cell_type"], n_sample=500)
    >>> list(res.columns)
    ['compactness_metaq', 'separation_metaq']
    """
    source = as_source(counts, layer)
    codes, ids = encode_partition(groups)
    if codes.size != source.n_obs:
        raise ValueError(f"groups: {codes.size} ids for {source.n_obs} cells of the counts.")
    cells = np.flatnonzero(codes >= 0)
    if n_sample is not None and n_sample < 1:
        raise ValueError(f"n_sample: must be positive or None, got {n_sample}.")
    if n_sample is not None and cells.size > n_sample:
        rng = np.random.default_rng(random_state)
        cells = np.sort(rng.choice(cells, size=n_sample, replace=False))
    x = sp.csr_matrix(source.take(cells), dtype=np.float64)
    if genes is not None:
        mask = np.asarray(genes, dtype=bool)
        if mask.shape != (source.n_vars,):
            raise ValueError(f"genes: mask has shape {mask.shape}, expected ({source.n_vars},).")
        if not mask.any():
            raise ValueError("genes: the mask selects no gene.")
        x = x[:, mask]
    if x.nnz and x.data.min() < 0:
        raise ValueError("counts: found negative values; correlations need raw, non-negative counts.")
    lib = np.ravel(x.sum(axis=1))
    scale = np.zeros_like(lib)
    np.divide(1e4, lib, out=scale, where=lib > 0)
    x = sp.diags(scale) @ x
    x.data = np.log1p(x.data)
    n_genes = x.shape[1]
    # Pearson over genes: row means mu_i and norms s_i of the centred rows
    mu = np.ravel(x.sum(axis=1)) / n_genes
    sq = np.ravel(x.multiply(x).sum(axis=1))
    norm = np.sqrt(np.maximum(sq - n_genes * mu * mu, 0.0))
    inv_norm = np.zeros_like(norm)
    np.divide(1.0, norm, out=inv_norm, where=norm > 0)

    local_codes, local_ids = encode_partition(codes[cells])
    n_cells, n_groups = cells.size, len(local_ids)
    sizes = np.bincount(local_codes, minlength=n_groups)
    member = sp.csr_matrix((np.ones(n_cells), (np.arange(n_cells), local_codes)), shape=(n_cells, n_groups))
    within = np.zeros(n_groups)
    sep_sum = np.zeros(n_groups)
    dense = n_cells * n_genes <= _DENSE_MAX
    if dense:  # standardised rows, one BLAS product per block
        z = (x.toarray() - mu[:, None]) * inv_norm[:, None]
    else:  # sparse rows: C_ij = (x_i . x_j - G mu_i mu_j) / (s_i s_j)
        xt = x.T.tocsr()
    for start in range(0, n_cells, _ROW_BLOCK):
        stop = min(start + _ROW_BLOCK, n_cells)
        if dense:
            corr = z[start:stop] @ z.T
        else:
            dot = (x[start:stop] @ xt).toarray()
            corr = (dot - n_genes * np.outer(mu[start:stop], mu)) * np.outer(inv_norm[start:stop], inv_norm)
        own = local_codes[start:stop]
        own_sum = np.asarray(corr @ member)[np.arange(stop - start), own]
        within += np.bincount(own, weights=own_sum, minlength=n_groups)
        same = own[:, None] == local_codes[None, :]
        corr[same] = -np.inf
        best = corr.max(axis=1)
        sep_sum += np.bincount(own, weights=1.0 - best, minlength=n_groups)
    factor = sizes / n_cells * n_groups
    comp = within / sizes.astype(np.float64) ** 2 * factor
    sep = sep_sum / sizes * factor if n_groups > 1 else np.full(n_groups, np.nan)
    res = pd.DataFrame(np.nan, index=ids, columns=["compactness_metaq", "separation_metaq"])
    pos = np.asarray(local_ids, dtype=np.int64)  # the sample's metacells, as codes of all metacells
    res.iloc[pos, 0] = comp
    res.iloc[pos, 1] = sep
    return res
