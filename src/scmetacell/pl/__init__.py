"""``scmetacell.pl``: functions are re-exported here from private modules as their features land."""

from ._embedding import embedding_multi
from ._qc import qc

__all__: list[str] = ["embedding_multi", "qc"]
