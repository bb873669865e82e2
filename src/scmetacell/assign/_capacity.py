"""Capacity: no metacell over its size cap, none empty; the cells' soft memberships.

Written as functions of ``(embeddings, codebook, search results)`` so the exact or the two-level search
(:mod:`._search`) can feed them.

- :func:`soft_memberships`: top-k weights ∝ 1 / (squared distance + ε), normalised to sum to 1.
- :func:`capacity_assign`: nearest entry, except that no entry takes more than ``capacity`` cells: the
  farthest cells of an overfull entry move to their next-nearest entry with room.
- :func:`fill_empty`: the final guarantee that every entry has cells: an empty entry takes the far half
  of the largest metacell of its sample (split along the line from its centroid to its farthest cell).
"""

from __future__ import annotations

import heapq

import numpy as np

from ._scratch import release, take_rows


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
    filled: list[int] = []
    empty = np.flatnonzero(sizes == 0)
    if empty.size == 0:
        return labels, filled
    # members of every entry from one sort (a scan of all labels per empty entry was O(cells × empty):
    # 150 s at 10M cells); the entries split here keep their members in `moved`
    order = np.argsort(labels, kind="stable")
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    moved: dict[int, np.ndarray] = {}
    groups = np.zeros(n_codes, dtype=np.int64) if code_group is None else np.asarray(code_group)
    heaps: dict[int, list[tuple[int, int]]] = {}  # per group: (-size, entry), stale items skipped

    def _largest(g: int) -> int:  # the group's largest entry, the lowest index among equals
        if g not in heaps:
            ids = np.flatnonzero(groups == g)
            heaps[g] = list(zip((-sizes[ids]).tolist(), ids.tolist(), strict=True))
            heapq.heapify(heaps[g])
        h = heaps[g]
        while -h[0][0] != sizes[h[0][1]]:
            heapq.heappop(h)
        return h[0][1]

    for j in empty.tolist():
        g = int(groups[j])
        big = _largest(g)
        if sizes[big] < 2:
            continue
        members = moved[big] if big in moved else order[bounds[big] : bounds[big + 1]]
        zm = take_rows(z, members)
        c = zm.mean(0)
        far = zm[np.argmax(((zm - c) ** 2).sum(1))]
        take = ((zm - far) ** 2).sum(1) < ((zm - c) ** 2).sum(1)
        if take.all() or not take.any():  # degenerate (identical cells): move half
            take = np.zeros(members.size, dtype=bool)
            take[: members.size // 2] = True
        labels[members[take]] = j
        moved[j], moved[big] = members[take], members[~take]
        sizes[j] = int(take.sum())
        sizes[big] -= sizes[j]
        heapq.heappush(heaps[g], (-int(sizes[big]), big))
        heapq.heappush(heaps[g], (-int(sizes[j]), j))
        filled.append(int(j))
    release(z)
    return labels, filled
