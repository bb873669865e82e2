"""Larger inputs by resampling real cells (shared by the scale benchmarks).

No real dataset of 50k to 10M cells can be brought onto these machines, so the benchmarks build them
from ``../shared/data``: each synthetic cell is a real cell drawn with replacement whose counts are
Poisson-resampled (``x' ~ Poisson(x)`` entry by entry). Labels and donors are kept. These are
**resampled cells, not new biology**: every report says so.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import anndata as ad
import h5py
import numpy as np
import pandas as pd
import scipy.sparse as sp

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
NOTE = "synthetic input: real cells resampled (Poisson), not new biology"


def load_reference(name: str = "kang2018_pbmc_5donors_raw.h5ad") -> ad.AnnData:
    """A real dataset from ``../shared/data``."""
    return ad.read_h5ad(SHARED / name)


def resampled_chunks(
    ref: ad.AnnData, n_cells: int, *, seed: int = 0, chunk_size: int = 100_000
) -> Iterator[tuple[sp.csr_matrix, pd.DataFrame]]:
    """Yield ``(counts, obs)`` chunks of ``n_cells`` cells resampled from ``ref``."""
    rng = np.random.default_rng(seed)
    X = sp.csr_matrix(ref.X)
    for start in range(0, n_cells, chunk_size):
        n = min(chunk_size, n_cells - start)
        pick = rng.integers(0, ref.n_obs, n)
        block = X[pick].astype(np.int32)
        block.data = rng.poisson(block.data).astype(np.int32)
        block.eliminate_zeros()
        obs = ref.obs.iloc[pick].copy()
        obs["source_cell"] = ref.obs_names[pick].to_numpy()
        obs.index = pd.Index([f"cell{start + i}" for i in range(n)])
        yield block, obs


def write_h5ad_streaming(path: str | os.PathLike, chunks, var: pd.DataFrame, n_vars: int) -> int:
    """Write chunks of CSR rows to an ``.h5ad`` without holding the whole matrix; returns cells written."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    obs_parts = []
    n_obs = 0
    with h5py.File(tmp, "w") as f:
        f.attrs["encoding-type"] = "anndata"
        f.attrs["encoding-version"] = "0.1.0"
        g = f.create_group("X")
        g.attrs["encoding-type"] = "csr_matrix"
        g.attrs["encoding-version"] = "0.1.0"
        data = g.create_dataset("data", (0,), maxshape=(None,), dtype=np.int32, chunks=(1 << 20,))
        indices = g.create_dataset("indices", (0,), maxshape=(None,), dtype=np.int32, chunks=(1 << 20,))
        indptr = [np.zeros(1, dtype=np.int64)]
        nnz = 0
        for block, obs in chunks:
            m = block.nnz
            data.resize((nnz + m,))
            indices.resize((nnz + m,))
            data[nnz:] = block.data
            indices[nnz:] = block.indices
            indptr.append(block.indptr[1:].astype(np.int64) + nnz)
            nnz += m
            n_obs += block.shape[0]
            obs_parts.append(obs)
        g.create_dataset("indptr", data=np.concatenate(indptr))
        g.attrs["shape"] = (n_obs, n_vars)
        obs_all = pd.concat(obs_parts)
        for col in obs_all.columns:
            if obs_all[col].dtype == object:
                obs_all[col] = obs_all[col].astype("category")
        ad.io.write_elem(f, "obs", obs_all)
        ad.io.write_elem(f, "var", var)
        for key in ("obsm", "varm", "obsp", "varp", "layers", "uns"):
            ad.io.write_elem(f, key, {})
    os.replace(tmp, path)
    return n_obs
