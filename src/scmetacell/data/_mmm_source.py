"""Cells streamed from a memory-mapped ``.mmm`` file or shard collection (:mod:`scmetacell.io`)."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..io import MMMatrixBase, open_mmm
from ._source import CellSource


class MMMSource(CellSource):
    """A :class:`CellSource` over a ``.mmm`` file or a sharded ``.mmm`` collection.

    Rows are decoded from the memory map on demand (int32 counts); nothing else is held in memory.

    Parameters
    ----------
    matrix
        An open :class:`~scmetacell.io.MMMatrix` / :class:`~scmetacell.io.MMMCollection`, or the path
        of a ``.mmm`` file, a shard directory or an old ``metacell.storage`` batch directory (its
        ``gp.umis.mmm`` / ``matrix.umis.mmm``); a path is opened here and closed by :meth:`close`.

    Examples
    --------
    >>> import os, tempfile
    >>> import scmetacell as scm
    >>> path = os.path.join(tempfile.mkdtemp(), "pbmc3k.mmm")
    >>> scm.io.write_mmmatrix(path, scm.datasets.pbmc3k())
    >>> from scmetacell.data import MMMSource
    >>> with MMMSource(path) as src:
    ...     print(src.shape, src.take([5, 0]).shape)
    (2700, 32738) (2, 32738)
    """

    def __init__(self, matrix: MMMatrixBase | str | PathLike):
        if isinstance(matrix, MMMatrixBase):
            self.matrix, self._owned = matrix, False
        elif isinstance(matrix, (str, PathLike)):
            self.matrix, self._owned = open_mmm(resolve_mmm_path(matrix) or matrix), True
        else:
            raise TypeError(
                f"matrix: an MMMatrix, MMMCollection or a path expected, got {type(matrix).__name__}."
            )
        self.n_obs, self.n_vars = self.matrix.shape

    @property
    def obs_names(self) -> pd.Index:
        return self.matrix.obs_names

    @property
    def var_names(self) -> pd.Index:
        return self.matrix.var_names

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        return self.matrix.read_rows(start, stop)

    def take(self, idx: np.ndarray) -> sp.csr_matrix:
        """Rows ``idx`` (any order, repeats allowed) as CSR, decoded straight from the memory map."""
        return self.matrix.take(np.asarray(idx, dtype=np.int64))

    def close(self) -> None:
        if self._owned:
            self.matrix.close()


def resolve_mmm_path(obj) -> Path | None:
    """Return the ``.mmm`` matrix that the path ``obj`` names, or ``None`` if it names none.

    A ``.mmm`` file, a ``.mmm`` shard directory, or a ``metacell.storage`` batch directory (its UMIs).
    """
    if not isinstance(obj, (str, PathLike)):
        return None
    p = Path(obj)
    if p.suffix == ".mmm" or (p.is_dir() and (p / "mmm_collection.json").is_file()):
        return p
    if p.is_dir():
        for name in ("gp.umis.mmm", "matrix.umis.mmm"):
            if (p / name).exists():
                return p / name
    return None
