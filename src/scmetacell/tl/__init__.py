"""``scmetacell.tl``: metacells and their use.

- :func:`metacell`: group cells into metacells with a vector-quantization model.
"""

from ._metacell import metacell

__all__: list[str] = ["metacell"]
