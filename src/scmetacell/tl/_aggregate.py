"""Aggregation of cells into metacells: sparse indicator products, chunk by chunk.

- :func:`aggregate_mean_and_sum`: the metacells' mean expression (e.g. log-normalized) and summed raw
  counts in **one** pass over the cells: ``S @ rows`` summed over chunks, where ``S`` (metacells × cells
  of the chunk) is the 0/1 membership indicator, for one complex matrix ``values + 1j * counts`` (one
  sparsity pattern for both) — the input is read once and the running sum never holds more than the
  two results.
- :func:`aggregate_obs`: per-metacell majority (+ ``<col>_purity``) of categorical, string and boolean
  columns, mean of numeric columns.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._memory import trim_heap
from ..data import CellSource
from ..data._executor import ChunkExecutor, chunk_bounds
from ._sparse_sum import RowBlockSum


def _int_labels(labels: np.ndarray) -> np.ndarray:
    """``labels`` as an integer array (no copy when it already is one, e.g. int32)."""
    labels = np.asarray(labels)
    return labels if labels.dtype.kind in "iu" else labels.astype(np.int64)


def _indicator(labels: np.ndarray, n_groups: int, dtype) -> sp.csr_matrix:
    keep = labels >= 0
    cols = np.flatnonzero(keep)
    return sp.csr_matrix(
        (np.ones(cols.size, dtype=dtype), (labels[keep], cols)), shape=(n_groups, labels.size)
    )


# counts sums are carried in a float32 (complex64) imaginary part when exact: integers below 2**24
EXACT_FLOAT32 = float(1 << 24)


def _values_and_counts(counts: sp.csr_matrix, values: sp.csr_matrix, dtype) -> sp.csr_matrix:
    """One complex CSR ``values + 1j * counts`` (shared pattern when both have the same one)."""
    counts = sp.csr_matrix(counts)
    values = sp.csr_matrix(values)
    if (
        counts.nnz == values.nnz
        and np.array_equal(counts.indptr, values.indptr)
        and np.array_equal(counts.indices, values.indices)
    ):
        data = np.empty(counts.nnz, dtype=dtype)
        data.real = values.data
        data.imag = counts.data
        return sp.csr_matrix((data, counts.indices, counts.indptr), shape=counts.shape)
    imag = sp.csr_matrix(counts, dtype=dtype, copy=True)
    imag.data *= np.asarray(1j, dtype=dtype)
    return sp.csr_matrix(sp.csr_matrix(values, dtype=dtype) + imag)


def _pair_rows(counts, values, start, stop, *, transform, dtype):
    """One chunk's cells as complex CSR rows (real: transformed values, imaginary: counts)."""
    if transform is not None:
        values = transform(values, start, stop)
    return _values_and_counts(counts, values, dtype)


def _pair_block(counts, values, start, stop, *, labels, n_groups, transform, dtype):
    """Per-metacell sums of one chunk: complex CSR (real: transformed values, imaginary: counts)."""
    z = _pair_rows(counts, values, start, stop, transform=transform, dtype=dtype)
    return sp.csr_matrix(_indicator(labels, n_groups, dtype) @ z), counts.dtype.kind


def _pair_task(start: int, stop: int, *, source: CellSource, value_source: CellSource | None, **kw):
    """:func:`_pair_block` of rows ``start:stop`` read from the sources (a task of a dask pass)."""
    counts = source.read_rows(start, stop)
    values = counts if value_source is None else value_source.read_rows(start, stop)
    return _pair_block(counts, values, start, stop, **kw)


def aggregate_mean_and_sum(
    source: CellSource,
    labels: np.ndarray,
    n_groups: int,
    *,
    transform: Callable[[sp.csr_matrix, int, int], sp.csr_matrix] | None = None,
    value_source: CellSource | None = None,
    chunk_size: int = 8192,
    progress: bool | None = None,
    desc: str = "aggregating",
    executor: ChunkExecutor | None = None,
    library_size: np.ndarray | None = None,
) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """Mean of the (transformed) values and sum of the raw rows per metacell, in one pass over the cells.

    Parameters
    ----------
    source
        The cells' raw counts.
    labels
        Metacell of each cell (``0 .. n_groups - 1``; ``-1`` = left out).
    n_groups
        Number of metacells.
    transform
        Applied to each chunk of values ``(rows, start, stop)`` before averaging (e.g. log-normalisation
        of the counts).
    value_source
        The values to average, row-aligned with ``source`` (e.g. a log-normalized layer); default: the
        counts themselves.
    executor
        A distributed :class:`~scmetacell.data.ChunkExecutor`: one task per chunk on a dask cluster
        (the same sums, added in the same order).
    library_size
        Total raw count of each cell. When every metacell's total (the sum of its cells' library sizes)
        is below ``2**24``, both sums are carried in single precision (the counts exactly); otherwise,
        or without library sizes, in double precision (counts exact below ``2**53``).

    Returns
    -------
    ``(mean, sums)``: float32 CSR of the mean values, and CSR of the summed counts (int64 for integer
    counts, float32 otherwise), both metacells × genes without explicit zeros.
    """
    labels = _int_labels(labels)
    if value_source is not None and value_source.shape != source.shape:
        raise ValueError(f"value_source: shape {value_source.shape}; expected {source.shape}.")
    keep = labels >= 0
    small = (
        library_size is not None
        and np.bincount(labels[keep], weights=np.asarray(library_size)[keep], minlength=n_groups).max()
        < EXACT_FLOAT32
    )
    dtype = np.complex64 if small else np.complex128
    acc = RowBlockSum(n_groups, source.n_vars, dtype)
    integer = True  # counts dtype (read from the chunks): integer sums → int64, float → float32
    if executor is not None and executor.distributed:  # each task sends its chunk's per-metacell sums
        parts = executor.map(
            _pair_task, chunk_bounds(source.n_obs, chunk_size),
            shared={"source": source, "value_source": value_source, "n_groups": n_groups,
                    "transform": transform, "dtype": dtype},
            per_chunk=lambda s, e: {"labels": labels[s:e]}, progress=progress, desc=desc,
        )  # fmt: skip
        for _, _, (part, kind) in parts:
            acc.add(part)
            integer = kind in "iub"
            del part
    else:  # each chunk's cells go straight to their metacells' rows (no per-chunk product)
        chunks = source.iter_chunks(chunk_size, progress=progress, desc=desc)
        if value_source is None:
            pairs = ((s, e, block, block) for s, e, block in chunks)
        else:
            values = value_source.iter_chunks(chunk_size, progress=False)
            pairs = ((s, e, block, vb) for (s, e, block), (_, _, vb) in zip(chunks, values, strict=True))
        for s, e, block, vb in pairs:  # the chunk iterators hand freed heap memory back between chunks
            integer = block.dtype.kind in "iub"
            acc.add_rows(_pair_rows(block, vb, s, e, transform=transform, dtype=dtype), labels[s:e])
            del block, vb
    sizes = np.bincount(labels[keep], minlength=n_groups).astype(np.float64)
    return tuple(
        acc.results(
            [
                (_real, 1.0 / np.maximum(sizes, 1), np.float32),
                (_imag, None, np.int64 if integer else np.float32),
            ]
        )
    )


def _real(blk: sp.csr_matrix) -> sp.csr_matrix:
    return sp.csr_matrix((blk.data.real.copy(), blk.indices.copy(), blk.indptr.copy()), shape=blk.shape)


def _imag(blk: sp.csr_matrix) -> sp.csr_matrix:
    return sp.csr_matrix((blk.data.imag.copy(), blk.indices.copy(), blk.indptr.copy()), shape=blk.shape)


def _is_label_column(s: pd.Series) -> bool:
    return (
        isinstance(s.dtype, pd.CategoricalDtype)
        or pd.api.types.is_bool_dtype(s)
        or pd.api.types.is_object_dtype(s)
        or pd.api.types.is_string_dtype(s)
    )


OBS_BLOCK = 1 << 20  # cells per block of the obs summaries


def aggregate_obs(obs: pd.DataFrame, labels: np.ndarray, n_groups: int, index: pd.Index) -> pd.DataFrame:
    """Per-metacell summaries of the cells' ``obs`` columns.

    Categorical, string and boolean columns give the majority value among the cells where it is not
    missing (ties: the first category in sort order) and ``<col>_purity`` = that value's share of those
    cells (NaN when all are missing). Numeric columns give the mean (missing values ignored).
    Other columns are skipped.
    """
    labels = _int_labels(labels)
    n = labels.size
    # per-cell temporaries only for OBS_BLOCK cells at a time
    blocks = [(s, min(s + OBS_BLOCK, n)) for s in range(0, n, OBS_BLOCK)]
    out = {}
    for col in obs.columns:
        s = obs[col]
        if _is_label_column(s):
            codes, uniques = pd.factorize(s, sort=True)
            codes = codes.astype(np.min_scalar_type(-max(len(uniques), 1)), copy=False)
            n_lev = max(len(uniques), 1)
            # metacells × levels counts by bincounts (no per-cell COO temporaries)
            tab = np.zeros(n_groups * n_lev, dtype=np.int64)
            for a, b in blocks:
                lab, cod = labels[a:b], codes[a:b]
                ok = (lab >= 0) & (cod >= 0)
                tab += np.bincount(lab[ok].astype(np.int64) * n_lev + cod[ok], minlength=n_groups * n_lev)
            tab = tab.reshape(n_groups, n_lev)
            del codes
            tot = tab.sum(1)
            best = tab.argmax(1)
            purity = np.where(tot > 0, tab.max(1) / np.maximum(tot, 1), np.nan)
            vals = pd.Series(np.asarray(uniques, dtype=object)[best] if len(uniques) else [None] * n_groups)
            vals[tot == 0] = None
            if isinstance(s.dtype, pd.CategoricalDtype):
                vals = pd.Categorical(vals, categories=s.cat.categories)
            elif pd.api.types.is_bool_dtype(s) and (tot > 0).all():
                vals = vals.astype(bool).to_numpy()
            else:
                vals = pd.Categorical(vals.astype(object))
            out[col] = vals
            out[f"{col}_purity"] = purity.astype(np.float64)
        elif pd.api.types.is_numeric_dtype(s):
            sums = np.zeros(n_groups)
            cnt = np.zeros(n_groups, dtype=np.int64)
            for a, b in blocks:
                v = s.iloc[a:b].to_numpy(dtype=np.float64, na_value=np.nan)
                lab = labels[a:b]
                ok = (lab >= 0) & np.isfinite(v)
                sums += np.bincount(lab[ok], weights=v[ok], minlength=n_groups)
                cnt += np.bincount(lab[ok], minlength=n_groups)
            with np.errstate(invalid="ignore", divide="ignore"):
                out[col] = np.where(cnt > 0, sums / np.maximum(cnt, 1), np.nan)
    df = pd.DataFrame(out, index=index)
    for c in df.columns:
        if isinstance(df[c].dtype, pd.CategoricalDtype):
            df[c] = df[c].cat.remove_unused_categories()
    trim_heap(force=True)  # the per-cell temporaries (factorized codes) go back to the OS
    return df
