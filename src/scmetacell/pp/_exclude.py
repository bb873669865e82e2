"""Remove genes that are never expressed (``exprmat``'s ``exclude_nonexisting_variables``)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import _logging as logg
from ..data import DEFAULT_CHUNK_SIZE, DataHandler, as_source, update_mudata


def column_sums(
    adata: Any,
    layer: str | None = None,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool | None = None,
    desc: str = "summing genes",
) -> np.ndarray:
    """Per-gene column sums of ``X`` or ``layers[layer]``, read in chunks of cells (float64)."""
    src = as_source(adata, layer)
    total = np.zeros(src.n_vars, dtype=np.float64)
    for _, _, block in src.iter_chunks(chunk_size, progress=progress, desc=desc):
        total += np.asarray(block.sum(axis=0), dtype=np.float64).ravel()
    return total


def exclude_nonexisting(
    data: Any,
    *,
    mod: str = "rna",
    layer: str | None = None,
    threshold: float = 0.01,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool | None = None,
    inplace: bool = True,
    copy: bool = False,
) -> Any:
    """Remove genes with no expression: column sum of the matrix at most ``threshold``.

    Genes whose total over all cells of ``X`` (or ``layers[layer]``) is ``<= threshold`` are
    removed (``exprmat``'s ``exclude_nonexisting_variables`` uses ``X`` and 0.01). With counts,
    0.01 means "never detected"; with log-normalised means (metacells) it removes genes whose
    summed log expression is negligible. Column sums are computed in one chunked pass over cells.

    Parameters
    ----------
    data
        An :class:`~anndata.AnnData` or a :class:`~mudata.MuData`.
    mod
        Modality of a MuData; ignored for an AnnData.
    layer
        Matrix to sum: ``None`` or ``"X"`` for ``X``, else a key of ``layers``.
    threshold
        Genes whose column sum is ``<= threshold`` are removed. Must be ``>= 0``.
    chunk_size
        Cells read per chunk.
    progress
        Show a progress bar (``None``: follow :attr:`scmetacell.settings.progress_bar`).
    inplace
        Remove the genes from ``data`` (``True``) or only return the mask and the sums (``False``).
    copy
        Return a filtered copy and leave ``data`` untouched (takes the place of ``inplace``).

    Returns
    -------
    ``None`` when ``inplace`` (``data`` is subset; for a MuData the modality is subset and
    ``mdata.update()`` is called); the filtered copy when ``copy=True``; otherwise a tuple
    ``(gene_subset, totals)``: the boolean mask of kept genes and the column sums (as
    :func:`scanpy.pp.filter_genes` returns with ``inplace=False``).

    Examples
    --------
    >>> import scmetacell as scm
    >>> adata = scm.datasets.pbmc3k()
    >>> scm.pp.exclude_nonexisting(adata)
    >>> adata.n_vars
    16634
    """
    if copy and not inplace:
        raise ValueError("copy=True returns a filtered copy; it cannot be combined with inplace=False.")
    if not np.isfinite(threshold) or threshold < 0:
        raise ValueError(f"threshold: must be a finite number >= 0, got {threshold!r}.")
    handler = DataHandler(data, mod=mod)
    handler.matrix(layer)  # clear error for a missing layer before any work
    totals = column_sums(handler.adata, layer, chunk_size=chunk_size, progress=progress)
    keep = totals > threshold
    n_removed = int((~keep).sum())
    if not inplace:
        return keep, totals

    if not copy and getattr(handler.adata, "isbacked", False):
        raise ValueError(
            "inplace: a backed AnnData cannot be subset in place; use inplace=False for the mask "
            "(then adata[:, mask].to_memory()) or load it with adata.to_memory() first."
        )
    if copy:
        data = handler.data.copy()
        handler = DataHandler(data, mod=mod)
    logg.info(f"removed {n_removed} genes with zero expression.")
    if n_removed:
        handler.adata._inplace_subset_var(keep)
        if handler.mdata is not None:
            update_mudata(handler.mdata)
    return data if copy else None
