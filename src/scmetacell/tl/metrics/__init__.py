"""Metacell quality metrics (public in :mod:`scmetacell.tl`).

Purity, inner normalized variance,
geometry (centroids, compactness, separation), correlation, diffusion components, and
:func:`metacell_metrics` (all of them on one object). A "partition" is the metacell of each cell.
"""

from ._correlation import correlation_metrics
from ._diffusion import diffusion_components
from ._geometry import centroids, compactness, separation
from ._inner_variance import inner_normalized_variance
from ._metrics import metacell_metrics
from ._partition import encode_partition, indicator, partition_sizes
from ._purity import balanced_purity, purity, rare_type_recall

__all__ = [
    "balanced_purity",
    "centroids",
    "compactness",
    "correlation_metrics",
    "diffusion_components",
    "encode_partition",
    "indicator",
    "inner_normalized_variance",
    "metacell_metrics",
    "partition_sizes",
    "purity",
    "rare_type_recall",
    "separation",
]
