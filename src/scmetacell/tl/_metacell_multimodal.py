"""Multimodal metacells: ``scm.tl.metacell(mdata, datatypes=["rna", "adt"])`` (one shared codebook).

Called by :func:`scmetacell.tl.metacell` when ``datatypes`` names more than one modality; the arguments
have been validated there. Steps: pair the cells across modalities by ``obs_names`` → per-modality fixed
embeddings and decoder targets (:mod:`scmetacell.model._multimodal_inputs`) → balance → train the joint
model (:mod:`scmetacell.model._multimodal`) → aggregate every modality with the same partition → write.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _logging as logg
from ..data import AnnDataSource, DataHandler
from ..data._row_subset import RowSubset
from ._aggregate import aggregate_mean_and_sum, aggregate_obs
from ._resolve import allocate_metacells, h5ad_safe, resolve_counts_key, resolve_n_metacell

PAIR_MODES = ("strict", "intersection")


def resolve_modalities(mdata: Any, datatypes: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """``{modality name: kind}`` from a list of MuData modality names (kind from the name) or a mapping."""
    from ..model._multimodal_inputs import KIND_ALIASES, KINDS

    if isinstance(datatypes, Mapping):
        pairs = {str(k): str(v).lower() for k, v in datatypes.items()}
    else:
        pairs = {}
        for m in datatypes:
            kind = KIND_ALIASES.get(str(m).lower())
            if kind is None:
                raise ValueError(
                    f"datatypes: cannot tell the kind of modality {m!r} from its name; pass a mapping, e.g. "
                    f"datatypes={{'rna': 'rna', {m!r}: 'adt'}} (kinds: {', '.join(KINDS)})."
                )
            pairs[str(m)] = kind
    if len(pairs) != len(list(datatypes)):
        raise ValueError(f"datatypes={list(datatypes)!r}: a modality is named twice.")
    for m, kind in pairs.items():
        if m not in mdata.mod:
            raise KeyError(f"datatypes: no modality {m!r} in the MuData; it has {list(mdata.mod)}.")
        if kind not in KINDS:
            raise ValueError(f"datatypes: kind {kind!r} of modality {m!r} is not one of {KINDS}.")
    return pairs


def pair_cells(mdata: Any, mods: list[str], pair: str) -> tuple[pd.Index, dict[str, np.ndarray]]:
    """Cells measured in every modality (order of the first) and each modality's rows of them."""
    if pair not in PAIR_MODES:
        raise ValueError(f"pair={pair!r}: must be one of {PAIR_MODES}.")
    names = {}
    for m in mods:
        idx = mdata.mod[m].obs_names
        if not idx.is_unique:
            dup = idx[idx.duplicated()]
            raise ValueError(
                f"modality {m!r}: {dup.size} duplicated obs_names (e.g. {list(dup[:3])}); cells are paired "
                "across modalities by name, so names must be unique (adata.obs_names_make_unique())."
            )
        names[m] = idx
    ref = names[mods[0]]
    common = ref
    for m in mods[1:]:
        common = common[common.isin(names[m])]
    if pair == "strict":
        for m in mods[1:]:
            extra = names[m].difference(ref)
            missing = ref.difference(names[m])
            if extra.size or missing.size:
                ex = list((extra if extra.size else missing)[:3])
                raise ValueError(
                    f"pair='strict': cells are paired by obs_names and modality {m!r} does not match "
                    f"{mods[0]!r}: {extra.size} cells of {m!r} are not in {mods[0]!r} and {missing.size} "
                    f"cells of {mods[0]!r} are not in {m!r} (e.g. {ex}). Pass pair='intersection' to use "
                    f"only the {common.size} cells measured in every modality."
                )
    if common.size < 2:
        raise ValueError(f"pair={pair!r}: only {common.size} cells are measured in every modality {mods}.")
    rows = {m: names[m].get_indexer(common) for m in mods}
    return common, rows


def _arg_for(value: Any, mod: str, default: Any = None) -> Any:
    return value.get(mod, default) if isinstance(value, Mapping) else value


def metacell_multimodal(
    data: Any,
    *,
    datatypes: Sequence[str] | Mapping[str, str],
    modality_weights: Mapping[str, float] | None,
    pair: str,
    n_metacell: int | None,
    gamma: float | None,
    default_gamma: float,
    hvg_key: Any,
    n_top_genes: int,
    counts_key: str | Mapping[str, str] | None,
    lognorm_key: str | Mapping[str, str] | None,
    batch_key: str | None,
    key_added: str,
    settings_kwargs: dict[str, Any],
    device: str,
    n_latent: int,
    max_size_factor: float,
    min_size_factor: float,
    chunk_size: int,
    inplace: bool,
    copy: bool,
    progress: bool | None,
    n_threads: int | None,
    params_extra: dict[str, Any],
):
    """Joint metacells over several modalities of a MuData (see :func:`scmetacell.tl.metacell`)."""
    from ..data._handler import _is_mudata
    from ..model._multimodal_inputs import DEFAULT_TOP_PEAKS, adt_input, atac_input, balance, rna_input

    t_start = time.perf_counter()
    if not _is_mudata(data):
        raise ValueError(
            f"datatypes={list(datatypes)!r}: several modalities need a MuData, got {type(data).__name__}."
        )
    mdata = data
    if n_threads is not None and (
        isinstance(n_threads, bool) or int(n_threads) != n_threads or n_threads < 1
    ):
        raise ValueError(f"n_threads={n_threads!r}: must be a positive integer or None.")
    kinds = resolve_modalities(mdata, datatypes)
    mods = list(kinds)
    weights = {m: 1.0 for m in mods}
    if modality_weights is not None:
        unknown = set(modality_weights) - set(mods)
        if unknown:
            raise KeyError(f"modality_weights: {sorted(unknown)} are not among datatypes {mods}.")
        for m, w in modality_weights.items():
            if not (np.isfinite(w) and w > 0):
                raise ValueError(f"modality_weights[{m!r}]={w!r}: must be a finite number > 0.")
            weights[m] = float(w)
    common, rows = pair_cells(mdata, mods, pair)
    n = common.size
    n_unpaired = {m: int(mdata.mod[m].n_obs - n) for m in mods}
    if any(n_unpaired.values()):
        logg.warning(f"pair='intersection': using the {n} cells in every modality; left out {n_unpaired}.")

    # ------------------------------------------------------------------ groups
    n_total = resolve_n_metacell(n, n_metacell, gamma, default_gamma)
    if batch_key is None:
        cell_group, group_names = np.zeros(n, dtype=np.int64), []
    else:
        h0 = DataHandler(mdata, mods[0])
        col = h0.obs_column(batch_key, arg="batch_key").iloc[rows[mods[0]]]
        if col.isna().any():
            raise ValueError(f"batch_key={batch_key!r}: {int(col.isna().sum())} cells have no value.")
        codes_, uniques = pd.factorize(col.astype(str), sort=True)
        cell_group, group_names = codes_.astype(np.int64), [str(u) for u in uniques]
    group_sizes = np.bincount(cell_group, minlength=max(len(group_names), 1))
    k_per_group = allocate_metacells(group_sizes, n_total, batch_key=batch_key, names=group_names)

    # ------------------------------------------------------------------ per-modality inputs
    inputs, sources = [], {}
    for m in mods:
        h = DataHandler(mdata, m)
        ck = _arg_for(counts_key, m)
        layer = resolve_counts_key(h, ck)
        counts_src = RowSubset(AnnDataSource(h.adata, layer), rows[m])
        counts_arg = f"counts_key={ck!r}" if ck is not None else "counts_key (X)"
        lk = _arg_for(lognorm_key, m) if kinds[m] == "rna" else None
        lognorm_src = None
        if lk is not None:
            h.matrix(lk, arg="lognorm_key")
            lognorm_src = RowSubset(AnnDataSource(h.adata, lk), rows[m])
        sources[m] = (counts_src, lognorm_src)
        if kinds[m] == "rna":
            hk = _arg_for(hvg_key, m) if isinstance(hvg_key, Mapping) else hvg_key
            mask = h.var_mask(hk, arg="hvg_key") if hk is not None else None
            inp = rna_input(
                m, counts_src, lognorm_src, hvg_mask=mask, n_top_genes=n_top_genes, n_latent=n_latent,
                seed=settings_kwargs["seed"], counts_arg=counts_arg, lognorm_arg=f"lognorm_key={lk!r}",
                chunk_size=chunk_size, progress=progress,
            )  # fmt: skip
        elif kinds[m] == "adt":
            inp = adt_input(m, counts_src, n_latent=n_latent, counts_arg=counts_arg, chunk_size=chunk_size)
        else:
            inp = atac_input(
                m, counts_src, n_latent=n_latent, n_top_peaks=DEFAULT_TOP_PEAKS, seed=settings_kwargs["seed"],
                counts_arg=counts_arg, chunk_size=chunk_size,
            )  # fmt: skip
        inputs.append(inp)
    balance(inputs, weights)
    logg.info(
        f"computing {n_total} metacells of {n} cells from modalities "
        + ", ".join(
            f"{m.name} ({m.kind}: {m.info['n_features']} features, {m.h.shape[1]} dims)" for m in inputs
        )
    )

    # ------------------------------------------------------------------ model
    from ..model._multimodal import fit_multimodal
    from ..model._train import TrainSettings

    gamma_g = group_sizes / k_per_group
    capacity = np.repeat(np.maximum(np.floor(max_size_factor * gamma_g), np.ceil(gamma_g)), k_per_group)
    min_size = int(max(2, np.ceil(min_size_factor * float(gamma_g.min())))) if min_size_factor > 0 else 1
    settings = TrainSettings(max_size=capacity.astype(np.int64), min_size=min_size, **settings_kwargs)
    import torch

    saved_threads = torch.get_num_threads()
    if n_threads is not None:
        torch.set_num_threads(int(n_threads))
    try:
        fit = fit_multimodal(inputs, cell_group, k_per_group, settings)
    finally:
        torch.set_num_threads(saved_threads)
    diag = dict(fit.diagnostics)
    logg.info(f"    quantized reconstruction: {diag['quantized_reconstruction']:.2f}")
    logg.info(f"    trained {diag['epochs_run']} epochs ({diag['stop_reason']})")

    # ------------------------------------------------------------------ aggregation (same partition)
    from ..model._multimodal_inputs import binarize, clr
    from ..model._preprocess import lognormalize

    ids = pd.Index([f"mc{j}" for j in range(n_total)])
    labels = fit.labels
    sizes = np.bincount(labels, minlength=n_total).astype(np.int64)
    mc_mods = {}
    for inp in inputs:
        m = inp.name
        counts_src, lognorm_src = sources[m]
        agg = {"chunk_size": chunk_size, "progress": progress}
        if inp.kind == "rna" and lognorm_src is not None:
            tf = None
        elif inp.kind == "rna":
            lib = inp.library_size

            def tf(block, start, stop, lib=lib):
                return lognormalize(block, lib[start:stop])
        elif inp.kind == "adt":

            def tf(block, start, stop):
                return sp.csr_matrix(clr(block))
        else:

            def tf(block, start, stop):
                return binarize(block)

        # one pass per modality: mean of the transformed values and summed counts together
        x_mean, counts_sum = aggregate_mean_and_sum(
            counts_src, labels, n_total, transform=tf,
            value_source=lognorm_src if inp.kind == "rna" else None, desc=f"aggregating {m}",
            library_size=inp.library_size,
            **agg,
        )  # fmt: skip
        ad_m = mdata.mod[m]
        obs = aggregate_obs(_cell_obs(ad_m.obs.iloc[rows[m]], key_added), labels, n_total, ids)
        obs.insert(0, "n_cells", sizes)
        mc_m = AnnData(X=x_mean, obs=obs, var=ad_m.var.copy(), layers={"counts": counts_sum})
        mc_m.uns["metacell"] = {"kind": inp.kind, "X": _X_DOC[inp.kind], "info": h5ad_safe(inp.info)}
        mc_mods[m] = mc_m
    prefixes = tuple(f"{m}:" for m in mdata.mod)
    glob_cols = [c for c in mdata.obs.columns if not str(c).startswith(prefixes)]
    gobs = aggregate_obs(_cell_obs(mdata.obs.loc[common, glob_cols], key_added), labels, n_total, ids)
    gobs.insert(0, "n_cells", sizes)
    if batch_key is not None and batch_key not in gobs.columns:
        gobs[batch_key] = pd.Categorical(
            np.asarray(group_names)[np.repeat(np.arange(len(group_names)), k_per_group)]
        )

    params = dict(
        params_extra,
        datatypes=mods,
        kinds=[kinds[m] for m in mods],
        modality_weights=[weights[m] for m in mods],
        pair=pair,
        n_metacell=n_total,
        gamma=float(n / n_total),
        n_paired_cells=int(n),
        counts_key=str(counts_key) if isinstance(counts_key, Mapping) else counts_key,
        lognorm_key=str(lognorm_key) if isinstance(lognorm_key, Mapping) else lognorm_key,
        batch_key=batch_key,
        key_added=key_added,
        device=str(device),
        n_latent=int(n_latent),
        max_size_factor=float(max_size_factor),
        min_size_factor=float(min_size_factor),
        n_threads=n_threads,
    )
    diag["seconds_total"] = float(time.perf_counter() - t_start)
    import mudata as md

    with md.set_options(pull_on_update=False):
        result = md.MuData(mc_mods)
    for c in gobs.columns:
        result.obs[c] = gobs[c].reindex(result.obs_names)
    result.obsm["X_codebook"] = fit.codebook
    cfg = fit.module.config
    model = {
        "state_dict": {k: v.detach().cpu().numpy() for k, v in fit.module.state_dict().items()},
        "config": {
            "dims": list(cfg.dims),
            "n_features": list(cfg.n_features),
            "n_codes": cfg.n_codes,
            "n_hidden": cfg.n_hidden,
            "residual_scale": cfg.residual_scale,
        },
        "modalities": {m.name: dict(m.transform, kind=m.kind) for m in inputs},
        "groups": np.asarray(group_names, dtype=str),
        "code_group": np.repeat(np.arange(k_per_group.size), k_per_group),
    }
    uns = {
        "params": h5ad_safe(params),
        "history": fit.history,
        "diagnostics": h5ad_safe(diag),
        "model": h5ad_safe(model),
    }
    result.uns["metacell"] = uns

    # ------------------------------------------------------------------ write back (after success only)
    if copy:
        target = mdata.copy()
    elif inplace:
        target = mdata
    else:
        target = None
        uns["cells"] = {
            "obs_names": np.asarray(common, dtype=str),
            "metacell": np.asarray(ids, dtype=str)[labels],  # no per-cell object array on the way
            "confidence": fit.confidence,
            "topk": np.asarray(fit.topk, dtype=np.int32),
            "topk_weights": fit.topk_weights,
        }
    if target is not None:
        joint = pd.Series(pd.Categorical.from_codes(labels, categories=ids), index=common)
        conf = pd.Series(fit.confidence, index=common)
        for m in mods:
            hm = DataHandler(target, m)
            names = hm.adata.obs_names
            hm.set_obs(key_added, pd.Categorical(joint.reindex(names), categories=ids))
            hm.set_obs(f"{key_added}_confidence", conf.reindex(names).to_numpy())
            r = names.get_indexer(common)
            tk = np.full((names.size, fit.topk.shape[1]), -1, dtype=np.int32)
            tw = np.zeros((names.size, fit.topk.shape[1]), dtype=fit.topk_weights.dtype)
            tk[r], tw[r] = fit.topk, fit.topk_weights
            hm.set_obsm(f"{key_added}_topk", tk)
            hm.set_obsm(f"{key_added}_topk_weights", tw)
            hm.set_uns(key_added, {"params": h5ad_safe(params)})
        target.obs[key_added] = pd.Categorical(joint.reindex(target.obs_names), categories=ids)
        target.uns[key_added] = {"params": h5ad_safe(params)}
    logg.info(
        f"    delivered {diag['n_delivered']} of {n_total} metacells (sizes {diag['size_min']}–"
        f"{diag['size_max']}, median {diag['size_median']:g}) in {diag['seconds_total']:.1f} s"
    )
    if copy:
        return target, result
    return result


def is_multimodal(metacells: Any) -> bool:
    """Whether ``metacells`` were built from several modalities (``uns['metacell']['params']``)."""
    uns = getattr(metacells, "uns", {}).get("metacell")
    return isinstance(uns, dict) and len(np.atleast_1d(uns.get("params", {}).get("datatypes", []))) > 1


def _cell_obs(obs: pd.DataFrame, key_added: str) -> pd.DataFrame:
    """Drop a previous run's metacell columns (``key_added``, ``key_added_*``) from the cells' obs."""
    drop = [c for c in obs.columns if c == key_added or str(c).startswith(f"{key_added}_")]
    return obs.drop(columns=drop)


_X_DOC = {
    "rna": "mean of the log-normalized expression (log1p CP10k)",
    "adt": "mean of the CLR values (log1p(x) - mean over the cell's proteins of log1p)",
    "atac": "mean accessibility: fraction of the metacell's cells with the peak open",
}
