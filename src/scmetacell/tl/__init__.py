"""``scmetacell.tl``: functions are re-exported here from private modules as their features land."""

from ._qc import qc

__all__: list[str] = ["qc"]
