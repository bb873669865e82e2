"""Large-input path of ``tl.metacell``: disk inputs, two-level search, sampled training, reproducibility."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

import scmetacell as scm
from scmetacell.assign import _distance, _kmeans, _search, hierarchical_kmeans, nearest_topk, search_topk
from scmetacell.preprocess import _sample

FAST = {"gamma": 30, "train_epoch": 3, "n_top_genes": 500, "progress": False, "random_seed": 3}


def _sha(path: Path) -> str:
    h = hashlib.sha256()
    files = sorted(path.rglob("*")) if path.is_dir() else [path]
    for f in files:
        if f.is_file():
            h.update(f.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope="module")
def small(_pbmc3k_cached):
    """1,200 PBMC cells (fixed subset) with their cell types."""
    a = _pbmc3k_cached[np.sort(np.random.default_rng(0).choice(2700, 1200, replace=False))].copy()
    a.obs["cell_type"] = a.obs["cell_type"].astype(str)
    return a


@pytest.fixture(scope="module")
def on_disk(small, tmp_path_factory):
    """The cells as a read-only ``.mmm`` file and a read-only ``.h5ad``."""
    d = tmp_path_factory.mktemp("scale")
    mmm, h5 = d / "cells.mmm", d / "cells.h5ad"
    scm.io.write_mmmatrix(mmm, small)
    small.write_h5ad(h5)
    for p in (mmm, h5):
        os.chmod(p, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)  # inputs must only ever be read
    return mmm, h5


@pytest.fixture(scope="module")
def ref_labels(on_disk, small):
    mc = scm.tl.metacell(str(on_disk[0]), obs=small.obs[["cell_type"]], **FAST)
    return mc


def test_search_topk_two_level_matches_flat(pbmc3k):
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3000, 8)).astype(np.float32)
    codes = z[rng.choice(3000, 400, replace=False)] + 0.01
    groups = (np.arange(3000) % 2).astype(np.int64)
    code_group = (np.arange(400) % 2).astype(np.int64)
    i_flat, d_flat = nearest_topk(z, codes, 3, cell_group=groups, code_group=code_group)
    i_two, d_two = search_topk(
        z, codes, 3, cell_group=groups, code_group=code_group, large_k=50, flat_work=0, n_probe=6
    )
    assert (code_group[i_two[:, 0]] == groups).all()  # never another group's entry
    assert (i_two[:, 0] == i_flat[:, 0]).mean() > 0.97
    assert np.all(d_two[:, 0] >= d_flat[:, 0] - 1e-4)  # never closer than the exact nearest


def test_hierarchical_kmeans_close_to_flat_kmeans():
    from sklearn.cluster import KMeans

    rng = np.random.default_rng(1)
    z = np.concatenate([rng.normal(c, 0.3, (300, 5)) for c in rng.normal(0, 4, (12, 5))]).astype(np.float32)
    c = hierarchical_kmeans(z, 60, seed=0)
    assert c.shape == (60, 5) and np.unique(c, axis=0).shape[0] == 60

    def inertia(cent):
        return ((z[:, None, :] - cent[None]) ** 2).sum(-1).min(1).sum()

    ref = KMeans(60, n_init=1, random_state=0).fit(z).cluster_centers_
    assert inertia(c) < 1.25 * inertia(ref)


def test_nearest_in_row_blocks_matches_brute_force(monkeypatch):
    rng = np.random.default_rng(4)
    x = torch.as_tensor(rng.normal(0, 1, (1000, 6)).astype(np.float32))
    c = torch.as_tensor(rng.normal(0, 1, (37, 6)).astype(np.float32))
    d64 = ((x.double()[:, None, :] - c.double()[None]) ** 2).sum(-1)
    monkeypatch.setattr(
        _distance, "BLOCK_ENTRIES", 37 * 64 + 5
    )  # 64 rows per block: 16 blocks, the last short
    dmin, lab = _distance.nearest_centre(x, c)
    assert lab.dtype == torch.long and (lab.numpy() == d64.argmin(1).numpy()).all()
    np.testing.assert_allclose(dmin.numpy(), d64.min(1).values.numpy(), rtol=1e-5, atol=1e-5)
    # the fine-level Lloyd of hierarchical k-means gives the same centres in blocks as in one block
    c_small = _kmeans._lloyd_random_init(x, 25, 10, torch.Generator().manual_seed(0))
    monkeypatch.setattr(_distance, "BLOCK_ENTRIES", 1 << 30)
    c_whole = _kmeans._lloyd_random_init(x, 25, 10, torch.Generator().manual_seed(0))
    np.testing.assert_allclose(c_small.numpy(), c_whole.numpy(), rtol=1e-5, atol=1e-6)


def test_mmm_path_input(on_disk, small, ref_labels):
    mc = ref_labels
    k = round(small.n_obs / FAST["gamma"])
    assert mc.n_obs == k and int(mc.obs["n_cells"].sum()) == small.n_obs
    cells = mc.uns["metacell"]["cells"]
    assert list(cells["obs_names"]) == list(small.obs_names)
    # oracle: the summed counts of each metacell
    lab = np.asarray(mc.obs_names.get_indexer(cells["metacell"]))
    ind = sp.csr_matrix((np.ones(lab.size), (lab, np.arange(lab.size))), shape=(k, lab.size))
    np.testing.assert_array_equal((ind @ small.X).toarray(), mc.layers["counts"].toarray())
    assert "cell_type_purity" in mc.obs and mc.obs["cell_type_purity"].mean() > 0.6
    for key in ("seconds_scan", "seconds_train", "seconds_assign", "seconds_aggregate"):
        assert key in mc.uns["metacell"]["diagnostics"]


def test_disk_inputs_agree(on_disk, small, ref_labels):
    """Backed .h5ad, an open .mmm matrix and a dask-backed AnnData give the .mmm path's partition."""
    import dask.array as da  # the "dask" extra (CI must install it)

    want = ref_labels.uns["metacell"]["cells"]["metacell"]
    backed = ad.read_h5ad(on_disk[1], backed="r")
    mc = scm.tl.metacell(backed, inplace=False, **FAST)
    np.testing.assert_array_equal(mc.uns["metacell"]["cells"]["metacell"], want)
    backed.file.close()
    with scm.io.open_mmm(on_disk[0]) as m:
        mc = scm.tl.metacell(m, **FAST)
    np.testing.assert_array_equal(mc.uns["metacell"]["cells"]["metacell"], want)
    lazy = ad.AnnData(X=da.from_array(sp.csr_matrix(small.X), chunks=(400, small.n_vars)), obs=small.obs)
    mc = scm.tl.metacell(lazy, inplace=False, **FAST)
    np.testing.assert_array_equal(mc.uns["metacell"]["cells"]["metacell"], want)


def test_rerun_same_seed_identical(on_disk, small, ref_labels):
    mc = scm.tl.metacell(str(on_disk[0]), obs=small.obs[["cell_type"]], **FAST)
    np.testing.assert_array_equal(
        mc.uns["metacell"]["cells"]["metacell"], ref_labels.uns["metacell"]["cells"]["metacell"]
    )
    np.testing.assert_array_equal(mc.obsm["X_codebook"], ref_labels.obsm["X_codebook"])


def test_killed_run_leaves_inputs_intact(on_disk):
    before = [_sha(p) for p in on_disk]
    code = (
        "import anndata as ad, scmetacell as scm, sys\n"
        f"scm.tl.metacell({str(on_disk[0])!r}, gamma=5, train_epoch=200, converge_threshold=200,"
        " progress=False)\n"
    )
    env = dict(os.environ, PYTHONPATH=str(Path(scm.__file__).parents[1]))
    p = subprocess.Popen([sys.executable, "-c", code], env=env)
    time.sleep(8)  # inside the run (import + scan take a few seconds)
    p.kill()
    p.wait()
    assert [_sha(p) for p in on_disk] == before
    assert not os.access(on_disk[0], os.W_OK) or os.getuid() == 0  # read-only inputs were enough


def test_sampled_training_two_level(small, monkeypatch):
    """Training on a sample + two-level search/k-means: every metacell filled, purity no worse than flat."""
    a = small.copy()
    # mean purity over five seeds (one seed of these 40 metacells moves by ±0.04); the sampled run is
    # not smoothed, so neither is the flat one. Measured: 0.677 two-level vs 0.699 flat.
    runs = [dict(FAST, random_seed=seed) for seed in range(5)]
    flat = [scm.tl.metacell(a, inplace=False, n_smooth=0, **kw).obs["cell_type_purity"].mean() for kw in runs]
    monkeypatch.setattr(_search, "LARGE_K", 10)
    two = [scm.tl.metacell(a, inplace=False, max_train_cells=600, **kw) for kw in runs]
    k = round(a.n_obs / FAST["gamma"])
    for mc in two:
        assert mc.n_obs == k and (mc.obs["n_cells"] > 0).all()
        assert mc.uns["metacell"]["diagnostics"]["n_train_cells"] == 600
        assert mc.obs["n_cells"].max() <= 5 * FAST["gamma"]
    assert np.mean([mc.obs["cell_type_purity"].mean() for mc in two]) >= np.mean(flat) - 0.03


def test_training_sample_freed_before_the_final_pass(small, monkeypatch):
    """The training sample (cached rows) is gone by the assignment, without waiting for the garbage
    collector: the trainer, plan and data module that refer to it form cycles, which must be broken."""
    import gc
    import weakref

    from scmetacell.model import _fit as _train

    seen, alive = [], []
    init = _sample.SampledNormalizer.__init__

    def spy_init(self, *a, **k):
        init(self, *a, **k)
        seen.append(weakref.ref(self))

    finalize = _train.finalize_assignment

    def spy_finalize(*a, **k):
        alive.append([r() is not None for r in seen])
        return finalize(*a, **k)

    monkeypatch.setattr(_sample.SampledNormalizer, "__init__", spy_init)
    monkeypatch.setattr(_train, "finalize_assignment", spy_finalize)
    enabled = gc.isenabled()
    gc.disable()  # only the run's own collection may free cycles
    try:
        scm.tl.metacell(small.copy(), inplace=False, max_train_cells=600, **FAST)
    finally:
        if enabled:
            gc.enable()
    assert seen and alive == [[False] * len(seen)]


def test_device_argument_on_cpu_is_the_default_path():
    """``device=`` threads through the searches and the k-means; the CPU device changes nothing."""
    rng = np.random.default_rng(3)
    z = rng.standard_normal((2500, 6)).astype(np.float32)
    codes = z[rng.choice(2500, 300, replace=False)] + 0.01
    for large_k in (50, 1000):  # two-level and flat
        a = search_topk(z, codes, 4, large_k=large_k, flat_work=0, seed=1)
        b = search_topk(z, codes, 4, large_k=large_k, flat_work=0, seed=1, device="cpu")
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    np.testing.assert_array_equal(
        hierarchical_kmeans(z, 90, seed=2), hierarchical_kmeans(z, 90, seed=2, device=torch.device("cpu"))
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_search_and_kmeans_match_cpu():  # pragma: no cover - runs where a GPU is present
    rng = np.random.default_rng(4)
    z = rng.standard_normal((20000, 16)).astype(np.float32)
    codes = z[rng.choice(20000, 3000, replace=False)] + 0.01
    for large_k in (500, 5000):
        ic, dc = search_topk(z, codes, 5, large_k=large_k, flat_work=0)
        ig, dg = search_topk(z, codes, 5, large_k=large_k, flat_work=0, device="cuda")
        assert (ic[:, 0] == ig[:, 0]).mean() > 0.999
        np.testing.assert_allclose(dc[:, 0], dg[:, 0], rtol=1e-3, atol=1e-3)
    c = hierarchical_kmeans(z, 400, seed=0, device="cuda")
    assert c.shape == (400, 16) and np.isfinite(c).all()


def test_search_topk_rows_and_out_match_full_search():
    """``rows=`` searches a subset, ``out=`` fills given (memory-mapped) arrays: same as the full search."""
    from scmetacell.assign import is_scratch, scratch_array

    rng = np.random.default_rng(5)
    z = rng.standard_normal((5000, 6)).astype(np.float32)
    codes = z[rng.choice(5000, 300, replace=False)] + 0.01
    groups = (np.arange(5000) % 3).astype(np.int64)
    code_group = (np.arange(300) % 3).astype(np.int64)
    rows = np.sort(rng.choice(5000, 700, replace=False))
    for large_k in (40, 1000):  # two-level and flat
        kw = {"cell_group": groups, "code_group": code_group, "large_k": large_k, "flat_work": 0, "seed": 1}
        i_all, d_all = search_topk(z, codes, 4, **kw)
        i_sub, d_sub = search_topk(z, codes, 4, rows=rows, **kw)
        np.testing.assert_array_equal(i_sub, i_all[rows])
        np.testing.assert_allclose(d_sub, d_all[rows], rtol=1e-5)  # BLAS sums depend on the batch
        out = (
            scratch_array((5000, 4), np.int64, min_bytes=0),
            scratch_array((5000, 4), np.float32, min_bytes=0),
        )
        assert is_scratch(out[0])
        search_topk(z, codes, 4, out=out, **kw)
        np.testing.assert_array_equal(out[0], i_all)
        np.testing.assert_array_equal(out[1], d_all)


def test_scratch_array_release_keeps_data_and_leaves_no_file(tmp_path, monkeypatch):
    from scmetacell.assign import is_scratch, release, scratch_array

    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # re-read TMPDIR
    a = scratch_array((300_000, 8), np.float32, min_bytes=1)
    assert is_scratch(a) and not is_scratch(np.empty(3))
    assert list(tmp_path.iterdir()) == []  # unlinked at once: nothing left if the process dies
    a[:] = np.arange(8, dtype=np.float32)
    release(a)
    np.testing.assert_array_equal(a[-1], np.arange(8))
    assert float(a.sum(dtype=np.float64)) == 300_000 * 28
    small = scratch_array((10, 8), np.float32)  # below the threshold: plain memory
    assert not is_scratch(small)


def test_take_and_put_rows_through_the_file_descriptor():
    """Scattered reads / writes of scratch arrays (preadv / pwritev, runs coalesced) equal numpy's."""
    from scmetacell.assign import put_rows, scratch_array, take_rows

    rng = np.random.default_rng(6)
    for shape, dtype in (((5000, 7), np.float32), ((5000, 8), np.int64), ((5000,), np.float64)):
        ref = rng.integers(-50, 50, shape).astype(dtype)
        a = scratch_array(shape, dtype, min_bytes=1)
        a[:] = ref
        rows = np.unique(np.r_[rng.choice(5000, 300), np.arange(100, 140), 4999])  # runs and singles
        np.testing.assert_array_equal(take_rows(a, rows), ref[rows])
        np.testing.assert_array_equal(take_rows(ref, rows), ref[rows])  # plain arrays: numpy indexing
        new = rng.integers(-9, 9, (rows.size, *shape[1:])).astype(dtype)
        put_rows(a, rows, new)
        ref[rows] = new
        np.testing.assert_array_equal(np.asarray(a), ref)  # coherent with the memory map
        assert take_rows(a, np.array([], dtype=np.int64)).shape == (0, *shape[1:])


def test_scratch_files_give_the_in_memory_result(small, monkeypatch):
    """Final pass on memory-mapped embeddings / search results (two-level, size floor): identical result."""
    from scmetacell.assign import _scratch

    monkeypatch.setattr(_search, "LARGE_K", 10)
    a = small.copy()
    mem = scm.tl.metacell(a, inplace=False, max_train_cells=600, **FAST)
    monkeypatch.setattr(_scratch, "SCRATCH_MIN_BYTES", 1)
    disk = scm.tl.metacell(a, inplace=False, max_train_cells=600, **FAST)
    for key in ("metacell", "topk", "topk_weights", "confidence"):
        np.testing.assert_array_equal(mem.uns["metacell"]["cells"][key], disk.uns["metacell"]["cells"][key])
    assert (mem.X != disk.X).nnz == 0
    assert mem.uns["metacell"]["diagnostics"]["n_moved_by_size_floor"] > 0  # the floor's moves were exercised


def test_small_searches_of_a_large_codebook_are_exact():
    """Few rows against many entries: flat (exact) search, no two-level index (``flat_work``)."""
    from scmetacell.assign import _search

    rng = np.random.default_rng(6)
    z = rng.standard_normal((4000, 6)).astype(np.float32)
    codes = z[rng.choice(4000, 3000, replace=False)] + 0.01
    rows = np.arange(0, 4000, 40)  # 100 rows x 3,000 entries = 300,000 distances
    built = []
    orig = _search.CoarseIndex.build
    try:
        _search.CoarseIndex.build = classmethod(lambda cls, *a, **k: built.append(1) or orig(*a, **k))
        i, _ = search_topk(z, codes, 3, rows=rows, large_k=50, flat_work=300_000)
        assert not built  # exact
        np.testing.assert_array_equal(i, nearest_topk(z[rows], codes, 3)[0])
        search_topk(z, codes, 3, rows=rows, large_k=50, flat_work=299_999)
        assert built  # one more row-entry pair than allowed: two-level
    finally:
        _search.CoarseIndex.build = orig
