"""One modality's side of :func:`~scmetacell.model.fit`.

PCA-initialised encoder on the HVGs, training
sample of large inputs, two-level search and hierarchical k-means above ``LARGE_K`` entries per sample.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ..assign import (
    _search,
    density_weights,
    depth_center,
    depth_scale,
    depth_values,
    gene_subset,
    hierarchical_kmeans,
    init_codebook,
    knn_graph,
    scratch_array,
    search_topk,
    smooth_embedding,
    with_depth,
)
from ..data import chunk_bounds
from ..preprocess import HVGNormalizer, SampledNormalizer, training_sample, two_view_pca
from ._embed import embed_cells, reconstruction_losses
from ._module import VQConfig, VQModule


class RNAWay:
    """The steps of a fit that depend on the model inputs: one modality (an :class:`HVGNormalizer`)."""

    def __init__(self, norm: HVGNormalizer, cell_group: np.ndarray, n_codes_per_group: np.ndarray, settings):
        t0 = time.perf_counter()
        self.norm, self.cell_group, self.settings = norm, cell_group, settings
        self.n_codes_per_group = n_codes_per_group
        self.n_codes = int(np.sum(n_codes_per_group))
        self.code_group = np.repeat(np.arange(n_codes_per_group.size), n_codes_per_group)
        self.n_latent = int(max(2, min(settings.n_latent, norm.n_hvg - 1, norm.n_obs - 1)))
        self.large_k = _search.LARGE_K if settings.large_k is None else int(settings.large_k)
        # heavy steps outside training (searches, k-means of the full codebook, the final embedding) run
        # on the training accelerator's device: the GPU with device="cuda"
        gpu = settings.accelerator == "gpu" and torch.cuda.is_available()
        self.compute = torch.device("cuda") if gpu else None
        # large inputs: PCA, initialisation and training on a random sample of the cells (cached in
        # memory), at the same graining (entries per sample ∝ sampled cells); the full codebook is
        # fitted afterwards by k-means on the embeddings of all cells.
        self.train_idx = training_sample(norm.n_obs, settings.max_train_cells, settings.seed)
        if self.train_idx is None and norm._cache is None:  # disk input: hold the training cells in memory
            self.train_idx = np.arange(norm.n_obs)
        self.subsampled = self.train_idx is not None and self.train_idx.size < norm.n_obs
        if self.train_idx is not None:
            self.tnorm = SampledNormalizer(norm, self.train_idx, chunk_size=settings.chunk_size)
            self.train_group = cell_group[self.train_idx]
        else:
            self.tnorm, self.train_group = norm, cell_group
        if self.subsampled:
            n_sample_g = np.bincount(self.train_group, minlength=n_codes_per_group.size)
            sizes_g = np.bincount(cell_group, minlength=n_codes_per_group.size)
            k_train = np.minimum(
                n_sample_g, np.maximum(np.round(n_sample_g * n_codes_per_group / sizes_g), n_sample_g > 0)
            ).astype(np.int64)
        else:
            k_train = np.asarray(n_codes_per_group, dtype=np.int64)
        self.k_train = k_train
        self.train_code_group = np.repeat(np.arange(k_train.size), k_train)
        self.graph = None  # kNN graph of the initial embeddings (inputs trained on whole), for smoothing
        # the depth coordinate of the assignment space (assign/_depth.py): the centre of the cells' log
        # library sizes, the coordinate's scale (set from the initial embeddings) and each entry's depth
        dw = float(settings.depth_weight)
        self.depth_weight = dw
        self.depth_center = depth_center(norm.library_size) if dw > 0 else None
        self.depth_scale = 0.0
        self.code_depth: np.ndarray | None = None
        self.timings = {"seconds_train_sample": time.perf_counter() - t0}

    # ------------------------------------------------------------------ searches and k-means
    def search(self, z_, codes_, k_, groups_, cgroup_=None, rows=None, out=None):
        """Return the ``k_`` nearest entries of each cell (``finalize_assignment``'s search interface)."""
        return search_topk(
            z_, codes_, k_, cell_group=groups_, code_group=self.code_group if cgroup_ is None else cgroup_,
            large_k=self.large_k, seed=self.settings.seed, device=self.compute, rows=rows, out=out,
        )  # fmt: skip

    def train_search(self, z_, c_, k_, g_):
        """Search for the training snapshots (the training sample's entries)."""
        return self.search(z_, c_, k_, g_, self.train_code_group)

    def _kmeans_codes(self, z_, groups_, k_per_group_, weights=None):
        s = self.settings
        # weighted (density_weight > 0, inputs trained on whole): scikit-learn's weighted k-means at any k
        if s.codebook_init != "kmeans" or k_per_group_.max() <= self.large_k or weights is not None:
            return init_codebook(
                z_, k_per_group_, groups_, method=s.codebook_init, seed=s.seed, weights=weights
            )
        rng = np.random.default_rng(s.seed)
        parts = []
        for g, k in enumerate(k_per_group_):
            rows = None if k_per_group_.size == 1 else np.flatnonzero(groups_ == g)
            n_g = z_.shape[0] if rows is None else rows.size
            c = (
                hierarchical_kmeans(z_, int(min(k, n_g)), seed=s.seed + g, device=self.compute, rows=rows)
                if k
                else np.zeros((0, z_.shape[1]), dtype=np.float32)
            )
            if c.shape[0] < k:  # fewer cells than entries (validation rules this out): pad with cells
                pad = rng.choice(n_g, int(k) - c.shape[0])
                c = np.concatenate([c, z_[pad if rows is None else rows[pad]]])
            parts.append(c)
        return np.concatenate(parts).astype(np.float32)

    # ------------------------------------------------------------------ the steps
    def initialise(self, t0: float) -> tuple[VQModule, np.ndarray]:
        """Initialise the encoder (the HVGs' PCA, per ``gene_scaling``) and the codebook (from embeddings)."""
        s, tnorm = self.settings, self.tnorm
        comps, variances = two_view_pca(
            tnorm, self.n_latent, seed=s.seed, chunk_size=s.chunk_size, scaling=s.gene_scaling
        )
        self.timings["seconds_pca"] = time.perf_counter() - t0 - self.timings["seconds_train_sample"]
        scale = float(np.sqrt(max(variances.mean(), 1e-12)))
        config = VQConfig(
            n_input=self.norm.n_hvg,
            n_latent=self.n_latent,
            n_codes=int(self.k_train.sum()),
            n_hidden=s.n_hidden,
        )
        module = VQModule(config, self.train_code_group)
        module.init_projection(comps, scale)
        weight, bias = module.proj.weight.detach().numpy(), module.proj.bias.detach().numpy()
        tnorm.set_projection(weight, bias)
        if tnorm is not self.norm:
            self.norm.set_projection(weight, bias)
        z0 = embed_cells(module, tnorm, chunk_size=s.chunk_size, progress=False)
        if s.n_smooth > 0 and not self.subsampled and z0.shape[0] > 2:
            self.graph = knn_graph(z0, s.n_neighbors, device=self.compute)  # fixed for the whole fit
            z0 = self.smooth(z0)
        weights = None
        if s.density_weight > 0 and not self.subsampled and z0.shape[0] > 2:
            weights = density_weights(z0, s.density_weight, device=self.compute)
        if self.depth_center is not None:
            self.depth_scale = depth_scale(z0, self.depth_weight, seed=s.seed)
            z0 = with_depth(z0, self._depth(self.train_idx), self.depth_scale)
        codes = self._kmeans_codes(z0, self.train_group, self.k_train, weights)
        module.init_codebook(torch.from_numpy(self.latent_codes(codes)))
        init_idx, _ = self.train_search(z0, codes, 1, self.train_group)
        return module, init_idx[:, 0]

    # ------------------------------------------------------------------ the depth coordinate
    def _depth(self, rows=None) -> np.ndarray:
        """Standardised log library sizes of the cells at ``rows`` (all cells: ``None``)."""
        lib = self.norm.library_size if rows is None else self.norm.library_size[rows]
        return depth_values(lib, self.depth_center)

    def latent_codes(self, codes: np.ndarray) -> np.ndarray:
        """Return the embedding part of entries of the assignment space; keep their depths."""
        if self.depth_center is None:
            return codes
        self.code_depth = np.array(codes[:, -1], dtype=np.float32)
        return np.ascontiguousarray(codes[:, :-1])

    def assignment_codes(self, module) -> np.ndarray:
        """Return the module's entries in the assignment space (with their depth coordinate)."""
        codes = module.codebook.detach().cpu().numpy()
        if self.depth_center is None:
            return codes
        return with_depth(codes, self.code_depth, 1.0)  # the entries' depths are already scaled

    def depth_model(self) -> dict | None:
        """Return what :func:`~scmetacell.tl.assign_metacells` needs to place new cells (``None``: none)."""
        if self.depth_center is None:
            return None
        return {
            "weight": self.depth_weight, "scale": self.depth_scale, "log_mean": self.depth_center[0],
            "log_std": self.depth_center[1], "code_depth": np.asarray(self.code_depth, dtype=np.float32),
        }  # fmt: skip

    def smooth(self, z: np.ndarray) -> np.ndarray:
        """Return ``z`` kNN-smoothed over the graph of the initial embeddings (``z`` itself without one)."""
        return smooth_embedding(z, self.graph, self.settings.n_smooth)

    def embed_training(self, module) -> np.ndarray:
        """Return the training cells' embeddings (the plan's end-of-epoch snapshot)."""
        z = embed_cells(module, self.tnorm, chunk_size=self.settings.chunk_size, progress=False)
        return self.smooth(z)

    def datamodule(self):
        """Minibatches of the training cells."""
        from ._datamodule import CellDataModule  # imports lightning: only when training

        return CellDataModule(self.tnorm, self.train_group, self.settings.batch_size, seed=self.settings.seed)

    def drop_training(self) -> None:
        """Free the training sample before the final pass."""
        self.tnorm = None

    def embed_all(self, module) -> np.ndarray:
        """Every cell in the assignment space (a scratch array for large inputs), on the compute device.

        The embedding, smoothed, and the depth coordinate as its last column when there is one.
        """
        s = self.settings
        d, extra = module.config.n_latent, int(self.depth_center is not None)
        full = scratch_array((self.norm.n_obs, d + extra), np.float32)
        z = embed_cells(
            module if self.compute is None else module.to(self.compute), self.norm, chunk_size=s.chunk_size,
            progress=s.progress, executor=s.executor, out=full[:, :d] if extra else full,
        )  # fmt: skip
        module.cpu()
        smoothed = self.smooth(z)  # the graph covers every cell: it exists only when trained on all of them
        self.graph = None
        if not extra:
            return smoothed
        if smoothed is not z:
            full[:, :d] = smoothed
        for a, b in chunk_bounds(self.norm.n_obs, s.chunk_size):
            full[a:b, d] = self.depth_scale * self._depth(slice(a, b))
        return full

    def count_rows(self, genes: np.ndarray):
        """Return ``(rows, columns)``: raw count rows chunk by chunk and the columns of the HVGs at ``genes``.

        ``rows`` yields ``(start, stop, counts)``; nothing is log-normalized or column-subset (the
        homogeneity statistic's pass picks its columns as it sums). In-memory inputs: the cached HVG
        counts; otherwise every gene of the input.
        """
        norm = self.norm
        cached = norm._cache is not None
        cols = np.asarray(genes) if cached else norm.hvg_idx[genes]

        def _rows():
            for s, e in chunk_bounds(norm.n_obs, self.settings.chunk_size):
                yield s, e, norm._cache[1][s:e] if cached else norm.counts.read_rows(s, e)

        return _rows(), cols

    def homogeneity_inputs(self) -> tuple[np.ndarray, np.ndarray]:
        """Return the cells' library sizes and the HVG positions of the homogeneity statistic."""
        return self.norm.library_size, gene_subset(self.norm.std)

    def full_module(self, module, z: np.ndarray):
        """Return the module with the full codebook (k-means on all cells when trained on a sample)."""
        if not self.subsampled:
            return module
        s = self.settings
        codes = self._kmeans_codes(z, self.cell_group, np.asarray(self.n_codes_per_group, dtype=np.int64))
        codes = self.latent_codes(codes)
        config = VQConfig(
            n_latent=self.n_latent, n_input=self.norm.n_hvg, n_codes=self.n_codes, n_hidden=s.n_hidden
        )
        full = VQModule(config, self.code_group)
        state = {k: v for k, v in module.state_dict().items() if k not in ("codebook", "code_group")}
        full.load_state_dict(state, strict=False)
        full.init_codebook(torch.from_numpy(codes))
        full.eval()
        return full

    def diagnostics(self, module, z, codes, labels, sample, per_dim, history) -> tuple[float, dict]:
        """Reconstruction through the embedding vs through the metacell's entry, and this way's figures."""
        loss_c, loss_q = reconstruction_losses(module, self.norm, sample, labels)
        epochs = len(history["loss"])
        extra = {
            "recon_loss_embedding": float(loss_c),
            "recon_loss_codebook": float(loss_q),
            "n_restarted_total": int(np.sum(history["n_restarted"])) if epochs else 0,
            "n_latent": self.n_latent,
            "n_train_cells": int(self.norm.n_obs if self.train_idx is None else self.train_idx.size),
            **{k: float(v) for k, v in self.timings.items()},
        }
        return float(loss_c / loss_q) if loss_q > 0 else float("nan"), extra
