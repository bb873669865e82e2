"""Build, initialise, train and apply the VQ model (the model-side half of ``tl.metacell``).

``fit_metacells``: PCA-initialised encoder → codebook init (k-means or random cells) → Lightning training
with the convergence test → final pass: embeddings, capacity-aware assignment, the no-empty-metacell
guarantee, top-k soft memberships and the diagnostics printed after training.
"""

from __future__ import annotations

import copy
import gc
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import _logging as logg
from .._progress import progress_bar
from ..data._executor import ChunkExecutor, chunk_bounds
from ._assign import assignment_spread, finalize_assignment
from ._codebook_init import init_codebook
from ._module import VQConfig, VQModule
from ._preprocess import HVGNormalizer, streamed_pca
from ._scale import SampledNormalizer, hierarchical_kmeans, prefetched_rows, search_topk, training_sample
from ._scratch import release, scratch_array

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


@dataclass
class FitResult:
    """Everything the model side hands back."""

    labels: np.ndarray
    confidence: np.ndarray
    topk: np.ndarray
    topk_weights: np.ndarray
    codebook: np.ndarray
    module: VQModule
    history: dict[str, np.ndarray]
    diagnostics: dict[str, Any]


@torch.no_grad()
def _embed_rows(module: VQModule, norm: HVGNormalizer, lognorm_hvg, dev: torch.device) -> np.ndarray:
    """Embeddings of sparse log-normalized HVG rows, computed on ``dev`` (float32 numpy)."""
    h = torch.from_numpy(norm.project(lognorm_hvg)).to(dev)
    return module.refine_projected(h).cpu().numpy()


def _embed_task(start: int, stop: int, *, norm: HVGNormalizer, module: VQModule) -> np.ndarray:
    """Embeddings of rows ``start:stop`` (a task of a dask pass; the module is on the CPU there)."""
    return _embed_rows(module, norm, norm.rows(start, stop)[0], torch.device("cpu"))


@torch.no_grad()
def embed_cells(
    module: VQModule,
    norm: HVGNormalizer,
    *,
    chunk_size: int = 8192,
    progress: bool | None = None,
    desc: str = "embedding cells",
    executor: ChunkExecutor | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Embeddings of all cells (cells × n_latent, float32), chunk by chunk.

    ``executor``: a distributed :class:`~scmetacell.data.ChunkExecutor` embeds the chunks on a dask
    cluster. ``out``: the array to fill (e.g. a memory-mapped scratch array, whose pages are handed
    back after each chunk).
    """
    module.eval()
    dev = next(module.parameters()).device
    z_all = np.empty((norm.n_obs, module.config.n_latent), dtype=np.float32) if out is None else out
    if executor is not None and executor.distributed and norm._cache is None:
        cpu_module = module if dev.type == "cpu" else copy.deepcopy(module).cpu()
        for s, e, z in executor.map(
            _embed_task, chunk_bounds(norm.n_obs, chunk_size), shared={"norm": norm, "module": cpu_module},
            progress=progress, desc=desc,
        ):  # fmt: skip
            z_all[s:e] = z
            release(z_all)
        return z_all
    with progress_bar(total=norm.n_obs, desc=desc, progress=progress) as bar:
        for s, e, rows in prefetched_rows(norm, chunk_size):
            z_all[s:e] = _embed_rows(module, norm, rows[0], dev)
            release(z_all)
            bar.update(e - s)
    return z_all


@torch.no_grad()
def reconstruction_losses(
    module: VQModule, norm: HVGNormalizer, cells: np.ndarray, labels: np.ndarray
) -> tuple[float, float]:
    """Mean reconstruction loss of ``cells`` through their embedding and through their metacell's entry."""
    dev = next(module.parameters()).device
    x, cnt, _ = norm.model_inputs(*norm.take(cells))
    c = torch.from_numpy(cnt).to(dev)
    z = module.encode(torch.from_numpy(x).to(dev))
    e = module.codebook[torch.as_tensor(labels[cells], device=dev)]
    return float(module.reconstruction(z, c).mean()), float(module.reconstruction(e, c).mean())


def _resolve_accelerator(device: str) -> str:
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


SPAWNING_STRATEGIES = ("spawn", "fork", "notebook")


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


def fit_metacells(
    norm: HVGNormalizer,
    cell_group: np.ndarray,
    n_codes_per_group: np.ndarray,
    settings: TrainSettings,
) -> FitResult:
    """Train the VQ model on the cells of ``norm`` and assign every cell to a metacell."""
    import lightning.pytorch as lpl

    from .._logging import quiet_lightning
    from ._datamodule import CellDataModule
    from ._plan import VQTrainingPlan

    t0 = time.perf_counter()
    from . import _scale

    check_strategy(settings.trainer_kwargs.get("strategy"))

    n_codes = int(np.sum(n_codes_per_group))
    code_group = np.repeat(np.arange(n_codes_per_group.size), n_codes_per_group)
    n_latent = int(max(2, min(settings.n_latent, norm.n_hvg - 1, norm.n_obs - 1)))
    large_k = _scale.LARGE_K if settings.large_k is None else int(settings.large_k)

    # heavy steps outside training (searches, k-means of the full codebook, the final embedding) run on
    # the training accelerator's device: the GPU with device="cuda"
    compute = torch.device("cuda") if settings.accelerator == "gpu" and torch.cuda.is_available() else None

    def _search(z_, codes_, k_, groups_, cgroup_=code_group, rows=None, out=None):
        return search_topk(
            z_, codes_, k_, cell_group=groups_, code_group=cgroup_, large_k=large_k, seed=settings.seed,
            device=compute, rows=rows, out=out,
        )  # fmt: skip

    def _kmeans_codes(z_, groups_, k_per_group_):
        if settings.codebook_init == "kmeans" and k_per_group_.max() > large_k:
            rng = np.random.default_rng(settings.seed)
            parts = []
            for g, k in enumerate(k_per_group_):
                rows = None if k_per_group_.size == 1 else np.flatnonzero(groups_ == g)
                n_g = z_.shape[0] if rows is None else rows.size
                c = (
                    hierarchical_kmeans(
                        z_, int(min(k, n_g)), seed=settings.seed + g, device=compute, rows=rows
                    )
                    if k
                    else np.zeros((0, z_.shape[1]), dtype=np.float32)
                )
                if c.shape[0] < k:  # fewer cells than entries (validation rules this out): pad with cells
                    pad = rng.choice(n_g, int(k) - c.shape[0])
                    c = np.concatenate([c, z_[pad if rows is None else rows[pad]]])
                parts.append(c)
            return np.concatenate(parts).astype(np.float32)
        return init_codebook(z_, k_per_group_, groups_, method=settings.codebook_init, seed=settings.seed)

    # large inputs: PCA, initialisation and training on a random sample of the cells (cached in memory),
    # at the same graining (entries per group ∝ sampled cells); the full codebook is fitted afterwards
    # by k-means on the embeddings of all cells.
    train_idx = training_sample(norm.n_obs, settings.max_train_cells, settings.seed)
    if train_idx is None and norm._cache is None:  # disk input: hold the (few) training cells in memory
        train_idx = np.arange(norm.n_obs)
    subsampled = train_idx is not None and train_idx.size < norm.n_obs
    if train_idx is not None:
        tnorm: HVGNormalizer = SampledNormalizer(norm, train_idx, chunk_size=settings.chunk_size)
        tgroup = cell_group[train_idx]
    else:
        tnorm, tgroup = norm, cell_group
    if subsampled:
        n_sample_g = np.bincount(tgroup, minlength=n_codes_per_group.size)
        sizes_g = np.bincount(cell_group, minlength=n_codes_per_group.size)
        k_train = np.minimum(
            n_sample_g, np.maximum(np.round(n_sample_g * n_codes_per_group / sizes_g), n_sample_g > 0)
        ).astype(np.int64)
    else:
        k_train = np.asarray(n_codes_per_group, dtype=np.int64)
    train_code_group = np.repeat(np.arange(k_train.size), k_train)
    t_sample = time.perf_counter() - t0

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        # 1. encoder initialised with the PCA of the z-scored HVGs
        comps, variances = streamed_pca(
            tnorm, n_latent, seed=settings.seed, chunk_size=settings.chunk_size, progress=False
        )
        t_pca = time.perf_counter() - t0 - t_sample
        scale = float(np.sqrt(max(variances.mean(), 1e-12)))
        config = VQConfig(
            n_input=norm.n_hvg, n_latent=n_latent, n_codes=int(k_train.sum()), n_hidden=settings.n_hidden
        )
        module = VQModule(config, train_code_group)
        module.init_projection(comps, scale)
        tnorm.set_projection(module.proj.weight.detach().numpy(), module.proj.bias.detach().numpy())
        if tnorm is not norm:
            norm.set_projection(module.proj.weight.detach().numpy(), module.proj.bias.detach().numpy())
        # 2. codebook from the initial embeddings
        z0 = embed_cells(module, tnorm, chunk_size=settings.chunk_size, progress=False)
        codes = _kmeans_codes(z0, tgroup, k_train)
        module.init_codebook(torch.from_numpy(codes))
        init_idx, _ = _search(z0, codes, 1, tgroup, train_code_group)
        del z0
        t_init = time.perf_counter() - t0

        # 3. training
        bar = progress_bar(
            total=settings.max_epochs, desc="training metacells", unit="epoch", progress=settings.progress
        )
        plan = VQTrainingPlan(
            module,
            init_idx[:, 0],
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            beta=settings.beta,
            converge_threshold=settings.converge_threshold,
            converge_tol=settings.converge_tol,
            embed=lambda m: embed_cells(m, tnorm, chunk_size=settings.chunk_size, progress=False),
            cell_group=tgroup,
            search=lambda z_, c_, k_, g_: _search(z_, c_, k_, g_, train_code_group),
            bar=bar,
        )
        module.train()
        dm = CellDataModule(tnorm, tgroup, settings.batch_size, seed=settings.seed)
        kwargs = {
            "max_epochs": settings.max_epochs,
            "accelerator": settings.accelerator,
            "devices": 1,
            "logger": False,
            "enable_checkpointing": False,
            "enable_progress_bar": False,
            "enable_model_summary": False,
            "num_sanity_val_steps": 0,
        }
        kwargs.update(settings.trainer_kwargs)
        t1 = time.perf_counter()
        with quiet_lightning():
            trainer = lpl.Trainer(**kwargs)
            if settings.max_epochs > 0:
                trainer.fit(plan, datamodule=dm)
        bar.close()
        t_train = time.perf_counter() - t1
        module = plan.module.cpu()
        module.eval()

    # 4. final pass: embeddings, assignment, diagnostics
    history, stop_reason = plan.history, plan.stop_reason
    # the plan refers to its trainer, which refers to the data module and the training sample; all of them
    # form cycles: drop every reference and collect, so the sample is not held through the final pass
    plan = tnorm = dm = trainer = None
    gc.collect()
    t2 = time.perf_counter()
    z = embed_cells(
        module if compute is None else module.to(compute), norm, chunk_size=settings.chunk_size,
        progress=settings.progress, executor=settings.executor,
        out=scratch_array((norm.n_obs, module.config.n_latent), np.float32),
    )  # fmt: skip
    module = module.cpu()
    t_embed = time.perf_counter() - t2
    if subsampled:  # the full codebook: k-means on all cells' embeddings (two-level above large_k)
        codes = _kmeans_codes(z, cell_group, np.asarray(n_codes_per_group, dtype=np.int64))
        full = VQModule(
            VQConfig(n_latent=n_latent, n_input=norm.n_hvg, n_codes=n_codes, n_hidden=settings.n_hidden),
            code_group,
        )
        state = {k: v for k, v in module.state_dict().items() if k not in ("codebook", "code_group")}
        full.load_state_dict(state, strict=False)
        full.init_codebook(torch.from_numpy(codes))
        full.eval()
        module = full
    fin = finalize_assignment(
        z,
        module.codebook.detach().numpy(),
        top_k=settings.top_k,
        max_size=settings.max_size,
        min_size=settings.min_size,
        cell_group=cell_group,
        code_group=code_group,
        search=_search,
    )
    labels, codes = fin.labels, fin.codes
    weights, confidence, sizes = fin.weights, fin.confidence, fin.sizes
    n_moved, n_refilled, n_floor_moved = fin.n_moved, fin.n_refilled, fin.n_floor_moved
    codebook_loss, gap_mean, _ = assignment_spread(z, codes, labels, fin.top_d2)
    del fin.top_idx, fin.top_d2
    module.init_codebook(torch.from_numpy(codes))
    rng = np.random.default_rng(settings.seed)
    sample = np.sort(rng.choice(z.shape[0], min(z.shape[0], N_DIAGNOSTIC_CELLS), replace=False))
    loss_c, loss_q = reconstruction_losses(module, norm, sample, labels)

    hist = {k: np.asarray(v, dtype=np.float64) for k, v in history.items()}
    epochs = len(history["loss"])
    diag = {
        "quantized_reconstruction": float(loss_c / loss_q) if loss_q > 0 else float("nan"),
        "delta_assignment_confidence": gap_mean,
        "codebook_loss": codebook_loss,
        "recon_loss_embedding": float(loss_c),
        "recon_loss_codebook": float(loss_q),
        "epochs_run": int(epochs),
        "stop_reason": stop_reason if settings.max_epochs > 0 else "train_epoch=0: no training",
        "n_requested": int(n_codes),
        "n_delivered": int((sizes > 0).sum()),
        "n_refilled_empty": n_refilled,
        "min_size": int(settings.min_size),
        "n_moved_by_size_floor": int(n_floor_moved),
        "n_moved_by_capacity": int(n_moved),
        "n_restarted_total": int(hist["n_restarted"].sum()) if epochs else 0,
        "size_min": int(sizes.min()),
        "size_median": float(np.median(sizes)),
        "size_max": int(sizes.max()),
        "mean_confidence": float(confidence.mean()),
        "n_latent": n_latent,
        "n_train_cells": int(norm.n_obs if train_idx is None else train_idx.size),
        "seconds_train_sample": float(t_sample),
        "seconds_pca": float(t_pca),
        "seconds_init": float(t_init),
        "seconds_train": float(t_train),
        "seconds_embed": float(t_embed),
        "seconds_assign": float(time.perf_counter() - t2 - t_embed),
    }
    return FitResult(labels, confidence, fin.topk, weights, codes, module, hist, diag)
