"""LightningModule training plan: loss, AdamW, dead-entry restarts and the convergence test.

Each cell is seen once per epoch. At the end of an epoch all cells are embedded with the current encoder
(a no-gradient pass, ``embed``) and given their nearest entry (a consistent snapshot, unlike entries
recorded while the encoder moves during the epoch); then:

- the fraction of cells whose entry changed since the previous snapshot is computed; training stops once
  it stays below ``converge_tol`` for ``converge_threshold`` epochs in a row;
- every entry moves to the mean embedding of the cells it received this epoch (a k-means step);
- every entry that received no cell is re-seeded: it takes the embedding of the cell farthest from the
  centre of the currently largest metacell of its group (which it thereby splits).
"""

from __future__ import annotations

import numpy as np
import torch
from lightning.pytorch import LightningModule

from ._module import VQModule
from ._trainer import HISTORY_KEYS


class VQTrainingPlan(LightningModule):
    """Train a :class:`~scmetacell.model.VQModule` (one modality; :class:`MultiVQTrainingPlan`: several).

    Parameters
    ----------
    module
        The network.
    init_labels
        Entry of each cell under the initial codebook (for the first epoch's change fraction).
    lr, weight_decay
        AdamW learning rate and (decoupled) weight decay, applied to all trainable parameters.
    beta
        Weight of the commitment term.
    converge_threshold
        Consecutive stable epochs that stop training.
    converge_tol
        An epoch is stable when fewer than this fraction of cells changed entry.
    embed
        ``embed(module) -> cells × n_latent`` array: embeds all cells (the end-of-epoch snapshot).
        ``None``: use the entries and embeddings recorded during the epoch instead.
    cell_group
        Group of each cell (for the snapshot's assignment).
    bar
        A progress bar updated once per epoch (``update``/``set_postfix``).
    """

    def __init__(
        self,
        module: VQModule,
        init_labels: np.ndarray,
        *,
        lr: float = 1e-3,
        weight_decay: float = 1e-2,
        beta: float = 0.25,
        converge_threshold: int = 3,
        converge_tol: float = 0.01,
        restart_dead: bool = True,
        embed=None,
        cell_group: np.ndarray | None = None,
        bar=None,
        search=None,
    ):
        super().__init__()
        self.module = module
        self.lr, self.weight_decay, self.beta = lr, weight_decay, beta
        self.converge_threshold, self.converge_tol = int(converge_threshold), float(converge_tol)
        self.restart_dead = restart_dead
        self.bar = bar
        self.embed = embed
        self.cell_group = cell_group
        self.search = search  # search(z, codes, k, cell_group) -> (idx, d2); None: flat nearest_topk
        n = init_labels.size
        self.prev_labels = np.asarray(init_labels, dtype=np.int64).copy()
        self.labels = self.prev_labels.copy()
        self.z = np.zeros((n, module.config.n_latent), dtype=np.float32)
        self.seen = np.zeros(n, dtype=bool)
        self.stable = 0
        self.stop_reason = "reached train_epoch"
        self.history: dict[str, list] = {k: [] for k in HISTORY_KEYS}
        self._sums = np.zeros(4)
        self._n = 0

    def configure_optimizers(self):
        """AdamW over the trainable parameters (all but the fixed PCA projection)."""
        params = [p for p in self.module.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def training_step(self, batch, batch_idx):
        """Loss of one minibatch; records each cell's nearest entry and embedding."""
        b = batch
        out = self.module(b["h"], b["rows"], b["cols"], b["vals"], b["lib"], b["group"], beta=self.beta)
        idx = batch["idx"].cpu().numpy()
        if self.embed is None:  # no snapshot pass: record entries as seen during the epoch
            self.labels[idx] = out.index.cpu().numpy()
            self.z[idx] = out.z.cpu().numpy()
            self.seen[idx] = True
        self._add_losses(out, idx.size)
        return out.loss

    def _add_losses(self, out, nb: int) -> None:
        """Add a minibatch of ``nb`` cells to the epoch's loss sums."""
        self._sums += nb * np.array(
            [float(out.loss.detach()), float(out.recon_quantized), float(out.commitment), float(out.codebook)]
        )
        self._n += nb

    def on_train_epoch_end(self) -> None:
        """Convergence test, dead-entry restarts, history."""
        if self.embed is not None:
            self._snapshot()
        seen = self.seen
        frac = float((self.labels[seen] != self.prev_labels[seen]).mean()) if seen.any() else 1.0
        self._update_codebook()
        n_restart = self._restart_dead() if self.restart_dead else 0
        sums, n = self._sums, self._n
        trainer = self._trainer
        if trainer is not None and trainer.world_size > 1:  # DDP: losses over the cells of all processes
            tot = trainer.strategy.reduce(torch.as_tensor([*sums, n], dtype=torch.float64), reduce_op="sum")
            tot = tot.cpu().numpy()
            sums, n = tot[:4], tot[4]
        keys = ("loss", "recon_quantized", "commitment", "codebook")
        for key, v in zip(keys, sums / max(n, 1), strict=True):
            self.history[key].append(float(v))
        self.history["frac_changed"].append(frac)
        self.history["n_restarted"].append(n_restart)
        self._sums[:] = 0
        self._n = 0
        self.prev_labels = self.labels.copy()
        self.stable = self.stable + 1 if (frac < self.converge_tol and n_restart == 0) else 0
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(changed=f"{100 * frac:.2f}%", loss=f"{self.history['loss'][-1]:.3f}")
        if self.stable >= self.converge_threshold:
            self.stop_reason = (
                f"converged: fewer than {100 * self.converge_tol:g}% of cells changed metacell in "
                f"{self.converge_threshold} consecutive epochs"
            )
            self.trainer.should_stop = True

    @torch.no_grad()
    def _snapshot(self) -> None:
        """Embed all cells with the current encoder and assign each to its nearest allowed entry."""
        from ..assign import nearest_topk

        was_training = self.module.training
        self.z = self.embed(self.module)
        self.module.train(was_training)
        codes = self.module.codebook.detach().cpu().numpy()
        code_group = self.module.code_group.cpu().numpy()
        if self.search is not None:
            idx, _ = self.search(self.z, codes, 1, self.cell_group)
        else:
            idx, _ = nearest_topk(self.z, codes, 1, cell_group=self.cell_group, code_group=code_group)
        self.labels = idx[:, 0].copy()
        self.seen[:] = True

    @torch.no_grad()
    def _update_codebook(self) -> None:
        """Move each entry that has cells to the mean of their embeddings (recorded this epoch)."""
        k, d = self.module.config.n_codes, self.module.config.n_latent
        lab, z = self.labels[self.seen], self.z[self.seen]
        sums = np.zeros((k, d))
        np.add.at(sums, lab, z)
        cnt = np.bincount(lab, minlength=k)
        cb = self.module.codebook
        codes = cb.detach().cpu().numpy()
        has = cnt > 0
        codes[has] = (sums[has] / cnt[has, None]).astype(np.float32)
        cb.data.copy_(torch.as_tensor(codes, device=cb.device))

    @torch.no_grad()
    def _restart_dead(self) -> int:
        module = self.module
        k = module.config.n_codes
        sizes = np.bincount(self.labels, minlength=k)
        dead = np.flatnonzero(sizes == 0)
        if dead.size == 0:
            return 0
        code_group = module.code_group.cpu().numpy()
        codes = module.codebook.detach().cpu().numpy()
        for j in dead:
            cand = np.flatnonzero(code_group == code_group[j])
            big = cand[np.argmax(sizes[cand])]
            if sizes[big] < 2:
                continue
            members = np.flatnonzero(self.labels == big)
            zm = self.z[members]
            far = np.argmax(((zm - zm.mean(0)) ** 2).sum(1))
            codes[j] = zm[far]
            # the far half of the big metacell now belongs to the new entry (for the size bookkeeping)
            take = ((zm - zm[far]) ** 2).sum(1) < ((zm - codes[big]) ** 2).sum(1)
            take[far] = True
            self.labels[members[take]] = j
            sizes[j] = int(take.sum())
            sizes[big] -= sizes[j]
        cb = module.codebook
        cb.data.copy_(torch.as_tensor(codes, device=cb.device))
        return int(dead.size)


class MultiVQTrainingPlan(VQTrainingPlan):
    """The single-modality plan (snapshot, k-means codebook step, restarts) with a dict batch."""

    def training_step(self, batch, batch_idx):
        """Loss of one minibatch (entries come from the end-of-epoch snapshot)."""
        out = self.module(batch, beta=self.beta)
        self._add_losses(out, int(batch["idx"].numel()))
        return out.loss
