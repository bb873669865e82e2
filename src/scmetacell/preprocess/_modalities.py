"""Per-modality model inputs for multimodal metacells: a fixed first-layer embedding and a decoder target.

Each modality is turned, in streamed passes over its cells, into

- ``h``: cells × d_m, the modality's fixed linear embedding (the encoder's first layer):
  RNA — PCA of the z-scored log-normalized HVGs (as the single-modality model);
  ADT — PCA of the z-scored CLR values (``log1p(x) − mean over the cell's proteins of log1p``);
  ATAC — LSI: TF-IDF of the binarised top peaks, truncated SVD, first component (sequencing depth)
  dropped, as in Signac / ArchR;
- ``target``: the counts its decoder must explain (RNA: raw HVG counts; ADT: raw protein counts;
  ATAC: binarised peaks), sparse CSR, cells × features.

:func:`weigh_modalities` then centres each ``h`` and scales it to the same total variance (times
``weight``, the
modality weights averaged to 1), so that every modality contributes equally (or as weighted) to the squared
distances between cells and codebook entries: a 50-dimensional RNA embedding cannot drown a
10-dimensional protein one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..data import CellSource, check_counts_block
from ._rna import (
    HVGNormalizer,
    fit_hvg_stats,
    scan_cells,
    select_hvg,
    streamed_pca,
)

DEFAULT_TOP_PEAKS = 30_000
MIN_FEATURES = 10  # as MIN_HVG of the single-modality path


@dataclass
class ModalityInput:
    """One modality's model inputs (cells in the paired order)."""

    name: str
    kind: str
    h: np.ndarray  # cells × d_m, float32 (weighed by :func:`weigh_modalities`)
    target: sp.csr_matrix  # cells × features, float32 (decoder target)
    feature_idx: np.ndarray  # columns of the modality the decoder sees
    library_size: np.ndarray  # total raw counts per cell over all features
    info: dict = field(default_factory=dict)  # statistics kept with the result
    transform: dict = field(default_factory=dict)  # arrays that rebuild ``h`` for new cells


def _dense_chunks(src: CellSource, chunk_size: int):
    yield from src.iter_chunks(chunk_size, progress=False)


def clr(counts: sp.csr_matrix) -> np.ndarray:
    """Centred log-ratio per cell: ``log1p(x) − mean_proteins(log1p(x))`` (dense float32)."""
    x = np.log1p(np.asarray(counts.toarray(), dtype=np.float64))
    return (x - x.mean(axis=1, keepdims=True)).astype(np.float32)


def _pca_dense(src: CellSource, transform, n_comps: int, chunk_size: int) -> tuple[np.ndarray, ...]:
    """PCA of z-scored ``transform(rows)`` from streamed first and second moments (few features only)."""
    s1 = s2 = None
    n = 0
    for _, _, block in _dense_chunks(src, chunk_size):
        x = transform(block).astype(np.float64)
        s1 = x.sum(0) if s1 is None else s1 + x.sum(0)
        s2 = x.T @ x if s2 is None else s2 + x.T @ x
        n += x.shape[0]
    mean = s1 / n
    cov = (s2 - n * np.outer(mean, mean)) / max(n - 1, 1)
    sd = np.sqrt(np.maximum(np.diag(cov), 0))
    sd[sd == 0] = 1.0
    corr = cov / np.outer(sd, sd)
    evals, evecs = np.linalg.eigh(corr)
    order = np.argsort(evals)[::-1][:n_comps]
    return mean, sd, evecs[:, order]


def rna_input(
    name: str,
    counts: CellSource,
    lognorm: CellSource | None,
    *,
    hvg_mask: np.ndarray | None,
    n_top_genes: int,
    n_latent: int,
    seed: int,
    counts_arg: str,
    lognorm_arg: str,
    chunk_size: int,
    progress: bool | None,
) -> ModalityInput:
    """RNA: PCA of the z-scored log-normalized HVGs; multinomial decoder of the raw HVG counts."""
    scan = scan_cells(
        counts, lognorm, gene_stats=hvg_mask is None, counts_arg=counts_arg, lognorm_arg=lognorm_arg,
        chunk_size=chunk_size, progress=progress,
    )  # fmt: skip
    _check_empty(scan.library_size, counts_arg, name)
    if hvg_mask is None:
        hvg_mask = select_hvg(scan.gene_mean, scan.gene_var, n_top_genes)
    hvg_idx = np.flatnonzero(hvg_mask)
    if hvg_idx.size < MIN_FEATURES:
        raise ValueError(
            f"hvg_key: selects {hvg_idx.size} genes of modality {name!r}; at least {MIN_FEATURES} needed."
        )
    norm = HVGNormalizer(counts, lognorm, hvg_idx, scan.library_size)
    norm.cache(chunk_size=chunk_size, progress=False)
    fit_hvg_stats(norm, chunk_size=chunk_size, progress=False)
    d = int(max(2, min(n_latent, hvg_idx.size - 1, counts.n_obs - 1)))
    comps, _ = streamed_pca(norm, d, seed=seed, chunk_size=chunk_size, progress=False)
    norm.set_projection(comps.T, np.zeros(d, dtype=np.float32))
    h = np.vstack(
        [
            norm.project(norm.rows(s, min(s + chunk_size, norm.n_obs))[0])
            for s in _starts(norm.n_obs, chunk_size)
        ]
    )
    target = sp.vstack(
        [norm.rows(s, min(s + chunk_size, norm.n_obs))[1] for s in _starts(norm.n_obs, chunk_size)],
        format="csr",
    )
    info = {"n_features": int(hvg_idx.size), "n_dims": d, "decoder": "multinomial (raw HVG counts)"}
    transform = {
        "features": np.asarray(counts.var_names[hvg_idx], dtype=str),
        "mean": norm.mean,
        "std": norm.std,
        "components": comps,
    }
    target = sp.csr_matrix(target, dtype=np.float32)
    return ModalityInput(name, "rna", h, target, hvg_idx, scan.library_size, info, transform)


def adt_input(
    name: str, counts: CellSource, *, n_latent: int, counts_arg: str, chunk_size: int
) -> ModalityInput:
    """ADT: PCA of the z-scored CLR values (all proteins); multinomial decoder of the raw protein counts."""
    lib = _library(counts, counts_arg, chunk_size)
    _check_empty(lib, counts_arg, name)
    p = counts.n_vars
    if p < 2:
        raise ValueError(f"datatypes: modality {name!r} has {p} protein(s); at least 2 needed.")
    d = int(max(1, min(n_latent, p)))
    mean, sd, comps = _pca_dense(counts, clr, d, chunk_size)
    w = (comps / sd[:, None]).astype(np.float32)
    b = (-(mean / sd) @ comps).astype(np.float32)
    h = np.vstack([clr(block) @ w + b for _, _, block in _dense_chunks(counts, chunk_size)])
    target = sp.vstack([block for _, _, block in _dense_chunks(counts, chunk_size)], format="csr")
    info = {"n_features": int(p), "n_dims": d, "decoder": "multinomial (raw protein counts)"}
    transform = {"features": np.asarray(counts.var_names, dtype=str), "weight": w, "bias": b}
    target = sp.csr_matrix(target, dtype=np.float32)
    return ModalityInput(name, "adt", h, target, np.arange(p), lib, info, transform)


def binarize(block: sp.csr_matrix) -> sp.csr_matrix:
    """Peaks with any count → 1 (float32 CSR)."""
    out = sp.csr_matrix(block, dtype=np.float32, copy=True)
    out.data[:] = 1.0
    out.eliminate_zeros()
    return out


def atac_input(
    name: str,
    counts: CellSource,
    *,
    n_latent: int,
    n_top_peaks: int,
    seed: int,
    counts_arg: str,
    chunk_size: int,
) -> ModalityInput:
    """ATAC: LSI of TF-IDF-transformed binarised top peaks; Poisson-type decoder of the open peaks."""
    n, p = counts.n_obs, counts.n_vars
    lib = np.empty(n)
    n_open = np.zeros(p)
    for start, stop, block in _dense_chunks(counts, chunk_size):
        check_counts_block(block, arg=counts_arg, start=start)
        lib[start:stop] = np.asarray(block.sum(axis=1)).ravel()
        n_open += np.bincount(block.indices[block.data > 0], minlength=p)
    _check_empty(lib, counts_arg, name)
    k = min(n_top_peaks, int((n_open > 0).sum()))
    peak_idx = np.sort(np.argsort(-n_open, kind="stable")[:k])
    b = sp.vstack(
        [binarize(block[:, peak_idx]) for _, _, block in _dense_chunks(counts, chunk_size)], format="csr"
    )
    idf = (n / (1.0 + n_open[peak_idx])).astype(np.float32)
    x = tfidf(b, idf)
    d = int(max(2, min(n_latent, k - 2, n - 2)))
    from sklearn.utils.extmath import randomized_svd

    _, _, vt = randomized_svd(x, d + 1, n_iter=7, random_state=seed)
    comps = vt[1:].T.astype(np.float32)  # LSI component 1 tracks sequencing depth: dropped
    h = np.asarray(x @ comps, dtype=np.float32)  # = U S of the kept components
    info = {"n_features": int(k), "n_dims": d, "decoder": "Poisson-type (multinomial over open peaks)"}
    transform = {
        "features": np.asarray(counts.var_names[peak_idx], dtype=str),
        "idf": idf,
        "components": comps,
    }
    return ModalityInput(name, "atac", h, b, peak_idx, lib, info, transform)


def tfidf(binary: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """``log1p(1e4 × tf × idf)`` of binarised peaks, tf = open peak / the cell's open peaks (CSR)."""
    tf = sp.diags(1.0 / np.maximum(np.asarray(binary.sum(axis=1)).ravel(), 1.0)) @ binary
    x = sp.csr_matrix(tf @ sp.diags(idf), dtype=np.float32)
    x.data = np.log1p(x.data * 1e4)
    return x


def weigh_modalities(inputs: list[ModalityInput], weights: dict[str, float]) -> None:
    """Centre each modality's ``h`` and scale it to total variance ``D / M × weight / mean(weights)``.

    ``D`` is the number of joint dimensions and ``M`` the number of modalities: with equal weights every
    modality has the same total variance (the same expected share of the squared distances) and the
    joint embedding has a mean variance of 1 per dimension, the scale of the single-modality model.
    """
    mean_w = float(np.mean([weights[m.name] for m in inputs]))
    per_mod = sum(m.h.shape[1] for m in inputs) / len(inputs)
    for m in inputs:
        center = m.h.mean(0)
        h = m.h - center
        tot = float(h.var(0).sum())
        scale = np.sqrt(per_mod * weights[m.name] / mean_w / max(tot, 1e-12))
        m.h = (h * scale).astype(np.float32)
        m.transform["center"] = center.astype(np.float32)
        m.transform["scale"] = float(scale)
        m.info["weight"] = float(weights[m.name])
        m.info["scale"] = float(scale)


def embed_new_cells(
    kind: str,
    transform: dict,
    counts: CellSource,
    lognorm: CellSource | None,
    *,
    name: str,
    counts_arg: str,
    lognorm_arg: str,
    chunk_size: int,
    progress: bool | None = None,
) -> np.ndarray:
    """Return the weighed fixed embedding ``h`` of new cells, with the training transform of a modality."""
    feats = pd.Index(np.asarray(transform["features"]).astype(str))
    idx = counts.var_names.get_indexer(feats)
    if (idx < 0).any():
        miss = feats[idx < 0]
        raise KeyError(
            f"data: {miss.size} of the {feats.size} features the model uses in modality {name!r} are not in "
            f"its var_names, e.g. {list(miss[:5])}."
        )
    if kind == "rna":
        scan = scan_cells(
            counts, lognorm, gene_stats=False, counts_arg=counts_arg, lognorm_arg=lognorm_arg,
            chunk_size=chunk_size, progress=progress,
        )  # fmt: skip
        order = np.argsort(idx)
        mean = np.asarray(transform["mean"], dtype=np.float32)[order]
        std = np.asarray(transform["std"], dtype=np.float32)[order]
        norm = HVGNormalizer(counts, lognorm, idx[order], scan.library_size, mean, std)
        comps = np.asarray(transform["components"], dtype=np.float32)[order]
        norm.set_projection(comps.T, np.zeros(comps.shape[1], dtype=np.float32))
        parts = [
            norm.project(norm.rows(s, min(s + chunk_size, norm.n_obs))[0])
            for s in _starts(norm.n_obs, chunk_size)
        ]
    else:
        parts = []
        for start, _, block in _dense_chunks(counts, chunk_size):
            check_counts_block(block, arg=counts_arg, start=start)
            block = block[:, idx]
            if kind == "adt":
                parts.append(clr(block) @ np.asarray(transform["weight"]) + np.asarray(transform["bias"]))
            else:
                x = tfidf(binarize(block), np.asarray(transform["idf"], dtype=np.float32))
                parts.append(np.asarray(x @ np.asarray(transform["components"])))
    h = np.vstack(parts).astype(np.float32)
    return ((h - np.asarray(transform["center"])) * float(transform["scale"])).astype(np.float32)


def _library(src: CellSource, arg: str, chunk_size: int) -> np.ndarray:
    lib = np.empty(src.n_obs)
    for start, stop, block in _dense_chunks(src, chunk_size):
        check_counts_block(block, arg=arg, start=start)
        lib[start:stop] = np.asarray(block.sum(axis=1)).ravel()
    return lib


def _check_empty(lib: np.ndarray, arg: str, name: str) -> None:
    empty = np.flatnonzero(lib <= 0)
    if empty.size:
        raise ValueError(
            f"{arg} of modality {name!r}: {empty.size} cells have zero total counts; remove them from "
            "every modality first (multimodal metacells need each cell measured in each modality)."
        )


def _starts(n: int, chunk_size: int):
    return range(0, n, chunk_size)
