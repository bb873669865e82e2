"""Resolve AnnData vs. MuData once, and write results back to both places (scirpy's DataHandler)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _logging as logg


def update_mudata(mdata: Any) -> None:
    """``mdata.update()`` without mudata 0.3's FutureWarning about pulling columns."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, message=r".*\.update\(\).*")
        mdata.update()


def is_mudata(obj: Any) -> bool:
    # avoid importing mudata unless the object might be one
    return type(obj).__name__ == "MuData" and hasattr(obj, "mod")


class DataHandler:
    """Resolve the AnnData a function works on, from an AnnData or a MuData modality.

    Parameters
    ----------
    data
        An :class:`~anndata.AnnData` or a :class:`~mudata.MuData`.
    mod
        Modality of a MuData to work on; ignored for an AnnData.

    Attributes
    ----------
    adata
        The AnnData (the modality for a MuData).
    mdata
        The MuData, or ``None``.
    mod
        The modality name, or ``None`` for an AnnData.
    """

    def __init__(self, data: Any, mod: str | None = "rna"):
        if isinstance(data, DataHandler):
            self.adata, self.mdata, self.mod = data.adata, data.mdata, data.mod
            return
        if is_mudata(data):
            if mod is None:
                raise ValueError("mod: a MuData needs a modality name (e.g. mod='rna').")
            if mod not in data.mod:
                raise KeyError(f"mod={mod!r}: no such modality in the MuData; it has {list(data.mod)}.")
            self.mdata = data
            self.adata = data.mod[mod]
            self.mod = mod
        elif isinstance(data, AnnData):
            self.mdata = None
            self.adata = data
            self.mod = None
        else:
            raise TypeError(f"data: expected an AnnData or a MuData, got {type(data).__name__}.")

    # ------------------------------------------------------------------ access
    @property
    def is_mudata(self) -> bool:
        """Whether the input was a MuData."""
        return self.mdata is not None

    @property
    def data(self):
        """The object the user passed (MuData or AnnData)."""
        return self.mdata if self.mdata is not None else self.adata

    def matrix(self, layer: str | None = None, *, arg: str = "layer"):
        """Return ``X`` (``layer`` is ``None`` or ``"X"``) or ``layers[layer]``, with a clear error."""
        if layer is None or layer == "X":
            if self.adata.X is None:
                raise ValueError(f"{arg}: the AnnData{self._where()} has no X.")
            return self.adata.X
        if layer not in self.adata.layers:
            raise KeyError(
                f"{arg}={layer!r}: no such layer{self._where()}; "
                f"layers are {list(self.adata.layers)} (or 'X')."
            )
        return self.adata.layers[layer]

    def var_mask(
        self, key: str | Sequence[str] | np.ndarray | None, *, arg: str = "hvg_key"
    ) -> np.ndarray | None:
        """Resolve a gene selection: a boolean ``var`` column name, a boolean mask or a list of gene names."""
        if key is None:
            return None
        var = self.adata.var
        if isinstance(key, str):
            if key not in var.columns:
                raise KeyError(
                    f"{arg}={key!r}: no such column in var{self._where()}; columns are {list(var.columns)}."
                )
            col = var[key]
            if col.dtype != bool:
                if col.isna().any() or not set(pd.unique(col)).issubset({0, 1}):
                    raise ValueError(f"{arg}={key!r}: var column must be boolean, got dtype {col.dtype}.")
            return col.to_numpy().astype(bool)
        arr = np.asarray(key)
        if arr.dtype == bool:
            if arr.shape != (self.adata.n_vars,):
                raise ValueError(
                    f"{arg}: boolean mask has shape {arr.shape}, expected ({self.adata.n_vars},)."
                )
            return arr
        names = pd.Index(arr.astype(str))
        missing = names.difference(self.adata.var_names)
        if len(missing):
            raise KeyError(
                f"{arg}: {len(missing)} genes not in var_names{self._where()}, e.g. {list(missing[:5])}."
            )
        return self.adata.var_names.isin(names)

    def obs_column(self, key: str, *, arg: str = "key") -> pd.Series:
        """Return ``obs[key]`` of the AnnData (falling back to ``mdata.obs``), with a clear error."""
        if key in self.adata.obs.columns:
            return self.adata.obs[key]
        if self.mdata is not None and key in self.mdata.obs.columns:
            return self.mdata.obs[key].reindex(self.adata.obs_names)
        raise KeyError(f"{arg}={key!r}: no such column in obs{self._where()}.")

    # ------------------------------------------------------------------ write-back
    def set_obs(self, key: str, values: Any) -> None:
        """Write ``values`` to ``adata.obs[key]`` and, for a MuData, to ``mdata.obs[f"{mod}:{key}"]``."""
        self.adata.obs[key] = values
        if self.mdata is not None:
            col = self.adata.obs[key]
            self.mdata.obs[f"{self.mod}:{key}"] = col.reindex(self.mdata.obs_names)
            logg.debug(
                f"    added obs[{key!r}] to modality {self.mod!r} and mdata.obs[{self.mod + ':' + key!r}]"
            )

    def set_obsm(self, key: str, values: Any) -> None:
        """Write ``values`` to ``adata.obsm[key]`` (the modality's, for a MuData)."""
        self.adata.obsm[key] = values

    def set_uns(self, key: str, values: Any) -> None:
        """Write ``values`` to ``adata.uns[key]`` (the modality's, for a MuData)."""
        self.adata.uns[key] = values

    def set_mudata_obs(self, key: str, values: pd.Series) -> None:
        """Write ``values`` (indexed by cell names) to ``mdata.obs[key]`` of a MuData (the joint column)."""
        self.mdata.obs[key] = values.reindex(self.mdata.obs_names)

    def set_mudata_uns(self, key: str, values: Any) -> None:
        """Write ``values`` to ``mdata.uns[key]`` of a MuData."""
        self.mdata.uns[key] = values

    def _where(self) -> str:
        return f" of modality {self.mod!r}" if self.mod is not None else ""
