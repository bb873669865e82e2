"""LightningDataModule: minibatches of cells in a global random order, read from a cell source.

Each epoch draws a fresh permutation of all cells from a generator seeded by ``(seed, epoch)``; batch
``b`` is ``perm[b * batch_size:(b + 1) * batch_size]`` (the last one may be smaller: the batch size is
honoured, nothing is dropped). Under data-parallel training (Lightning's ``strategy="ddp"``, W processes)
every process draws the same permutation and takes its share ``batch[rank::W]`` of each global batch, so
the W processes together see exactly the single-process batches, and DDP's gradient average equals the
single-process gradient (up to floating-point summation order, exactly when W divides the batch); a
final batch with fewer than W cells is skipped in that epoch (every process must take the same number
of steps).

Rows are fetched with ``CellSource.take`` and turned into dense
model inputs by :class:`~scmetacell.preprocess.HVGNormalizer`: the PCA projection of the sparse
log-normalized HVGs (cells × n_latent) and the nonzero raw HVG counts as ``(rows, cols, vals)``.
:class:`JointDataModule` does the same for several modalities (their fixed embeddings and targets).
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch import LightningDataModule
from torch.utils.data import DataLoader, IterableDataset

from ..preprocess import HVGNormalizer, ModalityInput


class _EpochBatches(IterableDataset):
    def __init__(self, norm: HVGNormalizer, cell_group: np.ndarray, batch_size: int, seed: int):
        super().__init__()
        self.norm, self.cell_group = norm, cell_group
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.epoch = 0
        self.rank, self.world_size = 0, 1

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        perm = rng.permutation(self.norm.n_obs)
        w = self.world_size
        for s in range(0, perm.size, self.batch_size):
            idx = perm[s : s + self.batch_size]
            if w > 1:
                if idx.size < w:
                    break
                idx = idx[self.rank :: w]
            ln, cnt = self.norm.take(idx)
            coo = cnt.tocoo()
            yield {
                "h": torch.from_numpy(self.norm.project(ln)),
                "rows": torch.from_numpy(coo.row.astype(np.int64)),
                "cols": torch.from_numpy(coo.col.astype(np.int64)),
                "vals": torch.from_numpy(coo.data.astype(np.float32)),
                "lib": torch.from_numpy(np.asarray(cnt.sum(axis=1), dtype=np.float32).ravel()),
                "group": torch.from_numpy(self.cell_group[idx]),
                "idx": torch.from_numpy(idx),
            }


class CellDataModule(LightningDataModule):
    """Training minibatches over all cells of an :class:`HVGNormalizer` (no validation split).

    Parameters
    ----------
    norm
        Reads and normalises cells.
    cell_group
        Group (sample) code of each cell (int64).
    batch_size
        Cells per minibatch, honoured exactly (the last batch of an epoch may be smaller).
    seed
        Seeds the per-epoch permutations.
    """

    def __init__(self, norm: HVGNormalizer, cell_group: np.ndarray, batch_size: int, seed: int = 0):
        super().__init__()
        self.dataset = _EpochBatches(norm, np.asarray(cell_group, dtype=np.int64), batch_size, seed)

    def train_dataloader(self) -> DataLoader:
        """One pass over all cells in a fresh global random order (``num_workers=0``)."""
        trainer = getattr(self, "trainer", None)
        if trainer is not None:
            self.dataset.rank, self.dataset.world_size = int(trainer.global_rank), int(trainer.world_size)
        return DataLoader(self.dataset, batch_size=None, num_workers=0)


class _JointBatches(IterableDataset):
    def __init__(self, inputs: list[ModalityInput], cell_group: np.ndarray, batch_size: int, seed: int):
        super().__init__()
        self.inputs, self.cell_group = inputs, cell_group
        self.batch_size, self.seed = int(batch_size), int(seed)
        self.epoch = 0

    def __iter__(self):
        from ._multimodal_module import sparse_target

        n = self.inputs[0].h.shape[0]
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        perm = rng.permutation(n)
        for s in range(0, n, self.batch_size):
            idx = perm[s : s + self.batch_size]
            yield {
                "h": [torch.from_numpy(m.h[idx]) for m in self.inputs],
                "targets": [sparse_target(m.target[idx]) for m in self.inputs],
                "group": torch.from_numpy(self.cell_group[idx]),
                "idx": torch.from_numpy(idx),
            }


class JointDataModule(LightningDataModule):
    """Training minibatches of paired cells over several modalities (their fixed embeddings and targets)."""

    def __init__(self, inputs: list[ModalityInput], cell_group: np.ndarray, batch_size: int, seed: int = 0):
        super().__init__()
        self.dataset = _JointBatches(inputs, cell_group, batch_size, seed)

    def train_dataloader(self) -> DataLoader:
        """One pass over all cells in a fresh random order (``num_workers=0``)."""
        return DataLoader(self.dataset, batch_size=None, num_workers=0)
