"""Assignment of cells to metacells: distances, k-means, searches, capacity, size floor, scratch memory.

``squared distances`` (:mod:`._distance`, the one kernel) → ``k-means`` (:func:`init_codebook`,
:func:`kmeans`, :func:`hierarchical_kmeans`) → ``search`` (:func:`nearest_topk`, flat; above
:data:`LARGE_K` entries per sample the two-level :class:`CoarseIndex`, :func:`search_topk`) →
``capacity`` (:func:`capacity_assign`, :func:`fill_empty`) → ``size floor`` (:func:`enforce_min_size`)
→ :func:`finalize_assignment` (all of them, then the top-k soft memberships) → trust diagnostics
(:func:`homogeneity`, :func:`split_dubious`); :func:`smooth_embedding` kNN-smooths the embeddings
first. Per-cell working arrays of large inputs are memory-mapped scratch files (:func:`scratch_array`).

Nothing here imports lightning; torch is imported by the modules, not by ``import scmetacell``.
"""

from ._capacity import capacity_assign, fill_empty, soft_memberships
from ._coarse import CoarseIndex, recall_at_1
from ._depth import depth_center, depth_scale, depth_values, with_depth
from ._distance import nearest_centre, pairwise_sq, squared_distances
from ._finalize import FinalAssignment, assignment_spread, finalize_assignment
from ._homogeneity import Homogeneity, gene_subset, homogeneity, split_dubious
from ._kmeans import hierarchical_kmeans, init_codebook, kmeans
from ._scratch import is_scratch, put_rows, release, scratch_array, take_rows
from ._search import LARGE_K, flat_search, nearest_topk, search_topk
from ._size_floor import cluster_means, dissolve_and_split, enforce_min_size
from ._smooth import density_weights, knn_graph, smooth_embedding

__all__ = [
    "LARGE_K",
    "CoarseIndex",
    "FinalAssignment",
    "Homogeneity",
    "assignment_spread",
    "capacity_assign",
    "cluster_means",
    "density_weights",
    "depth_center",
    "depth_scale",
    "depth_values",
    "dissolve_and_split",
    "enforce_min_size",
    "fill_empty",
    "finalize_assignment",
    "flat_search",
    "gene_subset",
    "hierarchical_kmeans",
    "homogeneity",
    "init_codebook",
    "is_scratch",
    "kmeans",
    "knn_graph",
    "nearest_centre",
    "nearest_topk",
    "pairwise_sq",
    "put_rows",
    "recall_at_1",
    "release",
    "scratch_array",
    "search_topk",
    "smooth_embedding",
    "soft_memberships",
    "split_dubious",
    "squared_distances",
    "take_rows",
    "with_depth",
]
