from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import anndata as ad
import matplotlib.pyplot as plt
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp
from matplotlib.colors import to_hex

import scmetacell as scm

pytestmark = pytest.mark.filterwarnings("ignore:From 0.4 .update:FutureWarning")


@pytest.fixture(autouse=True)
def _quiet_and_close():
    old = sc.settings.verbosity
    sc.settings.verbosity = 0
    yield
    sc.settings.verbosity = old
    plt.close("all")


def _all_axes(fig):
    return [x for a in fig.axes for x in (a, *a.child_axes)]


def _panels(fig):
    return [a for a in _all_axes(fig) if a.get_label() != "<colorbar>"]


def _colorbars(fig):
    return [a for a in _all_axes(fig) if a.get_label() == "<colorbar>"]


def _facecolors(ax):
    out = set()
    for coll in ax.collections:
        fc = coll.get_facecolors()
        if len(fc) and coll.get_array() is None:
            out |= {to_hex(c) for c in fc}
    return out


@pytest.fixture(scope="module")
def pbmc_embedded():
    """PBMC 3k with QC metrics and a cheap 2-D embedding (first two PCs as 'X_umap')."""
    a = scm.datasets.pbmc3k()
    a = a[:, np.asarray(a.X.sum(0)).ravel() > 0].copy()
    scm.tl.qc(a, mt_seqid=None, min_genes=200, mt_percent=0.05)
    a.layers["counts"] = a.X.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.pca(a, n_comps=10, random_state=0)
    a.obsm["X_umap"] = a.obsm["X_pca"][:, :2].copy()
    return a


# ------------------------------------------------------------------ pl.qc
def test_pl_qc_panels_titles_thresholds(pbmc_embedded):
    fig = scm.pl.qc(pbmc_embedded)
    axes = fig.axes
    assert len(axes) == 5
    assert [a.get_title() for a in axes] == [
        "Total counts", "Genes detected", "Mitochondrial", "Ribosomal", "Counts vs genes",
    ]  # fmt: skip
    # threshold lines: max counts, min genes, max mt %, on the scatter max counts (vertical) and min genes
    hi = pbmc_embedded.uns["qc"]["thresholds"]["total_counts"][1]
    ys = [ln.get_ydata()[0] for ln in axes[0].get_lines() if ln.get_linestyle() == "--"]
    assert np.isclose(ys, hi).any()
    ys = [ln.get_ydata()[0] for ln in axes[2].get_lines() if ln.get_linestyle() == "--"]
    assert np.isclose(ys, 5.0).any()
    legend = axes[-1].get_legend()
    labels = [t.get_text() for t in legend.get_texts()]
    n_pass = int(pbmc_embedded.obs["qc"].sum())
    assert f"pass ({n_pass:,})" in labels
    fig.savefig("/tmp/scm_test_pl_qc.png")


def test_pl_qc_groupby_log_and_plain_scanpy_metrics(pbmc_embedded):
    fig = scm.pl.qc(pbmc_embedded, groupby="cell_type", log=True)
    assert len(fig.axes) == 5
    assert len(fig.axes[0].get_xticklabels()) == pbmc_embedded.obs["cell_type"].nunique()
    ref = ad.AnnData(pbmc_embedded.layers["counts"].copy())
    ref.var_names = pbmc_embedded.var_names
    ref.var["mt"] = ref.var_names.str.startswith("MT-")
    sc.pp.calculate_qc_metrics(ref, qc_vars=["mt"], percent_top=None, inplace=True)
    fig = scm.pl.qc(ref)  # no uns["qc"]: no thresholds, no ribo panel
    assert len(fig.axes) == 4
    with pytest.raises(KeyError, match=r"run scmetacell\.tl\.qc"):
        scm.pl.qc(ad.AnnData(np.ones((3, 3))))


def test_pl_qc_show_and_return(pbmc_embedded, monkeypatch):
    monkeypatch.setattr(plt, "show", lambda *a, **k: None)
    assert scm.pl.qc(pbmc_embedded, show=True) is None
    assert scm.pl.qc(pbmc_embedded, show=True, return_fig=True) is not None
    assert scm.pl.qc(pbmc_embedded, return_fig=False) is None


# ------------------------------------------------------------------ pl.embedding_multi
def test_embedding_multi_panels_and_colorbars(pbmc_embedded):
    fig = scm.pl.embedding_multi(
        pbmc_embedded, features=["cell_type", "CD79A", "pct_counts_mt", "qc", "LYZ"], ncols=2, basis="X_umap"
    )
    assert len(_panels(fig)) == 5
    assert len(_colorbars(fig)) == 3  # CD79A, pct_counts_mt, LYZ
    assert [a.get_title() for a in _panels(fig)] == ["cell_type", "CD79A", "pct_counts_mt", "qc", "LYZ"]
    assert _panels(fig)[0].get_xlabel() == "UMAP1"
    fig.savefig("/tmp/scm_test_embedding_multi.png")


def test_embedding_multi_colours_labels_legend(pbmc_embedded):
    a = pbmc_embedded
    cats = a.obs["cell_type"].cat.categories
    a.uns["cell_type_colors"] = [f"#{i:02x}{i:02x}{i:02x}" for i in range(10, 10 + len(cats))]
    try:
        fig = scm.pl.embedding_multi(a, features="cell_type", annotate_style="index", legend=True)
    finally:
        del a.uns["cell_type_colors"]
    ax = fig.axes[0]
    used = _facecolors(ax)
    assert {f"#{i:02x}{i:02x}{i:02x}" for i in range(10, 10 + len(cats))} <= used
    texts = sorted(t.get_text() for t in ax.texts)
    assert texts == sorted(str(i) for i in range(len(cats)))
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[0] == f"0: {cats[0]}" and legend[-1] == "NA"  # 62 unlabelled cells
    fig = scm.pl.embedding_multi(a, features="cell_type", annotate_style="text", legend=False)
    assert {t.get_text() for t in fig.axes[0].texts} == set(cats)
    assert fig.axes[0].get_legend() is None
    fig = scm.pl.embedding_multi(a, features="cell_type", annotate_style="none")
    assert not fig.axes[0].texts
    # default palette is scanpy's
    assert to_hex(sc.pl.palettes.default_20[0]) in _facecolors(fig.axes[0])
    # booleans: red on grey
    fig = scm.pl.embedding_multi(a, features="qc")
    assert {"#d62728", "#d3d3d3"} <= _facecolors(fig.axes[0])


def test_embedding_multi_contours_layer_symbols(pbmc_embedded):
    a = pbmc_embedded
    fig = scm.pl.embedding_multi(a, features=["CD79A"], contour_plot=False)
    n0 = len(fig.axes[0].collections)
    fig = scm.pl.embedding_multi(a, features=["CD79A"], contour_plot=True)
    assert len(fig.axes[0].collections) > n0
    # values come from the layer asked for
    fig = scm.pl.embedding_multi(a, features=["CD79A"], layer="counts", sort_order=False)
    coll = fig.axes[0].collections[0]
    np.testing.assert_allclose(coll.get_array(), a[:, "CD79A"].layers["counts"].toarray().ravel())
    # a symbol looked up in a var column
    gid = a.var.loc["CD79A", "gene_ids"]
    fig = scm.pl.embedding_multi(a, features=[gid], gene_symbols="gene_ids")
    assert fig.axes[0].get_title() == gid


def test_embedding_multi_errors_and_ax(pbmc_embedded):
    a = pbmc_embedded
    with pytest.raises(KeyError, match=r"'CD79' is not .*Did you mean"):
        scm.pl.embedding_multi(a, features=["CD79"])
    with pytest.raises(KeyError, match="basis='tsne'"):
        scm.pl.embedding_multi(a, features=["CD79A"], basis="tsne")
    with pytest.raises(ValueError, match="annotate_style"):
        scm.pl.embedding_multi(a, features=["CD79A"], annotate_style="numbers")
    with pytest.raises(ValueError, match="ax: can only"):
        scm.pl.embedding_multi(a, features=["CD79A", "LYZ"], ax=plt.subplots()[1])
    with pytest.raises(KeyError, match="layer='nope'"):
        scm.pl.embedding_multi(a, features=["CD79A"], layer="nope")
    fig, ax = plt.subplots()
    out = scm.pl.embedding_multi(a, features=["CD79A"], ax=ax)
    assert out is fig and len(_panels(fig)) == 1 and len(_colorbars(fig)) == 1


# ------------------------------------------------------------------ the seed workflow, cells and metacells
def _kmeans_metacells(rna: ad.AnnData, k: int, seed: int = 0) -> tuple[ad.AnnData, np.ndarray]:
    """A metacell-like object: k-means on PCA; X = mean log1p CP10k, layers['counts'] = summed counts."""
    from sklearn.cluster import KMeans

    lab = KMeans(n_clusters=k, n_init=1, random_state=seed).fit(rna.obsm["X_pca"]).labels_
    G = sp.csr_matrix((np.ones(rna.n_obs), (lab, np.arange(rna.n_obs))), shape=(k, rna.n_obs))
    n_cells = np.asarray(G.sum(1)).ravel()
    mc = ad.AnnData(
        X=sp.csr_matrix(sp.diags(1 / n_cells) @ (G @ rna.X)),
        layers={"counts": sp.csr_matrix(G @ rna.layers["counts"])},
        var=rna.var[["chromosome"]].copy(),
    )
    mc.obs_names = [f"mc{i}" for i in range(k)]
    mc.obs["n_cells"] = n_cells
    top = pd.Series(rna.obs["cell_type"].astype(str).to_numpy()).groupby(lab).agg(lambda s: s.mode()[0])
    mc.obs["cell_type"] = pd.Categorical(top.to_numpy())
    mc.uns["metacell"] = {"method": "kmeans (test stand-in for tl.metacell)"}
    return mc, lab


SEED_QC = {
    "mt_seqid": "chrM", "mt_percent": 0.15, "ribo_genes": None, "ribo_percent": None, "outlier_mode": "mads",
    "outlier_n": 5, "doublet_method": "no", "min_cells": 3, "min_genes": 300,
}  # fmt: skip
SEED_PLOT = {
    "ncols": 2, "basis": "umap", "features": ["Ins2", "Gcg"], "annotate_style": "text", "legend": False,
    "figsize": (6, 3), "dpi": 100, "ptsize": 4, "contour_plot": False,
}  # fmt: skip


def _seed_embed(rna: ad.AnnData, n_pcs: int, layer: str | None = None) -> None:
    # the seed's [11]-[13]: scale_pca, knn, umap -> scanpy
    sc.pp.pca(rna, n_comps=n_pcs, layer=layer, random_state=42)
    sc.pp.neighbors(rna, n_neighbors=30, random_state=42)
    sc.tl.umap(rna, min_dist=0.5, spread=1, random_state=42)


def test_seed_workflow_cells_and_metacells(pancreas):
    mdata = md.MuData({"rna": pancreas})
    # [5] exclude_nonexisting_variables
    scm.pp.exclude_nonexisting(mdata, mod="rna")
    assert mdata.mod["rna"].n_vars == 2000 - 383 and mdata.n_vars == 2000 - 383
    rna = mdata.mod["rna"]
    rna.layers["counts"] = rna.X.copy()
    # [9] qc on the cells (the seed's keywords; the pancreas set has 2,000 HVGs only, so min_genes stays 300)
    scm.tl.qc(mdata, mod="rna", **SEED_QC)
    assert rna.var["mt"].sum() == 3
    assert "rna:qc" in mdata.obs
    # [10] plot_qc
    fig = scm.pl.qc(mdata, mod="rna")
    assert len(fig.axes) == 5
    # cells: normalise, embed, plot [19]
    sc.pp.normalize_total(rna, target_sum=1e4)
    sc.pp.log1p(rna)
    _seed_embed(rna, 30)
    fig = scm.pl.embedding_multi(mdata, mod="rna", **SEED_PLOT)
    assert len(_panels(fig)) == 2 and len(_colorbars(fig)) == 2
    assert tuple(fig.get_size_inches()) == (6, 3) and fig.dpi == 100
    assert [a.get_title() for a in _panels(fig)] == ["Ins2", "Gcg"]
    fig.savefig("/tmp/scm_test_seed_cells.png")
    # features from mdata.obs: a modality column pulled as "rna:qc" and a MuData-only column
    mdata.obs["stage"] = pd.Categorical(np.where(np.arange(mdata.n_obs) % 2 == 0, "early", "late"))
    fig = scm.pl.embedding_multi(mdata, features=["rna:qc", "stage"], contour_plot=True)
    assert [a.get_title() for a in _panels(fig)] == ["rna:qc", "stage"] and not _colorbars(fig)
    assert {"#d62728", "#d3d3d3"} <= _facecolors(_panels(fig)[0])

    # metacells (stand-in for tl.metacell): [9]-[13], [18]
    mc, lab = _kmeans_metacells(rna, 150)
    rna.obs["metacell"] = np.asarray(mc.obs_names)[lab]
    mmc = md.MuData({"rna": mc})
    scm.pp.exclude_nonexisting(mmc, mod="rna")
    scm.tl.qc(mmc, mod="rna", **SEED_QC)
    assert mmc.mod["rna"].uns["qc"]["layer"] == "counts"  # summed counts, not the log means in X
    np.testing.assert_allclose(
        mmc.mod["rna"].obs["total_counts"].to_numpy(),
        pd.Series(np.asarray(rna.layers["counts"].sum(1)).ravel()).groupby(lab).sum().to_numpy(),
    )
    fig = scm.pl.qc(mmc, log=True)
    fig.savefig("/tmp/scm_test_seed_mc_qc.png")
    mcr = mmc.mod["rna"]
    mcr.layers["scaled"] = mcr.X.toarray()  # the seed's key_scaled='scaled'; X keeps the log means
    sc.pp.scale(mcr, layer="scaled")
    _seed_embed(mcr, 20, layer="scaled")
    fig = scm.pl.embedding_multi(mmc, mod="rna", size_key="n_cells", **SEED_PLOT)
    assert len(_panels(fig)) == 2 and len(_colorbars(fig)) == 2
    assert _panels(fig)[0].collections[0].get_array().min() >= 0  # log means, not the scaled values
    fig.savefig("/tmp/scm_test_seed_mc.png")
    # the same metacells drawn over the cells, at the centroids of their cells
    fig = scm.pl.embedding_multi(
        mmc, mod="rna", size_key="n_cells", cells=mdata, metacell_key="metacell", **SEED_PLOT
    )
    ax = _panels(fig)[0]
    grey, mcs = ax.collections[0], ax.collections[1]
    assert len(grey.get_offsets()) == rna.n_obs
    cent = pd.DataFrame(rna.obsm["X_umap"]).groupby(lab).mean().to_numpy()
    got = np.asarray(mcs.get_offsets())
    assert got.shape == (150, 2)
    # sort_order reorders points: compare as sets of rows
    # float32 means: relative tolerance, plus an absolute one for coordinates that are nearly 0
    np.testing.assert_allclose(np.sort(got, axis=0), np.sort(cent, axis=0), rtol=1e-6, atol=1e-6)
    sizes = mcs.get_sizes()
    assert sizes.max() > sizes.min()  # area follows n_cells
    np.testing.assert_allclose(np.median(sizes), 4, rtol=0.1)
    fig.savefig("/tmp/scm_test_seed_mc_over_cells.png")


def test_metacell_key_positions_and_errors(pbmc_embedded):
    a = pbmc_embedded
    lab = np.arange(a.n_obs) % 40
    mc = ad.AnnData(np.zeros((40, 1)))
    mc.obs_names = [f"m{i}" for i in range(40)]
    mc.obs["n_cells"] = np.bincount(lab)
    mc.obs["group"] = pd.Categorical(["x", "y"] * 20)
    cells = a.copy()
    cells.obs["metacell"] = lab  # positions instead of names
    fig = scm.pl.embedding_multi(mc, features=["group"], cells=cells, size_key="n_cells", contour_plot=True)
    assert len(_panels(fig)) == 1
    cells.obs["metacell"] = "nowhere"
    with pytest.raises(ValueError, match="metacell_key"):
        scm.pl.embedding_multi(mc, features=["group"], cells=cells)
    with pytest.raises(KeyError, match="metacell_key='mc'"):
        scm.pl.embedding_multi(mc, features=["group"], cells=cells, metacell_key="mc")
