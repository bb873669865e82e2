"""Opening and reading ``.mmm`` files and sharded collections."""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd
from anndata import AnnData

from ._collection import MMMCollection
from ._mmmatrix import MMMatrix, MMMatrixBase
from ._writer import COLLECTION_FILE


def open_mmm(path: str | PathLike) -> MMMatrixBase:
    """Open a ``.mmm`` file (:class:`MMMatrix`) or a shard directory (:class:`MMMCollection`), memory-mapped.

    Parameters
    ----------
    path
        A ``.mmm`` file, or a directory written by :func:`write_mmmatrix` past the 4 GiB limit
        (holding ``mmm_collection.json``).

    Returns
    -------
    The open matrix; use it as a context manager, or call ``close()``.

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> import scmetacell as scm
    >>> path = os.path.join(tempfile.mkdtemp(), "m.mmm")
    >>> scm.io.write_mmmatrix(path, np.eye(3, dtype=int))
    >>> with scm.io.open_mmm(path) as m:
    ...     m.take([2, 0]).toarray()
    array([[0, 0, 1],
           [1, 0, 0]], dtype=int32)
    """
    p = Path(path)
    if p.is_dir():
        if not (p / COLLECTION_FILE).is_file():
            raise FileNotFoundError(
                f"path={str(p)!r}: a directory without {COLLECTION_FILE} (not a .mmm collection)."
            )
        return MMMCollection(p)
    if not p.exists():
        raise FileNotFoundError(f"path={str(p)!r}: no such file.")
    return MMMatrix(p)


def read_mmmatrix(path: str | PathLike, *, dtype: np.dtype | type = np.int32) -> AnnData:
    """Read a ``.mmm`` file (or a shard directory) into an AnnData of cells × genes.

    Parameters
    ----------
    path
        A ``.mmm`` file or a shard directory written by :func:`write_mmmatrix`.
    dtype
        The dtype of ``X``'s values: ``int32`` (default; counts as in the real data files) or any
        numpy dtype they are cast to (e.g. ``float32``).

    Returns
    -------
    An AnnData with ``X`` a ``profiles × genes`` CSR matrix (the transpose of the old
    ``to_numpy_matrix()``). Cell and gene names come from the old container's files beside a
    ``matrix.*.mmm`` / ``gp.*.mmm`` (``profiles.barcode.txt`` / ``p.barcode.txt``,
    ``genes.name.txt`` / ``g.name.txt``) when present, else they are ``"0", "1", …``.
    A ``genes_count`` above 4,194,304 raises :class:`MMMFormatError` (a corrupted header, almost
    surely; :class:`MMMatrix` still reads such a file's rows).

    Examples
    --------
    >>> import os, tempfile
    >>> import scmetacell as scm
    >>> adata = scm.datasets.pbmc3k()
    >>> path = os.path.join(tempfile.mkdtemp(), "pbmc3k.mmm")
    >>> scm.io.write_mmmatrix(path, adata)
    >>> scm.io.read_mmmatrix(path)
    AnnData object with n_obs × n_vars = 2700 × 32738
    """
    with open_mmm(path) as m:
        X = m.to_csr()
        obs_names, var_names = m.obs_names, m.var_names
    if np.dtype(dtype) != X.dtype:
        X = X.astype(dtype)
    return AnnData(X=X, obs=pd.DataFrame(index=obs_names), var=pd.DataFrame(index=var_names))
