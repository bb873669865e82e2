from __future__ import annotations

import anndata as ad
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scanpy as sc
import scipy.sparse as sp

import scmetacell as scm
from scmetacell.tl._qc import MAD_NORMAL, outlier_bounds

pytestmark = pytest.mark.filterwarnings("ignore:From 0.4 .update:FutureWarning")

OBS_OVERLAP = [
    "n_genes_by_counts",
    "log1p_n_genes_by_counts",
    "total_counts",
    "log1p_total_counts",
    "total_counts_mt",
    "log1p_total_counts_mt",
    "pct_counts_mt",
    "total_counts_ribo",
    "log1p_total_counts_ribo",
    "pct_counts_ribo",
]
VAR_OVERLAP = [
    "n_cells_by_counts",
    "mean_counts",
    "log1p_mean_counts",
    "pct_dropout_by_counts",
    "total_counts",
    "log1p_total_counts",
]


@pytest.fixture(autouse=True)
def _quiet():
    old = sc.settings.verbosity
    sc.settings.verbosity = 0
    yield
    sc.settings.verbosity = old


def _scanpy_oracle(adata: ad.AnnData, mt: np.ndarray, ribo: np.ndarray, layer=None):
    ref = ad.AnnData(X=(adata.X if layer is None else adata.layers[layer]).copy())
    ref.obs_names, ref.var_names = adata.obs_names, adata.var_names
    ref.var["mt"], ref.var["ribo"] = mt, ribo
    sc.pp.calculate_qc_metrics(ref, qc_vars=["mt", "ribo"], percent_top=None, inplace=True)
    return ref


def _assert_frames_close(ours: pd.DataFrame, ref: pd.DataFrame, cols):
    for col in cols:
        np.testing.assert_allclose(
            ours[col].to_numpy(float), ref[col].to_numpy(float), rtol=1e-6, atol=1e-9, err_msg=col
        )


# ------------------------------------------------------------------ metrics vs scanpy
def test_metrics_match_scanpy_pbmc3k(pbmc3k):
    scm.tl.qc(pbmc3k, mt_seqid=None, min_genes=200, mt_percent=0.05)
    assert pbmc3k.var["mt"].sum() == 13  # MT- prefix on human symbols
    assert pbmc3k.var_names[pbmc3k.var["mt"]].str.startswith("MT-").all()
    assert not pbmc3k.var.loc[["RPS6KA1", "RPS6KB1"], "ribo"].any()  # kinases are not ribosomal
    assert pbmc3k.var.loc[["RPL13A", "RPS27A", "RPLP0", "RPSA", "RPL36AL"], "ribo"].all()
    ref = _scanpy_oracle(pbmc3k, pbmc3k.var["mt"].to_numpy(), pbmc3k.var["ribo"].to_numpy())
    _assert_frames_close(pbmc3k.obs, ref.obs, OBS_OVERLAP)
    _assert_frames_close(pbmc3k.var, ref.var, VAR_OVERLAP)


def test_metrics_match_scanpy_pancreas_chrM(pancreas):
    scm.tl.qc(pancreas, mt_seqid="chrM", min_genes=300)
    mt = pancreas.var["mt"]
    assert mt.sum() == 3
    assert set(pancreas.var_names[mt]) == {"mt-Co3", "mt-Co1", "mt-Nd5"}
    assert "chromosome" in pancreas.uns["qc"]["mt_genes"]
    ref = _scanpy_oracle(pancreas, mt.to_numpy(), pancreas.var["ribo"].to_numpy())
    _assert_frames_close(pancreas.obs, ref.obs, OBS_OVERLAP)
    _assert_frames_close(pancreas.var, ref.var, VAR_OVERLAP)
    # Ensembl-style "MT" names the same sequence
    a = pancreas.copy()
    a.var["chromosome"] = a.var["chromosome"].astype(str).str.replace("chrM", "MT")
    obs, _ = scm.tl.qc(a, mt_seqid="chrM", inplace=False)
    np.testing.assert_allclose(obs["pct_counts_mt"], pancreas.obs["pct_counts_mt"])


# ------------------------------------------------------------------ flags vs numpy
def _numpy_flags(X, mt, *, mode, n, scale, min_genes, mt_percent, min_cells):
    X = sp.csr_matrix(X).astype(np.float64)
    total = np.asarray(X.sum(1)).ravel()
    ngenes = np.asarray((X > 0).sum(1)).ravel()
    pct_mt = np.asarray(X[:, mt].sum(1)).ravel() / total * 100
    if mode == "mads":
        med = np.median(total)
        mad = np.median(np.abs(total - med)) * scale
        lo, hi = med - n * mad, med + n * mad
    else:
        q1, q3 = np.percentile(total, [25, 75])
        lo, hi = q1 - n * (q3 - q1), q3 + n * (q3 - q1)
    outlier = (total < lo) | (total > hi)
    passed = (ngenes >= min_genes) & ~outlier & (pct_mt < 100 * mt_percent)
    genes = np.asarray((X[passed] > 0).sum(0)).ravel() >= min_cells
    return outlier, passed, genes, (lo, hi)


@pytest.mark.parametrize(
    ("mode", "n", "scale"), [("mads", 5, 1.0), ("mads", 3, "normal"), ("tukey", 1.5, 1.0), ("tukey", 3, 1.0)]
)
def test_flags_match_numpy(pbmc3k, mode, n, scale):
    obs, var = scm.tl.qc(
        pbmc3k, mt_seqid=None, mt_percent=0.05, outlier_mode=mode, outlier_n=n, mad_scale=scale,
        min_genes=200, min_cells=3, inplace=False,
    )  # fmt: skip
    mt = pbmc3k.var_names.str.startswith("MT-")
    outlier, passed, genes, _ = _numpy_flags(
        pbmc3k.X, mt, mode=mode, n=n, scale=MAD_NORMAL if scale == "normal" else scale,
        min_genes=200, mt_percent=0.05, min_cells=3,
    )  # fmt: skip
    assert outlier.any() and passed.sum() < pbmc3k.n_obs
    np.testing.assert_array_equal(obs["qc"].to_numpy(), passed)
    np.testing.assert_array_equal(var["qc"].to_numpy(), genes)
    # qc_reason holds the first failed check; outliers that are not low-gene cells say so
    np.testing.assert_array_equal(
        (obs["qc_reason"] == "counts_outlier").to_numpy(),
        outlier & (obs["n_genes_by_counts"] >= 200).to_numpy(),
    )
    assert set(obs["qc_reason"].cat.categories) <= {"pass", "low_genes", "counts_outlier", "high_mt"}


def test_scaled_mad_is_wider_than_raw(pbmc3k):
    x = np.asarray(pbmc3k.X.sum(1)).ravel().astype(float)
    lo1, hi1 = outlier_bounds(x, "mads", 5, mad_scale=1.0)
    lo2, hi2 = outlier_bounds(x, "mads", 5, mad_scale="normal")
    med = np.median(x)
    np.testing.assert_allclose(hi2 - med, (hi1 - med) * 1.482602218505602)
    assert lo2 < lo1 < hi1 < hi2
    assert outlier_bounds([1.0, 2.0, 3.0, 4.0, 100.0], "mads", 2) == (1.0, 5.0)


def test_thresholds_and_summary_in_uns(pancreas, tmp_path):
    scm.tl.qc(pancreas, mt_seqid="chrM", min_genes=300, outlier_mode="mads", outlier_n=5)
    info = pancreas.uns["qc"]
    x = pancreas.obs["total_counts"].to_numpy()
    med = np.median(x)
    mad = np.median(np.abs(x - med))
    np.testing.assert_allclose(info["thresholds"]["total_counts"], [med - 5 * mad, med + 5 * mad])
    np.testing.assert_allclose(info["thresholds"]["pct_counts_mt"][1], 15.0)
    assert info["n_cells_pass"] == pancreas.obs["qc"].sum()
    assert info["n_genes_pass"] == pancreas.var["qc"].sum()
    pancreas.write_h5ad(tmp_path / "qc.h5ad")  # everything written is storable
    back = ad.read_h5ad(tmp_path / "qc.h5ad")
    assert back.obs["qc_reason"].dtype == "category"


def test_log_messages(pbmc3k, monkeypatch):
    from scmetacell import _logging

    lines: list[str] = []
    monkeypatch.setattr(_logging, "info", lambda msg, **kw: lines.append(msg))
    scm.tl.qc(pbmc3k, mt_seqid=None, min_genes=200)
    text = "\n".join(lines)
    assert "found 13 mitochondrial genes" in text
    assert "raw dataset contains 2700 cells, 32738 genes" in text
    n, g = int(pbmc3k.obs["qc"].sum()), int(pbmc3k.var["qc"].sum())
    assert f"filtered dataset contains {n} cells, {g} genes" in text


# ------------------------------------------------------------------ semantics
def test_filter_false_keeps_shape_filter_true_subsets(pbmc3k):
    a = pbmc3k.copy()
    scm.tl.qc(a, mt_seqid=None, min_genes=200)
    assert a.shape == pbmc3k.shape
    b = scm.tl.qc(pbmc3k, mt_seqid=None, min_genes=200, filter=True, copy=True)
    assert b.shape == (a.obs["qc"].sum(), a.var["qc"].sum())
    assert b.obs["qc"].all() and b.var["qc"].all()
    assert pbmc3k.shape == (2700, 32738)


def test_copy_and_inplace_false_leave_input_untouched(pbmc3k):
    before_obs, before_var = pbmc3k.obs.copy(), pbmc3k.var.copy()
    out = scm.tl.qc(pbmc3k, mt_seqid=None, min_genes=200, copy=True)
    assert isinstance(out, ad.AnnData) and "qc" in out.obs
    pd.testing.assert_frame_equal(pbmc3k.obs, before_obs)
    pd.testing.assert_frame_equal(pbmc3k.var, before_var)
    assert "qc" not in pbmc3k.uns
    obs, var = scm.tl.qc(pbmc3k, mt_seqid=None, min_genes=200, inplace=False)
    pd.testing.assert_frame_equal(pbmc3k.obs, before_obs)
    np.testing.assert_array_equal(obs["qc"], out.obs["qc"])
    np.testing.assert_array_equal(var["qc"], out.var["qc"])


def test_chunked_pass_dense_and_backed_do_not_change_results(pancreas, tmp_path):
    o1, v1 = scm.tl.qc(pancreas, inplace=False, min_genes=300)
    o2, v2 = scm.tl.qc(pancreas, inplace=False, min_genes=300, chunk_size=97)
    pd.testing.assert_frame_equal(o1, o2)
    pd.testing.assert_frame_equal(v1, v2)
    dense = pancreas.copy()
    dense.X = dense.X.toarray()
    o3, v3 = scm.tl.qc(dense, inplace=False, min_genes=300, chunk_size=1000)
    pd.testing.assert_frame_equal(o1, o3)
    pd.testing.assert_frame_equal(v1, v3)
    pancreas.write_h5ad(tmp_path / "p.h5ad")
    backed = ad.read_h5ad(tmp_path / "p.h5ad", backed="r")
    o4, v4 = scm.tl.qc(backed, inplace=False, min_genes=300, chunk_size=1000)
    pd.testing.assert_frame_equal(o1, o4)
    pd.testing.assert_frame_equal(v1, v4)
    keep, _ = scm.pp.exclude_nonexisting(backed, inplace=False, chunk_size=1000)
    assert keep.sum() == 2000 - 383
    with pytest.raises(ValueError, match="backed"):
        scm.pp.exclude_nonexisting(backed)
    backed.file.close()


def test_mudata_modality_written_and_filtered(pancreas):
    mdata = md.MuData({"rna": pancreas})
    scm.tl.qc(mdata, mod="rna", mt_seqid="chrM", min_genes=300)
    rna = mdata.mod["rna"]
    assert "qc" in rna.obs and "rna:qc" in mdata.obs and "rna:pct_counts_mt" in mdata.obs
    np.testing.assert_array_equal(mdata.obs["rna:qc"].to_numpy(bool), rna.obs["qc"].to_numpy())
    n, g = int(rna.obs["qc"].sum()), int(rna.var["qc"].sum())
    scm.tl.qc(mdata, mod="rna", mt_seqid="chrM", min_genes=300, filter=True)
    assert mdata.mod["rna"].shape == (n, g)
    assert mdata.shape == (n, g)


def test_metacell_object_uses_summed_counts_layer(pancreas):
    # metacell-like object: X = mean log1p CP10k, layers["counts"] = summed counts
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 120, pancreas.n_obs)
    G = sp.csr_matrix(
        (np.ones(pancreas.n_obs), (lab, np.arange(pancreas.n_obs))), shape=(120, pancreas.n_obs)
    )
    norm = pancreas.copy()
    sc.pp.normalize_total(norm, target_sum=1e4)
    sc.pp.log1p(norm)
    size = np.asarray(G.sum(1)).ravel()
    mc = ad.AnnData(
        X=sp.csr_matrix((G @ norm.X).multiply(1 / size[:, None])),
        layers={"counts": sp.csr_matrix(G @ pancreas.X)},
        var=pancreas.var.copy(),
    )
    mc.uns["metacell"] = {"n_metacells": 120}
    obs_auto, _ = scm.tl.qc(mc, min_genes=300, inplace=False)
    obs_layer, _ = scm.tl.qc(mc, layer="counts", min_genes=300, inplace=False)
    pd.testing.assert_frame_equal(obs_auto, obs_layer)
    np.testing.assert_allclose(obs_auto["total_counts"], np.asarray(G @ pancreas.X.sum(1)).ravel())
    del mc.uns["metacell"]  # detection from non-integer X alone
    obs_auto2, _ = scm.tl.qc(mc, min_genes=300, inplace=False)
    pd.testing.assert_frame_equal(obs_auto2, obs_layer)
    with pytest.raises(ValueError, match=r"layer='X'.*does not hold counts.*non-integer"):
        scm.tl.qc(mc, layer="X", inplace=False)


def test_scrublet_doublets(pbmc3k):
    a = pbmc3k[:1200].copy()
    scm.tl.qc(
        a, mt_seqid=None, min_genes=200, doublet_method="scrublet", doublet_threshold=0.2, random_state=0
    )
    assert {"doublet_score", "predicted_doublet"} <= set(a.obs.columns)
    d = a.obs["predicted_doublet"].to_numpy(bool)
    assert not a.obs.loc[d, "qc"].any()
    assert (a.obs.loc[d, "qc_reason"] == "doublet").all()
    # only cells that passed the other checks are scored
    assert (
        a.obs.loc[a.obs["qc_reason"].isin(["counts_outlier", "high_mt", "low_genes"]), "doublet_score"]
        .isna()
        .all()
    )
    assert 0 < d.sum() < 0.2 * a.n_obs
    assert a.uns["qc"]["n_failed"]["doublet"] == d.sum()


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"layer": "nope"}, KeyError, "layer='nope'"),
        ({"outlier_mode": "iqr"}, ValueError, "outlier_mode='iqr'"),
        ({"mt_percent": 15}, ValueError, "mt_percent.*fraction"),
        ({"doublet_method": "solo"}, ValueError, "doublet_method='solo'"),
        ({"outlier_n": -1}, ValueError, "outlier_n"),
        ({"mad_scale": "gauss"}, ValueError, "mad_scale"),
        ({"outlier_keys": ["pct_counts_mt"]}, ValueError, "outlier_keys"),
        ({"min_genes": 2.5}, ValueError, "min_genes"),
        ({"copy": True, "inplace": False}, ValueError, "copy=True"),
        ({"filter": True, "inplace": False}, ValueError, "filter=True"),
        ({"chromosome_key": "chrom"}, KeyError, "chromosome_key='chrom'"),
        ({"mod": "atac"}, TypeError, None),
    ],
)
def test_errors(pancreas, kwargs, exc, match):
    if kwargs.get("mod") == "atac":
        with pytest.raises(KeyError, match="mod='atac'"):
            scm.tl.qc(md.MuData({"rna": pancreas}), mod="atac")
        return
    with pytest.raises(exc, match=match):
        scm.tl.qc(pancreas, **kwargs)
    assert "qc" not in pancreas.obs  # nothing written on failure


def test_non_count_layer_is_refused(pancreas):
    pancreas.layers["log"] = pancreas.X.astype(np.float32)
    sc.pp.log1p(pancreas, layer="log")
    with pytest.raises(ValueError, match=r"layer='log'.*does not hold counts"):
        scm.tl.qc(pancreas, layer="log")
    pancreas.layers["neg"] = -pancreas.X
    with pytest.raises(ValueError, match="negative"):
        scm.tl.qc(pancreas, layer="neg")
    assert "qc" not in pancreas.obs


# ------------------------------------------------------------------ exclude_nonexisting
def test_exclude_nonexisting_matches_filter_genes(pbmc3k, monkeypatch):
    from scmetacell import _logging

    lines: list[str] = []
    monkeypatch.setattr(_logging, "info", lambda msg, **kw: lines.append(msg))
    ref = pbmc3k.copy()
    sc.pp.filter_genes(ref, min_counts=1)
    out = scm.pp.exclude_nonexisting(pbmc3k, copy=True)
    assert pbmc3k.n_vars == 32738  # input untouched
    assert list(out.var_names) == list(ref.var_names)
    assert lines[-1] == f"removed {32738 - ref.n_vars} genes with zero expression."
    keep, totals = scm.pp.exclude_nonexisting(pbmc3k, inplace=False, chunk_size=500)
    np.testing.assert_allclose(totals, np.asarray(pbmc3k.X.sum(0)).ravel())
    assert keep.sum() == ref.n_vars and pbmc3k.n_vars == 32738
    assert scm.pp.exclude_nonexisting(pbmc3k) is None
    assert pbmc3k.n_vars == ref.n_vars


def test_exclude_nonexisting_threshold_layer_and_mudata(pancreas):
    a = pancreas[:, :50].copy()
    dense = a.X.toarray().astype(np.float32)
    dense[:, :5] = 0
    dense[0, 0] = 0.005  # below the 0.01 threshold: still "no expression"
    a.X = sp.csr_matrix(dense)
    a.layers["counts"] = pancreas[:, :50].X.copy()
    mdata = md.MuData({"rna": a})
    scm.pp.exclude_nonexisting(mdata, mod="rna")
    expected = int((dense.sum(0) > 0.01).sum())
    assert expected <= 45
    assert mdata.mod["rna"].n_vars == expected and mdata.n_vars == expected
    b = pancreas[:, :50].copy()
    b.layers["counts"] = b.X.copy()
    b.X = sp.csr_matrix(b.shape, dtype=np.float32)
    keep, _ = scm.pp.exclude_nonexisting(b, layer="counts", inplace=False)
    np.testing.assert_array_equal(keep, np.asarray(b.layers["counts"].sum(0)).ravel() > 0.01)
    assert keep.any() and not scm.pp.exclude_nonexisting(b, inplace=False)[0].any()
    with pytest.raises(KeyError, match="layer='nope'"):
        scm.pp.exclude_nonexisting(b, layer="nope")
    with pytest.raises(ValueError, match="threshold"):
        scm.pp.exclude_nonexisting(b, threshold=-1)


def test_log_outliers_on_counts_and_genes(pbmc3k):
    obs, _ = scm.tl.qc(
        pbmc3k, mt_seqid=None, mt_percent=None, min_genes=0, outlier_log=True, outlier_n=3,
        outlier_keys=("total_counts", "n_genes_by_counts"), inplace=False,
    )  # fmt: skip
    fails = {}
    for key in ("total_counts", "n_genes_by_counts"):
        x = np.log1p(obs[key].to_numpy(float))
        med = np.median(x)
        mad = np.median(np.abs(x - med))
        fails[key] = (x < med - 3 * mad) | (x > med + 3 * mad)
    assert fails["total_counts"].any() and fails["n_genes_by_counts"].any()
    np.testing.assert_array_equal(obs["qc"].to_numpy(), ~(fails["total_counts"] | fails["n_genes_by_counts"]))
    np.testing.assert_array_equal((obs["qc_reason"] == "counts_outlier").to_numpy(), fails["total_counts"])
    only_genes = fails["n_genes_by_counts"] & ~fails["total_counts"]
    np.testing.assert_array_equal((obs["qc_reason"] == "genes_outlier").to_numpy(), only_genes)
    obs, _ = scm.tl.qc(
        pbmc3k, mt_seqid=None, mt_percent=None, min_genes=0, outlier_mode="none", inplace=False
    )
    assert obs["qc"].all()


def test_ribo_genes_and_ribo_percent(pbmc3k):
    obs, _ = scm.tl.qc(pbmc3k, mt_seqid=None, ribo_percent=0.4, min_genes=200, inplace=False)
    high = (obs["pct_counts_ribo"] >= 40).to_numpy()
    assert high.any()
    assert not obs.loc[high, "qc"].any()
    assert set(obs.loc[high, "qc_reason"]) <= {"high_ribo", "counts_outlier", "high_mt", "low_genes"}
    obs2, var2 = scm.tl.qc(
        pbmc3k, mt_seqid=None, ribo_genes=["RPL13A", "RPS27A", "NOT_A_GENE"], inplace=False
    )
    assert var2["ribo"].sum() == 2
    x = pbmc3k[:, ["RPL13A", "RPS27A"]].X.sum(1).A1 / pbmc3k.X.sum(1).A1 * 100
    np.testing.assert_allclose(obs2["pct_counts_ribo"], x)
    with pytest.raises(TypeError, match="ribo_genes"):
        scm.tl.qc(pbmc3k, ribo_genes="RPL13A")
