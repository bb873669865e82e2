"""Input resolution and validation for the metacell functions (nothing here mutates the user's data).

Samples (``batch_key``) are called "groups" in the model and the assignment (``cell_group``,
``code_group``): metacells are built within each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._handler import DataHandler

MIN_HVG = 10


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


def sample_codes(col: pd.Series, batch_key: str) -> tuple[np.ndarray, list[str]]:
    """Sample code of each cell (``0 .. G-1``, sorted names) from the ``batch_key`` column and the names."""
    if col.isna().any():
        raise ValueError(f"batch_key={batch_key!r}: {int(col.isna().sum())} cells have no value.")
    codes, uniques = pd.factorize(col.astype(str), sort=True)
    # the smallest integer type: one code per cell is held for the whole run
    return codes.astype(np.min_scalar_type(-max(len(uniques), 1))), [str(u) for u in uniques]


def resolve_groups(
    handler: DataHandler, batch_key: str | None, rows: np.ndarray | None = None
) -> tuple[np.ndarray, list[str]]:
    """Return the sample code of each cell (or of the cells ``rows``) and the sample names."""
    n = handler.adata.n_obs if rows is None else len(rows)
    if batch_key is None:
        return np.zeros(n, dtype=np.int8), []
    col = handler.obs_column(batch_key, arg="batch_key")
    return sample_codes(col if rows is None else col.iloc[rows], batch_key)


def match_groups(col: pd.Series | None, groups: np.ndarray, batch_key: str) -> np.ndarray | None:
    """Return new cells' codes among the samples ``groups`` of trained metacells (``None``: no column)."""
    if col is None:
        return None
    col = col.astype(str)
    unknown = ~col.isin(groups)
    if unknown.any():
        raise ValueError(
            f"data: obs[{batch_key!r}] has samples without metacells, e.g. {list(col[unknown].unique()[:3])}."
        )
    return pd.Index(groups).get_indexer(col).astype(np.int64)


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
