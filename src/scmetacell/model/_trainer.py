"""The one place the Lightning Trainer is built and run (every fit, one modality or several).

Also where the device and the strategy are checked: :func:`resolve_accelerator` (``device=`` of the
public functions → a Lightning accelerator) and :func:`check_strategy` (no spawning strategies).
"""

from __future__ import annotations

import time
from typing import Any

import torch

from .. import _logging as logg

SPAWNING_STRATEGIES = ("spawn", "fork", "notebook")
# per-epoch records of a training plan (:class:`~scmetacell.model.VQTrainingPlan`); empty without training
HISTORY_KEYS = ("loss", "recon_quantized", "commitment", "codebook", "frac_changed", "n_restarted")
TRAINER_DEFAULTS = {
    "devices": 1,
    "logger": False,
    "enable_checkpointing": False,
    "enable_progress_bar": False,
    "enable_model_summary": False,
    "num_sanity_val_steps": 0,
}


def resolve_accelerator(device: str) -> str:
    """Lightning accelerator for ``device`` (``'auto'``: the GPU when CUDA is available)."""
    dev = str(device).lower()
    if dev == "auto":
        return "gpu" if torch.cuda.is_available() else "cpu"
    if dev in ("cuda", "gpu") or dev.startswith("cuda:"):
        if not torch.cuda.is_available():
            logg.warning(f"device={device!r}: CUDA is not available here; training on the CPU instead.")
            return "cpu"
        return "gpu"
    if dev == "mps":
        return "mps"
    return "cpu"


def check_strategy(strategy: Any) -> None:
    """Refuse Lightning strategies that train in spawned / forked children.

    Those hand only the weights back to the calling process, not the training plan's per-epoch state
    (history, convergence); ``strategy="ddp"`` from a script (``python script.py``, ``torchrun``,
    ``srun``) runs the whole call in every process instead, and every process gets the same result.
    """
    if isinstance(strategy, str) and any(w in strategy for w in SPAWNING_STRATEGIES):
        raise ValueError(
            f"trainer_kwargs['strategy']={strategy!r}: strategies that train in spawned or forked "
            "processes are not supported; use strategy='ddp' from a script (python script.py, torchrun "
            "or srun): every process runs tl.metacell and gets the same metacells. See the scaling guide."
        )


def train(plan, datamodule, *, max_epochs: int, accelerator: str, trainer_kwargs: dict[str, Any]) -> float:
    """Fit ``plan`` on ``datamodule`` for at most ``max_epochs`` epochs; return the seconds it took.

    ``trainer_kwargs`` override the defaults (:data:`TRAINER_DEFAULTS`, ``max_epochs``, ``accelerator``).
    ``max_epochs=0`` builds the Trainer (so bad ``trainer_kwargs`` still raise) but fits nothing (the
    initial codebook is the result); :func:`~scmetacell.model.fit` does not call this at all for
    ``max_epochs=0`` without ``trainer_kwargs``, so lightning is not even imported then.
    """
    import lightning.pytorch as lpl

    from .._logging import quiet_lightning

    kwargs = {"max_epochs": max_epochs, "accelerator": accelerator, **TRAINER_DEFAULTS}
    kwargs.update(trainer_kwargs)
    t = time.perf_counter()
    with quiet_lightning():
        trainer = lpl.Trainer(**kwargs)
        if max_epochs > 0:
            trainer.fit(plan, datamodule=datamodule)
    return time.perf_counter() - t
