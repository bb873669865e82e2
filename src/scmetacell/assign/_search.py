"""Nearest-entry searches: exact (flat) and, above :data:`LARGE_K` entries per sample, two-level.

- :func:`nearest_topk`: the ``k`` nearest entries of each cell (within its sample), chunked over cells.
- :func:`flat_search`: a ``search(z, codes, k, cell_group, rows=None, out=None)`` function by exact
  search, the interface :func:`~scmetacell.assign.finalize_assignment` and the size floor take.
- :func:`search_topk`: flat or two-level (:class:`~scmetacell.assign.CoarseIndex`) by the number of
  entries per sample.

"Group" here (``cell_group``, ``code_group``) is the sample (``batch_key``) of a cell or of an entry:
cells only ever go to entries of their own sample.
"""

from __future__ import annotations

import numpy as np
import torch

from ._coarse import CoarseIndex
from ._distance import squared_distances
from ._scratch import release, take_rows

LARGE_K = 2000
# a search of few rows is exact (flat) when it costs at most this many cell-entry distances: cheaper than
# building a two-level index over a large codebook (e.g. the size floor's search for a few hundred small
# metacells among 500,000 entries: 0.1 s flat, seconds to index)
FLAT_WORK = 50_000_000
# cells per search block: a two-level search holds ~1 kB of temporaries per cell, and loops over the
# coarse clusters once per block (at 16,384 cells that loop, not the arithmetic, set the pace: 65,536 cells
# per block searched 200,000 real embeddings against 50,000 entries 2.4x faster, same results)
SEARCH_CHUNK = 65536


@torch.no_grad()
def nearest_topk(
    z: np.ndarray,
    codes: np.ndarray,
    k: int,
    *,
    cell_group: np.ndarray | None = None,
    code_group: np.ndarray | None = None,
    chunk_size: int = 4096,
    device: torch.device | str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Return indices and squared distances of the ``k`` nearest allowed entries, nearest first.

    Distances are computed on ``device`` (default the CPU).

    Entries of another group than the cell's are never returned (their distance is ``inf``; if a group
    has fewer than ``k`` entries the surplus columns hold ``inf`` distances).
    """
    k = max(1, min(k, codes.shape[0]))
    dev = torch.device(device or "cpu")
    c = torch.as_tensor(codes, dtype=torch.float32).to(dev)
    cg = None if code_group is None else torch.as_tensor(code_group).to(dev)
    idx_out = np.empty((z.shape[0], k), dtype=np.int64)
    d_out = np.empty((z.shape[0], k), dtype=np.float32)
    for s in range(0, z.shape[0], chunk_size):
        e = min(s + chunk_size, z.shape[0])
        d2 = squared_distances(torch.as_tensor(z[s:e], dtype=torch.float32).to(dev), c)
        if cell_group is not None and cg is not None:
            g = torch.as_tensor(cell_group[s:e]).to(dev)
            d2 = d2.masked_fill(cg[None, :] != g[:, None], float("inf"))
        dv, iv = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        idx_out[s:e], d_out[s:e] = iv.cpu().numpy(), dv.cpu().numpy()
    return idx_out, d_out


def flat_search(code_group: np.ndarray | None = None, device: torch.device | str | None = None):
    """Return a ``search(z, codes, k, cell_group, rows=None, out=None)`` function by exact search.

    For :func:`~scmetacell.assign.finalize_assignment` and :func:`~scmetacell.assign.enforce_min_size`:
    :func:`nearest_topk` with entry ``j`` in group ``code_group[j]``.
    """

    def _search(z, codes, k, cell_group, rows=None, out=None):
        if rows is not None:
            z = z[rows]
            cell_group = None if cell_group is None else cell_group[rows]
        i, d = nearest_topk(z, codes, k, cell_group=cell_group, code_group=code_group, device=device)
        if out is not None:
            out[0][...], out[1][...] = i, d
            return out
        return i, d

    return _search


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
    flat_work: int = FLAT_WORK,
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

    Flat exact search (:func:`nearest_topk`) when every group has at most
    ``large_k`` entries or the search is small (rows × entries of the largest group at most
    ``flat_work``, default :data:`FLAT_WORK`); otherwise a :class:`~scmetacell.assign.CoarseIndex`
    per sample, built once (approximate: ``n_probe`` coarse clusters probed). Missing neighbours have
    index ``-1`` or a valid index with ``inf`` distance.
    """
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
    flat = n_per_group.max() <= large_k or n_rows * int(n_per_group.max()) <= flat_work
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
