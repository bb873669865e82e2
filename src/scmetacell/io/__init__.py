"""``scmetacell.io``: the native ``.mmm`` format of ``metacell.storage``, memory-mapped.

``.mmm`` ("METACELL SPARSE MEMORY MAPPED MATRIX VERSION 0") stores non-negative integer counts per
profile (cell) as byte pairs, with an offsets index for random access to rows.

- :func:`write_mmmatrix` / :func:`read_mmmatrix`: AnnData (or a matrix) to and from ``.mmm``
  (canonical bytes; atomic writes; int32 counts in a CSR ``X``).
- :func:`open_mmm`, :class:`MMMatrix`: memory-mapped access (rows by range or index, chunks, the old
  ``MemoryMappedMatrix`` API: ``profiles_count``, ``genes_count``, ``entries_count()``,
  ``add_profile_data()``, ``to_numpy_matrix()``).
- :class:`MMMWriter`: incremental writing, block by block (atomic; sharded as needed).
- :class:`MMMCollection`: a directory of ``.mmm`` shards read as one matrix (written automatically past
  the 4 GiB limit of one file).
- :func:`read_mmm_container` / :func:`write_mmm_container`: the old ``metacell.storage`` batch
  directory (YAML + ``matrix.umis.mmm`` / ``gp.umis.mmm`` + gene names + barcodes).
- Errors: :class:`MMMFormatError` (a ``ValueError``; subclasses per problem, with the byte offset) and
  :class:`MMMWriteError`.
"""

from ._collection import MMMCollection
from ._container import read_mmm_container, write_mmm_container
from ._errors import (
    MMMCollectionError,
    MMMFormatError,
    MMMGeneIndexError,
    MMMIndexError,
    MMMMagicError,
    MMMPaddingError,
    MMMTruncatedError,
    MMMValueError,
    MMMWriteError,
)
from ._mmmatrix import MMMatrix, MMMatrixBase
from ._reader import open_mmm, read_mmmatrix
from ._stream import MMMWriter
from ._writer import write_mmmatrix

__all__ = [
    "MMMCollection",
    "MMMCollectionError",
    "MMMFormatError",
    "MMMGeneIndexError",
    "MMMIndexError",
    "MMMMagicError",
    "MMMPaddingError",
    "MMMTruncatedError",
    "MMMValueError",
    "MMMWriteError",
    "MMMWriter",
    "MMMatrix",
    "MMMatrixBase",
    "open_mmm",
    "read_mmm_container",
    "read_mmmatrix",
    "write_mmm_container",
    "write_mmmatrix",
]
