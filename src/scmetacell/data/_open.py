"""``as_source``: any accepted input (AnnData, matrix, ``.mmm`` path or matrix) as a :class:`CellSource`."""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ..io import MMMatrixBase
from ._mmm_source import MMMSource, resolve_mmm_path
from ._source import AnnDataSource, CellSource


def as_source(obj: Any, layer: str | None = None) -> CellSource:
    """Wrap ``obj`` as a :class:`CellSource`.

    ``obj`` is a :class:`CellSource`, an AnnData, a matrix, an open
    :class:`~scmetacell.io.MMMatrix` / :class:`~scmetacell.io.MMMCollection`, or the path (``str`` /
    ``Path``) of a ``.mmm`` file, a ``.mmm`` shard directory or an old ``metacell.storage`` batch
    directory (all an :class:`MMMSource`).
    """
    if isinstance(obj, CellSource):
        return obj
    if isinstance(obj, MMMatrixBase) or resolve_mmm_path(obj) is not None:
        if layer not in (None, "X"):
            raise ValueError(f"layer={layer!r}: a .mmm matrix has no layers.")
        return MMMSource(obj)
    if isinstance(obj, AnnData):
        return AnnDataSource(obj, layer)
    if sp.issparse(obj) or isinstance(obj, np.ndarray) or hasattr(obj, "compute"):
        return AnnDataSource(AnnData(X=obj), None)
    raise TypeError(f"cannot read cells from a {type(obj).__name__}.")
