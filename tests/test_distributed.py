"""Beyond one process: Lightning DDP (2 CPU processes, gloo) and a dask ``LocalCluster`` with 2 workers.

Both must give the single-process partition. DDP runs as a script (Lightning relaunches the script for
rank 1, as ``torchrun``/``srun`` would); the cluster runs the passes over the cells as tasks.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import anndata as ad
import numpy as np
import pytest

import scmetacell as scm

KW = {"n_metacell": 50, "train_epoch": 4, "random_seed": 1, "progress": False, "device": "cpu"}


@pytest.fixture(scope="module")
def cells(_pbmc3k_cached):
    return _pbmc3k_cached[np.sort(np.random.default_rng(2).choice(2700, 1000, replace=False))].copy()


@pytest.fixture(scope="module")
def single(cells):
    """The single-process partition (1 torch thread, as each DDP process below)."""
    a = cells.copy()
    mc = scm.tl.metacell(a, n_threads=1, **KW)
    return a.obs["metacell"].astype(str).to_numpy(), mc


def test_ddp_two_cpu_processes_same_partition(cells, single, tmp_path):
    path = tmp_path / "cells.h5ad"
    cells.write_h5ad(path)
    script = tmp_path / "ddp_run.py"
    script.write_text(
        textwrap.dedent(
            f"""
            import os, sys
            import anndata as ad, numpy as np, scmetacell as scm
            adata = ad.read_h5ad({str(path)!r})
            trainer = {{"strategy": "ddp", "devices": 2, "accelerator": "cpu"}}
            mc = scm.tl.metacell(adata, n_threads=1, trainer_kwargs=trainer, **{KW!r})
            rank = os.environ.get("LOCAL_RANK", "0")
            np.save({str(tmp_path)!r} + f"/labels{{rank}}.npy", adata.obs["metacell"].astype(str).to_numpy())
            np.save({str(tmp_path)!r} + f"/loss{{rank}}.npy", mc.uns["metacell"]["history"]["loss"])
            """
        )
    )
    env = dict(os.environ, PYTHONPATH=str(Path(scm.__file__).parents[1]))
    for var in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "SLURM_NTASKS", "SLURM_PROCID"):
        env.pop(var, None)
    res = subprocess.run(
        [sys.executable, str(script)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr[-3000:]
    want, mc = single
    for rank in (0, 1):  # every process ends with the single-process partition
        np.testing.assert_array_equal(np.load(tmp_path / f"labels{rank}.npy", allow_pickle=True), want)
    # the per-epoch losses are reduced over both processes: the single-process values
    loss = np.load(tmp_path / "loss0.npy")
    np.testing.assert_allclose(loss, mc.uns["metacell"]["history"]["loss"], rtol=1e-4)
    np.testing.assert_array_equal(loss, np.load(tmp_path / "loss1.npy"))
    # no Lightning banners or tips in the output of a DDP run
    out = res.stdout + res.stderr
    for noise in ("GPU available", "TPU available", "LOCAL_RANK:", "Trainer.fit", "💡"):
        assert noise not in out


def test_ddp_datamodule_splits_each_batch():
    """Rank r of W takes batch[r::W] of the same global permutation; together they cover the epoch."""
    from scmetacell.model._datamodule import _EpochBatches

    class _Norm:
        n_obs = 103

        def take(self, idx):
            import scipy.sparse as sp

            return sp.csr_matrix((idx.size, 3)), sp.csr_matrix(np.ones((idx.size, 3)))

        def project(self, ln):
            return np.zeros((ln.shape[0], 2), dtype=np.float32)

    groups = np.zeros(103, dtype=np.int64)
    one = _EpochBatches(_Norm(), groups, 10, seed=4)
    ranks = []
    for r in range(2):
        ds = _EpochBatches(_Norm(), groups, 10, seed=4)
        ds.rank, ds.world_size = r, 2
        ranks.append([b["idx"].numpy() for b in ds])
    full = [b["idx"].numpy() for b in one]
    assert len(ranks[0]) == len(ranks[1]) == 11  # the 3-cell tail batch is split 2 + 1
    for b, (x, y) in enumerate(zip(*ranks, strict=True)):
        np.testing.assert_array_equal(np.sort(np.concatenate([x, y])), np.sort(full[b]))
        assert abs(x.size - y.size) <= 1


def test_spawning_strategies_refused(cells):
    a = cells.copy()
    with pytest.raises(ValueError, match="strategy='ddp' from a script"):
        scm.tl.metacell(a, trainer_kwargs={"strategy": "ddp_spawn", "devices": 2}, **KW)
    assert "metacell" not in a.obs


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    cl = distributed.Client(cluster)
    yield cl
    cl.close()
    cluster.close()


def test_dask_local_cluster_same_partition(cells, single, client, tmp_path):
    want, mc_ref = single
    # in memory
    a = cells.copy()
    mc = scm.tl.metacell(a, client=client, n_threads=1, chunk_size=256, **KW)
    np.testing.assert_array_equal(a.obs["metacell"].astype(str).to_numpy(), want)
    np.testing.assert_array_equal(mc.layers["counts"].toarray(), mc_ref.layers["counts"].toarray())
    np.testing.assert_allclose(mc.X.toarray(), mc_ref.X.toarray(), rtol=1e-6, atol=1e-7)
    assert mc.uns["metacell"]["params"]["dask_workers"] == 2
    # on disk (read-only files): every pass over the cells runs on the workers, who reopen the files
    h5, mmm = tmp_path / "cells.h5ad", tmp_path / "cells.mmm"
    cells.write_h5ad(h5)
    scm.io.write_mmmatrix(mmm, cells)
    for p in (h5, mmm):
        os.chmod(p, stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH)
    backed = ad.read_h5ad(h5, backed="r")
    mc = scm.tl.metacell(backed, client=client, inplace=False, n_threads=1, chunk_size=256, **KW)
    np.testing.assert_array_equal(mc.uns["metacell"]["cells"]["metacell"], want)
    np.testing.assert_array_equal(mc.layers["counts"].toarray(), mc_ref.layers["counts"].toarray())
    backed.file.close()
    mc = scm.tl.metacell(str(mmm), client=client, n_threads=1, chunk_size=256, **KW)
    np.testing.assert_array_equal(mc.uns["metacell"]["cells"]["metacell"], want)


def test_dask_bad_client_and_errors_from_workers(cells, client, tmp_path):
    a = cells.copy()
    with pytest.raises(TypeError, match=r"client: a distributed\.Client expected"):
        scm.tl.metacell(a, client="tcp://127.0.0.1:8786", **KW)
    bad = cells.copy()
    bad.X = bad.X.astype(np.float32)
    bad.X.data[5] = 0.5  # non-integer count: raised by a worker task, re-raised here, nothing written
    with pytest.raises(ValueError, match="raw counts must be integers"):
        scm.tl.metacell(bad, client=client, counts_key="X", chunk_size=256, **KW)
    assert "metacell" not in bad.obs
