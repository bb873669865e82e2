"""``scmetacell.tl``: functions are re-exported here from private modules as their features land."""

from ._correlation import correlation_metrics
from ._diffusion import diffusion_components
from ._geometry import centroids, compactness, separation
from ._inv import inner_normalized_variance
from ._metrics import metacell_metrics
from ._purity import balanced_purity, purity
from ._qc import qc

__all__: list[str] = [
    "balanced_purity",
    "centroids",
    "compactness",
    "correlation_metrics",
    "diffusion_components",
    "inner_normalized_variance",
    "metacell_metrics",
    "purity",
    "qc",
    "separation",
]
