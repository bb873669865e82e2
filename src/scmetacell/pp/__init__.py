"""``scmetacell.pp``: functions are re-exported here from private modules as their features land."""

from ._exclude import exclude_nonexisting

__all__: list[str] = ["exclude_nonexisting"]
