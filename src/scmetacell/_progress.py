"""One progress-bar helper for every pass over cells (tqdm, can be turned off)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether to show a progress bar.

    Parameters
    ----------
    progress
        Per-call override; ``None`` defers to :attr:`scmetacell.settings.progress_bar`, which,
        when ``None`` as well, shows bars at scanpy verbosity ``info`` (2) or higher.
    """
    if progress is not None:
        return bool(progress)
    from ._settings import settings

    if settings.progress_bar is not None:
        return bool(settings.progress_bar)
    import scanpy as sc

    return int(sc.settings.verbosity) >= 2


def track(
    iterable: Iterable[T],
    *,
    total: int | None = None,
    desc: str | None = None,
    unit: str = "it",
    progress: bool | None = None,
    **kwargs,
) -> Iterator[T]:
    """Wrap ``iterable`` in a ``tqdm`` bar (``tqdm.auto``: widgets in notebooks, text elsewhere)."""
    if not progress_enabled(progress):
        yield from iterable
        return
    from tqdm.auto import tqdm

    with tqdm(iterable, total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True, **kwargs) as bar:
        yield from bar


def progress_bar(*, total: int, desc: str, unit: str = "cells", progress: bool | None = None):
    """Return a manually updated bar (``bar.update(n)``); a no-op object when bars are off."""
    if not progress_enabled(progress):
        return _NullBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, leave=False, dynamic_ncols=True)


class _NullBar:
    def update(self, n: int = 1) -> None:
        pass

    def set_postfix(self, *args, **kwargs) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
