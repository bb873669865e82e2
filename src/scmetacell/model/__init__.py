"""The vector-quantization model: torch modules, the Lightning plan and data modules, one Trainer, one fit.

- :func:`fit` (:mod:`._fit`): one modality or several → :class:`FitResult` (labels, top-k, codebook,
  module, history, diagnostics), with its options in :class:`TrainSettings`.
- Modules: :class:`VQModule` (one modality, :mod:`._module`), :class:`MultiVQModule` (several,
  :mod:`._multimodal_module`); embeddings of cells by them in :mod:`._embed`.
- Training: :mod:`._plan` (``VQTrainingPlan``, ``MultiVQTrainingPlan``), :mod:`._datamodule`
  (``CellDataModule``, ``JointDataModule``), :mod:`._trainer` (the one Lightning ``Trainer``); those
  import lightning and are loaded by :func:`fit` on first use.

``import scmetacell`` does not import this package (torch loads on first use of ``tl.metacell``).
"""

from ._embed import embed_cells, embed_fixed, embed_joint, reconstruction_losses
from ._fit import FitResult, TrainSettings, fit
from ._module import VQConfig, VQModule
from ._multimodal_module import MultiVQConfig, MultiVQModule
from ._trainer import check_strategy, resolve_accelerator

__all__ = [
    "FitResult",
    "MultiVQConfig",
    "MultiVQModule",
    "TrainSettings",
    "VQConfig",
    "VQModule",
    "check_strategy",
    "embed_cells",
    "embed_fixed",
    "embed_joint",
    "fit",
    "reconstruction_losses",
    "resolve_accelerator",
]
