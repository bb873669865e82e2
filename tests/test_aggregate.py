import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

from scmetacell.data import as_source
from scmetacell.tl._aggregate import aggregate_mean_and_sum, aggregate_obs


@pytest.fixture
def labelled(pancreas):
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 50, pancreas.n_obs)
    pancreas.obs["grp"] = pd.Categorical(labels.astype(str))
    return pancreas, labels


@pytest.mark.parametrize("chunk_size", [97, 8192])
def test_sum_and_mean_of_the_counts_match_scanpy_aggregate(labelled, chunk_size):
    adata, labels = labelled
    ref = sc.get.aggregate(adata, by="grp", func=["sum", "mean"])
    order = ref.obs_names.astype(int)
    got_mean, got_sum = aggregate_mean_and_sum(
        as_source(adata), labels, 50, chunk_size=chunk_size, progress=False
    )
    np.testing.assert_array_equal(got_sum.toarray()[order], ref.layers["sum"])
    np.testing.assert_allclose(got_mean.toarray()[order], ref.layers["mean"], rtol=1e-5, atol=1e-6)
    assert np.issubdtype(got_sum.dtype, np.integer)


def test_transform_and_left_out_cells(labelled):
    adata, labels = labelled
    labels = labels.copy()
    labels[:10] = -1
    got, sums = aggregate_mean_and_sum(
        as_source(adata), labels, 50, transform=lambda b, s, e: b.log1p(), progress=False
    )
    dense = adata.X.toarray().astype(np.float64)
    naive = np.stack([np.log1p(dense[labels == j]).mean(0) for j in range(50)])
    np.testing.assert_allclose(got.toarray(), naive, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(sums.toarray(), np.stack([dense[labels == j].sum(0) for j in range(50)]))
    assert sp.issparse(got) and sp.issparse(sums)


def test_aggregate_obs_majority_purity_and_mean():
    obs = pd.DataFrame(
        {
            "ct": pd.Categorical(["a", "a", "b", "b", "b", None]),
            "s": ["x", "y", "y", "y", "x", "x"],
            "flag": [True, True, False, True, False, False],
            "num": [1.0, 3.0, 2.0, 4.0, np.nan, 5.0],
        }
    )
    labels = np.array([0, 0, 0, 1, 1, 1])
    out = aggregate_obs(obs, labels, 2, pd.Index(["m0", "m1"]))
    assert list(out["ct"]) == ["a", "b"]
    np.testing.assert_allclose(out["ct_purity"], [2 / 3, 1.0])  # missing labels are left out
    assert list(out["s"]) == ["y", "x"]
    assert list(out["flag"]) == [True, False]
    np.testing.assert_allclose(out["num"], [2.0, 4.5])


@pytest.mark.parametrize("dtype", [np.int64, np.float64])
def test_row_block_sum_equals_dense_sum_with_merges(monkeypatch, dtype):
    """Many small blocks and merges on every add: the sum is exact, canonical and in the given dtype."""
    from scmetacell.tl import _sparse_sum

    monkeypatch.setattr(_sparse_sum, "MIN_MERGE", 5)
    rng = np.random.default_rng(1)
    acc = _sparse_sum.RowBlockSum(203, 37, dtype, rows_per_block=16, slack=0.5)
    dense = np.zeros((203, 37), dtype=np.float64)
    for i in range(40):
        part = sp.random(203, 37, density=0.02 * (i % 5), random_state=i, format="coo")
        part.data = rng.integers(1, 9, part.nnz).astype(dtype)
        if i == 3:  # duplicates and unsorted column indices, as sparse products give
            part = sp.coo_matrix(
                (np.r_[part.data, part.data], (np.r_[part.row, part.row], np.r_[part.col, part.col])),
                shape=part.shape,
            )
        acc.add(part.tocsr())
        dense += part.toarray()
    scale = rng.random(203)
    out = acc.result(row_scale=scale, out_dtype=np.float32) if dtype == np.float64 else acc.result()
    expect = dense * scale[:, None] if dtype == np.float64 else dense
    np.testing.assert_allclose(out.toarray(), expect, rtol=1e-6)
    assert out.dtype == (np.float32 if dtype == np.float64 else np.int64)
    assert out.has_canonical_format and (out.data != 0).all()
    assert all(b is None for b in acc.blocks)  # emptied
    with pytest.raises(ValueError, match="shape"):
        acc.add(sp.csr_matrix((3, 3)))


@pytest.mark.parametrize("chunk_size", [97, 8192])
@pytest.mark.parametrize("bound", ["tight", None])
def test_mean_and_sum_in_one_pass_match_scanpy_aggregate(labelled, chunk_size, bound):
    """One pass, one complex running sum: summed counts exact, mean log-expression = scanpy's."""
    from scmetacell.preprocess import lognormalize

    adata, labels = labelled
    lib = np.asarray(adata.X.sum(1)).ravel()
    ref_sum = sc.get.aggregate(adata, by="grp", func="sum")
    logn = adata.copy()
    sc.pp.normalize_total(logn, target_sum=1e4)
    sc.pp.log1p(logn)
    ref_mean = sc.get.aggregate(logn, by="grp", func="mean")
    order = ref_sum.obs_names.astype(int)
    b = float(np.bincount(labels, weights=lib, minlength=50).max()) if bound == "tight" else None
    assert b is None or b < 2**24  # the single-precision path is the one exercised
    mean, sums = aggregate_mean_and_sum(
        as_source(adata), labels, 50, transform=lambda x, s, e: lognormalize(x, lib[s:e]),
        chunk_size=chunk_size, progress=False, library_size=lib if bound == "tight" else None,
    )  # fmt: skip
    assert sums.dtype == np.int64 and mean.dtype == np.float32
    np.testing.assert_array_equal(sums.toarray()[order], ref_sum.layers["sum"])
    np.testing.assert_allclose(mean.toarray()[order], ref_mean.layers["mean"], rtol=1e-5, atol=1e-6)
    for m in (mean, sums):
        assert m.has_canonical_format and (m.data != 0).all()


def test_mean_and_sum_with_a_value_layer_of_another_pattern(labelled):
    """Values from a row-aligned second source whose zeros differ from the counts'; left-out cells."""
    adata, labels = labelled
    labels = labels.copy()
    labels[:10] = -1
    counts = adata.X.tocsr()
    values = counts.astype(np.float64).tolil()
    values[:, :5] = 0.0  # zeros where counts are not
    values[::3, -3:] = -2.5  # (negative) values where counts are zero
    values = values.tocsr()
    values.eliminate_zeros()
    mean, sums = aggregate_mean_and_sum(
        as_source(adata), labels, 50, value_source=as_source(ad_like(adata, values)),
        chunk_size=250, progress=False,
    )  # fmt: skip
    dv, dc = values.toarray(), counts.toarray().astype(np.float64)
    np.testing.assert_allclose(
        mean.toarray(), np.stack([dv[labels == j].mean(0) for j in range(50)]), rtol=1e-5, atol=1e-6
    )
    np.testing.assert_array_equal(sums.toarray(), np.stack([dc[labels == j].sum(0) for j in range(50)]))
    float_counts = ad_like(adata, counts.astype(np.float32))
    _, fsums = aggregate_mean_and_sum(as_source(float_counts), labels, 50, chunk_size=250, progress=False)
    assert fsums.dtype == np.float32
    np.testing.assert_array_equal(fsums.toarray(), sums.toarray())
    with pytest.raises(ValueError, match="value_source: shape"):
        aggregate_mean_and_sum(
            as_source(adata), labels, 50, value_source=as_source(adata[:, :10].copy()), progress=False
        )


def ad_like(adata, X):
    """An AnnData with ``adata``'s obs/var and the matrix ``X``."""
    import anndata as ad

    return ad.AnnData(X=X, obs=adata.obs[[]].copy(), var=adata.var[[]].copy())


def test_aggregate_obs_in_blocks_equals_one_block(labelled, monkeypatch):
    """The obs summaries computed OBS_BLOCK cells at a time equal those of one block (int32 labels)."""
    from scmetacell.tl import _aggregate

    adata, labels = labelled
    obs = adata.obs.copy()
    obs["num"] = np.where(np.arange(adata.n_obs) % 7 == 0, np.nan, np.arange(adata.n_obs, dtype=float))
    obs["flag"] = np.arange(adata.n_obs) % 3 == 0
    lab = labels.astype(np.int32)
    lab[::11] = -1
    index = pd.Index([f"m{j}" for j in range(50)])
    ref = aggregate_obs(obs, lab.astype(np.int64), 50, index)
    monkeypatch.setattr(_aggregate, "OBS_BLOCK", 97)
    got = aggregate_obs(obs, lab, 50, index)
    pd.testing.assert_frame_equal(got, ref)
    assert got.shape[1] > 4 and got.notna().all().all()


@pytest.mark.parametrize("dtype", [np.complex64, np.float64, np.int64])
def test_row_block_sum_add_rows_sums_cells_into_their_rows(monkeypatch, dtype):
    """Cells' rows added to their metacells' rows (unsorted columns, repeats, skipped cells, many merges):
    the dense sum, canonical, whatever the order the rows come in."""
    from scmetacell.tl import _sparse_sum

    monkeypatch.setattr(_sparse_sum, "MIN_MERGE", 7)
    rng = np.random.default_rng(3)
    n_rows, n_cols = 97, 31
    acc = _sparse_sum.RowBlockSum(n_rows, n_cols, dtype, rows_per_block=10)
    dense = np.zeros((n_rows, n_cols), dtype=np.complex128)
    for _ in range(25):
        n_cells = int(rng.integers(0, 60))
        labels = rng.integers(-1, n_rows, n_cells)  # -1: a cell left out
        nnz = int(rng.integers(0, 5 * n_cells + 1))
        r, c = rng.integers(0, max(n_cells, 1), nnz), rng.integers(0, n_cols, nnz)
        v = rng.integers(1, 9, nnz) + (1j * rng.integers(0, 5, nnz) if dtype == np.complex64 else 0)
        rows = sp.coo_matrix((v.astype(dtype), (r, c)), shape=(n_cells, n_cols)).tocsr()
        rows.indices, rows.data = rows.indices.copy(), rows.data.copy()  # scramble the column order
        for a, b in zip(rows.indptr[:-1], rows.indptr[1:], strict=True):
            p = rng.permutation(b - a)
            rows.indices[a:b], rows.data[a:b] = rows.indices[a:b][p], rows.data[a:b][p]
        rows.has_sorted_indices = False
        acc.add_rows(rows, labels)
        keep = labels >= 0
        np.add.at(dense, labels[keep], rows.toarray()[keep])
    out = acc.result()
    assert out.dtype == dtype and out.has_canonical_format
    np.testing.assert_allclose(out.toarray(), dense.astype(dtype), rtol=1e-6)
    assert np.all(np.diff(out.indices[out.indptr[0] : out.indptr[1]]) > 0)
    with pytest.raises(ValueError, match="labels"):
        acc.add_rows(sp.csr_matrix((2, n_cols)), np.array([0, n_rows]))
    with pytest.raises(ValueError, match="rows of shape"):
        acc.add_rows(sp.csr_matrix((2, n_cols + 1)), np.array([0, 1]))


def test_row_block_sum_complex_results_split_exactly(monkeypatch):
    """A complex64 running sum under forced merges: real and imaginary results exact, each canonical."""
    from scmetacell.tl import _aggregate, _sparse_sum

    monkeypatch.setattr(_sparse_sum, "MIN_MERGE", 5)
    rng = np.random.default_rng(2)
    acc = _sparse_sum.RowBlockSum(150, 23, np.complex64, rows_per_block=16)
    re_sum, im_sum = np.zeros((150, 23)), np.zeros((150, 23))
    for i in range(30):
        part = sp.random(150, 23, density=0.05, random_state=i, format="csr")
        re = rng.integers(-3, 4, part.nnz).astype(np.float64)  # zeros and cancellations on purpose
        im = rng.integers(0, 2**18, part.nnz).astype(np.float64)  # 30 parts: every sum below 2**24
        part = sp.csr_matrix((re + 1j * im, part.indices, part.indptr), shape=part.shape)
        acc.add(part)
        re_sum += sp.csr_matrix((re, part.indices, part.indptr), shape=part.shape).toarray()
        im_sum += sp.csr_matrix((im, part.indices, part.indptr), shape=part.shape).toarray()
    scale = rng.random(150)
    real, imag = acc.results([(_aggregate._real, scale, np.float32), (_aggregate._imag, None, np.int64)])
    np.testing.assert_allclose(real.toarray(), re_sum * scale[:, None], rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(imag.toarray(), im_sum)  # integers below 2**24: exact in float32
    assert imag.dtype == np.int64 and real.dtype == np.float32
    for m in (real, imag):
        assert m.has_canonical_format and (m.data != 0).all()


def test_row_block_sum_hands_memory_back_by_bytes_freed(monkeypatch):
    """Finalising returns freed blocks to the OS each time TRIM_BYTES have been freed, however many blocks
    that takes (a fixed block count would let the untrimmed heap grow with the output)."""
    from scmetacell.tl import _sparse_sum

    calls = []
    monkeypatch.setattr(_sparse_sum, "trim_heap", lambda force=False: calls.append(force))
    parts = [sp.random(400, 50, density=0.2, random_state=i, format="csr") for i in range(3)]

    def finalise(trim_bytes):
        calls.clear()
        monkeypatch.setattr(_sparse_sum, "TRIM_BYTES", trim_bytes)
        acc = _sparse_sum.RowBlockSum(400, 50, np.float64, rows_per_block=10)  # 40 blocks
        for p in parts:
            acc.add(p)
        out = acc.result()
        return out, len(calls)

    every, n_every = finalise(1)  # every freed block triggers a trim: 40 accumulation + 40 output blocks
    never, n_never = finalise(1 << 40)
    assert n_every == 80 and n_never == 0
    np.testing.assert_allclose(every.toarray(), sum(p.toarray() for p in parts))
    assert (every != never).nnz == 0  # trimming never changes the result
