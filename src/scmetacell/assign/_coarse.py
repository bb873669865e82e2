"""Coarse-to-fine (two-level) nearest-codebook search: assignment in O(cells × √metacells).

A flat search compares every cell with every codebook entry: O(N × K) work, which at a fixed number of
cells per metacell (K = N / γ) grows with the square of the cells. The two-level index groups the K
entries into ``K_c ≈ √K`` coarse clusters (k-means on the entries themselves). A cell is compared with
the ``K_c`` coarse centroids, then only with the entries of its ``n_probe`` nearest coarse clusters:
``O(N × (K_c + n_probe × K / K_c)) = O(N × √K)``.

The search is approximate: an entry outside the probed clusters is never returned. With entries
grouped tightly (k-means) and ``n_probe`` of 8 or more, the recall of the exact nearest entry is
above 99 % on real data (measured in ``benchmarks/scale.py`` and tested).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ._distance import nearest_centre, pairwise_sq
from ._kmeans import kmeans

PROBE_BLOCK = 8192  # rows whose coarse distances are held at once
# torch's CPU top-k is about 3x slower per element on rows of fewer than 512 values (measured, torch 2.13:
# 3.6 ns vs 1.4 ns per value, k = 8): a probed cluster's distances are padded with inf to this width
TOPK_MIN_COLS = 512
FINE_ROWS = 8192  # (cell, probed cluster) pairs of one cluster handled at once (bounds the temporaries)
# the coarse k-means is fitted on at most this many entries per coarse cluster (as IVF indexes are
# trained on a sample), then every entry goes to its nearest coarse centroid: 2 passes over the entries
# instead of 25 (at 500,000 entries and 708 clusters, 45,312 training entries)
TRAIN_PER_CLUSTER = 64


@dataclass
class CoarseIndex:
    """Two-level index over a codebook.

    Attributes
    ----------
    codebook
        Fine entries, ``K × d``.
    centroids
        Coarse centroids, ``K_c × d``.
    order
        Fine entry ids sorted by coarse cluster.
    offsets
        ``K_c + 1`` offsets into ``order``: cluster ``c`` owns ``order[offsets[c]:offsets[c+1]]``.
    n_probe
        Coarse clusters searched per cell.
    """

    codebook: torch.Tensor
    centroids: torch.Tensor
    order: torch.Tensor
    offsets: torch.Tensor
    n_probe: int

    def __post_init__(self) -> None:
        # entries stored cluster by cluster (with their squared norms): a cluster's entries are a slice,
        # not a gather, in every search
        self._sorted = self.codebook[self.order].contiguous()
        self._sorted_sq = (self._sorted * self._sorted).sum(1)
        self._bounds = [int(v) for v in self.offsets.cpu()]

    @classmethod
    def build(
        cls,
        codebook: torch.Tensor,
        *,
        n_coarse: int | None = None,
        n_probe: int = 8,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> CoarseIndex:
        """Group the codebook's entries into ``n_coarse`` (default ``ceil(sqrt(K))``) clusters.

        k-means (25 iterations) on at most :data:`TRAIN_PER_CLUSTER` × ``n_coarse`` entries drawn with
        ``seed``; with more entries, every entry then goes to its nearest centroid (after one update of the
        centroids on all entries). A cluster may then be empty; it is never probed usefully but harms
        nothing.

        The index lives on ``device`` (default the CPU); :meth:`search` runs there.
        """
        codebook = codebook.detach().float().to(device or "cpu")
        k = codebook.shape[0]
        n_coarse = n_coarse or max(1, math.ceil(math.sqrt(k)))
        n_coarse = min(n_coarse, k)
        g = torch.Generator().manual_seed(seed)
        n_train = TRAIN_PER_CLUSTER * n_coarse
        if k <= n_train:
            centroids, labels = kmeans(codebook, n_coarse, n_iter=25, generator=g)
        else:
            train = torch.randperm(k, generator=g)[:n_train].sort().values.to(codebook.device)
            centroids, _ = kmeans(codebook[train], n_coarse, n_iter=25, generator=g)
            # one Lloyd step on every entry, then each entry in the cluster of its nearest centroid
            _, labels = nearest_centre(codebook, centroids)
            counts = torch.bincount(labels, minlength=n_coarse)
            sums = torch.zeros_like(centroids).index_add_(0, labels, codebook)
            filled = counts > 0
            centroids[filled] = sums[filled] / counts[filled, None].to(codebook.dtype)
            _, labels = nearest_centre(codebook, centroids)
        order = torch.argsort(labels, stable=True)
        counts = torch.bincount(labels, minlength=n_coarse)
        offsets = torch.zeros(n_coarse + 1, dtype=torch.long, device=codebook.device)
        offsets[1:] = torch.cumsum(counts, 0)
        return cls(codebook, centroids, order, offsets, min(n_probe, n_coarse))

    def search(self, x: torch.Tensor, k: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Approximate ``k`` nearest entries of each row of ``x``: (squared distances, ids), ascending."""
        dev = self.codebook.device
        x = x.detach().float().to(dev)
        n = x.shape[0]
        k_eff = min(k, self.codebook.shape[0])
        best_d = torch.full((n, k_eff), math.inf, device=dev)
        best_i = torch.full((n, k_eff), -1, dtype=torch.long, device=dev)
        if n == 0:
            return best_d, best_i
        # the probed clusters, in blocks of rows: the coarse distances are never held for all rows
        blocks = []
        for s in range(0, n, PROBE_BLOCK):
            coarse_d = pairwise_sq(x[s : s + PROBE_BLOCK], self.centroids)
            blocks.append(torch.topk(coarse_d, self.n_probe, dim=1, largest=False).indices)
        probe = torch.cat(blocks)  # n × P
        x_sq = (x * x).sum(1)
        n_p = self.n_probe
        # group (cell, probed cluster) pairs by cluster, then one dense block per cluster; each pair's
        # top-k goes to its own slot of a cells × (n_probe · k) candidate table, reduced once at the end
        pairs = torch.argsort(probe.reshape(-1), stable=True)
        cells = pairs // n_p
        clusters = probe.reshape(-1)[pairs]
        bounds = torch.searchsorted(clusters, torch.arange(self.centroids.shape[0] + 1, device=dev)).tolist()
        # each pair's top-k is written to its own contiguous row of a pair-sorted table (a slice per
        # cluster, no scattered writes), moved to its (cell, slot) row by one scatter at the end
        pair_d = torch.full((n * n_p, k_eff), math.inf, device=dev)
        pair_i = torch.full((n * n_p, k_eff), -1, dtype=torch.long, device=dev)
        pad = None  # FINE_ROWS × TOPK_MIN_COLS buffer: a small cluster's distances, inf-padded
        for c in range(self.centroids.shape[0]):
            a, b = self._bounds[c], self._bounds[c + 1]
            if a == b:  # an empty coarse cluster
                continue
            kc = min(k_eff, b - a)
            for lo in range(bounds[c], bounds[c + 1], FINE_ROWS):
                hi = min(lo + FINE_ROWS, bounds[c + 1])
                rows = cells[lo:hi]
                d = out = None
                if b - a < TOPK_MIN_COLS:  # written into the inf-padded buffer
                    if pad is None:
                        pad = torch.empty(FINE_ROWS, TOPK_MIN_COLS, device=dev)
                    d = pad[: hi - lo]
                    d[:, b - a :].fill_(math.inf)
                    out = d[:, : b - a]
                # ‖e‖² − 2 x·e in one fused product; ‖x‖² is added to the k kept distances only
                prod = torch.addmm(
                    self._sorted_sq[None, a:b], x[rows], self._sorted[a:b].T, alpha=-2.0, out=out
                )
                d = prod if d is None else d
                dv, di = torch.topk(d, kc, dim=1, largest=False)
                pair_d[lo:hi, :kc] = (dv + x_sq[rows, None]).clamp_min_(0.0)
                pair_i[lo:hi, :kc] = self.order[a + di]
        cand_d = torch.empty_like(pair_d)
        cand_i = torch.empty_like(pair_i)
        cand_d[pairs] = pair_d
        cand_i[pairs] = pair_i
        cand_d = cand_d.view(n, n_p * k_eff)
        cand_i = cand_i.view(n, n_p * k_eff)
        sel = torch.topk(cand_d, k_eff, dim=1, largest=False, sorted=True)
        best_d = sel.values
        best_i = torch.gather(cand_i, 1, sel.indices)
        return best_d, best_i


def flat_search(x: torch.Tensor, codebook: torch.Tensor, k: int = 1, chunk_size: int = 16384):
    """Exact ``k`` nearest entries by a flat O(N × K) search (the reference for :class:`CoarseIndex`)."""
    x = x.detach().float().cpu()
    codebook = codebook.detach().float().cpu()
    cb_sq = (codebook * codebook).sum(1)
    k_eff = min(k, codebook.shape[0])
    ds, ids = [], []
    for s in range(0, x.shape[0], chunk_size):
        d = pairwise_sq(x[s : s + chunk_size], codebook, cb_sq)
        v, i = torch.topk(d, k_eff, dim=1, largest=False)
        ds.append(v)
        ids.append(i)
    if not ds:
        return torch.empty(0, k_eff), torch.empty(0, k_eff, dtype=torch.long)
    return torch.cat(ds), torch.cat(ids)


def recall_at_1(index: CoarseIndex, x: torch.Tensor) -> float:
    """Fraction of rows whose approximate nearest entry is the exact nearest entry."""
    _, approx = index.search(x, 1)
    _, exact = flat_search(x, index.codebook, 1)
    return float((approx[:, 0] == exact[:, 0]).float().mean()) if len(x) else float("nan")


__all__ = ["CoarseIndex", "flat_search", "kmeans", "recall_at_1"]
