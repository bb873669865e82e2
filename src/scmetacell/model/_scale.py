"""Large-input pieces of the model: linear cost in cells at a fixed number of cells per metacell (γ).

- :data:`LARGE_K`: above this many codebook entries (in one group), nearest-entry searches use the
  two-level :class:`~scmetacell.model._coarse.CoarseIndex` (``O(cells × √K)``) instead of the flat
  ``O(cells × K)`` search, and the codebook is initialised by hierarchical k-means.
- :func:`search_topk`: the ``k`` nearest entries of each cell within its group (flat or two-level).
- :func:`hierarchical_kmeans`: ``√K`` coarse k-means clusters, then k-means inside each with a number
  of entries proportional to its cells: ``O(cells × √K × iterations)`` instead of ``O(cells × K × ...)``.
- :class:`SampledNormalizer`: an :class:`~scmetacell.model._preprocess.HVGNormalizer` restricted to a
  random sample of cells, held in memory (sparse cells × HVGs). Training, the PCA and the codebook
  initialisation of a large input run on such a sample of at most ``max_train_cells`` cells (read with
  ``CellSource.take`` in a global random order); every cell is then embedded and assigned in a
  streamed pass. Training cost therefore stops growing with the number of cells beyond that sample.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

from .._memory import trim_heap
from ..data._executor import chunk_bounds
from ._coarse import nearest_centre
from ._preprocess import HVGNormalizer
from ._scratch import release, take_rows

LARGE_K = 2000
SEARCH_CHUNK = 16384  # cells per search block (a two-level search holds ~3 kB of temporaries per cell)
COARSE_SAMPLE = 200_000  # hierarchical k-means: coarse clusters fitted on at most this many rows


@torch.no_grad()
def search_topk(
    z: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    cell_group: np.ndarray | None = None,
    code_group: np.ndarray | None = None,
    rows: np.ndarray | None = None,
    out: tuple[np.ndarray, np.ndarray] | None = None,
    large_k: int = LARGE_K,
    n_probe: int = 8,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return indices and squared distances of the ``k`` nearest entries of each cell in its group.

    The distances are computed on ``device`` (default the CPU), :data:`SEARCH_CHUNK` cells at a time;
    results are numpy. ``rows``: search only the cells ``z[rows]`` (``cell_group`` is given for all rows
    of ``z``); ``out``: ``(indices, distances)`` arrays of ``len(rows)`` (or all cells) × ``k`` to fill,
    e.g. memory-mapped scratch arrays. Pages of memory-mapped ``z`` / ``out`` are handed back after
    each chunk.

    Flat exact search (:func:`~scmetacell.model._assign.nearest_topk`) when every group has at most
    ``large_k`` entries; otherwise a :class:`~scmetacell.model._coarse.CoarseIndex` per group, built
    once (approximate: ``n_probe`` coarse clusters probed). Missing neighbours have index ``-1`` or a
    valid index with ``inf`` distance.
    """
    from ._assign import nearest_topk
    from ._coarse import CoarseIndex

    n_codes = codes.shape[0]
    single = code_group is None or cell_group is None
    if single:
        code_group = np.zeros(n_codes, dtype=np.int64)
    n_per_group = np.bincount(code_group)
    k = max(1, min(k, n_codes))
    n_rows = z.shape[0] if rows is None else int(np.size(rows))
    if out is None:
        idx_out = np.empty((n_rows, k), dtype=np.int64)
        d_out = np.empty((n_rows, k), dtype=np.float32)
    else:
        idx_out, d_out = out
    flat = n_per_group.max() <= large_k
    indexes = {}
    if not flat:  # one two-level index per large group, built once for all chunks
        for g in np.flatnonzero(n_per_group):
            entries = np.flatnonzero(code_group == g)
            index = None
            if entries.size > large_k:
                index = CoarseIndex.build(
                    torch.from_numpy(np.ascontiguousarray(codes[entries], dtype=np.float32)),
                    n_probe=n_probe, seed=seed, device=device,
                )  # fmt: skip
            indexes[int(g)] = (entries, index)
    for s in range(0, n_rows, SEARCH_CHUNK):
        e = min(s + SEARCH_CHUNK, n_rows)
        sel = slice(s, e) if rows is None else rows[s:e]
        zc = np.ascontiguousarray(z[sel] if rows is None else take_rows(z, sel), dtype=np.float32)
        gc = None if single else np.asarray(cell_group[sel])
        if flat:
            i, d = nearest_topk(
                zc, codes, k, cell_group=gc, code_group=None if single else code_group, device=device
            )
            idx_out[s:e], d_out[s:e] = i, d
        else:
            # initialised chunk by chunk, so a scratch file is never touched whole at once
            blk_i, blk_d = idx_out[s:e], d_out[s:e]
            blk_i[...], blk_d[...] = 0, np.inf
            for g, (entries, index) in indexes.items():
                m = slice(None) if single else np.flatnonzero(gc == g)
                zg = zc[m]
                if zg.shape[0] == 0:
                    continue
                if index is None:
                    i, d = nearest_topk(zg, codes[entries], k, device=device)
                else:
                    dd, ii = index.search(torch.from_numpy(np.ascontiguousarray(zg)), k)
                    i, d = ii.cpu().numpy(), dd.cpu().numpy()
                kk = i.shape[1]
                valid = i >= 0
                blk_i[m, :kk] = np.where(valid, entries[np.maximum(i, 0)], entries[0])
                blk_d[m, :kk] = np.where(valid, d, np.inf)
        release(z, idx_out, d_out)
    return idx_out, d_out


@torch.no_grad()
def hierarchical_kmeans(
    z: np.ndarray,
    k: int,
    *,
    seed: int = 0,
    n_iter: int = 10,
    device: torch.device | str | None = None,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """``k`` centres of the rows of ``z`` (or of ``z[rows]``) by two-level k-means (``k × d`` float32).

    ``√k`` coarse clusters first; each then gets ``k × (its cells / all cells)`` entries (largest
    remainders, at least one, at most its cells) and is split by its own k-means. Deterministic for a
    given ``seed``. ``z`` is read in chunks and one cluster at a time (a memory-mapped ``z`` never has
    to be resident whole).
    """
    from ._coarse import kmeans

    n = z.shape[0] if rows is None else int(np.size(rows))
    if not 1 <= k <= n:
        raise ValueError(f"k: must be in [1, {n}], got {k}.")

    def _take(sel: np.ndarray) -> torch.Tensor:  # rows ``sel`` (sorted positions among the n) on device
        src = sel if rows is None else rows[sel]
        out = torch.as_tensor(np.ascontiguousarray(take_rows(z, src), dtype=np.float32)).to(device or "cpu")
        release(z)
        return out

    gen = torch.Generator().manual_seed(int(seed))
    n_coarse = int(min(k, max(1, round(np.sqrt(k)))))
    if n > COARSE_SAMPLE:  # coarse centroids from a sample, then every row to its nearest centroid
        pick = np.sort(np.random.default_rng(seed).choice(n, COARSE_SAMPLE, replace=False))
        cent, _ = kmeans(_take(pick), n_coarse, n_iter=n_iter, generator=gen)
        lab = np.empty(n, dtype=np.int64)
        for s in range(0, n, SEARCH_CHUNK):
            _, near = nearest_centre(_take(np.arange(s, min(s + SEARCH_CHUNK, n))), cent)
            lab[s : s + SEARCH_CHUNK] = near.cpu().numpy()
        trim_heap()
    else:
        _, lab = kmeans(_take(np.arange(n)), n_coarse, n_iter=n_iter, generator=gen)
        lab = lab.cpu().numpy()
    sizes = np.bincount(lab, minlength=n_coarse)
    share = k * sizes / n
    alloc = np.minimum(np.maximum(np.floor(share).astype(np.int64), (sizes > 0).astype(np.int64)), sizes)
    rest = k - int(alloc.sum())
    order = np.argsort(-(share - np.floor(share)), kind="stable")
    while rest != 0:  # hand out (or take back) single entries by largest remainder, within bounds
        changed = False
        for c in order:
            if rest > 0 and alloc[c] < sizes[c]:
                alloc[c] += 1
                rest -= 1
                changed = True
            elif rest < 0 and alloc[c] > 1:
                alloc[c] -= 1
                rest += 1
                changed = True
            if rest == 0:
                break
        if not changed:  # pragma: no cover - impossible when k <= n
            break
    by_cluster = np.argsort(lab, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    out = []
    for c in range(n_coarse):
        if alloc[c] == 0:
            continue
        members = _take(by_cluster[bounds[c] : bounds[c + 1]])  # ascending (stable sort)
        if alloc[c] >= members.shape[0]:
            out.append(members[: alloc[c]])
            continue
        out.append(_lloyd_random_init(members, int(alloc[c]), n_iter, gen))
    return torch.cat(out).cpu().numpy().astype(np.float32)


def _lloyd_random_init(x: torch.Tensor, k: int, n_iter: int, gen: torch.Generator) -> torch.Tensor:
    """Lloyd iterations from ``k`` distinct random rows (hierarchical k-means' fine level; no k-means++)."""
    c = x[torch.randperm(x.shape[0], generator=gen)[:k].to(x.device)].clone()
    for _ in range(n_iter):
        dmin, lab = nearest_centre(x, c)  # row blocks: a large cluster's distances are never held whole
        counts = torch.bincount(lab, minlength=k)
        new = torch.zeros_like(c).index_add_(0, lab, x) / counts.clamp_min(1)[:, None].to(x.dtype)
        empty = torch.nonzero(counts == 0).flatten()
        if empty.numel():  # re-seed empty centres on the rows farthest from theirs
            new[empty] = x[torch.topk(dmin, empty.numel()).indices]
        if torch.equal(new, c):
            break
        c = new
    return c


class SampledNormalizer(HVGNormalizer):
    """The cells ``idx`` (sorted) of an :class:`HVGNormalizer`, cached in memory as sparse HVG rows.

    Row ``i`` of this normalizer is cell ``idx[i]`` of the parent. Statistics (``mean``, ``std``) and the
    projection are shared with the parent.
    """

    def __init__(self, parent: HVGNormalizer, idx: np.ndarray, *, chunk_size: int = 8192):
        super().__init__(parent.counts, parent.lognorm, parent.hvg_idx, parent.library_size[idx])
        self.parent = parent
        self.idx = np.asarray(idx, dtype=np.int64)
        self.mean, self.std = parent.mean, parent.std
        ln_parts, c_parts = [], []
        for s in range(0, self.idx.size, chunk_size):
            ln, c = parent.take(self.idx[s : s + chunk_size])
            ln_parts.append(ln)
            c_parts.append(sp.csr_matrix(c, dtype=np.float32))
        self._cache = (sp.vstack(ln_parts, format="csr"), sp.vstack(c_parts, format="csr"))

    @property
    def n_obs(self) -> int:
        """Number of sampled cells."""
        return int(self.idx.size)

    def set_projection(self, weight: np.ndarray, bias: np.ndarray) -> None:
        """Set the projection here and on the parent."""
        super().set_projection(weight, bias)
        self.parent._op = self._op


def training_sample(n_obs: int, max_cells: int | None, seed: int) -> np.ndarray | None:
    """Sorted random sample of ``max_cells`` of ``n_obs`` cells, or ``None`` when all cells are used."""
    if max_cells is None or n_obs <= max_cells:
        return None
    rng = np.random.default_rng([int(seed), 7])
    return np.sort(rng.choice(n_obs, int(max_cells), replace=False))


def prefetched_rows(norm: HVGNormalizer, chunk_size: int):
    """Yield ``(start, stop, (lognorm_hvg, counts_hvg))`` chunk by chunk, reading the next chunk ahead.

    A background thread reads (and normalises) chunk ``i + 1`` while the caller processes chunk ``i``;
    in-memory (cached) normalizers are read directly.
    """
    bounds = chunk_bounds(norm.n_obs, chunk_size)
    if norm._cache is not None or len(bounds) < 2:
        for s, e in bounds:
            yield s, e, norm.rows(s, e)
        return
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="scm-prefetch") as pool:
        pending = pool.submit(norm.rows, *bounds[0])
        for i, (s, e) in enumerate(bounds):
            rows = pending.result()
            if i + 1 < len(bounds):
                pending = pool.submit(norm.rows, *bounds[i + 1])
            yield s, e, rows
            del rows
            trim_heap()
