import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch

import scmetacell as scm
from scmetacell.cli import main as cli_main


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests share a busy 2-core machine: one torch thread avoids OpenMP spin contention (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


FAST = {"progress": False, "train_epoch": 5}


@pytest.fixture(scope="module")
def pbmc_run():
    adata = scm.datasets.pbmc3k()
    before = adata.copy()
    mc = scm.tl.metacell(adata, gamma=10, random_seed=0, **FAST)
    return adata, before, mc


def test_contract_on_pbmc(pbmc_run, tmp_path):
    adata, _, mc = pbmc_run
    n = 270
    assert mc.n_obs == n  # delivered == requested
    assert mc.obs["n_cells"].min() >= 1
    assert mc.obs["n_cells"].sum() == adata.n_obs
    assert mc.obs["n_cells"].max() <= 5 * 10
    assert isinstance(adata.obs["metacell"].dtype, pd.CategoricalDtype)
    assert adata.obs["metacell"].nunique() == n
    assert list(adata.obs["metacell"].cat.categories) == list(mc.obs_names)
    assert adata.obsm["metacell_topk"].shape == (adata.n_obs, 5)
    np.testing.assert_allclose(adata.obsm["metacell_topk_weights"].sum(1), 1, rtol=1e-5)
    conf = adata.obs["metacell_confidence"].to_numpy()
    assert np.all((conf >= 0) & (conf <= 1))
    assert {"cell_type", "cell_type_purity", "n_cells"} <= set(mc.obs.columns)
    assert mc.obsm["X_codebook"].shape[0] == n
    assert mc.var_names.equals(adata.var_names)
    d = mc.uns["metacell"]["diagnostics"]
    assert d["n_delivered"] == n and d["epochs_run"] >= 1
    assert {"quantized_reconstruction", "delta_assignment_confidence", "codebook_loss"} <= set(d)
    # X = mean log-normalized expression of all genes, counts = summed raw counts (oracle: scanpy)
    ln = adata.copy()
    sc.pp.normalize_total(ln, target_sum=1e4)
    sc.pp.log1p(ln)
    ref = sc.get.aggregate(ln, by="metacell", func="mean")
    np.testing.assert_allclose(mc.X.toarray(), ref[mc.obs_names].layers["mean"], rtol=1e-4, atol=1e-5)
    ref_sum = sc.get.aggregate(adata, by="metacell", func="sum")
    np.testing.assert_array_equal(mc.layers["counts"].toarray(), ref_sum[mc.obs_names].layers["sum"])
    # purity column: oracle = direct count
    m0 = mc.obs_names[0]
    ct = adata.obs.loc[adata.obs["metacell"] == m0, "cell_type"].dropna()
    if len(ct):
        assert mc.obs.loc[m0, "cell_type_purity"] == pytest.approx(ct.value_counts().iloc[0] / len(ct))
    path = tmp_path / "mc.h5ad"
    mc.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert back.uns["metacell"]["params"]["n_metacell"] == n
    adata.write_h5ad(tmp_path / "cells.h5ad")


def test_input_unchanged(pbmc_run):
    adata, before, _ = pbmc_run
    assert (adata.X != before.X).nnz == 0
    pd.testing.assert_frame_equal(adata.obs[before.obs.columns], before.obs)
    assert set(adata.obs.columns) - set(before.obs.columns) == {"metacell", "metacell_confidence"}


def test_same_seed_same_partition(pancreas):
    a, b = pancreas.copy(), pancreas.copy()
    scm.tl.metacell(a, gamma=20, random_seed=3, **FAST)
    scm.tl.metacell(b, gamma=20, random_seed=3, **FAST)
    np.testing.assert_array_equal(a.obs["metacell"].to_numpy(), b.obs["metacell"].to_numpy())
    np.testing.assert_array_equal(a.obsm["metacell_topk"], b.obsm["metacell_topk"])


def test_copy_and_not_inplace(pancreas):
    orig = pancreas.copy()
    out, _ = scm.tl.metacell(pancreas, gamma=30, copy=True, **FAST)
    assert "metacell" in out.obs and "metacell" not in pancreas.obs
    mc2 = scm.tl.metacell(pancreas, gamma=30, inplace=False, **FAST)
    assert "metacell" not in pancreas.obs
    cells = mc2.uns["metacell"]["cells"]
    assert len(cells["metacell"]) == pancreas.n_obs
    assert set(cells["metacell"]) == set(mc2.obs_names)
    assert (pancreas.X != orig.X).nnz == 0


def _pancreas_mudata(pancreas):
    rna = pancreas.copy()
    rna.layers["counts"] = rna.X.copy()
    sc.pp.normalize_total(rna, target_sum=1e4)
    sc.pp.log1p(rna)
    sc.pp.highly_variable_genes(rna, flavor="seurat", n_top_genes=1000)
    rna.var["vst.all.hvg"] = rna.var["highly_variable"].to_numpy()
    return md.MuData({"rna": rna})


def test_seed_notebook_call_verbatim(pancreas):
    expm = _pancreas_mudata(pancreas)
    x_before = expm["rna"].X.copy()
    mc = scm.tl.metacell(
        expm,
        hvg_key="vst.all.hvg",
        counts_key="counts",
        lognorm_key="X",
        n_metacell=1400,
        datatypes=["rna"],
        device="cuda",  # falls back to the CPU with a warning here
        random_seed=42,
        train_epoch=300,
        adam_learning_rate=1e-3,
        adam_weight_decay=1e-2,
        codebook_init="random",
        converge_threshold=10,
        batch_size=32,
        progress=False,
    )
    assert isinstance(mc, md.MuData) and list(mc.mod) == ["rna"]
    assert mc["rna"].n_obs == 1400
    assert mc["rna"].obs["n_cells"].min() >= 1
    assert "rna:metacell" in expm.obs.columns
    assert expm.obs["rna:metacell"].nunique() == 1400
    d = mc["rna"].uns["metacell"]["diagnostics"]
    assert d["epochs_run"] < 300  # the convergence test fires
    assert mc["rna"].uns["metacell"]["params"]["batch_size"] == 32
    assert (expm["rna"].X != x_before).nnz == 0
    # X = mean of the given log-normalized layer, counts = sums of the counts layer (scanpy's oracle)
    cells = expm["rna"]
    ref_mean = sc.get.aggregate(cells, by="metacell", func="mean")
    ref_sum = sc.get.aggregate(cells, by="metacell", func="sum", layer="counts")
    got = mc["rna"][ref_mean.obs_names]
    np.testing.assert_allclose(got.X.toarray(), ref_mean.layers["mean"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.layers["counts"].toarray(), ref_sum.layers["sum"])


def test_batch_key_per_sample(kang):
    mc = scm.tl.metacell(kang, gamma=30, batch_key="donor", **FAST)
    k_total = round(kang.n_obs / 30)
    assert mc.n_obs == k_total
    assert mc.obs_names.is_unique
    assert (mc.obs["donor_purity"] == 1).all()  # never mixes samples
    per_donor = mc.obs["donor"].value_counts()
    cells = kang.obs["donor"].value_counts()
    expected = k_total * cells / cells.sum()
    assert np.all(np.abs(per_donor[cells.index] - expected) <= 1)
    joined = (
        kang.obs["donor"].astype(str).to_numpy()
        == mc.obs.loc[kang.obs["metacell"].astype(str), "donor"].astype(str).to_numpy()
    )
    assert joined.all()


def test_assign_metacells_maps_training_cells_back(pancreas):
    mc = scm.tl.metacell(pancreas, gamma=20, key_added="mc", **FAST)
    new = pancreas.copy()
    del new.obs["mc"]
    scm.tl.assign_metacells(new, mc, key_added="mc", progress=False)
    same = (new.obs["mc"].astype(str) == pancreas.obs["mc"].astype(str)).mean()
    assert same > 0.9
    # shuffled genes and cells: the HVGs are found by name
    perm = np.random.default_rng(0).permutation(new.n_vars)
    shuffled = new[::-1, perm].copy()
    scm.tl.assign_metacells(shuffled, mc, key_added="mc2", progress=False)
    assert (shuffled.obs["mc2"].astype(str) == shuffled.obs["mc"].astype(str)).all()


@pytest.mark.parametrize("scaling", ["none", "zscore"])
def test_every_gene_scaling_is_a_model_that_places_new_cells(pancreas, scaling):
    """The other views of the genes run end to end, are recorded, and their saved model maps cells back."""
    mc = scm.tl.metacell(pancreas, gamma=20, key_added="mc", gene_scaling=scaling, **FAST)
    assert mc.uns["metacell"]["params"]["gene_scaling"] == scaling
    new = pancreas.copy()
    del new.obs["mc"]
    scm.tl.assign_metacells(new, mc, key_added="mc", progress=False)
    assert (new.obs["mc"].astype(str) == pancreas.obs["mc"].astype(str)).mean() > 0.9
    both = scm.tl.metacell(pancreas.copy(), gamma=20, inplace=False, **FAST)
    assert both.uns["metacell"]["params"]["gene_scaling"] == "both"
    cells = np.asarray(both.uns["metacell"]["cells"]["metacell"]).astype(str)
    assert not np.array_equal(cells, pancreas.obs["mc"].astype(str).to_numpy())  # another partition


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_metacell": 0}, "n_metacell"),
        ({"n_metacell": 10_000}, "n_metacell"),
        ({"gamma": 1}, "gamma"),
        ({"gamma": 10, "n_metacell": 5}, "n_metacell, gamma"),
        ({"hvg_key": "nope"}, "hvg_key"),
        ({"counts_key": "nope"}, "counts_key"),
        ({"lognorm_key": "nope"}, "lognorm_key"),
        ({"codebook_init": "uniform"}, "codebook_init"),
        ({"batch_size": 0}, "batch_size"),
        ({"n_neighbors": 0}, "n_neighbors=0"),
        ({"n_neighbors": 2.5}, "n_neighbors=2.5"),
        ({"n_neighbors": True}, "n_neighbors=True"),
        ({"gene_scaling": "log"}, "gene_scaling='log'"),
        ({"gene_scaling": None}, "gene_scaling=None"),
        ({"datatypes": ["rna", "adt"]}, "datatypes"),
        ({"batch_key": "nope"}, "batch_key"),
    ],
)
def test_bad_arguments(pancreas, kwargs, match):
    with pytest.raises((ValueError, KeyError, NotImplementedError), match=match):
        scm.tl.metacell(pancreas, **FAST, **kwargs)
    assert "metacell" not in pancreas.obs


def test_bad_data(pancreas):
    a = pancreas.copy()
    a.X = a.X.astype(np.float32)
    a.X.data[0] = 0.5
    with pytest.raises(ValueError, match="counts_key"):
        scm.tl.metacell(a, counts_key="X", **FAST)
    b = pancreas.copy()
    b.layers["ln"] = b.X.astype(np.float32)  # raw counts passed as the log layer
    with pytest.raises(ValueError, match=r"lognorm_key='ln'.*log-normalized"):
        scm.tl.metacell(b, lognorm_key="ln", **FAST)
    nan = sp.csr_matrix(b.layers["ln"], dtype=np.float32, copy=True)
    nan.data = np.log1p(nan.data)
    nan.data[0] = np.nan
    b.layers["ln"] = nan
    with pytest.raises(ValueError, match="NaN"):
        scm.tl.metacell(b, lognorm_key="ln", **FAST)
    c = pancreas.copy()
    keep = np.ones(c.n_obs)
    keep[:3] = 0
    x = sp.csr_matrix(sp.diags(keep) @ c.X)
    x.eliminate_zeros()
    c.X = x.astype(np.int32)
    with pytest.raises(ValueError, match=r"3 cells have zero total counts.*filter_cells"):
        scm.tl.metacell(c, **FAST)
    c2 = pancreas.copy()
    c2.var["few"] = np.arange(c2.n_vars) < 5
    with pytest.raises(ValueError, match=r"hvg_key='few'.*at least 10"):
        scm.tl.metacell(c2, hvg_key="few", **FAST)
    d = pancreas.copy()
    d.obs["s"] = ["a"] * (d.n_obs - 1) + [None]
    with pytest.raises(ValueError, match="batch_key='s': 1 cells have no value"):
        scm.tl.metacell(d, batch_key="s", **FAST)
    mdata = md.MuData({"rna": pancreas.copy()})
    with pytest.raises(KeyError, match="mod='atac'"):
        scm.tl.metacell(mdata, mod="atac", **FAST)
    for x in (a, b, c, d):
        assert "metacell" not in x.obs


def test_allocation_per_sample():
    from scmetacell.data import allocate_metacells

    k = allocate_metacells(np.array([1000, 10, 1]), 101, batch_key="s", names=["a", "b", "c"])
    assert list(k) == [99, 1, 1]  # proportional, at least one each
    k = allocate_metacells(np.array([5, 1, 1, 1]), 5, batch_key="s", names=list("abcd"))
    assert list(k) == [2, 1, 1, 1]  # the minimum of one per sample keeps the total
    assert np.all(k <= [5, 1, 1, 1])


def test_cli_run(pancreas, tmp_path, capsys):
    small = pancreas[:800].copy()
    inp, out, cells = tmp_path / "in.h5ad", tmp_path / "out.h5ad", tmp_path / "cells.h5ad"
    small.write_h5ad(inp)
    code = cli_main(
        ["run", str(inp), "--out", str(out), "--gamma", "20", "--seed", "1", "--max-epochs", "3",
         "--cells-out", str(cells)]
    )  # fmt: skip
    assert code == 0
    mc = ad.read_h5ad(out)
    assert mc.n_obs == 40
    assert "metacell" in ad.read_h5ad(cells).obs
    assert cli_main(["run", str(inp), "--out", str(out), "--n-metacell", "0"]) == 2
    assert "n_metacell" in capsys.readouterr().err
