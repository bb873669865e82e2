"""``scmetacell.tl``: metacells and their use.

- :func:`metacell`: group cells into metacells with a vector-quantization model.
- :func:`assign_metacells`: map new cells onto existing metacells with the trained model.
- :func:`qc`: quality-control metrics of cells or metacells.
"""

from ._assign_metacells import assign_metacells
from ._metacell import metacell
from ._qc import qc

__all__: list[str] = ["assign_metacells", "metacell", "qc"]
