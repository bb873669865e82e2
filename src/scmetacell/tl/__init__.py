"""``scmetacell.tl``: functions are re-exported here from private modules as their features land."""

__all__: list[str] = []
