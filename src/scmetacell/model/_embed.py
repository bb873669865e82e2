"""Embeddings of cells by a trained (or initial) module, chunk by chunk, and the reconstruction check."""

from __future__ import annotations

import copy

import numpy as np
import torch

from .._progress import progress_bar
from ..assign import release
from ..data import ChunkExecutor, chunk_bounds
from ..preprocess import HVGNormalizer, ModalityInput, prefetched_rows
from ._module import VQModule


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


@torch.no_grad()
def embed_joint(module, inputs: list[ModalityInput], chunk_size: int = 8192) -> np.ndarray:
    """Joint embeddings of all cells from their modalities' fixed embeddings (cells × Σ d_m, float32)."""
    module.eval()
    return embed_fixed(module, [m.h for m in inputs], chunk_size)


@torch.no_grad()
def embed_fixed(module, hs: list[np.ndarray], chunk_size: int = 8192) -> np.ndarray:
    """Joint embeddings from the fixed embeddings ``hs`` (one array per modality), chunk by chunk."""
    n = hs[0].shape[0]
    out = np.empty((n, module.config.n_latent), dtype=np.float32)
    for s in range(0, n, chunk_size):
        e = min(s + chunk_size, n)
        out[s:e] = module.embed([torch.from_numpy(h[s:e]) for h in hs]).numpy()
    return out
