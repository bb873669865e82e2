"""Matrix inputs of :func:`scmetacell.tl.metacell`: ``.mmm`` paths, open matrices and cell sources.

AnnData / MuData inputs (in memory, backed or dask) go through :class:`~scmetacell.data.DataHandler`;
the other accepted inputs are read through a :class:`~scmetacell.data.CellSource` and represented by a
placeholder AnnData (no ``X``) holding the cell annotations ``obs`` and the gene names.
"""

from __future__ import annotations

from os import PathLike
from typing import Any

import pandas as pd
from anndata import AnnData

from ._open import as_source
from ._source import CellSource


def is_matrix_input(data: Any) -> bool:
    """Whether ``data`` is a path, an open ``.mmm`` matrix / collection or a :class:`CellSource`."""
    from ..io import MMMatrixBase

    return isinstance(data, (str, PathLike, MMMatrixBase, CellSource))


def resolve_matrix_input(data: Any, obs: pd.DataFrame | None) -> tuple[CellSource, AnnData]:
    """Open ``data`` as a cell source and build the placeholder AnnData (``obs`` and gene names only).

    Raises ``ValueError`` naming ``data`` / ``obs`` when the path is not a ``.mmm`` matrix or ``obs``
    does not have one row per cell.
    """
    try:
        src = as_source(data)
    except TypeError as err:
        raise ValueError(
            f"data={data!r}: not a .mmm file, .mmm shard directory or metacell.storage directory; "
            "open an .h5ad with anndata.read_h5ad(path, backed='r') and pass the AnnData."
        ) from err
    if obs is None:
        obs_df = pd.DataFrame(index=pd.Index(src.obs_names, dtype=str))
    else:
        if not isinstance(obs, pd.DataFrame):
            raise ValueError(f"obs: a pandas DataFrame expected, got {type(obs).__name__}.")
        if obs.shape[0] != src.n_obs:
            raise ValueError(f"obs: has {obs.shape[0]} rows but the matrix has {src.n_obs} cells.")
        obs_df = obs.copy(deep=False)  # the caller's columns are only read: no per-cell copy
        if not (obs.index.dtype == object and pd.api.types.infer_dtype(obs.index, skipna=False) == "string"):
            obs_df.index = pd.Index(obs_df.index.astype(str))
    var = pd.DataFrame(index=pd.Index(src.var_names, dtype=str))
    return src, AnnData(obs=obs_df, var=var)


def in_memory(adata: AnnData, counts_layer: str | None, lognorm_key: str | None) -> bool:
    """Whether the matrices the model reads are in memory (numpy / scipy), not backed or dask."""
    import numpy as np
    import scipy.sparse as sp

    if getattr(adata, "isbacked", False):
        return False
    for key in (counts_layer, lognorm_key):
        m = adata.X if key in (None, "X") else adata.layers[key]
        if not (sp.issparse(m) or isinstance(m, np.ndarray)):
            return False
    return True
