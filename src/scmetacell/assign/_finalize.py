"""The final assignment after training: capped nearest entry, no empty entry, the size floor, top-k."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ._capacity import capacity_assign, fill_empty, soft_memberships
from ._scratch import put_rows, release, scratch_array, take_rows
from ._size_floor import cluster_means, enforce_min_size


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


def _rescore(z, codes, top_idx, top_d2, rows: np.ndarray) -> None:
    """Distances of ``rows`` to their candidate entries recomputed with ``codes``, candidates re-sorted."""
    zi = np.asarray(take_rows(z, rows), dtype=np.float32)
    idx = np.asarray(take_rows(top_idx, rows))
    old = np.asarray(take_rows(top_d2, rows))
    d2 = ((codes[idx] - zi[:, None, :]) ** 2).sum(-1, dtype=np.float32)
    d2[~np.isfinite(old)] = np.inf  # padding of samples with fewer entries stays padding
    order = np.argsort(d2, axis=1, kind="stable")
    put_rows(top_idx, rows, np.take_along_axis(idx, order, 1))
    put_rows(top_d2, rows, np.take_along_axis(d2, order, 1))


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
    refine: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> FinalAssignment:
    """Assign every cell after training: capped nearest entry, no empty entry, the size floor, top-k.

    ``search(z, codes, k, cell_group, rows=None, out=None)`` returns the ``k`` nearest allowed entries
    (exact or two-level) of ``z`` (or of ``z[rows]``; ``cell_group`` then still covers all of ``z``),
    written into ``out`` when given. Entries whose cells changed get the centre of their cells as
    codebook vector; the cells of such an entry are searched again, and the cells that only have one
    among their nearest entries get that entry's distance updated (their candidates re-sorted). The per-cell
    search results are scratch arrays (memory-mapped files for large inputs) read in chunks.
    ``refine(labels) -> (labels, changed_entries)`` runs after the size floor (e.g.
    :func:`~scmetacell.assign.split_dubious`); its changed entries are refreshed like the floor's.
    """
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
    refined = np.empty(0, dtype=np.int64)
    if refine is not None:
        labels, refined = refine(labels)
    release(z, top_idx, top_d2)
    filled = np.array(sorted({*filled, *floored.tolist(), *refined.tolist()}), dtype=np.int64)
    sizes = np.bincount(labels, minlength=n_codes)
    if filled.size:
        is_filled = np.zeros(n_codes, dtype=bool)
        is_filled[filled] = True
        means, _ = cluster_means(z, labels, n_codes, only=is_filled)  # rows in the order of `filled`
        codes[filled] = means.astype(codes.dtype)
        redo = []
        for s in range(0, n_cells, chunk_size):
            e = min(s + chunk_size, n_cells)
            own = is_filled[labels[s:e]]
            redo.append(s + np.flatnonzero(own))  # their own metacell moved: searched again
            near = ~own & is_filled[top_idx[s:e]].any(1)  # a neighbour moved: its distance is updated
            if near.any():
                _rescore(z, codes, top_idx, top_d2, s + np.flatnonzero(near))
            release(z, top_idx, top_d2)
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
