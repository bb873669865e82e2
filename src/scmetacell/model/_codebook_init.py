"""Codebook initialisation: k-means (k-means++ seeding + Lloyd iterations, in torch) or random cells.

Both start every entry on real cells, so no entry starts dead (unlike a uniform-noise codebook).
"""

from __future__ import annotations

import numpy as np
import torch

from ._assign import squared_distances


@torch.no_grad()
def kmeans_pp(z: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    """k-means++ seeding (greedy variant with 2 + log k local trials) of ``k`` centres from rows of ``z``."""
    n = z.shape[0]
    n_trials = 2 + int(np.log(k))
    first = int(torch.randint(n, (1,), generator=gen))
    centers = [z[first]]
    closest = squared_distances(z, z[first : first + 1])[:, 0]
    for _ in range(1, k):
        total = closest.sum()
        if total <= 0:
            cand = torch.randint(n, (n_trials,), generator=gen)
        else:
            cand = torch.multinomial(closest / total, n_trials, replacement=True, generator=gen)
        d_cand = torch.minimum(closest[None, :], squared_distances(z[cand], z))
        best = int(torch.argmin(d_cand.sum(1)))
        centers.append(z[cand[best]])
        closest = d_cand[best]
    return torch.stack(centers)


@torch.no_grad()
def lloyd(z: torch.Tensor, centers: torch.Tensor, n_iter: int, tol: float = 1e-4) -> torch.Tensor:
    """Lloyd iterations; an entry that loses all its cells is moved to the cell farthest from its centre."""
    k = centers.shape[0]
    centers = centers.clone()
    prev = None
    for _ in range(n_iter):
        d2 = squared_distances(z, centers)
        dmin, lab = d2.min(1)
        counts = torch.bincount(lab, minlength=k)
        sums = torch.zeros_like(centers).index_add_(0, lab, z)
        empty = counts == 0
        centers = torch.where(empty[:, None], centers, sums / counts.clamp_min(1)[:, None].to(z.dtype))
        if empty.any():
            far = torch.topk(dmin, int(empty.sum())).indices
            centers[empty] = z[far]
        if prev is not None and (lab != prev).float().mean() < tol:
            break
        prev = lab
    return centers


def init_codebook(
    z: np.ndarray,
    n_codes_per_group: np.ndarray,
    cell_group: np.ndarray,
    *,
    method: str,
    seed: int,
    n_iter: int = 300,
    max_cells: int = 200_000,
) -> np.ndarray:
    """Return the initial codebook (entries ordered by group) from the initial embeddings ``z`` of the cells.

    ``method="kmeans"``: scikit-learn's k-means (k-means++ seeding, up to ``n_iter`` Lloyd iterations,
    one initialisation) per group, on at most ``max_cells`` cells of the group (sampled). It reaches a
    lower inertia than :func:`kmeans_pp` + a few :func:`lloyd` steps (measured on PBMC 3k at γ = 30: mean
    purity 0.915 vs 0.886). ``method="random"``: distinct random cells of the group.
    """
    gen = torch.Generator().manual_seed(int(seed))
    rng = np.random.default_rng(seed)
    out = []
    for g, k in enumerate(n_codes_per_group):
        members = np.flatnonzero(cell_group == g)
        if members.size > max_cells:
            members = np.sort(rng.choice(members, max_cells, replace=False))
        zg = torch.as_tensor(z[members], dtype=torch.float32)
        if method == "random":
            pick = torch.randperm(members.size, generator=gen)[: int(k)]
            out.append(zg[pick].numpy())
        else:
            from sklearn.cluster import KMeans  # scanpy's dependency; its Lloyd runs to convergence

            km = KMeans(n_clusters=int(k), n_init=1, max_iter=n_iter, random_state=int(seed) + g)
            out.append(km.fit(zg.numpy()).cluster_centers_.astype(np.float32))
    return np.concatenate(out).astype(np.float32)
