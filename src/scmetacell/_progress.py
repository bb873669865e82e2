"""One progress-bar helper for every pass over cells (tqdm, can be turned off)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def global_rank() -> int:
    """Return the rank of this process under a DDP launcher (Lightning, torchrun, SLURM); 0 outside one."""
    import os

    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK"):
        val = os.environ.get(var, "")
        if val.isdigit():
            if var == "SLURM_PROCID" and os.environ.get("SLURM_NTASKS", "1").strip() in ("", "1"):
                continue
            return int(val)
    return 0


def progress_enabled(progress: bool | None = None) -> bool:
    """Whether to show a progress bar.

    Parameters
    ----------
    progress
        Per-call override; ``None`` defers to :attr:`scmetacell.settings.progress_bar`, which,
        when ``None`` as well, shows bars at scanpy verbosity ``info`` (2) or higher. The processes of
        rank > 0 of a distributed (DDP) run never show bars: they repeat rank 0's work.
    """
    if global_rank() > 0:
        return False
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
