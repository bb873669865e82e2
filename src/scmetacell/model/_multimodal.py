"""Multimodal VQ model: one encoder and one decoder per modality, one shared codebook.

Encoder of modality m: its fixed first-layer embedding ``h_m`` (PCA / CLR-PCA / LSI, balanced to equal
total variance, see :mod:`._multimodal_inputs`) plus a trainable residual MLP (zero-initialised, output
scaled by ``residual_scale``), as the single-modality model. The cell's embedding is the concatenation
``z = [z_rna, z_adt, ...]``; the codebook lives in that joint space, so a cell's metacell is decided by
all modalities at once. Each modality has its own decoder from the (straight-through) codebook entry to
its counts, with a multinomial likelihood (a Poisson model with the cell's library size as offset):
raw HVG counts (RNA), raw protein counts (ADT), binarised open peaks (ATAC). The loss is the sum over
modalities of their per-count negative log-likelihoods plus ``beta`` × commitment; the codebook follows
the mean of each entry's cells after every epoch (the training plan of the single-modality model).
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from .._progress import progress_bar
from ._assign import assignment_spread, finalize_assignment, flat_search, nearest_topk, squared_distances
from ._codebook_init import init_codebook
from ._module import VQLoss
from ._multimodal_inputs import ModalityInput
from ._train import FitResult, TrainSettings

N_DIAGNOSTIC_CELLS = 2048


@dataclass
class MultiVQConfig:
    """Shape of a :class:`MultiVQModule`."""

    dims: list[int]  # fixed-embedding dimensions per modality
    n_features: list[int]  # decoder outputs per modality
    n_codes: int
    n_hidden: int = 128
    residual_scale: float = 0.1

    @property
    def n_latent(self) -> int:
        """Dimensions of the joint embedding (sum over modalities)."""
        return int(sum(self.dims))


def _sparse_nll(logits: torch.Tensor, rows, cols, vals, lib) -> torch.Tensor:
    logp = torch.log_softmax(logits, dim=-1)
    ll = torch.zeros(logits.shape[0], dtype=logp.dtype, device=logp.device)
    ll = ll.index_add(0, rows, vals * logp[rows, cols])
    return -ll / lib.clamp_min(1.0)


class MultiVQModule(nn.Module):
    """Per-modality residual encoders and decoders around one shared codebook."""

    def __init__(self, config: MultiVQConfig, code_group: np.ndarray | None = None):
        super().__init__()
        self.config = config
        h, d_all = config.n_hidden, config.n_latent
        self.refine = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for d, p in zip(config.dims, config.n_features, strict=True):
            r = nn.Sequential(nn.Linear(d, h), nn.ReLU(), nn.Linear(h, d))
            nn.init.zeros_(r[2].weight)
            nn.init.zeros_(r[2].bias)
            self.refine.append(r)
            self.decoders.append(nn.Sequential(nn.Linear(d_all, h), nn.ReLU(), nn.Linear(h, p)))
        self.codebook = nn.Parameter(torch.randn(config.n_codes, d_all) * 0.01, requires_grad=False)
        cg = np.zeros(config.n_codes, dtype=np.int64) if code_group is None else np.asarray(code_group)
        self.register_buffer("code_group", torch.as_tensor(cg, dtype=torch.long))

    @torch.no_grad()
    def init_codebook(self, codes: torch.Tensor) -> None:
        """Set the codebook vectors."""
        self.codebook.copy_(codes.to(self.codebook))

    def embed(self, hs: list[torch.Tensor]) -> torch.Tensor:
        """Joint embedding from the modalities' fixed embeddings ``hs``."""
        rs = self.config.residual_scale
        return torch.cat([h + rs * r(h) for h, r in zip(hs, self.refine, strict=True)], dim=1)

    def nearest(self, z: torch.Tensor, group: torch.Tensor | None = None):
        """Nearest allowed codebook entry of each embedding and the squared distance to it."""
        d2 = squared_distances(z, self.codebook)
        if group is not None:
            d2 = d2.masked_fill(self.code_group[None, :] != group[:, None], float("inf"))
        dmin, idx = d2.min(dim=1)
        return idx, dmin

    def reconstruction(self, q: torch.Tensor, targets: list) -> list[torch.Tensor]:
        """Per-modality, per-cell NLL per count of the targets ``(rows, cols, vals, lib)`` decoded from q."""
        return [_sparse_nll(dec(q), *t) for dec, t in zip(self.decoders, targets, strict=True)]

    def forward(self, batch: dict, beta: float = 0.25) -> VQLoss:
        """Loss = Σ_modalities NLL(target | decoder_m(straight-through entry)) + beta · commitment."""
        z = self.embed(batch["h"])
        idx, _ = self.nearest(z.detach(), batch["group"])
        e = self.codebook[idx].detach()
        commitment = ((z - e) ** 2).mean()
        q = z + (e - z).detach()
        recon = torch.stack([r.mean() for r in self.reconstruction(q, batch["targets"])]).sum()
        loss = recon + beta * commitment
        return VQLoss(loss, recon.detach(), commitment.detach(), commitment.detach(), idx, z.detach())


def _coo(target: sp.csr_matrix) -> tuple[torch.Tensor, ...]:
    coo = target.tocoo()
    return (
        torch.from_numpy(coo.row.astype(np.int64)),
        torch.from_numpy(coo.col.astype(np.int64)),
        torch.from_numpy(coo.data.astype(np.float32)),
        torch.from_numpy(np.asarray(target.sum(axis=1), dtype=np.float32).ravel()),
    )


def _make_datamodule(inputs: list[ModalityInput], cell_group: np.ndarray, batch_size: int, seed: int):
    from lightning.pytorch import LightningDataModule
    from torch.utils.data import DataLoader, IterableDataset

    n = inputs[0].h.shape[0]

    class _Batches(IterableDataset):
        def __init__(self):
            super().__init__()
            self.epoch = 0

        def __iter__(self):
            rng = np.random.default_rng([seed, self.epoch])
            self.epoch += 1
            perm = rng.permutation(n)
            for s in range(0, n, batch_size):
                idx = perm[s : s + batch_size]
                yield {
                    "h": [torch.from_numpy(m.h[idx]) for m in inputs],
                    "targets": [_coo(m.target[idx]) for m in inputs],
                    "group": torch.from_numpy(cell_group[idx]),
                    "idx": torch.from_numpy(idx),
                }

    class _DM(LightningDataModule):
        def __init__(self):
            super().__init__()
            self.dataset = _Batches()

        def train_dataloader(self):
            return DataLoader(self.dataset, batch_size=None, num_workers=0)

    return _DM()


def _make_plan(*args, **kwargs):
    from ._plan import VQTrainingPlan

    class MultiVQTrainingPlan(VQTrainingPlan):
        """The single-modality plan (snapshot, k-means codebook step, restarts) with a dict batch."""

        def training_step(self, batch, batch_idx):
            out = self.module(batch, beta=self.beta)
            nb = int(batch["idx"].numel())
            self._sums += nb * np.array(
                [
                    float(out.loss.detach()),
                    float(out.recon_quantized),
                    float(out.commitment),
                    float(out.codebook),
                ]
            )
            self._n += nb
            return out.loss

    return MultiVQTrainingPlan(*args, **kwargs)


@torch.no_grad()
def embed_all(module: MultiVQModule, inputs: list[ModalityInput], chunk_size: int = 8192) -> np.ndarray:
    """Joint embeddings of all cells (cells × Σ d_m, float32)."""
    module.eval()
    n = inputs[0].h.shape[0]
    out = np.empty((n, module.config.n_latent), dtype=np.float32)
    for s in range(0, n, chunk_size):
        e = min(s + chunk_size, n)
        out[s:e] = module.embed([torch.from_numpy(m.h[s:e]) for m in inputs]).numpy()
    return out


def fit_multimodal(
    inputs: list[ModalityInput],
    cell_group: np.ndarray,
    n_codes_per_group: np.ndarray,
    settings: TrainSettings,
) -> FitResult:
    """Train the multimodal VQ model and assign every (paired) cell to a metacell."""
    import lightning.pytorch as lpl

    from .._logging import quiet_lightning

    t0 = time.perf_counter()
    n_codes = int(np.sum(n_codes_per_group))
    code_group = np.repeat(np.arange(n_codes_per_group.size), n_codes_per_group)
    config = MultiVQConfig(
        dims=[int(m.h.shape[1]) for m in inputs],
        n_features=[int(m.target.shape[1]) for m in inputs],
        n_codes=n_codes,
        n_hidden=settings.n_hidden,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        module = MultiVQModule(config, code_group)
        z0 = embed_all(module, inputs, settings.chunk_size)
        codes = init_codebook(
            z0, n_codes_per_group, cell_group, method=settings.codebook_init, seed=settings.seed
        )
        module.init_codebook(torch.from_numpy(codes))
        init_idx, _ = nearest_topk(z0, codes, 1, cell_group=cell_group, code_group=code_group)
        t_init = time.perf_counter() - t0
        bar = progress_bar(
            total=settings.max_epochs, desc="training metacells", unit="epoch", progress=settings.progress
        )
        plan = _make_plan(
            module,
            init_idx[:, 0],
            lr=settings.lr,
            weight_decay=settings.weight_decay,
            beta=settings.beta,
            converge_threshold=settings.converge_threshold,
            converge_tol=settings.converge_tol,
            embed=lambda m: embed_all(m, inputs, settings.chunk_size),
            cell_group=cell_group,
            bar=bar,
        )
        module.train()
        dm = _make_datamodule(inputs, cell_group, settings.batch_size, settings.seed)
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

    z = embed_all(module, inputs, settings.chunk_size)
    fin = finalize_assignment(
        z,
        module.codebook.detach().numpy(),
        top_k=settings.top_k,
        max_size=settings.max_size,
        min_size=settings.min_size,
        cell_group=cell_group,
        code_group=code_group,
        search=flat_search(code_group),
    )
    labels, codes = fin.labels, fin.codes
    weights, confidence, sizes = fin.weights, fin.confidence, fin.sizes
    n_moved, n_refilled, n_floor_moved = fin.n_moved, fin.n_refilled, fin.n_floor_moved
    codebook_loss, gap_mean, per_dim = assignment_spread(z, codes, labels, fin.top_d2)
    module.init_codebook(torch.from_numpy(codes))

    # reconstruction through the embedding vs through the metacell's entry, on a sample of cells
    rng = np.random.default_rng(settings.seed)
    sample = np.sort(rng.choice(z.shape[0], min(z.shape[0], N_DIAGNOSTIC_CELLS), replace=False))
    with torch.no_grad():
        targets = [_coo(m.target[sample]) for m in inputs]
        zs = torch.from_numpy(z[sample])
        es = torch.from_numpy(codes[labels[sample]])
        loss_c = [float(r.mean()) for r in module.reconstruction(zs, targets)]
        loss_q = [float(r.mean()) for r in module.reconstruction(es, targets)]
    # share of each modality in the squared distances of the cells to their metacell's entry
    offs = np.cumsum([0, *config.dims])
    d_mod = [per_dim[a:b].sum() for a, b in itertools.pairwise(offs)]
    hist = {k: np.asarray(v, dtype=np.float64) for k, v in plan.history.items()}
    epochs = len(plan.history["loss"])
    diag = {
        "quantized_reconstruction": float(sum(loss_c) / sum(loss_q)) if sum(loss_q) > 0 else float("nan"),
        "delta_assignment_confidence": gap_mean,
        "codebook_loss": codebook_loss,
        "epochs_run": int(epochs),
        "stop_reason": plan.stop_reason if settings.max_epochs > 0 else "train_epoch=0: no training",
        "n_requested": int(n_codes),
        "n_delivered": int((sizes > 0).sum()),
        "n_refilled_empty": n_refilled,
        "min_size": int(settings.min_size),
        "n_moved_by_size_floor": int(n_floor_moved),
        "n_moved_by_capacity": int(n_moved),
        "size_min": int(sizes.min()),
        "size_median": float(np.median(sizes)),
        "size_max": int(sizes.max()),
        "mean_confidence": float(confidence.mean()),
        "n_latent": int(config.n_latent),
        "seconds_init": float(t_init),
        "seconds_train": float(t_train),
    }
    for m, lc, lq, dm_ in zip(inputs, loss_c, loss_q, d_mod, strict=True):
        diag[f"{m.name}:recon_loss_embedding"] = lc
        diag[f"{m.name}:recon_loss_codebook"] = lq
        diag[f"{m.name}:within_metacell_distance"] = float(dm_)
    return FitResult(labels, confidence, fin.topk, weights, codes, module, hist, diag)
