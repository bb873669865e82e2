"""One fit for one modality or several: initialise, train, embed every cell, assign, diagnose.

:func:`fit` runs the same steps for both; what depends on the model inputs (an
:class:`~scmetacell.preprocess.HVGNormalizer` for one modality, a list of
:class:`~scmetacell.preprocess.ModalityInput` for several) is the "way" (:class:`RNAWay`,
:class:`JointWay`): the module and its initialisation, the training minibatches, the final embedding,
the reconstruction diagnostics. Training goes through :func:`~scmetacell.model._trainer.train` (the
one Lightning Trainer), the assignment through :func:`~scmetacell.assign.finalize_assignment`.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .._progress import progress_bar
from ..assign import Homogeneity, assignment_spread, finalize_assignment, homogeneity, split_dubious
from ..data import ChunkExecutor
from ..preprocess import HVGNormalizer, ModalityInput
from ._trainer import HISTORY_KEYS, check_strategy, train

N_DIAGNOSTIC_CELLS = 2048  # reconstruction diagnostics are computed on a random sample of this many cells


@dataclass
class TrainSettings:
    """Options of the training run (the public function's keywords)."""

    n_latent: int = 50
    n_hidden: int = 128
    max_epochs: int = 50
    lr: float = 1e-3
    weight_decay: float = 1e-2
    batch_size: int = 512
    beta: float = 0.25
    converge_threshold: int = 3
    converge_tol: float = 0.01
    codebook_init: str = "kmeans"
    seed: int = 0
    top_k: int = 5
    max_size: np.ndarray | None = None  # capacity per entry
    min_size: int = 1  # floor on metacell sizes (1: no floor)
    accelerator: str = "cpu"
    trainer_kwargs: dict[str, Any] = field(default_factory=dict)
    chunk_size: int = 8192
    progress: bool | None = None
    max_train_cells: int | None = None  # train on a random sample of at most this many cells
    large_k: int | None = (
        None  # (None: LARGE_K) above this many entries per group: two-level search and k-means
    )
    executor: ChunkExecutor | None = None  # distributed: the final embedding pass runs on a dask cluster
    n_smooth: int = 2  # kNN-smoothing steps of the embedding (inputs trained on whole; 0: off)
    n_neighbors: int = 30  # neighbours of each cell in the smoothing graph
    gene_scaling: str = "both"  # the encoder's PCA: z-scored HVGs, unscaled, or both side by side
    density_weight: float = 0.0  # k-means weight exponent of the cells' kNN radius (0: equal weights)
    depth_weight: float = 0.0  # weight of the assignment space's depth coordinate (0: none; one modality)
    split_dubious: bool = False  # split dubious metacells (merging homogeneous pairs: the number is kept)


@dataclass
class FitResult:
    """Everything the model side hands back."""

    labels: np.ndarray
    confidence: np.ndarray
    topk: np.ndarray
    topk_weights: np.ndarray
    codebook: np.ndarray
    module: Any  # VQModule or MultiVQModule
    history: dict[str, np.ndarray]
    diagnostics: dict[str, Any]
    homogeneity: Homogeneity | None = None  # per-metacell trust diagnostics (one modality)
    depth: dict[str, Any] | None = None  # the depth coordinate of the assignment space (one modality)


def fit(
    inputs: HVGNormalizer | list[ModalityInput],
    cell_group: np.ndarray,
    n_codes_per_group: np.ndarray,
    settings: TrainSettings,
) -> FitResult:
    """Train the VQ model on the cells of ``inputs`` and assign every cell to a metacell.

    ``inputs``: one modality (an :class:`~scmetacell.preprocess.HVGNormalizer`) or several (a list of
    :class:`~scmetacell.preprocess.ModalityInput`, cells paired). ``cell_group``: the sample code of
    each cell; ``n_codes_per_group``: metacells per sample.
    """
    check_strategy(settings.trainer_kwargs.get("strategy"))
    t0 = time.perf_counter()
    if isinstance(inputs, HVGNormalizer):
        from ._fit_rna import RNAWay

        way, plan_name = RNAWay(inputs, cell_group, n_codes_per_group, settings), "VQTrainingPlan"
    else:
        from ._fit_joint import JointWay

        way, plan_name = JointWay(inputs, cell_group, n_codes_per_group, settings), "MultiVQTrainingPlan"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        module, init_labels = way.initialise(t0)
        t_init = time.perf_counter() - t0
        if settings.max_epochs > 0 or settings.trainer_kwargs:
            from . import _plan  # imports lightning (~2 s): only when there is something to train

            bar = progress_bar(
                total=settings.max_epochs, desc="training metacells", unit="epoch", progress=settings.progress
            )
            plan = getattr(_plan, plan_name)(
                module, init_labels, lr=settings.lr, weight_decay=settings.weight_decay, beta=settings.beta,
                converge_threshold=settings.converge_threshold, converge_tol=settings.converge_tol,
                embed=way.embed_training, cell_group=way.train_group, search=way.train_search, bar=bar,
            )  # fmt: skip
            module.train()
            t_train = train(
                plan, way.datamodule(), max_epochs=settings.max_epochs, accelerator=settings.accelerator,
                trainer_kwargs=settings.trainer_kwargs,
            )  # fmt: skip
            bar.close()
            module = plan.module.cpu()
            history, stop_reason = plan.history, plan.stop_reason
        else:  # train_epoch=0: the initialisation is the model; no Trainer, no lightning import
            t_train = 0.0
            history, stop_reason = {k: [] for k in HISTORY_KEYS}, None
        module.eval()
    if settings.max_epochs == 0:  # also when a Trainer was built for trainer_kwargs
        stop_reason = "train_epoch=0: no training"
    # the plan refers to its trainer, which refers to the data module and the training sample; all of them
    # form cycles: drop every reference and collect, so the sample is not held through the final pass
    plan = None
    way.drop_training()
    gc.collect()
    t2 = time.perf_counter()
    z = way.embed_all(module)
    t_embed = time.perf_counter() - t2
    module = way.full_module(module, z)
    trust = _Trust(way, z, settings)
    fin = finalize_assignment(
        z, way.assignment_codes(module), top_k=settings.top_k, max_size=settings.max_size,
        min_size=settings.min_size, cell_group=cell_group, code_group=way.code_group, search=way.search,
        refine=trust.split if trust.available and settings.split_dubious else None,
    )  # fmt: skip
    homog = trust.measure(fin.labels) if trust.available else None
    codebook_loss, gap_mean, per_dim = assignment_spread(z, fin.codes, fin.labels, fin.top_d2)
    del fin.top_idx, fin.top_d2
    codebook = way.latent_codes(fin.codes)  # the entries in the embedding (depths kept by the way)
    module.init_codebook(torch.from_numpy(codebook))
    rng = np.random.default_rng(settings.seed)
    sample = np.sort(rng.choice(z.shape[0], min(z.shape[0], N_DIAGNOSTIC_CELLS), replace=False))
    hist = {k: np.asarray(v, dtype=np.float64) for k, v in history.items()}
    quantized, extra = way.diagnostics(module, z, codebook, fin.labels, sample, per_dim, hist)
    sizes = fin.sizes
    diag = {
        "quantized_reconstruction": quantized,
        "delta_assignment_confidence": gap_mean,
        "codebook_loss": codebook_loss,
        "epochs_run": len(history["loss"]),
        "stop_reason": stop_reason,
        "n_requested": way.n_codes,
        "n_delivered": int((sizes > 0).sum()),
        "n_refilled_empty": fin.n_refilled,
        "min_size": int(settings.min_size),
        "n_moved_by_size_floor": int(fin.n_floor_moved),
        "n_moved_by_capacity": int(fin.n_moved),
        "size_min": int(sizes.min()),
        "size_median": float(np.median(sizes)),
        "size_max": int(sizes.max()),
        "mean_confidence": float(fin.confidence.mean()),
        **trust.figures(homog),
        **extra,
        "seconds_init": float(t_init),
        "seconds_train": float(t_train),
        "seconds_embed": float(t_embed),
        "seconds_assign": float(time.perf_counter() - t2 - t_embed),
    }
    return FitResult(
        fin.labels, fin.confidence, fin.topk, fin.weights, codebook, module, hist, diag, homog,
        depth=way.depth_model(),
    )  # fmt: skip


class _Trust:
    """The homogeneity statistic of the metacells (one modality: raw HVG counts) and the dubious split."""

    def __init__(self, way, z: np.ndarray, settings: TrainSettings):
        self.way, self.z, self.settings = way, z, settings
        self.available = hasattr(way, "count_rows")
        self.n_before: int | None = None
        self.seconds = 0.0

    def measure(self, labels: np.ndarray) -> Homogeneity:
        """One streamed pass over the cells' HVG counts."""
        t = time.perf_counter()
        lib, genes = self.way.homogeneity_inputs()
        rows, cols = self.way.count_rows(genes)
        out = homogeneity(
            rows, labels, self.way.n_codes, lib, cols, n_obs=labels.size, progress=self.settings.progress
        )  # fmt: skip
        self.seconds += time.perf_counter() - t
        return out

    def split(self, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Split the dubious metacells of ``labels`` (``finalize_assignment``'s ``refine``)."""
        h = self.measure(labels)
        self.n_before = int(h.dubious.sum())
        s = self.settings
        n = self.way.n_codes
        cap = s.max_size if s.max_size is not None else np.full(n, np.iinfo(np.int64).max)
        return split_dubious(
            self.z, labels, n, h.dubious, h.score, min_size=max(2, s.min_size), capacity=cap,
            code_group=self.way.code_group, search=self.way.search,
        )  # fmt: skip

    def figures(self, h: Homogeneity | None) -> dict[str, Any]:
        """Return the diagnostics' entries (none without a statistic)."""
        if h is None:
            return {}
        n = int(h.dubious.sum())
        return {
            "n_dubious": n,
            "n_dubious_before_split": n if self.n_before is None else self.n_before,
            "median_homogeneity": float(np.nanmedian(h.dispersion)),
            "seconds_homogeneity": float(self.seconds),
        }
