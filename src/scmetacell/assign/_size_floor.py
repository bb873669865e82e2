"""A floor on metacell sizes: no metacell of one stray cell, and no small population dissolved.

Nearest-entry assignment leaves outlying cells alone in entries of their own (on PBMC 3k at γ = 10,
k-means and the bare VQ model both give ~40 % of metacells with one or two cells). :func:`enforce_min_size`
grows every metacell below ``min_size`` cells with the cells nearest to its centre taken from its nearest
neighbouring metacells (as long as they keep ``min_size`` cells), so an isolated pair or a rare population
keeps its own metacell. Only where no neighbour has cells to spare are small metacells dissolved into
their nearest larger metacells and the freed entries re-used by splitting the largest metacells of the
same group in two (2-means on their cells, a median cut when 2-means is unbalanced). The number of
metacells is kept either way.

Measured (PBMC 3k, γ = 10, k-means on the shared 50 PCs, mean purity over metacells): no floor 0.926
(1-cell metacells count as pure), dissolve-and-split with a floor of 2 0.870, growing with a floor of 2
0.911.

One-cell metacells are the exception: a stray cell grown into a pair with its nearest cell often
makes a mixed pair, so its cell joins its nearest metacell instead and the freed entry splits the
clearest two-part metacell (``split='spread'``). Measured with ``tl.metacell`` defaults at γ = 10
(2026-12-04, shared 50-PC scoring of ``docs/benchmarks.md``), growing → dissolving one-cell metacells:
mean purity PBMC 3k 0.9075 → 0.9166, pancreas 0.8941 → 0.8968, Kang 0.9889 → 0.9919; at γ ≥ 30 these
inputs have no one-cell metacell and nothing changes.
"""

from __future__ import annotations

import heapq

import numpy as np

from ._scratch import release, scratch_array, take_rows
from ._search import flat_search

SPLIT_BATCH = 2048  # metacells whose cells' embeddings are read at once when ranking splits ('spread')


def cluster_means(
    z: np.ndarray,
    labels: np.ndarray,
    n_codes: int,
    *,
    only: np.ndarray | None = None,
    chunk_size: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Mean embedding (float32) and size of every entry, summed in chunks (float64).

    ``only``: boolean mask of the entries whose means are needed; the means are then those entries'
    only (rows in the order of ``np.flatnonzero(only)``), so a few refilled entries of a large codebook
    do not cost a codebook-sized float64 array. Pages of a memory-mapped ``z`` are handed back after
    each chunk.
    """
    import torch

    sizes = np.bincount(labels, minlength=n_codes)
    if only is None:
        slot = None
        n_out = n_codes
    else:
        wanted = np.flatnonzero(only)
        slot = np.full(n_codes, -1, dtype=np.int64)
        slot[wanted] = np.arange(wanted.size)
        n_out = wanted.size
    sums = torch.zeros((n_out, z.shape[1]), dtype=torch.float64)
    for s in range(0, z.shape[0], chunk_size):
        lab = labels[s : s + chunk_size]
        rows = np.arange(lab.size) if slot is None else np.flatnonzero(slot[lab] >= 0)
        if rows.size:
            zc = torch.from_numpy(np.ascontiguousarray(z[s : s + chunk_size][rows], dtype=np.float32))
            at = lab[rows] if slot is None else slot[lab[rows]]
            sums.index_add_(0, torch.from_numpy(np.ascontiguousarray(at, dtype=np.int64)), zc.double())
        release(z)
    n = np.maximum(sizes if slot is None else sizes[wanted], 1)
    sums /= torch.from_numpy(n.astype(np.float64))[:, None]  # in place: no second codebook-sized array
    return sums.numpy().astype(np.float32), sizes


def _sse(x: np.ndarray) -> float:
    """Sum of squared distances of the rows of ``x`` to their mean."""
    return float(((x - x.mean(0)) ** 2).sum()) if x.shape[0] else 0.0


def _split_priority(
    z, j: int, m: np.ndarray, min_size: int, split: str, halves: dict, zm: np.ndarray | None = None
) -> tuple[float, int]:
    """Heap key of splitting entry ``j`` (cells ``m``), the best first.

    ``'largest'``: its size; ``'spread'``: its split's gain in mean squared distance to the centre (the
    split is kept in ``halves[j]``).
    """
    if split == "largest":
        return (-float(m.size), j)
    zm = np.asarray(take_rows(z, m) if zm is None else zm, dtype=np.float64)
    take = _split_in_two(zm, min_size)
    halves[j] = take
    gain = _sse(zm) - _sse(zm[take]) - _sse(zm[~take])
    return (-gain / m.size, j)


def _split_in_two(zm: np.ndarray, min_size: int, n_iter: int = 8) -> np.ndarray:
    """Boolean mask of the cells that leave: 2-means on ``zm``; a median cut if a side is < ``min_size``.

    2-means starts from the cut of the first principal axis at the centre (not from the farthest cells,
    which a single outlier would be, leaving it alone on one side).
    """
    c = zm.mean(0)
    zc = zm - c
    axis0 = np.linalg.svd(zc, full_matrices=False)[2][0] if zm.shape[0] > 1 else np.zeros(zm.shape[1])
    side = zc @ axis0 > 0
    if side.all() or not side.any():
        a, b = zm[np.argmax((zc**2).sum(1))], c
    else:
        a, b = zm[~side].mean(0), zm[side].mean(0)
    take = np.zeros(zm.shape[0], dtype=bool)
    for _ in range(n_iter):
        new = ((zm - b) ** 2).sum(1) < ((zm - a) ** 2).sum(1)
        if new.all() or not new.any():
            break
        if np.array_equal(new, take):
            break
        take = new
        a, b = zm[~take].mean(0), zm[take].mean(0)
    if take.sum() < min_size or (~take).sum() < min_size:
        axis = b - a
        proj = zm @ axis if np.any(axis) else np.arange(zm.shape[0], dtype=np.float64)
        order = np.argsort(proj, kind="stable")
        take = np.zeros(zm.shape[0], dtype=bool)
        take[order[zm.shape[0] // 2 :]] = True
    return take


def dissolve_and_split(
    z: np.ndarray,
    labels: np.ndarray,
    n_codes: int,
    min_size: int,
    *,
    capacity: np.ndarray | None = None,
    cell_group: np.ndarray | None = None,
    code_group: np.ndarray | None = None,
    search=None,
    chunk_size: int = 65536,
    dissolve_below: int | None = None,
    split: str = "largest",
) -> tuple[np.ndarray, np.ndarray, int]:
    """Dissolve the metacells smaller than ``min_size`` and split large metacells to keep ``n_codes``.

    Parameters
    ----------
    z
        Cell embeddings (cells × d).
    labels
        Metacell of each cell (``0 .. n_codes-1``).
    n_codes
        Number of metacells (kept).
    min_size
        Smallest allowed metacell; ``<= 1`` does nothing.
    capacity
        Largest allowed size per entry; a move never fills an entry past it.
    cell_group, code_group
        Sample of each cell and of each entry: cells only move within their sample.
    search
        ``search(z, codes, k, None, rows=rows, out=(indices, distances))`` fills ``out`` with the ``k``
        nearest of ``codes`` for the rows ``z[rows]``, e.g. the two-level search of large codebooks;
        default exact (:func:`~scmetacell.assign.nearest_topk`).
    dissolve_below
        Dissolve the metacells with fewer cells than this (default ``min_size``; ``2``: one-cell
        metacells only). Splits always leave at least ``min_size`` cells on each side.
    split
        Which metacells are split to refill the freed entries: ``'largest'`` (the largest first) or
        ``'spread'`` (the one whose split in two most reduces its cells' mean squared distance to their
        centre, i.e. the most clearly two-part metacell, among the ``max(200, 4 × freed)`` largest).

    Returns
    -------
    ``(labels, changed_entries, n_moved_cells)``.
    """
    labels = labels.copy()
    if min_size <= 1:
        return labels, np.empty(0, dtype=np.int64), 0
    if split not in ("largest", "spread"):
        raise ValueError(f"split must be 'largest' or 'spread', got {split!r}")
    below = min_size if dissolve_below is None else int(dissolve_below)
    if search is None:
        search = flat_search()
    if cell_group is None or code_group is None:
        cell_group = np.zeros(labels.size, dtype=np.int64)
        code_group = np.zeros(n_codes, dtype=np.int64)
    cap = np.full(n_codes, np.iinfo(np.int64).max) if capacity is None else np.asarray(capacity)
    cent, sizes = cluster_means(z, labels, n_codes)
    changed: set[int] = set()
    n_moved = 0
    for g in np.unique(code_group):
        entries = np.flatnonzero(code_group == g)
        small = entries[(sizes[entries] < below)]
        if small.size == 0:
            continue
        # how many entries can be refilled by splitting: each split needs a metacell of >= 2 * min_size
        big_sizes = np.sort(sizes[entries])[::-1]
        n_splittable = int((big_sizes >= 2 * min_size).sum())
        # dissolve the smallest first, no more than can be refilled (empty entries are always refilled)
        small = small[np.argsort(sizes[small], kind="stable")]
        n_empty = int((sizes[small] == 0).sum())
        small = small[: max(n_splittable, n_empty)]
        dissolve = small[sizes[small] > 0]
        if dissolve.size:
            keep = np.setdiff1d(entries, small)
            if keep.size == 0:
                continue
            is_dissolved = np.zeros(n_codes, dtype=bool)
            is_dissolved[dissolve] = True
            cells = np.flatnonzero(is_dissolved[labels])
            ck = cent[keep]
            n_near = min(16, keep.size)
            # the 16 nearest kept entries of every dissolved cell, nearest first: one search (a large
            # codebook's two-level index is built once), into scratch arrays read back in chunks
            near_all = scratch_array((cells.size, n_near), np.int64)
            search(z, ck, n_near, None, rows=cells, out=(near_all, scratch_array(near_all.shape, np.float32)))
            for s in range(0, cells.size, chunk_size):
                idx = cells[s : s + chunk_size]
                near = np.array(near_all[s : s + chunk_size])
                release(near_all)
                for row, i in enumerate(idx):
                    cand = keep[near[row][near[row] >= 0]]
                    room = cand[sizes[cand] < cap[cand]]
                    if room.size == 0:  # all of them full: every kept entry, nearest first
                        zi = take_rows(z, idx[row : row + 1])[0].astype(np.float32)  # rare: read here only
                        cand = keep[np.argsort(((ck - zi) ** 2).sum(1), kind="stable")]
                        room = cand[sizes[cand] < cap[cand]]
                    if room.size:
                        j = room[0]
                        sizes[labels[i]] -= 1
                        labels[i] = j
                        sizes[j] += 1
                        changed.add(int(j))
                release(z)
            n_moved += cells.size
            changed.update(int(j) for j in dissolve)
        # refill every empty entry of the group by splitting its currently largest metacell
        empty = entries[sizes[entries] == 0]
        if empty.size == 0:
            continue
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(n_codes + 1))
        splittable = entries[sizes[entries] >= 2 * min_size]
        if split == "spread":  # a pool of the largest: the split's gain is computed for these only
            n_pool = max(200, 4 * empty.size)
            splittable = splittable[np.argsort(-sizes[splittable], kind="stable")[:n_pool]]
        members = {int(j): order[bounds[j] : bounds[j + 1]] for j in splittable}
        halves: dict[int, np.ndarray] = {}  # entry -> its split ('spread')
        # the best metacell to split first (ties: the lowest entry), from a heap: O(log K) per split
        if split == "spread":  # the pool's embeddings read in sorted batches, not one read per metacell
            heap = []
            ids = list(members)
            for s0 in range(0, len(ids), SPLIT_BATCH):
                batch = ids[s0 : s0 + SPLIT_BATCH]
                rows = np.concatenate([members[j] for j in batch])
                srt = np.argsort(rows, kind="stable")
                block = np.empty((rows.size, z.shape[1]), dtype=np.float32)
                block[srt] = take_rows(z, rows[srt])
                at = 0
                for j in batch:
                    m = members[j]
                    heap.append(_split_priority(z, j, m, min_size, split, halves, zm=block[at : at + m.size]))
                    at += m.size
                release(z)
        else:
            heap = [_split_priority(z, j, m, min_size, split, halves) for j, m in members.items()]
        heapq.heapify(heap)
        for j_new in empty:
            if not heap:
                break
            _, big = heapq.heappop(heap)
            m = members.pop(big)
            take = halves.pop(big) if big in halves else _split_in_two(take_rows(z, m), min_size)
            labels[m[take]] = j_new
            sizes[j_new], sizes[big] = int(take.sum()), int((~take).sum())
            changed.update((int(j_new), int(big)))
            for j, mm in ((int(big), m[~take]), (int(j_new), m[take])):
                if mm.size >= 2 * min_size:
                    members[j] = mm
                    heapq.heappush(heap, _split_priority(z, j, mm, min_size, split, halves))
        release(z)
    return labels, np.array(sorted(changed), dtype=np.int64), n_moved


def enforce_min_size(
    z: np.ndarray,
    labels: np.ndarray,
    n_codes: int,
    min_size: int,
    *,
    capacity: np.ndarray | None = None,
    cell_group: np.ndarray | None = None,
    code_group: np.ndarray | None = None,
    search=None,
    chunk_size: int = 65536,
    n_donors: int = 8,
    single_cells: str = "dissolve",
) -> tuple[np.ndarray, np.ndarray, int]:
    """Grow every metacell smaller than ``min_size`` with the nearest cells of its neighbours.

    A small metacell of two cells or more (an isolated pair, a rare population) is kept: it takes,
    nearest first, the cells closest to its centre among the cells of its ``n_donors`` nearest metacells
    of the same sample, as long as a donor keeps at least ``min_size`` cells. The number of metacells is
    unchanged and no small population is dissolved. A metacell of **one** cell is a stray cell, not a
    population: with ``single_cells='dissolve'`` (default) its cell joins its nearest metacell with room
    and the freed entry goes to the clearest two-part metacell, split in two (see
    :func:`dissolve_and_split`, ``split='spread'``); ``'grow'`` grows it like the others. Only a
    metacell that finds no donor with cells to spare (a sample with hardly more cells than ``min_size``
    per metacell) is dissolved into its nearest metacells and its entry refilled by splitting the
    largest one. Cost: O(small metacells × ``n_donors`` × cells per metacell), plus one or two passes
    over the cells for the metacells' centres.

    Why stray cells are dissolved: grown into a pair with its nearest cell, a stray cell makes a mixed
    pair far more often than a natural pair is mixed (Kang 2018, γ = 10: 9 of the 60 pairs grown from
    one-cell metacells had two cell types, 1 of the 70 other pairs), and a mixed pair weighs 0.5 in the
    mean purity where one foreign cell in a metacell of 10 weighs 0.1.

    Returns
    -------
    ``(labels, changed_entries, n_moved_cells)``.
    """
    if single_cells not in ("dissolve", "grow"):
        raise ValueError(f"single_cells must be 'dissolve' or 'grow', got {single_cells!r}")
    labels = labels.copy()
    if min_size <= 1:
        return labels, np.empty(0, dtype=np.int64), 0
    if search is None:
        search = flat_search(code_group)
    changed: set[int] = set()
    n_moved = 0
    if single_cells == "dissolve" and (np.bincount(labels, minlength=n_codes) == 1).any():
        labels, first, n_first = dissolve_and_split(
            z, labels, n_codes, min_size, capacity=capacity, cell_group=cell_group, code_group=code_group,
            search=search, chunk_size=chunk_size, dissolve_below=2, split="spread",
        )  # fmt: skip
        changed.update(int(j) for j in first)
        n_moved += n_first
    cent, sizes = cluster_means(z, labels, n_codes)
    small = np.flatnonzero((sizes > 0) & (sizes < min_size))
    if small.size:
        small = small[np.argsort(sizes[small], kind="stable")]  # the smallest first
        k_near = min(n_donors + 1, n_codes)
        groups = None if code_group is None or cell_group is None else np.asarray(code_group)[small]
        near, _ = search(cent[small], cent, k_near, groups)
        order = np.argsort(labels, kind="stable")
        bounds = np.searchsorted(labels[order], np.arange(n_codes + 1))
        for j, cand in zip(small.tolist(), near, strict=True):
            need = int(min_size - sizes[j])
            donors = cand[(cand >= 0) & (cand != j)]
            donors = donors[sizes[donors] > min_size]
            if need <= 0 or donors.size == 0:
                continue
            cells = np.concatenate([order[bounds[d] : bounds[d + 1]] for d in donors])
            cells = np.sort(cells[np.isin(labels[cells], donors)])  # members that are still there
            if cells.size == 0:
                continue
            d2 = ((take_rows(z, cells).astype(np.float32) - cent[j]) ** 2).sum(1)
            for i in cells[np.argsort(d2, kind="stable")].tolist():
                d = labels[i]
                if sizes[d] > min_size:
                    labels[i] = j
                    sizes[d] -= 1
                    sizes[j] += 1
                    changed.update((int(d), j))
                    n_moved += 1
                    need -= 1
                    if need == 0:
                        break
        release(z)
    if (sizes[sizes > 0] < min_size).any():  # no donor with cells to spare: dissolve and split
        labels, more, n_more = dissolve_and_split(
            z, labels, n_codes, min_size, capacity=capacity, cell_group=cell_group, code_group=code_group,
            search=search, chunk_size=chunk_size,
        )  # fmt: skip
        changed.update(int(j) for j in more)
        n_moved += n_more
    return labels, np.array(sorted(changed), dtype=np.int64), n_moved
