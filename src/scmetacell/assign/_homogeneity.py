"""Trust diagnostics: whether a metacell's cells differ by more than count noise.

For metacell ``k`` with cells ``i`` (library sizes ``L_i``) and genes ``g`` (the ``n_genes`` most variable
HVGs), the homogeneous model says ``x_ig ~ Poisson(L_i p_kg)`` with one profile ``p_kg = S_kg / T_k``
(``S_kg = Σ_i x_ig``, ``T_k = Σ_i L_i``). Pearson's statistic of that model,

    χ²_k = Σ_g Σ_i (x_ig − L_i p_kg)² / (L_i p_kg) = Σ_g T_k Q_kg / S_kg − Σ_g S_kg,   Q_kg = Σ_i x_ig² / L_i,

needs only the per-metacell sums ``S`` and ``Q``, accumulated in one streamed pass over the cells. Its
dispersion ``φ_k = χ²_k / df_k`` with ``df_k = (n_k − 1) · G_k`` (``G_k`` genes seen in the metacell) is 1
when the cells are indistinguishable under Poisson noise and grows with hidden structure (two cell
types, a cut trajectory). Real counts are overdispersed, so every metacell has ``φ > 1``; a metacell is
**dubious** when ``log φ_k`` lies more than ``threshold`` robust standard deviations (1.4826 × MAD) above
the median over the metacells of its dataset — an outlier of heterogeneity in the spirit of mcRigor's
dubious metacells and MetaCell-2's deviant cells.

Memory: two metacells × ``n_genes`` float64 arrays (2 KB per metacell at 128 genes).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .._progress import progress_bar
from ._scratch import take_rows
from ._search import flat_search
from ._size_floor import _split_in_two, cluster_means

N_GENES = 128  # genes of the statistic: the most variable HVGs
THRESHOLD = 3.0  # robust standard deviations of log φ above the median


@dataclass
class Homogeneity:
    """Per-metacell homogeneity statistic (arrays of length ``n_metacells``)."""

    dispersion: np.ndarray  # φ_k = χ²_k / df_k (NaN for a metacell of one cell)
    score: np.ndarray  # robust z-score of log φ_k among the metacells
    dubious: np.ndarray  # score > threshold


def gene_subset(std: np.ndarray, n_genes: int = N_GENES) -> np.ndarray:
    """Positions (in HVG order) of the ``n_genes`` HVGs with the largest log-expression spread."""
    n = min(int(n_genes), std.size)
    return np.sort(np.argsort(-np.asarray(std), kind="stable")[:n])


def homogeneity(
    rows,
    labels: np.ndarray,
    n_metacells: int,
    library_size: np.ndarray,
    genes: np.ndarray | None,
    *,
    threshold: float = THRESHOLD,
    n_obs: int | None = None,
    progress: bool | None = None,
) -> Homogeneity:
    """Homogeneity statistic of every metacell, from a streamed pass over the cells' HVG counts.

    Parameters
    ----------
    rows
        Iterable of ``(start, stop, counts)``: CSR raw counts of cells ``start:stop`` (all their genes, or
        the HVGs).
    labels
        Metacell of each cell.
    n_metacells
        Number of metacells.
    library_size
        Total counts of each cell (all genes).
    genes
        Columns of ``counts`` used by the statistic (e.g. the genes of :func:`gene_subset`); ``None``: all
        of them.
    threshold
        Robust standard deviations of ``log φ`` above the median that make a metacell dubious.
    """
    from ._kernels import accumulate_counts  # numba: compiled (once, cached) on first use

    k = int(n_metacells)
    m = None if genes is None else int(genes.size)
    s = q = lut = None
    total = np.bincount(labels, weights=library_size.astype(np.float64), minlength=k)
    sizes = np.bincount(labels, minlength=k)
    labels = np.asarray(labels)
    inv_lib = 1.0 / np.maximum(np.asarray(library_size, dtype=np.float64), 1e-300)
    with progress_bar(total=n_obs or labels.size, desc="metacell homogeneity", progress=progress) as bar:
        for start, stop, counts in rows:
            c = sp.csr_matrix(counts)
            if s is None:
                cols = np.arange(c.shape[1]) if genes is None else np.asarray(genes, dtype=np.int64)
                m = cols.size
                lut = np.full(c.shape[1], -1, dtype=np.int64)  # column → position in the statistic
                lut[cols] = np.arange(m)
                s, q = np.zeros((k, m)), np.zeros((k, m))
            accumulate_counts(
                c.indptr, c.indices, c.data, lut, labels[start:stop], inv_lib[start:stop], s, q
            )  # fmt: skip
            bar.update(stop - start)
    if s is None:  # no rows
        s = q = np.zeros((k, m or 0))
    seen = s > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        chi2 = np.where(seen, total[:, None] * q / np.where(seen, s, 1.0), 0.0).sum(1) - s.sum(1)
        df = (sizes - 1) * seen.sum(1)
        disp = np.where(df > 0, chi2 / np.maximum(df, 1), np.nan)
    return Homogeneity(disp, *_robust_flags(disp, threshold))


def _robust_flags(disp: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Robust z-score of ``log φ`` among the metacells and the dubious flag."""
    logd = np.log(np.clip(disp, 1e-12, None))
    ok = np.isfinite(logd)
    score = np.full(disp.shape, np.nan)
    if ok.sum() >= 3:
        med = np.median(logd[ok])
        mad = 1.4826 * np.median(np.abs(logd[ok] - med))
        score[ok] = (logd[ok] - med) / max(mad, 1e-12)
    return score, np.nan_to_num(score, nan=-np.inf) > threshold


def split_dubious(
    z: np.ndarray,
    labels: np.ndarray,
    n_codes: int,
    dubious: np.ndarray,
    score: np.ndarray,
    *,
    min_size: int,
    capacity: np.ndarray,
    code_group: np.ndarray | None = None,
    search=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split dubious metacells in two while keeping their number: free entries by merging homogeneous pairs.

    Each dubious metacell with at least ``2 · min_size`` cells (most heterogeneous first) is cut by
    2-means on the embeddings; its second half takes the entry freed by merging the cheapest pair of
    neighbouring non-dubious metacells (Ward cost ``n_a n_b / (n_a + n_b) · ‖c_a − c_b‖²``, the union
    within the capacity, in the same sample). Returns ``(labels, changed_entries)``.
    """
    labels = labels.copy()
    cent, sizes = cluster_means(z, labels, n_codes)
    cg = np.zeros(n_codes, dtype=np.int64) if code_group is None else np.asarray(code_group)
    to_split = np.flatnonzero(dubious & (sizes >= 2 * min_size))
    to_split = to_split[np.argsort(-np.nan_to_num(score[to_split]), kind="stable")]
    if to_split.size == 0:
        return labels, np.empty(0, dtype=np.int64)
    if search is None:
        search = flat_search(code_group)
    near, d2 = search(cent, cent, min(4, n_codes), None if code_group is None else cg)
    pairs = []
    for a in np.flatnonzero(~dubious & (sizes > 0)):
        for b, dd in zip(near[a], d2[a], strict=True):
            if b < 0 or b == a or dubious[b] or sizes[b] == 0 or cg[b] != cg[a] or not np.isfinite(dd):
                continue
            if sizes[a] + sizes[b] <= capacity[a]:
                pairs.append((sizes[a] * sizes[b] / (sizes[a] + sizes[b]) * float(dd), int(a), int(b)))
    pairs.sort()
    used = np.zeros(n_codes, dtype=bool)
    used[to_split] = True
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(n_codes + 1))
    changed: list[int] = []
    it = iter(pairs)
    for j in to_split.tolist():
        for _, a, b in it:
            if not (used[a] or used[b]) and cg[a] == cg[j]:
                break
        else:
            break
        used[a] = used[b] = True
        labels[order[bounds[b] : bounds[b + 1]]] = a  # b joins a: entry b is free
        members = order[bounds[j] : bounds[j + 1]]
        take = _split_in_two(take_rows(z, members), min_size)
        labels[members[take]] = b
        changed += [a, b, j]
    return labels, np.array(sorted(changed), dtype=np.int64)
