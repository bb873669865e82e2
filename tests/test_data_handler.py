from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from scmetacell.data import AnnDataSource, DataHandler, as_source


@pytest.fixture
def small(pbmc3k):
    a = pbmc3k[:300, :500].copy()
    a.layers["counts"] = a.X.copy()
    a.var["hvg"] = np.arange(a.n_vars) % 2 == 0
    return a


def test_handler_anndata(small):
    h = DataHandler(small, mod="whatever")
    assert h.adata is small and h.mdata is None and not h.is_mudata
    assert h.matrix("counts") is small.layers["counts"]
    assert h.matrix("X") is small.X
    with pytest.raises(KeyError, match="layer='nope'"):
        h.matrix("nope")
    assert h.var_mask("hvg").sum() == 250
    with pytest.raises(KeyError, match="hvg_key='missing'"):
        h.var_mask("missing")


def test_handler_mudata_writes_both(small):
    mdata = md.MuData({"rna": small})
    h = DataHandler(mdata, mod="rna")
    assert h.adata is mdata.mod["rna"]
    vals = pd.Categorical(np.arange(small.n_obs) % 3)
    h.set_obs("metacell", vals)
    assert "metacell" in mdata.mod["rna"].obs
    assert "rna:metacell" in mdata.obs
    assert (mdata.obs["rna:metacell"].astype(int).to_numpy() == np.arange(small.n_obs) % 3).all()
    with pytest.raises(KeyError, match="mod='adt'"):
        DataHandler(mdata, mod="adt")


def test_handler_rejects_other_types():
    with pytest.raises(TypeError, match="data"):
        DataHandler(np.zeros((3, 3)))


@pytest.mark.parametrize("kind", ["csr", "csc", "dense"])
def test_source_chunks_cover_all_rows(small, kind):
    X = small.X
    mat = {"csr": sp.csr_matrix(X), "csc": sp.csc_matrix(X), "dense": X.toarray()}[kind]
    src = AnnDataSource(ad.AnnData(mat))
    parts = list(src.iter_chunks(chunk_size=64, progress=False))
    assert [p[0] for p in parts] == list(range(0, 300, 64))
    stacked = sp.vstack([p[2] for p in parts])
    assert (stacked != sp.csr_matrix(X)).nnz == 0


def test_source_take_any_order(small):
    src = as_source(small)
    idx = np.array([5, 2, 2, 299, 0])
    got = src.take(idx)
    assert (got != small.X[idx]).nnz == 0


def test_source_backed(tmp_path, small):
    path = tmp_path / "x.h5ad"
    small.write_h5ad(path)
    b = ad.read_h5ad(path, backed="r")
    src = AnnDataSource(b)
    assert src.is_backed
    got = sp.vstack([c for _, _, c in src.iter_chunks(100, progress=False)])
    assert (got != small.X).nnz == 0
    idx = np.array([250, 3, 100])
    assert (src.take(idx) != small.X[idx]).nnz == 0
    b.file.close()
