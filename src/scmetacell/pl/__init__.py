"""``scmetacell.pl``: functions are re-exported here from private modules as their features land."""

from ._metrics import metacell_metrics, metacell_sizes

__all__: list[str] = ["metacell_metrics", "metacell_sizes"]
