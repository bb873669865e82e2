"""A partition of cells (metacell id per cell) as integer codes (outliers ``-1``), its sizes and indicator."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp


def encode_partition(groups: Any, *, arg: str = "groups") -> tuple[np.ndarray, pd.Index]:
    """Return ``(codes, ids)``: a code in ``0..M-1`` per cell (``-1`` = outlier) and the ``M`` metacell ids.

    Outliers are missing values (``NaN``/``None``/``pd.NA``) and, for numeric ids, ``-1``
    (MetaCell-2's convention). Only non-empty metacells get a code; ids are sorted when they can be
    (the category order for a categorical).
    """
    if isinstance(groups, pd.Series | pd.Index | pd.Categorical):
        s = pd.Series(groups)
    else:
        arr = np.asarray(groups)
        if arr.ndim != 1:
            raise ValueError(f"{arg}: expected one metacell id per cell (1-d), got shape {arr.shape}.")
        s = pd.Series(arr)
    s = s.reset_index(drop=True)
    if isinstance(s.dtype, pd.CategoricalDtype):
        cats = s.cat.categories
        if pd.api.types.is_numeric_dtype(cats.dtype) and (cats == -1).any():
            s = s.cat.remove_categories([-1])
        s = s.cat.remove_unused_categories()
        codes = s.cat.codes.to_numpy().astype(np.int64)
        return codes, pd.Index(s.cat.categories)
    missing = s.isna().to_numpy()
    if pd.api.types.is_numeric_dtype(s.dtype):
        missing |= s.eq(-1).fillna(False).to_numpy(dtype=bool)
    codes = np.full(len(s), -1, dtype=np.int64)
    present = s[~missing]
    try:
        c, uniques = pd.factorize(present, sort=True)
    except TypeError:  # mixed, unsortable ids
        c, uniques = pd.factorize(present, sort=False)
    codes[~missing] = c
    return codes, pd.Index(uniques)


def indicator(codes: np.ndarray, n_groups: int, weights: np.ndarray | None = None) -> sp.csr_matrix:
    """Sparse ``n_groups × n_cells`` membership matrix (entries ``weights``, default 1), outliers skipped."""
    cells = np.flatnonzero(codes >= 0)
    w = np.ones(cells.size) if weights is None else np.asarray(weights, dtype=np.float64)[cells]
    return sp.csr_matrix((w, (codes[cells], cells)), shape=(n_groups, codes.size))


def partition_sizes(codes: np.ndarray, n_groups: int) -> np.ndarray:
    """Cells per group (outliers left out)."""
    return np.bincount(codes[codes >= 0], minlength=n_groups)
