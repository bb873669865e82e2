"""Multimodal VQ model: one encoder and one decoder per modality, one shared codebook.

Encoder of modality m: its fixed first-layer embedding ``h_m`` (PCA / CLR-PCA / LSI, weighed to equal
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

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from ..assign import squared_distances
from ._module import VQLoss


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


def sparse_target(target: sp.csr_matrix) -> tuple[torch.Tensor, ...]:
    """Return a decoder target block as torch ``(rows, cols, vals, library sizes)``."""
    coo = target.tocoo()
    return (
        torch.from_numpy(coo.row.astype(np.int64)),
        torch.from_numpy(coo.col.astype(np.int64)),
        torch.from_numpy(coo.data.astype(np.float32)),
        torch.from_numpy(np.asarray(target.sum(axis=1), dtype=np.float32).ravel()),
    )
