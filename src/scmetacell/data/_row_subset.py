"""A :class:`CellSource` over given rows of another source (e.g. the cells paired across modalities)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._source import CellSource


class RowSubset(CellSource):
    """Rows ``rows`` (in that order) of ``source``: row ``i`` here is row ``rows[i]`` of ``source``."""

    def __init__(self, source: CellSource, rows: np.ndarray):
        self.source = source
        self.rows = np.asarray(rows, dtype=np.int64)
        self.identity = self.rows.size == source.n_obs and bool(
            np.array_equal(self.rows, np.arange(source.n_obs))
        )
        self.n_obs, self.n_vars = int(self.rows.size), source.n_vars

    @property
    def obs_names(self) -> pd.Index:
        return self.source.obs_names[self.rows]

    @property
    def var_names(self) -> pd.Index:
        return self.source.var_names

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        if self.identity:
            return self.source.read_rows(start, stop)
        return self.source.take(self.rows[start:stop])
