"""Input resolution and chunked cell sources (the first steps of the data's way).

``resolve input`` (:class:`DataHandler`: AnnData or a MuData modality, layers, keys) →
``stream cells`` (:class:`CellSource`: rows of a matrix in chunks, never one dense array).
"""

from ._executor import ChunkExecutor
from ._handler import DataHandler
from ._mmm_source import MMMSource
from ._source import AnnDataSource, CellSource, as_source

__all__ = ["AnnDataSource", "CellSource", "ChunkExecutor", "DataHandler", "MMMSource", "as_source"]
