"""``scmetacell.tl``: metacells, their quality, and QC.

- :func:`metacell`: group cells into metacells with a vector-quantization model.
- :func:`assign_metacells`: map new cells onto existing metacells with the trained model.
- :func:`metacell_metrics` and its building blocks: the field's quality metrics.
- :func:`qc`: quality control of cells or metacells.
"""

from ._assign_metacells import assign_metacells
from ._metacell import metacell
from ._qc import qc
from .metrics import (
    balanced_purity,
    centroids,
    compactness,
    correlation_metrics,
    diffusion_components,
    inner_normalized_variance,
    metacell_metrics,
    purity,
    rare_type_recall,
    separation,
)

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
    "rare_type_recall",
    "separation",
]
