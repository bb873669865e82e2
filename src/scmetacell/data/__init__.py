"""The data's way in and out: resolve the input, stream its cells, pair modalities, write results back.

``resolve input`` (:class:`DataHandler`: AnnData or a MuData modality, layers, keys; the one counts
rule :func:`resolve_counts_key` and check :func:`check_counts_block`; samples, numbers of metacells) →
``stream cells`` (:class:`CellSource`: rows of a matrix in chunks, never one dense array; any input
through :func:`as_source`) → ``pair modalities`` (:func:`pair_cells`) → ... → ``write back``
(:func:`write_cell_results`, through the :class:`DataHandler` only).

Imports flow one way through the package: ``io`` → ``data`` → ``preprocess`` → ``assign`` → ``model``
→ ``tl`` → ``pl`` (a module imports only from its left); ``data`` imports neither torch nor lightning.
"""

from ._counts import COUNTS_LAYER, check_counts_block, counts_problem, resolve_counts_key
from ._executor import ChunkExecutor, chunk_bounds
from ._handler import DataHandler, is_mudata, update_mudata
from ._inputs import in_memory, is_matrix_input, resolve_matrix_input
from ._mmm_source import MMMSource
from ._open import as_source
from ._pairing import KIND_ALIASES, KINDS, PAIR_MODES, arg_for, pair_cells, resolve_modalities
from ._resolve import (
    MIN_HVG,
    allocate_metacells,
    h5ad_safe,
    match_groups,
    resolve_datatypes,
    resolve_groups,
    resolve_n_metacell,
    sample_codes,
)
from ._row_subset import RowSubset
from ._source import DEFAULT_CHUNK_SIZE, AnnDataSource, CellSource, to_csr
from ._writeback import write_cell_results

__all__ = [
    "COUNTS_LAYER",
    "DEFAULT_CHUNK_SIZE",
    "KINDS",
    "KIND_ALIASES",
    "MIN_HVG",
    "PAIR_MODES",
    "AnnDataSource",
    "CellSource",
    "ChunkExecutor",
    "DataHandler",
    "MMMSource",
    "RowSubset",
    "allocate_metacells",
    "arg_for",
    "as_source",
    "check_counts_block",
    "chunk_bounds",
    "counts_problem",
    "h5ad_safe",
    "in_memory",
    "is_matrix_input",
    "is_mudata",
    "match_groups",
    "pair_cells",
    "resolve_counts_key",
    "resolve_datatypes",
    "resolve_groups",
    "resolve_matrix_input",
    "resolve_modalities",
    "resolve_n_metacell",
    "sample_codes",
    "to_csr",
    "update_mudata",
    "write_cell_results",
]
