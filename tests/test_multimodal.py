"""Multimodal metacells (``datatypes=['rna', 'adt']`` / ``'atac'``): PBMC 3k + synthetic proteins."""

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
import torch

import scmetacell as scm
from scmetacell.preprocess import ModalityInput
from scmetacell.preprocess import weigh_modalities as balance

FAST = {"progress": False, "train_epoch": 5, "random_seed": 0}


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests share a busy 2-core machine: one torch thread avoids OpenMP spin contention (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def cite():
    return scm.datasets.pbmc3k_citeseq_like()


@pytest.fixture(scope="module")
def joint_run(cite):
    mdata = cite.copy()
    before = mdata.copy()
    torch.set_num_threads(1)
    mc = scm.tl.metacell(mdata, datatypes=["rna", "adt"], gamma=15, **FAST)
    return mdata, before, mc


def _split_purity(labels: pd.Series, subtype: pd.Series) -> float:
    """Cell-weighted purity of the metacells w.r.t. the synthetic subtypes, on the split cell types only."""
    split = subtype.astype(str).str.endswith((" a", " b")).to_numpy()
    tab = pd.crosstab(labels[split].astype(str), subtype[split].astype(str))
    return float(tab.max(1).sum() / tab.to_numpy().sum())


def test_dataset_second_modality_only_states(cite):
    rna, adt = cite.mod["rna"], cite.mod["adt"]
    assert rna.obs_names.equals(adt.obs_names) and adt.n_vars == 20
    assert "synthetic" in adt.uns["source"].lower()
    sub = adt.obs["subtype"].astype(str)
    b = adt.obs["cell_type"].astype(str) == "B"
    assert set(sub[b]) == {"B a", "B b"}
    # the subtypes differ in their synthetic markers, but not in RNA (random split): compare a marker gene
    x = adt[:, "synA-1-ADT"].X.toarray().ravel()
    assert np.median(x[(sub == "B a").to_numpy()]) > 5 * np.median(x[(sub == "B b").to_numpy()])
    g = np.asarray(rna[:, "MS4A1"].X.toarray()).ravel()
    ga, gb = g[(sub == "B a").to_numpy()].mean(), g[(sub == "B b").to_numpy()].mean()
    assert abs(ga - gb) / max(ga, gb) < 0.3


def test_joint_recovers_states_rna_alone_merges(cite, joint_run):
    mdata, _, _ = joint_run
    rna_only = cite.copy()
    scm.tl.metacell(rna_only, mod="rna", gamma=15, **FAST)
    sub = cite.obs["subtype"]
    p_rna = _split_purity(rna_only.mod["rna"].obs["metacell"], sub.reindex(rna_only.mod["rna"].obs_names))
    p_joint = _split_purity(mdata.obs["metacell"], sub.reindex(mdata.obs_names))
    # measured: RNA alone ~0.6 (a random split is invisible to RNA), joint ~1.0
    assert p_joint > p_rna + 0.2, (p_rna, p_joint)
    assert p_joint > 0.9


def test_every_modality_aggregated_with_the_same_partition(joint_run):
    mdata, before, mc = joint_run
    labels = mdata.obs["metacell"]
    assert labels.notna().all()
    assert list(mc.mod) == ["rna", "adt"]
    assert mc.n_obs == round(mdata.n_obs / 15)
    for m in ("rna", "adt"):
        assert (mdata.mod[m].obs["metacell"] == labels.reindex(mdata.mod[m].obs_names)).all()
        assert (mdata.obs[f"{m}:metacell"] == labels).all()
        a = before.mod[m].copy()
        a.obs["mc"] = labels.reindex(a.obs_names).astype(str).to_numpy()
        ref = sc.get.aggregate(a, by="mc", func="sum")  # independent oracle
        got = mc.mod[m].layers["counts"].toarray()
        np.testing.assert_array_equal(got, ref[mc.obs_names].layers["sum"])
        np.testing.assert_array_equal(mc.mod[m].obs["n_cells"], mc.obs["n_cells"])
    assert mc.obs["n_cells"].sum() == mdata.n_obs
    # RNA X: mean of log1p(CP10k); ADT X: mean of the per-cell CLR
    a = before.mod["rna"].copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    a.obs["mc"] = labels.reindex(a.obs_names).astype(str).to_numpy()
    ref = sc.get.aggregate(a, by="mc", func="mean")[mc.obs_names].layers["mean"]
    np.testing.assert_allclose(mc.mod["rna"].X.toarray(), ref, rtol=1e-4, atol=1e-5)
    x = np.log1p(before.mod["adt"].X.toarray().astype(np.float64))
    x -= x.mean(1, keepdims=True)
    lab = labels.reindex(before.mod["adt"].obs_names).astype(str).to_numpy()
    ref = np.vstack([x[lab == j].mean(0) for j in mc.obs_names])
    np.testing.assert_allclose(mc.mod["adt"].X.toarray(), ref, rtol=1e-4, atol=1e-5)
    # obs aggregated once per level: majority subtype + purity
    assert {"subtype", "subtype_purity", "n_cells"} <= set(mc.obs.columns)
    assert mc.obsm["X_codebook"].shape[0] == mc.n_obs
    assert mc.uns["metacell"]["params"]["pair"] == "strict"


def test_modalities_paired_by_name_not_order(cite, joint_run):
    mdata, _, _ = joint_run
    shuffled = cite.copy()
    adt = shuffled.mod["adt"]
    perm = np.random.default_rng(1).permutation(adt.n_obs)
    with md.set_options(pull_on_update=False):
        shuffled = md.MuData({"rna": shuffled.mod["rna"], "adt": adt[perm].copy()})
    scm.tl.metacell(shuffled, datatypes=["rna", "adt"], gamma=15, **FAST)
    a = shuffled.mod["adt"].obs["metacell"].astype(str)
    b = mdata.mod["adt"].obs["metacell"].astype(str).reindex(a.index)
    assert (a == b).all()


def test_strict_pairing_error_and_intersection(cite):
    rna = cite.mod["rna"][:600].copy()
    adt = cite.mod["adt"][5:600].copy()
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna, "adt": adt})
    before = mdata.copy()
    with pytest.raises(ValueError, match=r"modality 'adt'.*5 cells of 'rna' are not in 'adt'"):
        scm.tl.metacell(mdata, datatypes=["rna", "adt"], gamma=15, **FAST)
    assert "metacell" not in mdata.obs.columns  # nothing written on failure
    assert mdata.mod["rna"].obs.columns.equals(before.mod["rna"].obs.columns)
    mc = scm.tl.metacell(mdata, datatypes=["rna", "adt"], gamma=15, pair="intersection", **FAST)
    assert mc.obs["n_cells"].sum() == 595
    lab = mdata.mod["rna"].obs["metacell"]
    assert lab.iloc[:5].isna().all() and lab.iloc[5:].notna().all()
    assert (mdata.mod["rna"].obsm["metacell_topk"][:5] == -1).all()


def test_rna_atac(cite):
    rng = np.random.default_rng(0)
    rna = cite.mod["rna"][:500].copy()
    # pseudo-ATAC: 3,000 "peaks" opened where the cells' genes are detected, plus random openings
    x = rna.X[:, :3000].copy().astype(np.int32)
    noise = sp.random(x.shape[0], x.shape[1], density=0.01, random_state=0, data_rvs=lambda k: np.ones(k))
    peaks = sp.csr_matrix(x + noise.astype(np.int32) * rng.integers(1, 3))
    atac = ad.AnnData(
        peaks,
        obs=pd.DataFrame(index=rna.obs_names),
        var=pd.DataFrame(index=[f"peak{i}" for i in range(3000)]),
    )
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna, "atac": atac})
    mc = scm.tl.metacell(mdata, datatypes=["rna", "atac"], gamma=10, **FAST)
    labels = mdata.obs["metacell"].astype(str).to_numpy()
    b = (peaks > 0).astype(np.float64).toarray()
    ref = np.vstack([b[labels == j].mean(0) for j in mc.obs_names])
    np.testing.assert_allclose(mc.mod["atac"].X.toarray(), ref, rtol=1e-5, atol=1e-6)  # fraction open
    ref_sum = np.vstack([peaks.toarray()[labels == j].sum(0) for j in mc.obs_names])
    np.testing.assert_array_equal(mc.mod["atac"].layers["counts"].toarray(), ref_sum)
    assert mc.uns["metacell"]["params"]["kinds"].tolist() == ["rna", "atac"]


def test_balance_equal_total_variance():
    rng = np.random.default_rng(0)
    big = rng.normal(size=(300, 50)) * 10
    small = rng.normal(size=(300, 5)) * 0.1
    mk = [
        ModalityInput(
            "rna", "rna", big.astype(np.float32), sp.csr_matrix((300, 1)), np.arange(1), np.ones(300)
        ),
        ModalityInput(
            "adt", "adt", small.astype(np.float32), sp.csr_matrix((300, 1)), np.arange(1), np.ones(300)
        ),
    ]
    balance(mk, {"rna": 1.0, "adt": 1.0})
    # 55 joint dimensions, 2 modalities: each modality's total variance is 27.5 (mean 1 per dimension)
    np.testing.assert_allclose([m.h.var(0).sum() for m in mk], [27.5, 27.5], rtol=1e-4)
    np.testing.assert_allclose(mk[1].h.mean(0), 0, atol=1e-5)
    balance(mk, {"rna": 1.0, "adt": 3.0})
    np.testing.assert_allclose([m.h.var(0).sum() for m in mk], [0.5 * 27.5, 1.5 * 27.5], rtol=1e-4)


def test_validation(cite, joint_run):
    small = cite[:300].copy()
    with pytest.raises(ValueError, match=r"datatypes=.*need a MuData"):
        scm.tl.metacell(cite.mod["rna"], datatypes=["rna", "adt"], **FAST)
    with pytest.raises(KeyError, match="no modality 'atac'"):
        scm.tl.metacell(small, datatypes=["rna", "atac"], **FAST)
    with pytest.raises(ValueError, match="kind of modality 'foo'"):
        scm.tl.metacell(small, datatypes=["rna", "foo"], **FAST)
    with pytest.raises(KeyError, match="modality_weights"):
        scm.tl.metacell(small, datatypes=["rna", "adt"], modality_weights={"atac": 1}, **FAST)
    with pytest.raises(ValueError, match=r"modality_weights\['adt'\]"):
        scm.tl.metacell(small, datatypes=["rna", "adt"], modality_weights={"adt": 0}, **FAST)
    with pytest.raises(ValueError, match="pair="):
        scm.tl.metacell(small, datatypes=["rna", "adt"], pair="union", **FAST)
    _, _, mc = joint_run
    with pytest.raises(ValueError, match=r"modalities \['rna', 'adt'\]; pass a MuData"):
        scm.tl.assign_metacells(cite.mod["rna"].copy(), mc, progress=False)
    bad = cite.copy()
    bad.mod["adt"] = bad.mod["adt"][:, 2:].copy()
    with pytest.raises(KeyError, match=r"2 of the 20 features .* modality 'adt'"):
        scm.tl.assign_metacells(bad, mc, progress=False)


def test_assign_new_cells_multimodal(cite, joint_run, tmp_path):
    mdata, _, mc = joint_run
    # the training cells map back to their own metacells (no size cap at assignment time)
    fresh = cite.copy()
    scm.tl.assign_metacells(fresh, mc, key_added="mapped", progress=False)
    agree = (fresh.obs["mapped"].astype(str) == mdata.obs["metacell"].astype(str)).mean()
    assert agree > 0.95
    for m in ("rna", "adt"):
        assert (fresh.mod[m].obs["mapped"] == fresh.obs["mapped"].reindex(fresh.mod[m].obs_names)).all()
        assert fresh.mod[m].obsm["mapped_topk"].shape == (fresh.n_obs, 5)
    # the model survives an .h5mu round trip; cells missing from one modality are left out
    mc.write(tmp_path / "mc.h5mu")
    back = md.read_h5mu(tmp_path / "mc.h5mu")
    with md.set_options(pull_on_update=False):
        part = md.MuData({"rna": cite.mod["rna"][:300].copy(), "adt": cite.mod["adt"][10:300].copy()})
    scm.tl.assign_metacells(part, back, key_added="mapped", progress=False)
    lab = part.mod["rna"].obs["mapped"].astype(object)
    assert lab.iloc[:10].isna().all()
    ref = fresh.obs["mapped"].astype(str).reindex(part.mod["rna"].obs_names[10:])
    assert (lab.iloc[10:].astype(str) == ref).all()
