"""``scmetacell.pl``: functions are re-exported here from private modules as their features land."""

from ._embedding import embedding_multi
from ._metrics import metacell_metrics, metacell_sizes
from ._qc import qc

__all__: list[str] = ["embedding_multi", "metacell_metrics", "metacell_sizes", "qc"]
