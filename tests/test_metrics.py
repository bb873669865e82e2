"""Metacell quality metrics against hand-computed values and direct, naive implementations."""

from __future__ import annotations

import anndata as ad
import matplotlib
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from scipy.spatial.distance import cdist

import scmetacell as scm

matplotlib.use("Agg")

NAN = np.nan


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture
def toy() -> ad.AnnData:
    """Nine cells, metacells A (3 cells), B (2), C (2), D (singleton), one outlier (NaN)."""
    groups = ["A", "A", "A", "B", "B", None, "C", "C", "D"]
    labels = ["x", "x", "y", "y", "y", "x", None, "x", "y"]
    emb = np.array(
        [[0, 0], [2, 0], [1, 3], [10, 0], [12, 0], [100, 100], [0, 20], [0, 22], [50, 50]], dtype=float
    )
    rows = [[2, 0, 2], [1, 0, 1], [4, 0, 0], [0, 3, 1], [0, 1, 1], [100, 100, 100], [5, 0, 0], [0, 0, 5]]
    counts = np.array([*rows, [1, 1, 1]])
    a = ad.AnnData(X=sp.csr_matrix(counts.astype(np.float32)))
    a.obs["metacell"] = pd.Categorical(groups)
    a.obs["label"] = pd.Categorical(labels)
    a.obsm["X_pca"] = emb
    return a


@pytest.fixture(scope="module")
def _pbmc_prepared():
    adata = scm.datasets.pbmc3k()
    adata.layers["counts"] = adata.X.copy()
    sc.pp.normalize_total(adata, target_sum=1e4)
    sc.pp.log1p(adata)
    sc.pp.highly_variable_genes(adata, n_top_genes=1000)
    sc.pp.pca(adata, n_comps=40, mask_var="highly_variable", random_state=0)
    adata.obsm["X_pca"] = adata.obsm["X_pca"].astype(np.float64)
    # a partition: each cell type cut into pieces of ~25 cells along PC1, a singleton, some outliers
    rng = np.random.default_rng(0)
    ct = adata.obs["cell_type"].astype(str).to_numpy()
    mc = np.empty(adata.n_obs, dtype=object)
    for t in np.unique(ct):
        idx = np.flatnonzero(ct == t)
        idx = idx[np.argsort(adata.obsm["X_pca"][idx, 0])]
        for j, piece in enumerate(np.array_split(idx, max(1, idx.size // 25))):
            mc[piece] = f"{t}-{j}"
    mc[rng.choice(adata.n_obs, 40, replace=False)] = None
    mc[5] = "lonely"
    adata.obs["metacell"] = pd.Categorical(mc)
    return adata


@pytest.fixture
def pbmc(_pbmc_prepared) -> ad.AnnData:
    return _pbmc_prepared.copy()


def _naive_groups(adata, key="metacell"):
    col = adata.obs[key]
    ids = [m for m in col.cat.categories if (col == m).any()]
    return ids, {m: np.flatnonzero((col == m).to_numpy()) for m in ids}


# ---------------------------------------------------------------------------------------------- hand-computed
def test_purity_entropy_by_hand(toy):
    res = scm.tl.purity(toy.obs["metacell"], toy.obs["label"])
    assert list(res.index) == ["A", "B", "C", "D"]
    np.testing.assert_allclose(res["purity"], [2 / 3, 1, 1, 1])
    assert list(res["purity_label"]) == ["x", "y", "x", "y"]
    assert list(res["n_labelled"]) == [3, 2, 1, 1]  # the unlabelled cell of C is left out
    ent_a = -(2 / 3 * np.log(2 / 3) + 1 / 3 * np.log(1 / 3))
    np.testing.assert_allclose(res["entropy"], [ent_a, 0, 0, 0], atol=1e-15)
    # x: 3/3 cells in an x metacell; y: 3/4 (the y cell of A is not) -> (1 + 0.75) / 2
    assert scm.tl.balanced_purity(toy.obs["metacell"], toy.obs["label"]) == pytest.approx(0.875)


def test_purity_ties_and_unlabelled():
    res = scm.tl.purity([0, 0, 1, 1], ["b", "a", None, None])
    assert res.loc[0, "purity"] == 0.5 and res.loc[0, "purity_label"] == "a"  # tie -> first sorted label
    assert np.isnan(res.loc[1, "purity"]) and pd.isna(res.loc[1, "purity_label"])
    assert np.isnan(res.loc[1, "entropy"])


def test_compactness_separation_by_hand(toy):
    emb, g = toy.obsm["X_pca"], toy.obs["metacell"]
    comp = scm.tl.compactness(emb, g)
    # A: dim0 {0,2,1} var 1, dim1 {0,0,3} var 3 -> 2; B: {10,12} var 2, {0,0} 0 -> 1; C -> 1; D singleton
    np.testing.assert_allclose(comp.to_numpy(), [2.0, 1.0, 1.0, NAN])
    sep = scm.tl.separation(emb, g)
    # centroids A (1,1), B (11,0), C (0,21), D (50,50)
    np.testing.assert_allclose(sep.to_numpy(), np.sqrt([101, 101, 401, 50**2 + 29**2]))
    cent = scm.tl.centroids(emb, g)
    np.testing.assert_allclose(cent.to_numpy(), [[1, 1], [11, 0], [0, 21], [50, 50]])


def test_inv_by_hand(toy):
    inv = scm.tl.inner_normalized_variance(toy, toy.obs["metacell"])
    # A: median library 4 -> rows [2,0,2],[2,0,2],[4,0,0]; INV per gene 0.5, 1 (zero mean), 1 -> q95 = 1
    # B: median library 3 -> [0,2.25,.75],[0,1.5,1.5]; per gene 1, .15, .25 -> .25 + .9 * .75 = .925
    # C: [5,0,0],[0,0,5] -> 5, 1, 5 -> 5; D: singleton -> NaN
    np.testing.assert_allclose(inv.to_numpy(), [1.0, 0.925, 5.0, NAN])
    q25 = scm.tl.inner_normalized_variance(toy, toy.obs["metacell"], q=0.25)
    np.testing.assert_allclose(q25.to_numpy()[:3], [0.75, 0.2, 3.0])  # linear interpolation at h = 0.5


def test_metacell_metrics_summary_by_hand(toy):
    table, summary = scm.tl.metacell_metrics(
        toy, label_key="label", use_rep=None, correlation_sample=None, n_requested=5
    )
    assert summary["n_cells"] == 8 and summary["n_outliers"] == 1
    assert summary["n_metacells"] == 4 and summary["n_requested"] == 5
    assert summary["delivered_fraction"] == pytest.approx(0.8)
    assert (summary["size_min"], summary["size_median"], summary["size_max"]) == (1, 2.0, 3)
    assert summary["gamma"] == pytest.approx(2.0)
    assert summary["purity_mean"] == pytest.approx((2 / 3 + 3) / 4)
    # weighted by labelled cells (3, 2, 1, 1): (2 of A + 2 of B + 1 + 1) / 7
    assert summary["purity_weighted"] == pytest.approx(6 / 7)
    assert summary["balanced_purity"] == pytest.approx(0.875)
    assert summary["inv_mean"] == pytest.approx((1 + 0.925 + 5) / 3)  # the singleton's NaN left out
    assert summary["inv_median"] == pytest.approx(1.0)
    # weighted by size (3, 2, 2), the singleton left out
    assert summary["inv_weighted"] == pytest.approx((3 * 1 + 2 * 0.925 + 2 * 5) / 7)
    assert list(table["size"]) == [3, 2, 2, 1]
    assert "compactness_pca" not in table and "compactness_metaq" not in table
    assert "metacell_metrics" in toy.uns
    # the default use_rep on too few cells for a 30-neighbour graph: PCA metrics, SEACells ones NaN
    table, summary = scm.tl.metacell_metrics(toy, correlation_sample=None)
    np.testing.assert_allclose(table["compactness_pca"], [2.0, 1.0, 1.0, NAN])
    assert table["compactness_seacells"].isna().all() and np.isnan(summary["compactness_seacells_mean"])


# ---------------------------------------------------------------------------------------------- naive oracles
def _naive_diffusion(emb: np.ndarray, k: int = 30, n_eig: int = 10) -> np.ndarray:
    """Dense, direct implementation of palantir's diffusion maps + multiscale space (SEACells)."""
    n = emb.shape[0]
    d = cdist(emb, emb)
    w = np.zeros((n, n))
    for i in range(n):
        order = np.argsort(d[i], kind="stable")
        nbrs = order[order != i][: k - 1]  # scanpy: n_neighbors counts the cell itself
        sigma = d[i, nbrs[k // 3 - 1]]  # the 10th neighbour other than the cell
        w[i, nbrs] = np.exp(-d[i, nbrs] / sigma)
    kern = w + w.T
    t = kern / kern.sum(axis=1, keepdims=True)
    vals, vecs = np.linalg.eig(t)
    vals, vecs = np.real(vals), np.real(vecs)
    order = np.argsort(vals)[::-1][:n_eig]
    vals, vecs = vals[order], vecs[:, order]
    vecs /= np.linalg.norm(vecs, axis=0)
    return vecs[:, 1:] * (vals[1:] / (1 - vals[1:]))


def _align_signs(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    signs = np.sign(np.sum(a * b, axis=0))
    return b * signs


def test_diffusion_components_vs_dense(pbmc):
    rng = np.random.default_rng(1)
    idx = np.sort(rng.choice(pbmc.n_obs, 500, replace=False))
    emb = pbmc.obsm["X_pca"][idx]
    naive = _naive_diffusion(emb)
    exact = scm.tl.diffusion_components(emb, tol=0)  # ARPACK to machine precision
    np.testing.assert_allclose(_align_signs(naive, exact), naive, atol=1e-6)
    # the default tol=1e-4 (SEACells/palantir) is ARPACK's relative residual: components within
    # tol x their scale (observed here: 1.4e-6 x the largest component)
    default, vals = scm.tl.diffusion_components(emb, return_eigenvalues=True)
    assert vals[0] == pytest.approx(1.0, abs=1e-4)
    diff = np.abs(_align_signs(naive, default) - naive).max()
    assert diff < 1e-4 * np.abs(naive).max()


def test_seacells_metrics_vs_naive(pbmc):
    table, summary = scm.tl.metacell_metrics(pbmc, use_rep="X_pca", correlation_sample=None)
    keep = pbmc.obs["metacell"].notna().to_numpy()
    dc = scm.tl.diffusion_components(pbmc.obsm["X_pca"][keep])  # same inputs and seed
    ids, members = _naive_groups(pbmc)
    pos = {m: np.searchsorted(np.flatnonzero(keep), members[m]) for m in ids}
    comp = [np.var(dc[pos[m]], axis=0, ddof=1).mean() if len(pos[m]) > 1 else NAN for m in ids]
    cent = np.array([dc[pos[m]].mean(axis=0) for m in ids])
    dist = cdist(cent, cent)
    np.fill_diagonal(dist, np.inf)
    np.testing.assert_allclose(table.loc[ids, "compactness_seacells"], comp, rtol=1e-6)
    np.testing.assert_allclose(table.loc[ids, "separation_seacells"], dist.min(axis=1), rtol=1e-6)
    assert summary["compactness_seacells_mean"] == pytest.approx(np.nanmean(comp))


def test_pca_metrics_vs_naive(pbmc):
    table, summary = scm.tl.metacell_metrics(pbmc, n_pcs=30, correlation_sample=None)
    pcs = pbmc.obsm["X_pca"][:, :30]
    ids, members = _naive_groups(pbmc)
    comp = [np.var(pcs[members[m]], axis=0, ddof=1).mean() if len(members[m]) > 1 else NAN for m in ids]
    cent = np.array([pcs[members[m]].mean(axis=0) for m in ids])
    dist = cdist(cent, cent)
    np.fill_diagonal(dist, np.inf)
    np.testing.assert_allclose(table.loc[ids, "compactness_pca"], comp, rtol=1e-10)
    np.testing.assert_allclose(table.loc[ids, "separation_pca"], dist.min(axis=1), rtol=1e-10)
    assert summary["separation_pca_mean"] == pytest.approx(dist.min(axis=1).mean())


def _naive_inv(x: np.ndarray, q: float = 0.95) -> float:
    if x.shape[0] < 2:
        return NAN
    lib = x.sum(axis=1)
    xn = x / lib[:, None] * np.median(lib)
    mean = xn.mean(axis=0)
    var = xn.var(axis=0, ddof=1)
    inv = np.ones_like(mean)
    nz = mean > 0
    inv[nz] = var[nz] / mean[nz]
    return float(np.percentile(inv, q * 100))


def test_inv_vs_naive_all_genes(pbmc):
    assert pbmc.n_vars == 32738
    counts = pbmc.layers["counts"]
    ids, members = _naive_groups(pbmc)
    expected = [_naive_inv(counts[members[m]].toarray().astype(np.float64)) for m in ids]
    got = scm.tl.inner_normalized_variance(pbmc, pbmc.obs["metacell"], layer="counts")
    np.testing.assert_allclose(got.loc[ids], expected, rtol=1e-9)
    # small blocks (many reads) give the same numbers
    small = scm.tl.inner_normalized_variance(pbmc, pbmc.obs["metacell"], layer="counts", block_cells=100)
    np.testing.assert_allclose(small.loc[ids], expected, rtol=1e-9)
    assert np.isnan(got["lonely"])


def test_balanced_purity_vs_sklearn(pbmc):
    from sklearn.metrics import balanced_accuracy_score

    g, lab = pbmc.obs["metacell"], pbmc.obs["cell_type"]
    # a coarser, impure partition: by position
    coarse = pd.Series(np.arange(pbmc.n_obs) // 90).where(g.notna().to_numpy())
    res = scm.tl.purity(coarse, lab.to_numpy())
    keep = coarse.notna().to_numpy() & lab.notna().to_numpy()
    pred = res["purity_label"].astype(object).reindex(coarse[keep]).to_numpy()
    expected = balanced_accuracy_score(lab[keep].astype(str), pred.astype(str))
    assert scm.tl.balanced_purity(coarse, lab.to_numpy()) == pytest.approx(expected, abs=1e-12)
    assert expected < 0.9  # a real test: the partition is impure
    # and the per-metacell purity against pandas
    frame = pd.DataFrame({"g": coarse[keep].to_numpy(), "l": lab[keep].astype(str).to_numpy()})
    naive = frame.groupby("g")["l"].agg(lambda s: s.value_counts().iloc[0] / len(s))
    np.testing.assert_allclose(res.loc[naive.index, "purity"], naive.to_numpy())


def test_metaq_correlation_vs_naive(pbmc):
    keep = pbmc.obs["metacell"].notna().to_numpy()
    sub = pbmc[keep][:600].copy()
    sub.obs["metacell"] = sub.obs["metacell"].cat.remove_unused_categories()
    hvg = sub.var["highly_variable"].to_numpy()
    res = scm.tl.correlation_metrics(sub, sub.obs["metacell"], layer="counts", genes=hvg, n_sample=None)
    # MetaQ's eval_utils, written out: log1p(CP10k) of the HVG counts, Pearson over genes
    x = sub.layers["counts"][:, hvg].toarray().astype(np.float64)
    x = np.log1p(x / x.sum(axis=1, keepdims=True) * 1e4)
    corr = np.corrcoef(x)
    ids, members = _naive_groups(sub)
    n, m = sub.n_obs, len(ids)
    comp = [corr[np.ix_(members[k], members[k])].mean() * len(members[k]) / n * m for k in ids]
    sep = []
    for k in ids:
        other = np.setdiff1d(np.arange(n), members[k])
        sep.append(np.mean(1 - corr[np.ix_(members[k], other)].max(axis=1)) * len(members[k]) / n * m)
    np.testing.assert_allclose(res.loc[ids, "compactness_metaq"], comp, rtol=1e-9)
    np.testing.assert_allclose(res.loc[ids, "separation_metaq"], sep, rtol=1e-9)


def test_metaq_sample_is_seeded_and_bounded(pbmc):
    t1, s1 = scm.tl.metacell_metrics(pbmc, use_rep=None, counts_layer="counts", correlation_sample=400)
    _, s2 = scm.tl.metacell_metrics(pbmc, use_rep=None, counts_layer="counts", correlation_sample=400)
    assert s1["correlation_sample"] == 400
    assert s1["compactness_metaq_mean"] == s2["compactness_metaq_mean"]
    assert t1["compactness_metaq"].isna().any()  # not every metacell is in a 400-cell sample


# ---------------------------------------------------------------------------------------------- API
def test_outliers_are_left_out_everywhere(pbmc):
    before = pbmc.layers["counts"].copy()
    full, s_full = scm.tl.metacell_metrics(
        pbmc, label_key="cell_type", counts_layer="counts", correlation_sample=None, inplace=False
    )
    kept = pbmc[pbmc.obs["metacell"].notna().to_numpy()].copy()
    sub, s_sub = scm.tl.metacell_metrics(
        kept, label_key="cell_type", counts_layer="counts", correlation_sample=None, inplace=False
    )
    assert s_full["n_outliers"] == 40 and s_sub["n_outliers"] == 0
    pd.testing.assert_frame_equal(full, sub, check_exact=False, rtol=1e-9)
    assert "metacell_metrics" not in pbmc.uns  # inplace=False
    assert (pbmc.layers["counts"] != before).nnz == 0  # the user's counts are left as they were


def test_numeric_ids_minus_one_and_h5ad(pbmc, tmp_path):
    codes = pbmc.obs["metacell"].cat.codes.to_numpy().astype(np.int64)  # -1 for NaN
    pbmc.obs["mc_int"] = codes
    pbmc.uns["mc_int"] = {"params": {"n_metacell": 200}}  # what tl.metacell stores
    table, summary = scm.tl.metacell_metrics(pbmc, "mc_int", label_key="cell_type", correlation_sample=300)
    assert summary["n_outliers"] == 40 and summary["n_requested"] == 200
    assert summary["delivered_fraction"] == pytest.approx(summary["n_metacells"] / 200)
    pbmc.write_h5ad(tmp_path / "m.h5ad")
    back = ad.read_h5ad(tmp_path / "m.h5ad")
    stored = back.uns["mc_int_metrics"]
    np.testing.assert_allclose(stored["table"]["inv"], table["inv"])
    assert stored["summary"]["n_metacells"] == summary["n_metacells"]


def test_mudata_modality(pbmc):
    md = pytest.importorskip("mudata")
    adt = ad.AnnData(X=np.ones((pbmc.n_obs, 3), dtype=np.float32), obs=pd.DataFrame(index=pbmc.obs_names))
    mdata = md.MuData({"rna": pbmc, "adt": adt})
    table, _ = scm.tl.metacell_metrics(
        mdata, label_key="cell_type", counts_layer="counts", correlation_sample=None, key_added="qc"
    )
    ref, _ = scm.tl.metacell_metrics(
        pbmc, label_key="cell_type", counts_layer="counts", correlation_sample=None, inplace=False
    )
    pd.testing.assert_frame_equal(table, ref)
    assert "qc" in mdata.mod["rna"].uns
    with pytest.raises(KeyError, match="mod='prot'"):
        scm.tl.metacell_metrics(mdata, mod="prot")


def test_clear_errors(toy):
    with pytest.raises(KeyError, match="key='nope'"):
        scm.tl.metacell_metrics(toy, "nope")
    with pytest.raises(KeyError, match="label_key='nope'"):
        scm.tl.metacell_metrics(toy, label_key="nope")
    with pytest.raises(KeyError, match="use_rep='X_umap'"):
        scm.tl.metacell_metrics(toy, use_rep="X_umap")
    bad = toy.copy()
    bad.obsm["X_pca"][0, 0] = np.nan
    with pytest.raises(ValueError, match="use_rep='X_pca': the embedding contains NaN"):
        scm.tl.metacell_metrics(bad)
    with pytest.raises(KeyError, match="counts_layer='raw'"):
        scm.tl.metacell_metrics(toy, use_rep=None, counts_layer="raw")
    neg = toy.copy()
    neg.X = neg.X.copy()
    neg.X.data[0] = -1
    with pytest.raises(ValueError, match="negative"):
        scm.tl.metacell_metrics(neg, use_rep=None)
    assert "metacell_metrics" not in neg.uns  # nothing written on failure
    empty = toy.copy()
    empty.obs["metacell"] = pd.Categorical([None] * empty.n_obs, categories=["A"])
    with pytest.raises(ValueError, match="no cell has a metacell id"):
        scm.tl.metacell_metrics(empty)
    with pytest.raises(ValueError, match="q: must be in"):
        scm.tl.inner_normalized_variance(toy, toy.obs["metacell"], q=2)


# ---------------------------------------------------------------------------------------------- plots
def test_plots(pbmc, tmp_path):
    import matplotlib.pyplot as plt
    from matplotlib.figure import Figure

    table, _ = scm.tl.metacell_metrics(
        pbmc, label_key="cell_type", counts_layer="counts", correlation_sample=500
    )
    fig = scm.pl.metacell_sizes(pbmc, show=False)
    assert isinstance(fig, Figure)
    gamma_line = next(ln for ln in fig.axes[0].lines if ln.get_linestyle() == "--")
    assert gamma_line.get_xdata()[0] == pytest.approx(table["size"].mean())
    fig.savefig(tmp_path / "sizes.png")
    fig2 = scm.pl.metacell_metrics(pbmc, show=False)
    assert isinstance(fig2, Figure) and len([a for a in fig2.axes if a.get_visible()]) == 9
    fig2.savefig(tmp_path / "metrics.png")
    _, ax = plt.subplots()
    assert scm.pl.metacell_sizes(table, ax=ax, show=False) is ax.figure
    with pytest.raises(KeyError, match="no metrics in uns"):
        scm.pl.metacell_metrics(pbmc, key="other", show=False)
    plt.close("all")
