"""Input resolution and validation for the metacell functions (nothing here mutates the user's data)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..data import AnnDataSource, DataHandler
from ..model._preprocess import check_counts_block

MIN_HVG = 10


def resolve_counts_key(handler: DataHandler, counts_key: str | None) -> str | None:
    """``counts_key`` as given, or ``None`` (= X) when X holds raw counts, else ``"counts"`` if present."""
    if counts_key is not None:
        handler.matrix(counts_key, arg="counts_key")
        return None if counts_key == "X" else counts_key
    src = AnnDataSource(handler.adata, None) if handler.adata.X is not None else None
    if src is not None and src.n_obs > 0:
        try:
            check_counts_block(src.read_rows(0, min(src.n_obs, 2048)), arg="X", start=0)
            return None
        except ValueError:
            pass
    if "counts" in handler.adata.layers:
        return "counts"
    raise ValueError(
        "counts_key=None: X does not hold raw counts (non-negative integers) and there is no "
        f"'counts' layer; pass counts_key=<layer with raw counts>. Layers: {list(handler.adata.layers)}."
    )


def resolve_datatypes(datatypes: str | Sequence[str] | None, mod: str | None) -> list[str]:
    """Accept ``["rna"]`` or ``[mod]``; several modalities are not implemented yet."""
    if datatypes is None:
        return ["rna"]
    dts = [datatypes] if isinstance(datatypes, str) else list(datatypes)
    if len(dts) > 1:
        raise NotImplementedError(
            f"datatypes={dts!r}: metacells from several modalities at once are not implemented yet; "
            "pass datatypes=['rna']."
        )
    if len(dts) == 0 or dts[0] not in ("rna", mod):
        raise ValueError(f"datatypes={dts!r}: only ['rna'] (the modality `mod`) is supported.")
    return dts


def resolve_groups(handler: DataHandler, batch_key: str | None) -> tuple[np.ndarray, list[str]]:
    """Group code of each cell (``0 .. G-1``) and the group names (one group without ``batch_key``)."""
    n = handler.adata.n_obs
    if batch_key is None:
        return np.zeros(n, dtype=np.int8), []
    col = handler.obs_column(batch_key, arg="batch_key")
    if col.isna().any():
        raise ValueError(f"batch_key={batch_key!r}: {int(col.isna().sum())} cells have no value.")
    codes, uniques = pd.factorize(col.astype(str), sort=True)
    # the smallest integer type: one code per cell is held for the whole run
    return codes.astype(np.min_scalar_type(-max(len(uniques), 1))), [str(u) for u in uniques]


def allocate_metacells(
    group_sizes: np.ndarray, n_metacell: int, *, batch_key: str | None, names: list[str]
) -> np.ndarray:
    """Metacells per group, proportional to the group's cells (largest remainder), at least 1 each."""
    sizes = np.asarray(group_sizes, dtype=np.float64)
    if sizes.size == 1:
        return np.array([n_metacell], dtype=np.int64)
    quota = n_metacell * sizes / sizes.sum()
    k = np.maximum(np.floor(quota).astype(np.int64), 1)
    rest = n_metacell - int(k.sum())
    order = np.argsort(-(quota - np.floor(quota)), kind="stable")
    if rest > 0:
        k[order[:rest]] += 1
    while rest < 0:  # the minimum of 1 overshot: take back from the largest remaining quotas
        j = int(np.argmax(np.where(k > 1, k - quota, -np.inf)))
        k[j] -= 1
        rest += 1
    for g, (kg, ng) in enumerate(zip(k, group_sizes, strict=True)):
        if ng < kg:
            raise ValueError(
                f"batch_key={batch_key!r}: sample {names[g]!r} has {int(ng)} cells, fewer than its share of "
                f"{int(kg)} metacells; lower n_metacell (or raise gamma) or drop that sample."
            )
    return k


def resolve_n_metacell(n_obs: int, n_metacell: int | None, gamma: float | None, default_gamma: float) -> int:
    """Return the number of metacells from ``n_metacell`` or ``gamma`` (cells per metacell), validated."""
    if n_metacell is not None and gamma is not None:
        raise ValueError("n_metacell, gamma: give one of them, not both.")
    if n_metacell is None:
        g = default_gamma if gamma is None else gamma
        if not np.isfinite(g) or g <= 1:
            raise ValueError(f"gamma={g!r}: cells per metacell must be > 1.")
        n_metacell = max(1, round(n_obs / g))
    if isinstance(n_metacell, bool) or int(n_metacell) != n_metacell:
        raise ValueError(f"n_metacell={n_metacell!r}: must be an integer.")
    n_metacell = int(n_metacell)
    if n_metacell < 1 or n_metacell >= n_obs:
        raise ValueError(f"n_metacell={n_metacell}: must be at least 1 and fewer than the {n_obs} cells.")
    return n_metacell


def h5ad_safe(value: Any) -> Any:
    """Convert ``value`` into something ``anndata`` writes to ``uns`` (``None`` → ``"None"``)."""
    if value is None:
        return "None"
    if isinstance(value, dict):
        return {str(k): h5ad_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        arr = np.asarray([h5ad_safe(v) for v in value])
        return arr.astype(str) if arr.dtype.kind in "OU" else arr
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    return value
