"""Streaming preprocessing: library sizes, HVG selection, z-score statistics and PCA, chunk by chunk.

Every function here reads cells through a :class:`~scmetacell.data.CellSource` in chunks; nothing
builds a dense cells × genes array (a dense chunk × HVG block is the largest dense object).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data import CellSource, check_counts_block
from ..data._executor import ChunkExecutor, chunk_bounds

TARGET_SUM = 1e4
LOG_MAX = 50.0
GENE_SCALINGS = ("both", "zscore", "none")  # tl.metacell(gene_scaling=...): see two_view_pca
CLIP = 10.0  # z-scores are clipped at +CLIP, as scanpy's ``sc.pp.scale(max_value=10)``


def lognormalize(counts: sp.csr_matrix, library_size: np.ndarray, target_sum: float = TARGET_SUM):
    """``log1p(counts / library_size * target_sum)`` of a CSR block (rows = cells), as float32 CSR."""
    counts = sp.csr_matrix(counts, dtype=np.float32, copy=True)
    scale = (target_sum / np.maximum(np.asarray(library_size, dtype=np.float64), 1e-12)).astype(np.float32)
    counts.data *= np.repeat(scale, np.diff(counts.indptr))
    np.log1p(counts.data, out=counts.data)
    return counts


def _col_sums(block: sp.csr_matrix, n_vars: int, square: bool = False) -> np.ndarray:
    data = block.data.astype(np.float64)
    if square:
        data = data * data
    return np.bincount(block.indices, weights=data, minlength=n_vars)


def check_lognorm_block(block: sp.csr_matrix, *, arg: str, start: int) -> None:
    """Raise a ``ValueError`` naming ``arg`` unless ``block`` looks log-normalized."""
    d = block.data
    if d.size == 0:
        return
    if not np.all(np.isfinite(d)):
        raise ValueError(f"{arg}: log-normalized values contain NaN or Inf (cells from row {start} on).")
    if d.min() < 0:
        raise ValueError(
            f"{arg}: log-normalized values must be non-negative (log1p of normalized counts); found "
            f"{d.min():g} (cells from row {start}). Scaled/centered data is not accepted."
        )
    if d.max() >= LOG_MAX:
        raise ValueError(
            f"{arg}: values up to {d.max():g} do not look log-normalized "
            f"(expected log1p values < {LOG_MAX:g});"
            " pass lognorm_key=None to normalize the raw counts on the fly."
        )


@dataclass
class ScanResult:
    """What the first pass over the cells learns."""

    library_size: np.ndarray  # total raw counts per cell, all genes (float64)
    gene_mean: np.ndarray | None  # mean of normalized (not logged) expression per gene, for HVG selection
    gene_var: np.ndarray | None  # variance (ddof=1) of the same


def _scan_block(
    block: sp.csr_matrix,
    lb: sp.csr_matrix | None,
    start: int,
    *,
    gene_stats: bool,
    counts_arg: str,
    lognorm_arg: str,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """One chunk of :func:`scan_cells`: validate, library sizes, per-gene partial sums."""
    g = block.shape[1]
    check_counts_block(block, arg=counts_arg, start=start)
    lib = np.asarray(block.sum(axis=1)).ravel().astype(np.float64)
    if lb is not None:
        check_lognorm_block(lb, arg=lognorm_arg, start=start)
        if gene_stats:
            lb = lb.astype(np.float64)
            lb.data = np.expm1(lb.data)
    elif gene_stats:
        lb = sp.csr_matrix(block, dtype=np.float64, copy=True)
        lb.data *= np.repeat(TARGET_SUM / np.maximum(lib, 1e-12), np.diff(lb.indptr))
    if not gene_stats:
        return lib, None, None
    return lib, _col_sums(lb, g), _col_sums(lb, g, square=True)


def _scan_task(start: int, stop: int, *, counts: CellSource, lognorm: CellSource | None, **kw):
    """:func:`_scan_block` of rows ``start:stop`` read from the sources (a task of a dask pass)."""
    block = counts.read_rows(start, stop)
    lb = None if lognorm is None else lognorm.read_rows(start, stop)
    return _scan_block(block, lb, start, **kw)


def scan_cells(
    counts: CellSource,
    lognorm: CellSource | None,
    *,
    gene_stats: bool,
    counts_arg: str = "counts_key",
    lognorm_arg: str = "lognorm_key",
    chunk_size: int = 8192,
    progress: bool | None = None,
    executor: ChunkExecutor | None = None,
) -> ScanResult:
    """First pass: validate counts (and the log layer), library sizes, per-gene moments for HVGs.

    The moments are those of scanpy's ``flavor='seurat'``: of ``expm1`` of the log-normalized data.
    With a distributed ``executor`` the chunks are tasks on the cluster (same numbers).
    """
    n, g = counts.n_obs, counts.n_vars
    lib = np.empty(n, dtype=np.float64)
    s1 = np.zeros(g) if gene_stats else None
    s2 = np.zeros(g) if gene_stats else None
    kw = {"gene_stats": gene_stats, "counts_arg": counts_arg, "lognorm_arg": lognorm_arg}
    if executor is not None and executor.distributed:
        parts = executor.map(
            _scan_task, chunk_bounds(n, chunk_size), shared={"counts": counts, "lognorm": lognorm, **kw},
            progress=progress, desc="scanning cells",
        )  # fmt: skip
    else:
        parts = (
            (start, stop, _scan_block(block, None if lognorm is None else lognorm.read_rows(start, stop),
                                      start, **kw))
            for start, stop, block in counts.iter_chunks(chunk_size, progress=progress, desc="scanning cells")
        )  # fmt: skip
    for start, stop, (lib_c, a, b) in parts:
        lib[start:stop] = lib_c
        if gene_stats:
            s1 += a
            s2 += b
    if not gene_stats:
        return ScanResult(lib, None, None)
    mean = s1 / n
    var = (s2 / n - mean**2) * (n / max(n - 1, 1))
    return ScanResult(lib, mean, np.maximum(var, 0))


def select_hvg(mean: np.ndarray, var: np.ndarray, n_top_genes: int) -> np.ndarray:
    """Top ``n_top_genes`` by normalized dispersion, as in scanpy's ``flavor='seurat'``.

    Returns a boolean mask over genes. Dispersion = var / mean of the normalized expression, log taken,
    z-scored within 20 bins of ``log1p(mean)``.
    """
    mean = mean.copy()
    mean[mean == 0] = 1e-12
    disp = var / mean
    disp[disp == 0] = np.nan
    disp = np.log(disp)
    lmean = np.log1p(mean)
    df = pd.DataFrame({"mean": lmean, "disp": disp})
    df["bin"] = pd.cut(df["mean"], bins=20)
    grp = df.groupby("bin", observed=False)["disp"]
    bmean, bstd = grp.mean(), grp.std(ddof=1)
    one = bstd.isna()
    bstd[one] = bmean[one]
    bmean[one] = 0
    norm = (df["disp"].to_numpy() - bmean.loc[df["bin"]].to_numpy()) / bstd.loc[df["bin"]].to_numpy()
    norm = np.where(np.isfinite(norm), norm, -np.inf)
    n_top = min(n_top_genes, int(np.isfinite(norm).sum()))
    order = np.argsort(-norm, kind="stable")[:n_top]
    mask = np.zeros(mean.size, dtype=bool)
    mask[order] = True
    return mask


class HVGNormalizer:
    """Turn rows of raw counts (and optionally a log layer) into model inputs over the HVGs.

    ``x`` = min((log-normalized HVG expression - mean) / std, 10), which the model only ever sees
    through its fixed first linear layer: :meth:`project` applies that layer to the sparse rows directly,
    so no dense cells × HVGs block is formed in training.

    Parameters
    ----------
    counts
        Raw counts, all genes.
    lognorm
        Log-normalized data, all genes; ``None`` computes ``log1p(counts / total * 1e4)`` per chunk
        (``total`` over all genes).
    hvg_idx
        Column indices of the HVGs (sorted).
    library_size
        Total counts per cell over all genes (used when ``lognorm`` is ``None``).
    mean, std
        Per-HVG statistics of the log-normalized expression (set by :func:`fit_hvg_stats`).
    """

    def __init__(
        self,
        counts: CellSource,
        lognorm: CellSource | None,
        hvg_idx: np.ndarray,
        library_size: np.ndarray,
        mean: np.ndarray | None = None,
        std: np.ndarray | None = None,
    ):
        self.counts, self.lognorm = counts, lognorm
        self.hvg_idx = np.asarray(hvg_idx, dtype=np.int64)
        self.library_size = np.asarray(library_size, dtype=np.float64)
        self.mean, self.std = mean, std
        self._cache: tuple[sp.csr_matrix, sp.csr_matrix] | None = None
        self._op: tuple[np.ndarray, np.ndarray] | None = None

    def set_projection(self, weight: np.ndarray, bias: np.ndarray) -> None:
        """Fix the linear map ``x ↦ weight @ x + bias`` of z-scored expression applied by :meth:`project`."""
        w = np.asarray(weight, dtype=np.float64)
        a = (w / self.std[None, :]).T  # HVGs × d: folds the z-scoring into the map
        b = np.asarray(bias, dtype=np.float64) - (self.mean / self.std) @ w.T
        self._op = (a.astype(np.float32), b.astype(np.float32))

    def clip(self, lognorm_hvg: sp.csr_matrix) -> sp.csr_matrix:
        """Clip the nonzero values so that their z-score is at most ``CLIP`` (a copy).

        On sparse rows this is exact for the positive side; a zero's z-score ``-mean/std`` is left as is
        (below ``-CLIP`` only for genes with mean > 10 standard deviations, which log data do not have).
        """
        out = lognorm_hvg.copy()
        hi = (self.mean + CLIP * self.std).astype(out.dtype)
        np.minimum(out.data, hi[out.indices], out=out.data)
        return out

    def project(self, lognorm_hvg: sp.csr_matrix) -> np.ndarray:
        """``weight @ zscore(x) + bias`` of sparse log-normalized rows, without densifying them (float32)."""
        a, b = self._op
        return np.asarray(self.clip(lognorm_hvg) @ a, dtype=np.float32) + b

    def cache(self, *, chunk_size: int = 8192, progress: bool | None = None) -> None:
        """Keep the HVG columns (log-normalized and raw counts, both sparse CSR) in memory.

        One streamed pass; afterwards :meth:`rows` and :meth:`take` slice the cached CSR matrices instead
        of re-reading all genes. Meant for in-memory inputs (the cache is cells × HVGs, sparse).
        """
        ln_parts, c_parts = [], []
        with _chunks(self.n_obs, chunk_size, progress, "caching HVGs") as it:
            for start, stop in it:
                ln, c = self.rows(start, stop)
                ln_parts.append(ln)
                c_parts.append(sp.csr_matrix(c, dtype=np.float32))
        self._cache = (sp.vstack(ln_parts, format="csr"), sp.vstack(c_parts, format="csr"))

    @property
    def n_obs(self) -> int:
        """Number of cells."""
        return self.counts.n_obs

    @property
    def n_hvg(self) -> int:
        """Number of HVGs."""
        return self.hvg_idx.size

    def _lognorm_hvg(self, counts_hvg, rows_counts, lib, lognorm_rows):
        if self.lognorm is None:
            return lognormalize(counts_hvg, lib)
        return sp.csr_matrix(lognorm_rows[:, self.hvg_idx], dtype=np.float32)

    def rows(self, start: int, stop: int) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Log-normalized and raw HVG counts (both CSR) of rows ``start:stop``."""
        if self._cache is not None:
            return self._cache[0][start:stop], self._cache[1][start:stop]
        c = self.counts.read_rows(start, stop)[:, self.hvg_idx]
        ln = None if self.lognorm is None else self.lognorm.read_rows(start, stop)
        return self._lognorm_hvg(c, None, self.library_size[start:stop], ln), c

    def take(self, idx: np.ndarray) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        """Log-normalized and raw HVG counts (both CSR) of rows ``idx`` (any order)."""
        if self._cache is not None:
            return self._cache[0][idx], self._cache[1][idx]
        c = self.counts.take(idx)[:, self.hvg_idx]
        ln = None if self.lognorm is None else self.lognorm.take(idx)
        return self._lognorm_hvg(c, None, self.library_size[idx], ln), c

    def model_inputs(self, lognorm_hvg: sp.csr_matrix, counts_hvg: sp.csr_matrix):
        """Dense ``(x, counts, lib)`` float32 arrays (z-scored and clipped, as :meth:`project`)."""
        x = self.clip(lognorm_hvg).toarray()
        x -= self.mean
        x /= self.std
        cnt = counts_hvg.toarray().astype(np.float32, copy=False)
        lib = cnt.sum(axis=1)
        return x, cnt, lib


def _hvg_stats_task(start: int, stop: int, *, norm: HVGNormalizer) -> tuple[np.ndarray, np.ndarray]:
    """Per-HVG partial sums (and sums of squares) of the log-normalized rows ``start:stop``."""
    ln, _ = norm.rows(start, stop)
    p = norm.n_hvg
    return _col_sums(ln, p), _col_sums(ln, p, square=True)


def fit_hvg_stats(
    norm: HVGNormalizer,
    *,
    chunk_size: int = 8192,
    progress: bool | None = None,
    executor: ChunkExecutor | None = None,
) -> None:
    """Second pass: per-HVG mean and standard deviation of the log-normalized expression."""
    n, p = norm.n_obs, norm.n_hvg
    s1, s2 = np.zeros(p), np.zeros(p)
    executor = executor if executor is not None and norm._cache is None else ChunkExecutor()
    parts = executor.map(
        _hvg_stats_task, chunk_bounds(n, chunk_size), shared={"norm": norm}, progress=progress,
        desc="HVG statistics",
    )  # fmt: skip
    for _, _, (a, b) in parts:
        s1 += a
        s2 += b
    mean = s1 / n
    var = (s2 / n - mean**2) * (n / max(n - 1, 1))
    std = np.sqrt(np.maximum(var, 0))
    std[std == 0] = 1.0
    norm.mean, norm.std = mean.astype(np.float32), std.astype(np.float32)


def streamed_pca(
    norm: HVGNormalizer,
    n_comps: int,
    *,
    n_iter: int = 8,
    oversample: int = 20,
    seed: int = 0,
    chunk_size: int = 8192,
    progress: bool | None = None,
    scaled: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Top principal axes of the z-scored HVGs by subspace iteration on the covariance operator.

    Each iteration is one pass over the cells: ``C Ω = Σ_chunks X_cᵀ (X_c Ω)`` with the z-scoring
    applied implicitly to the sparse log-normalized chunks (clipped at z = 10 on the nonzeros; no dense
    chunk is formed). ``C`` is centred with the unclipped means, as scanpy's scale-then-PCA is nearly.
    ``scaled=False``: the axes of the centred (clipped) log-normalized HVGs themselves, not z-scored.

    Returns
    -------
    ``(components, variances)``: ``components`` is ``n_hvg × n_comps`` (orthonormal columns), ``variances``
    the variance explained by each.
    """
    n, p = norm.n_obs, norm.n_hvg
    k = min(n_comps + oversample, p)
    import torch  # LAPACK through torch: numpy's threaded QR stalls badly on a busy 2-core machine

    def _qr(a: np.ndarray) -> np.ndarray:
        return torch.linalg.qr(torch.from_numpy(a)).Q.numpy()

    rng = np.random.default_rng(seed)
    q = _qr(rng.standard_normal((p, k)))
    inv_sd = (1.0 / norm.std).astype(np.float64) if scaled else np.ones(p)
    m = norm.mean.astype(np.float64)
    for it in range(n_iter + 1):
        w = q * inv_sd[:, None]  # D^-1 Ω
        mw = m @ w  # mᵀ D^-1 Ω
        acc = np.zeros((p, k))
        colsum = np.zeros(k)
        for start, stop in chunk_bounds(n, chunk_size):
            ln = norm.clip(norm.rows(start, stop)[0])
            y = ln @ w - mw  # X_z Ω (chunk)
            acc += ln.T @ y
            colsum += y.sum(axis=0)
        cq = inv_sd[:, None] * (acc - np.outer(m, colsum)) / max(n - 1, 1)  # C Ω
        if it < n_iter:
            q = _qr(cq)
    # Rayleigh-Ritz on the final subspace
    h = q.T @ cq
    h = (h + h.T) / 2
    evals, evecs = (t.numpy() for t in torch.linalg.eigh(torch.from_numpy(h)))
    order = np.argsort(evals)[::-1][:n_comps]
    comps = q @ evecs[:, order]
    return comps.astype(np.float32), np.maximum(evals[order], 0)


def check_gene_scaling(scaling) -> None:
    """Raise ``ValueError`` unless ``scaling`` is one of :data:`GENE_SCALINGS` (``gene_scaling``)."""
    if not isinstance(scaling, str) or scaling not in GENE_SCALINGS:
        raise ValueError(f"gene_scaling={scaling!r}: must be one of {GENE_SCALINGS}.")


def two_view_pca(
    norm: HVGNormalizer,
    n_comps: int,
    *,
    seed: int = 0,
    chunk_size: int = 8192,
    scaling: str = "both",
) -> tuple[np.ndarray, np.ndarray]:
    """PCA axes of the HVGs as ``scaling`` asks, as a map of the z-scored HVGs (``n_hvg × n_comps``).

    - ``"zscore"``: the top ``n_comps`` axes of the z-scored HVGs (:func:`streamed_pca`).
    - ``"none"``: the top axes of the centred log-normalized HVGs, not z-scored, rewritten to act on
      z-scored input (each gene's row times its standard deviation).
    - ``"both"``: half the axes from each view (``⌊n_comps / 2⌋`` z-scored, the rest unscaled), each
      view's block divided by the square root of its total explained variance, so that both views weigh
      the same in distances. Z-scoring lifts the sampling noise of weakly expressed genes to the weight of
      the strongest markers; unscaled log expression follows the well-measured genes but lets a handful of
      strong genes dominate. Side by side, cells are close only when they are close in both.

    Returns ``(components, variances)``: the variance of each column's projection (for the encoder's
    scale); columns are orthonormal only for ``"zscore"``.
    """
    check_gene_scaling(scaling)
    std = norm.std.astype(np.float64)[:, None]
    kw = {"seed": seed, "chunk_size": chunk_size, "progress": False}
    if scaling == "zscore" or (scaling == "both" and n_comps < 2):
        return streamed_pca(norm, n_comps, **kw)
    if scaling == "none":
        comps, var = streamed_pca(norm, n_comps, scaled=False, **kw)
        return (comps * std).astype(np.float32), var
    n_z = n_comps // 2
    cz, vz = streamed_pca(norm, n_z, **kw)
    cu, vu = streamed_pca(norm, n_comps - n_z, scaled=False, **kw)
    a, b = 1.0 / np.sqrt(max(vz.sum(), 1e-12)), 1.0 / np.sqrt(max(vu.sum(), 1e-12))
    comps = np.concatenate([cz * a, cu * std * b], axis=1)
    return comps.astype(np.float32), np.concatenate([vz * a * a, vu * b * b])


class _chunks:
    def __init__(self, n, chunk_size, progress, desc):
        from .._progress import progress_bar

        self.n, self.cs = n, chunk_size
        self.bar = progress_bar(total=n, desc=desc, progress=progress)

    def __enter__(self):
        def gen():
            for s, e in chunk_bounds(self.n, self.cs):
                yield s, e
                self.bar.update(e - s)

        return gen()

    def __exit__(self, *exc):
        self.bar.close()
