"""Assignment of cell embeddings to codebook entries (metacells).

Written as functions of ``(embeddings, codebook)`` so a coarse-to-fine search can replace the exact
nearest-entry search for very large codebooks.

- :func:`nearest_topk`: the ``k`` nearest entries of each cell (within its group), chunked over cells.
- :func:`soft_memberships`: top-k weights ∝ 1 / (squared distance + ε), normalised to sum to 1.
- :func:`capacity_assign`: nearest entry, except that no entry takes more than ``capacity`` cells: the
  farthest cells of an overfull entry move to their next-nearest entry with room.
- :func:`fill_empty`: the final guarantee that every entry has cells: an empty entry takes the far half
  of the largest metacell of its group (split along the line from its centroid to its farthest cell).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ._scratch import put_rows, release, scratch_array, take_rows


def squared_distances(z: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances (cells × entries), clamped at 0."""
    d2 = (z * z).sum(1, keepdim=True) - 2.0 * z @ codes.T + (codes * codes).sum(1)[None, :]
    return d2.clamp_min_(0.0)


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

    For :func:`finalize_assignment` and :func:`~scmetacell.model._balance.enforce_min_size`:
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


def soft_memberships(d2: np.ndarray, eps: float = 1e-3) -> np.ndarray:
    """Top-k membership weights ∝ 1 / (d² + eps), normalised per cell (``inf`` distances get 0)."""
    w = 1.0 / (d2.astype(np.float64) + eps)
    w[~np.isfinite(d2)] = 0.0
    w /= w.sum(axis=1, keepdims=True)
    return w.astype(np.float32)


def capacity_assign(
    z: np.ndarray,
    codes: np.ndarray,
    top_idx: np.ndarray,
    top_d2: np.ndarray,
    capacity: np.ndarray,
    *,
    cell_group: np.ndarray | None = None,
    code_group: np.ndarray | None = None,
) -> tuple[np.ndarray, int]:
    """Nearest-entry assignment with at most ``capacity[j]`` cells per entry ``j``.

    Cells of an overfull entry are kept nearest first; the others move, in order of how little they
    lose, to the nearest entry of their candidates (then of all entries of their group) with room.

    Returns
    -------
    ``(labels, n_moved)``.
    """
    k_codes = codes.shape[0]
    n = top_idx.shape[0]
    labels = np.empty(n, dtype=top_idx.dtype)
    for s in range(0, n, 65536):  # chunked: the search results may be a memory-mapped scratch file
        labels[s : s + 65536] = top_idx[s : s + 65536, 0]
        release(top_idx)
    sizes = np.bincount(labels, minlength=k_codes)
    over = np.flatnonzero(sizes > capacity)
    if over.size == 0:
        return labels, 0
    movers = []
    for j in over:
        members = np.flatnonzero(labels == j)
        order = np.argsort(take_rows(top_d2, members)[:, 0], kind="stable")
        movers.append(members[order[capacity[j] :]])
    movers = np.concatenate(movers)
    by_row = np.sort(movers)  # the movers' search results, read once
    pos = np.searchsorted(by_row, movers)
    m_idx, m_d2 = take_rows(top_idx, by_row)[pos], take_rows(top_d2, by_row)[pos]
    labels[movers] = -1
    sizes = np.bincount(labels[labels >= 0], minlength=k_codes)
    second = m_d2[:, 1] if top_d2.shape[1] > 1 else np.zeros(movers.size)
    order = np.argsort(second - m_d2[:, 0], kind="stable")
    for i, ti, td in zip(movers[order], m_idx[order], m_d2[order], strict=True):
        placed = False
        for j, dj in zip(ti[1:], td[1:], strict=True):
            if np.isfinite(dj) and sizes[j] < capacity[j]:
                labels[i], placed = j, True
                break
        if not placed:
            d2 = ((codes - take_rows(z, [i])[0]) ** 2).sum(1)
            ok = sizes < capacity
            if cell_group is not None and code_group is not None:
                ok &= code_group == cell_group[i]
            if not ok.any():  # no room anywhere in the group: keep the nearest entry
                j = ti[0]
            else:
                j = int(np.flatnonzero(ok)[np.argmin(d2[ok])])
        sizes[j] += 1
        labels[i] = j
    release(z, top_idx, top_d2)
    return labels, int(movers.size)


def fill_empty(
    z: np.ndarray,
    labels: np.ndarray,
    n_codes: int,
    *,
    cell_group: np.ndarray | None = None,
    code_group: np.ndarray | None = None,
) -> tuple[np.ndarray, list[int]]:
    """Give every empty entry cells by splitting the largest metacell of its group.

    Returns
    -------
    ``(labels, filled)``: the new labels and the entries that were empty. An entry stays empty only
    when its group has no metacell with 2 or more cells (fewer cells than entries), which callers
    rule out by validation.
    """
    labels = labels.copy()
    sizes = np.bincount(labels, minlength=n_codes)
    filled = []
    for j in np.flatnonzero(sizes == 0):
        cand = np.arange(n_codes)
        if code_group is not None:
            cand = cand[code_group == code_group[j]]
        big = cand[np.argmax(sizes[cand])]
        if sizes[big] < 2:
            continue
        members = np.flatnonzero(labels == big)
        zm = take_rows(z, members)
        c = zm.mean(0)
        far = zm[np.argmax(((zm - c) ** 2).sum(1))]
        take = ((zm - far) ** 2).sum(1) < ((zm - c) ** 2).sum(1)
        if take.all() or not take.any():  # degenerate (identical cells): move half
            take = np.zeros(members.size, dtype=bool)
            take[: members.size // 2] = True
        labels[members[take]] = j
        sizes[j] = int(take.sum())
        sizes[big] -= sizes[j]
        filled.append(int(j))
    release(z)
    return labels, filled


def assignment_spread(
    z: np.ndarray, codes: np.ndarray, labels: np.ndarray, top_d2: np.ndarray, chunk_size: int = 65536
) -> tuple[float, float, np.ndarray]:
    """Return the codebook loss, the mean nearest-entry gap and the per-dimension spread, read in chunks.

    Codebook loss: mean squared distance of cells to their entry, per dimension; gap: mean difference
    between the distances to the two nearest entries; spread: mean over cells of the squared distance
    to their entry in each dimension (its mean is the codebook loss; sums over a modality's dimensions
    give its share).
    """
    per_dim = np.zeros(z.shape[1], dtype=np.float64)
    gap_sum, gap_n = 0.0, 0
    for s in range(0, z.shape[0], chunk_size):
        e = min(s + chunk_size, z.shape[0])
        per_dim += ((z[s:e] - codes[labels[s:e]]) ** 2).sum(0, dtype=np.float64)
        if top_d2.shape[1] > 1:
            gap = np.sqrt(top_d2[s:e, 1]) - np.sqrt(top_d2[s:e, 0])
            gap = gap[np.isfinite(gap)]
            gap_sum += float(gap.sum(dtype=np.float64))
            gap_n += gap.size
        release(z, top_d2)
    per_dim /= max(z.shape[0], 1)
    codebook_loss = float(per_dim.mean()) if per_dim.size else 0.0
    return codebook_loss, gap_sum / gap_n if gap_n else 0.0, per_dim


@dataclass
class FinalAssignment:
    """Result of :func:`finalize_assignment`."""

    labels: np.ndarray
    codes: np.ndarray
    top_idx: np.ndarray  # k_search nearest entries per cell, updated (may be a scratch file)
    top_d2: np.ndarray
    topk: np.ndarray  # top_k nearest entries (in memory)
    weights: np.ndarray  # top_k soft memberships
    confidence: np.ndarray
    sizes: np.ndarray
    n_moved: int
    n_refilled: int
    n_floor_moved: int


def finalize_assignment(
    z: np.ndarray,
    codes: np.ndarray,
    *,
    top_k: int,
    max_size: np.ndarray | None,
    min_size: int,
    cell_group: np.ndarray | None,
    code_group: np.ndarray | None,
    search: Callable[..., tuple[np.ndarray, np.ndarray]],
    chunk_size: int = 65536,
) -> FinalAssignment:
    """Assign every cell after training: capped nearest entry, no empty entry, the size floor, top-k.

    ``search(z, codes, k, cell_group, rows=None, out=None)`` returns the ``k`` nearest allowed entries
    (exact or two-level) of ``z`` (or of ``z[rows]``; ``cell_group`` then still covers all of ``z``),
    written into ``out`` when given. Entries whose cells changed get the centre of their cells as
    codebook vector; the top-k of the cells touched by such an entry are searched again. The per-cell
    search results are scratch arrays (memory-mapped files for large inputs) read in chunks.
    """
    from ._balance import cluster_means, enforce_min_size

    n_codes = codes.shape[0]
    n_cells = z.shape[0]
    codes = codes.copy()
    k_search = min(max(top_k, 8), n_codes)
    top_idx = scratch_array((n_cells, k_search), np.int64)
    top_d2 = scratch_array((n_cells, k_search), np.float32)
    search(z, codes, k_search, cell_group, out=(top_idx, top_d2))
    capacity = np.full(n_codes, np.iinfo(np.int64).max) if max_size is None else max_size
    labels, n_moved = capacity_assign(
        z, codes, top_idx, top_d2, capacity, cell_group=cell_group, code_group=code_group
    )
    labels, filled = fill_empty(z, labels, n_codes, cell_group=cell_group, code_group=code_group)
    n_refilled = len(filled)
    labels, floored, n_floor_moved = enforce_min_size(
        z, labels, n_codes, min_size, capacity=capacity, cell_group=cell_group, code_group=code_group,
        search=search,
    )  # fmt: skip
    release(z, top_idx, top_d2)
    filled = np.array(sorted(set(filled) | {int(j) for j in floored}), dtype=np.int64)
    sizes = np.bincount(labels, minlength=n_codes)
    if filled.size:
        is_filled = np.zeros(n_codes, dtype=bool)
        is_filled[filled] = True
        means, _ = cluster_means(z, labels, n_codes, only=is_filled)  # rows in the order of `filled`
        codes[filled] = means.astype(codes.dtype)
        redo = []
        for s in range(0, n_cells, chunk_size):
            e = min(s + chunk_size, n_cells)
            hit = is_filled[labels[s:e]] | is_filled[top_idx[s:e]].any(1)
            redo.append(s + np.flatnonzero(hit))
            release(top_idx)
        redo = np.concatenate(redo)
        if redo.size:  # searched into scratch arrays, copied over in chunks: no per-cell block in memory
            i_new = scratch_array((redo.size, k_search), np.int64)
            d_new = scratch_array((redo.size, k_search), np.float32)
            search(z, codes, k_search, cell_group, rows=redo, out=(i_new, d_new))
            for s in range(0, redo.size, chunk_size):
                put_rows(top_idx, redo[s : s + chunk_size], i_new[s : s + chunk_size])
                put_rows(top_d2, redo[s : s + chunk_size], d_new[s : s + chunk_size])
                release(i_new, d_new)
            del i_new, d_new
            release(top_idx, top_d2)
    kk = min(top_k, k_search)
    weights = np.empty((n_cells, kk), dtype=np.float32)
    confidence = np.empty(n_cells, dtype=np.float32)
    topk = np.empty((n_cells, kk), dtype=np.int32)  # positions of entries (the output dtype)
    for s in range(0, n_cells, chunk_size):
        e = min(s + chunk_size, n_cells)
        w = soft_memberships(top_d2[s:e, :kk])
        hit = top_idx[s:e, :kk] == labels[s:e, None]
        weights[s:e] = w
        confidence[s:e] = np.where(hit.any(1), (w * hit).sum(1), 0.0)
        topk[s:e] = top_idx[s:e, :kk]
        release(top_idx, top_d2)
    if n_codes <= np.iinfo(np.int32).max:  # 4 bytes per cell for the rest of the run
        labels = labels.astype(np.int32)
    return FinalAssignment(
        labels,
        codes,
        top_idx,
        top_d2,
        topk,
        weights,
        confidence,
        sizes,
        int(n_moved),
        n_refilled,
        int(n_floor_moved),
    )
