"""Logging in scanpy's style.

Messages go through :mod:`scanpy.logging` and respect
:data:`scanpy.settings.verbosity` (0 error, 1 warning, 2 info, 3 hint, 4 debug).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator

from scanpy import logging as _logg


def info(msg: str, **kwargs) -> None:
    """Log ``msg`` at level *info* (shown with scanpy's default verbosity)."""
    _logg.info(msg, **kwargs)


def warning(msg: str, **kwargs) -> None:
    """Log ``msg`` at level *warning*."""
    _logg.warning(msg, **kwargs)


def hint(msg: str, **kwargs) -> None:
    """Log ``msg`` at level *hint*."""
    _logg.hint(msg, **kwargs)


def debug(msg: str, **kwargs) -> None:
    """Log ``msg`` at level *debug*."""
    _logg.debug(msg, **kwargs)


_LIGHTNING_LOGGERS = (
    "lightning",
    "lightning.pytorch",
    "lightning.fabric",
    "pytorch_lightning",
    "lightning_fabric",
    "lightning.pytorch.utilities.rank_zero",
    "lightning.pytorch.accelerators.cuda",
)

# Lightning's well-meant advice that is noise for a model fed from an in-process cell source.
_LIGHTNING_WARNINGS = (
    r".*does not have many workers.*",
    r".*The number of training batches.*",
    r".*GPU available but not used.*",
    r".*TPU available but not used.*",
    r".*Checkpoint directory.*",
    r".*LightningModule.*has parameters that were not used.*",
    r".*`isinstance\(treespec, LeafSpec\)` is deprecated.*",
    r".*litlogger.*",
    r".*tensorboardX.*",
)


@contextlib.contextmanager
def quiet_lightning(level: int = logging.WARNING) -> Iterator[None]:
    """Silence Lightning's banners, tips and "GPU available" lines for the duration of a block.

    Logger levels and warning filters are restored on exit: nothing global is changed permanently.
    """
    saved = {}
    for name in _LIGHTNING_LOGGERS:
        lg = logging.getLogger(name)
        saved[name] = lg.level
        lg.setLevel(max(level, lg.level))
    try:
        with warnings.catch_warnings():
            for pattern in _LIGHTNING_WARNINGS:
                warnings.filterwarnings("ignore", message=pattern)
            yield
    finally:
        for name, lvl in saved.items():
            logging.getLogger(name).setLevel(lvl)
