"""``scmetacell.tl``: metacells and their use.

- :func:`metacell`: group cells into metacells with a vector-quantization model.
- :func:`assign_metacells`: map new cells onto existing metacells with the trained model.
"""

from ._assign_metacells import assign_metacells
from ._correlation import correlation_metrics
from ._diffusion import diffusion_components
from ._geometry import centroids, compactness, separation
from ._inv import inner_normalized_variance
from ._metacell import metacell
from ._metrics import metacell_metrics
from ._purity import balanced_purity, purity
from ._qc import qc

__all__: list[str] = [
    "assign_metacells",
    "balanced_purity",
    "centroids",
    "compactness",
    "correlation_metrics",
    "diffusion_components",
    "inner_normalized_variance",
    "metacell",
    "metacell_metrics",
    "purity",
    "qc",
    "separation",
]
