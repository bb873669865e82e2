"""scmetacell: fast, scalable metacells for single-cell data, in scanpy's manner.

Submodules
----------
``pp``
    Preprocessing (:func:`scmetacell.pp.exclude_nonexisting`).
``tl``
    Tools (:func:`scmetacell.tl.metacell` and friends).
``pl``
    Plotting.
``io``
    Reading and writing the native ``.mmm`` sparse memory-mapped matrix format.
``datasets``
    Bundled real datasets.

``import scmetacell`` does not import torch or lightning: they are loaded on first use.
"""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, io, pl, pp, tl
from ._settings import settings

try:
    __version__ = version("scmetacell")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0+unknown"

__all__ = ["__version__", "datasets", "io", "pl", "pp", "settings", "tl"]
