"""Raw counts: the one rule for which layer holds them and the one check of a block of them.

- :func:`counts_problem`: what, if anything, keeps a block's values from being counts (NaN / Inf,
  negative, non-integer), with ``tol`` the relative tolerance of "integer" (0: exact integers, the
  metacell model's input; 1e-4: also a metacell's float-summed counts, for QC).
- :func:`check_counts_block`: the model's check (raises naming the argument and the row).
- :func:`resolve_counts_key`: the layer of counts. The rule: the key given (``'X'`` → ``None``);
  else, for metacells (``metacells=True`` and ``uns['metacell']``, whose ``X`` holds log means),
  ``layers['counts']``; else ``X`` when its first rows are counts; else ``layers['counts']``; else
  ``None`` or an error (``required``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from ._handler import DataHandler
from ._source import AnnDataSource

COUNTS_LAYER = "counts"


def counts_problem(data: np.ndarray, *, tol: float = 0.0) -> tuple[str, float] | None:
    """Return ``None`` when ``data`` are counts, else ``(kind, example)``.

    ``kind``: ``'nan'`` (NaN / Inf), ``'negative'`` or ``'non-integer'``.
    """
    if data.size == 0 or (np.issubdtype(data.dtype, np.integer) and data.min() >= 0):
        return None
    floating = np.issubdtype(data.dtype, np.floating)
    if floating and not np.all(np.isfinite(data)):
        return "nan", float("nan")
    if data.min() < 0:
        return "negative", float(data.min())
    if floating:
        if tol:
            v = data.astype(np.float64, copy=False)
            off = np.abs(v - np.rint(v)) > tol * np.maximum(1.0, np.abs(v))
        else:
            off = data != np.round(data)
        if off.any():
            return "non-integer", float(data[off][0])
    return None


def check_counts_block(block: sp.csr_matrix, *, arg: str, start: int) -> None:
    """Raise a ``ValueError`` naming ``arg`` unless ``block`` holds non-negative integers."""
    problem = counts_problem(block.data)
    if problem is None:
        return
    kind, value = problem
    if kind == "nan":
        raise ValueError(f"{arg}: raw counts contain NaN or Inf (cells from row {start} on).")
    if kind == "negative":
        raise ValueError(f"{arg}: raw counts must be non-negative; found {value:g} (cells from row {start}).")
    raise ValueError(
        f"{arg}: raw counts must be integers, found {value:g} (cells from row {start}); pass the layer "
        "holding raw UMI counts (e.g. counts_key='counts')."
    )


def resolve_counts_key(
    handler: DataHandler,
    key: str | None,
    *,
    arg: str = "counts_key",
    metacells: bool = False,
    head_rows: int = 2048,
    tol: float = 0.0,
    required: bool = True,
) -> str | None:
    """Return the layer holding raw counts (``None`` = ``X``) by the module's rule (see its docstring)."""
    if key is not None:
        handler.matrix(key, arg=arg) if arg else handler.matrix(key)
        return None if key == "X" else key
    adata = handler.adata
    has_layer = COUNTS_LAYER in adata.layers
    if metacells and has_layer and "metacell" in adata.uns:
        return COUNTS_LAYER
    if adata.X is not None and adata.n_obs > 0 and (has_layer or required):
        head = AnnDataSource(adata, None).read_rows(0, min(adata.n_obs, head_rows))
        if counts_problem(head.data, tol=tol) is None:
            return None
    if has_layer:
        return COUNTS_LAYER
    if not required:
        return None
    raise ValueError(
        "counts_key=None: X does not hold raw counts (non-negative integers) and there is no "
        f"'counts' layer; pass counts_key=<layer with raw counts>. Layers: {list(adata.layers)}."
    )
