"""``tl.metacell`` on several modalities of a MuData (one shared codebook).

Called by :func:`scmetacell.tl.metacell` when ``datatypes`` names more than one modality; the keywords
have been checked there (:class:`~scmetacell.tl._params.MetacellParams`). Steps: pair the cells across
modalities by ``obs_names`` (:func:`scmetacell.data.pair_cells`) → per-modality fixed embeddings and
decoder targets (:mod:`scmetacell.preprocess`), weighed → the one fit (:func:`scmetacell.model.fit`) →
aggregate every modality with the same partition → write.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp
from anndata import AnnData

from .. import _logging as logg
from ..data import (
    AnnDataSource,
    DataHandler,
    RowSubset,
    allocate_metacells,
    arg_for,
    h5ad_safe,
    is_mudata,
    pair_cells,
    resolve_counts_key,
    resolve_groups,
    resolve_modalities,
    resolve_n_metacell,
)
from ._aggregate import aggregate_mean_and_sum, aggregate_obs
from ._params import DEFAULT_GAMMA, MetacellParams
from ._results import add_sample_column, deliver, log_fit, metacell_ids, metacell_uns, module_state

_X_DOC = {
    "rna": "mean of the log-normalized expression (log1p CP10k)",
    "adt": "mean of the CLR values (log1p(x) - mean over the cell's proteins of log1p)",
    "atac": "mean accessibility: fraction of the metacell's cells with the peak open",
}


def _weights(p: MetacellParams, mods: list[str]) -> dict[str, float]:
    weights = {m: 1.0 for m in mods}
    if p.modality_weights is not None:
        unknown = set(p.modality_weights) - set(mods)
        if unknown:
            raise KeyError(f"modality_weights: {sorted(unknown)} are not among datatypes {mods}.")
        for m, w in p.modality_weights.items():
            if not (np.isfinite(w) and w > 0):
                raise ValueError(f"modality_weights[{m!r}]={w!r}: must be a finite number > 0.")
            weights[m] = float(w)
    return weights


def _inputs(mdata, p: MetacellParams, kinds: dict[str, str], rows: dict[str, np.ndarray]):
    """Each modality's model input and its (counts, lognorm) sources of the paired cells."""
    from ..preprocess import DEFAULT_TOP_PEAKS, adt_input, atac_input, rna_input

    inputs, sources = [], {}
    n_latent, chunk_size = int(p.n_latent), int(p.chunk_size)
    for m, kind in kinds.items():
        h = DataHandler(mdata, m)
        ck = arg_for(p.counts_key, m)
        counts_src = RowSubset(AnnDataSource(h.adata, resolve_counts_key(h, ck)), rows[m])
        counts_arg = f"counts_key={ck!r}" if ck is not None else "counts_key (X)"
        lk = arg_for(p.lognorm_key, m) if kind == "rna" else None
        lognorm_src = None
        if lk is not None:
            h.matrix(lk, arg="lognorm_key")
            lognorm_src = RowSubset(AnnDataSource(h.adata, lk), rows[m])
        sources[m] = (counts_src, lognorm_src)
        if kind == "rna":
            hk = arg_for(p.hvg_key, m) if isinstance(p.hvg_key, Mapping) else p.hvg_key
            mask = h.var_mask(hk, arg="hvg_key") if hk is not None else None
            inp = rna_input(
                m, counts_src, lognorm_src, hvg_mask=mask, n_top_genes=p.n_top_genes, n_latent=n_latent,
                seed=int(p.random_seed), counts_arg=counts_arg, lognorm_arg=f"lognorm_key={lk!r}",
                chunk_size=chunk_size, progress=p.progress,
            )  # fmt: skip
        elif kind == "adt":
            inp = adt_input(m, counts_src, n_latent=n_latent, counts_arg=counts_arg, chunk_size=chunk_size)
        else:
            inp = atac_input(
                m, counts_src, n_latent=n_latent, n_top_peaks=DEFAULT_TOP_PEAKS, seed=int(p.random_seed),
                counts_arg=counts_arg, chunk_size=chunk_size,
            )  # fmt: skip
        inputs.append(inp)
    return inputs, sources


def _transform(inp):
    """Return the per-chunk values a modality's metacells average (``None``: the lognorm layer itself)."""
    from ..preprocess import binarize, clr, lognormalize

    if inp.kind == "rna":
        lib = inp.library_size

        def tf(block, start, stop, lib=lib):
            return lognormalize(block, lib[start:stop])

        return tf
    if inp.kind == "adt":
        return lambda block, start, stop: sp.csr_matrix(clr(block))
    return lambda block, start, stop: binarize(block)


def _aggregate(mdata, p, inputs, sources, rows, labels, n_total, ids) -> dict[str, AnnData]:
    """Every modality's metacells from the same partition (one pass per modality)."""
    sizes = np.bincount(labels, minlength=n_total).astype(np.int64)
    mc_mods = {}
    for inp in inputs:
        m = inp.name
        counts_src, lognorm_src = sources[m]
        x_mean, counts_sum = aggregate_mean_and_sum(
            counts_src, labels, n_total,
            transform=None if inp.kind == "rna" and lognorm_src is not None else _transform(inp),
            value_source=lognorm_src if inp.kind == "rna" else None, desc=f"aggregating {m}",
            library_size=inp.library_size, chunk_size=p.chunk_size, progress=p.progress,
        )  # fmt: skip
        ad_m = mdata.mod[m]
        obs = aggregate_obs(_cell_obs(ad_m.obs.iloc[rows[m]], p.key_added), labels, n_total, ids)
        obs.insert(0, "n_cells", sizes)
        mc_m = AnnData(X=x_mean, obs=obs, var=ad_m.var.copy(), layers={"counts": counts_sum})
        mc_m.uns["metacell"] = {"kind": inp.kind, "X": _X_DOC[inp.kind], "info": h5ad_safe(inp.info)}
        mc_mods[m] = mc_m
    return mc_mods


def metacell_joint(data: Any, p: MetacellParams, t_start: float):
    """Joint metacells over several modalities of a MuData (see :func:`scmetacell.tl.metacell`)."""
    from ..model import fit as fit_model
    from ..preprocess import weigh_modalities

    if not is_mudata(data):
        raise ValueError(
            f"datatypes={list(p.datatypes)!r}: several modalities need a MuData, got {type(data).__name__}."
        )
    mdata = data
    p.resolve_device()
    p.check_threads()
    kinds = resolve_modalities(mdata, p.datatypes)
    mods = list(kinds)
    weights = _weights(p, mods)
    common, rows = pair_cells(mdata, mods, p.pair)
    n = common.size
    n_unpaired = {m: int(mdata.mod[m].n_obs - n) for m in mods}
    if any(n_unpaired.values()):
        logg.warning(f"pair='intersection': using the {n} cells in every modality; left out {n_unpaired}.")
    n_total = resolve_n_metacell(n, p.n_metacell, p.gamma, DEFAULT_GAMMA)
    cell_group, group_names = resolve_groups(DataHandler(mdata, mods[0]), p.batch_key, rows[mods[0]])
    group_sizes = np.bincount(cell_group, minlength=max(len(group_names), 1))
    k_per_group = allocate_metacells(group_sizes, n_total, batch_key=p.batch_key, names=group_names)
    inputs, sources = _inputs(mdata, p, kinds, rows)
    weigh_modalities(inputs, weights)
    logg.info(
        f"computing {n_total} metacells of {n} cells from modalities "
        + ", ".join(
            f"{m.name} ({m.kind}: {m.info['n_features']} features, {m.h.shape[1]} dims)" for m in inputs
        )
    )
    settings = p.train_settings(group_sizes, k_per_group)
    with p.threads():
        fit = fit_model(inputs, cell_group, k_per_group, settings)
    log_fit(fit.diagnostics, single=False)

    ids = metacell_ids(n_total)
    mc_mods = _aggregate(mdata, p, inputs, sources, rows, fit.labels, n_total, ids)
    prefixes = tuple(f"{m}:" for m in mdata.mod)
    glob_cols = [c for c in mdata.obs.columns if not str(c).startswith(prefixes)]
    gobs = aggregate_obs(_cell_obs(mdata.obs.loc[common, glob_cols], p.key_added), fit.labels, n_total, ids)
    gobs.insert(0, "n_cells", np.bincount(fit.labels, minlength=n_total).astype(np.int64))
    add_sample_column(gobs, p.batch_key, group_names, k_per_group)
    params = p.record(
        n_top_genes=int(p.n_top_genes), datatypes=mods, kinds=[kinds[m] for m in mods],
        modality_weights=[weights[m] for m in mods], pair=p.pair, n_metacell=n_total,
        gamma=float(n / n_total),
        n_paired_cells=int(n), n_latent=int(p.n_latent),
        counts_key=str(p.counts_key) if isinstance(p.counts_key, Mapping) else p.counts_key,
        lognorm_key=str(p.lognorm_key) if isinstance(p.lognorm_key, Mapping) else p.lognorm_key,
    )  # fmt: skip
    diag = dict(fit.diagnostics, seconds_total=float(time.perf_counter() - t_start))
    import mudata as md

    with md.set_options(pull_on_update=False):
        result = md.MuData(mc_mods)
    for c in gobs.columns:
        result.obs[c] = gobs[c].reindex(result.obs_names)
    result.obsm["X_codebook"] = fit.codebook
    cfg = fit.module.config
    model = {
        "state_dict": module_state(fit),
        "config": {
            "dims": list(cfg.dims), "n_features": list(cfg.n_features), "n_codes": cfg.n_codes,
            "n_hidden": cfg.n_hidden, "residual_scale": cfg.residual_scale,
        },
        "modalities": {m.name: dict(m.transform, kind=m.kind) for m in inputs},
    }  # fmt: skip
    uns = metacell_uns(fit, params, diag, model, group_names, k_per_group)
    result.uns["metacell"] = uns
    target = mdata.copy() if p.copy else mdata if p.inplace else None
    deliver(target, mods, uns, fit, ids, cells=common, params=params, paired=True, n_total=n_total)
    if p.copy:
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
