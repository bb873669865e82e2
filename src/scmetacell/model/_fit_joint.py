"""Several modalities' side of :func:`~scmetacell.model.fit`.

Fixed per-modality embeddings, one shared codebook in their joint space, a decoder per modality
(:class:`~scmetacell.model.MultiVQModule`).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch

from ..assign import flat_search, init_codebook
from ..preprocess import ModalityInput
from ._embed import embed_joint
from ._multimodal_module import MultiVQConfig, MultiVQModule, sparse_target


class JointWay:
    """The steps of a fit that depend on the model inputs: several modalities (:class:`ModalityInput`)."""

    train_search = None  # the plan's snapshots use the exact search

    def __init__(
        self, inputs: list[ModalityInput], cell_group: np.ndarray, n_codes_per_group: np.ndarray, settings
    ):
        self.inputs, self.cell_group, self.settings = inputs, cell_group, settings
        self.train_group = cell_group
        self.n_codes_per_group = n_codes_per_group
        self.n_codes = int(np.sum(n_codes_per_group))
        self.code_group = np.repeat(np.arange(n_codes_per_group.size), n_codes_per_group)
        self.config = MultiVQConfig(
            dims=[int(m.h.shape[1]) for m in inputs],
            n_features=[int(m.target.shape[1]) for m in inputs],
            n_codes=self.n_codes,
            n_hidden=settings.n_hidden,
        )
        self.search = flat_search(self.code_group)
        self.timings: dict[str, float] = {}

    def initialise(self, t0: float) -> tuple[MultiVQModule, np.ndarray]:
        """Build the module (zero residuals); the codebook by k-means (or random cells) on the cells."""
        s = self.settings
        module = MultiVQModule(self.config, self.code_group)
        z0 = self.embed_training(module)
        codes = init_codebook(
            z0, self.n_codes_per_group, self.cell_group, method=s.codebook_init, seed=s.seed
        )
        module.init_codebook(torch.from_numpy(codes))
        init_idx, _ = self.search(z0, codes, 1, self.cell_group)
        return module, init_idx[:, 0]

    def embed_training(self, module) -> np.ndarray:
        """All (paired) cells' joint embeddings (the plan's end-of-epoch snapshot)."""
        return embed_joint(module, self.inputs, self.settings.chunk_size)

    def datamodule(self):
        """Minibatches of all cells, every modality."""
        from ._datamodule import JointDataModule  # imports lightning: only when training

        return JointDataModule(self.inputs, self.cell_group, self.settings.batch_size, self.settings.seed)

    def drop_training(self) -> None:
        """Nothing to free: the inputs are the cells."""

    def embed_all(self, module) -> np.ndarray:
        """Every cell's joint embedding."""
        return self.embed_training(module)

    def full_module(self, module, z: np.ndarray):
        """Trained on all cells: the module as it is."""
        return module

    def assignment_codes(self, module) -> np.ndarray:
        """Return the module's entries: the joint space is the assignment space (no depth coordinate)."""
        return module.codebook.detach().cpu().numpy()

    def latent_codes(self, codes: np.ndarray) -> np.ndarray:
        """Entries of the assignment space are the module's."""
        return codes

    def depth_model(self) -> None:
        """No depth coordinate for several modalities."""
        return None

    def diagnostics(self, module, z, codes, labels, sample, per_dim, history) -> tuple[float, dict]:
        """Per-modality reconstruction (embedding vs entry) and share of the distances to the entries."""
        with torch.no_grad():
            targets = [sparse_target(m.target[sample]) for m in self.inputs]
            zs = torch.from_numpy(z[sample])
            es = torch.from_numpy(codes[labels[sample]])
            loss_c = [float(r.mean()) for r in module.reconstruction(zs, targets)]
            loss_q = [float(r.mean()) for r in module.reconstruction(es, targets)]
        # share of each modality in the squared distances of the cells to their metacell's entry
        offs = np.cumsum([0, *self.config.dims])
        d_mod = [per_dim[a:b].sum() for a, b in itertools.pairwise(offs)]
        extra = {"n_latent": int(self.config.n_latent), **self.timings}
        for m, lc, lq, dm_ in zip(self.inputs, loss_c, loss_q, d_mod, strict=True):
            extra[f"{m.name}:recon_loss_embedding"] = lc
            extra[f"{m.name}:recon_loss_codebook"] = lq
            extra[f"{m.name}:within_metacell_distance"] = float(dm_)
        qr = float(sum(loss_c) / sum(loss_q)) if sum(loss_q) > 0 else float("nan")
        return qr, extra
