"""``tl.metacell`` on one modality: resolve → stream (scan, HVGs, statistics) → fit → aggregate → write."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from anndata import AnnData

from .. import _logging as logg
from .._memory import trim_heap
from ..data import (
    MIN_HVG,
    AnnDataSource,
    CellSource,
    ChunkExecutor,
    DataHandler,
    allocate_metacells,
    in_memory,
    is_matrix_input,
    resolve_counts_key,
    resolve_datatypes,
    resolve_groups,
    resolve_matrix_input,
    resolve_n_metacell,
)
from ..preprocess import HVGNormalizer, fit_hvg_stats, lognormalize, scan_cells, select_hvg
from ._aggregate import aggregate_mean_and_sum, aggregate_obs
from ._params import DEFAULT_GAMMA, MetacellParams
from ._results import (
    add_sample_column,
    add_trust_columns,
    deliver,
    log_fit,
    metacell_ids,
    metacell_uns,
    module_state,
)


@dataclass
class _Resolved:
    """The input as the run sees it."""

    handler: DataHandler
    matrix_src: CellSource | None  # a path / matrix input's cells (else None: an AnnData)
    close_src: bool
    counts_layer: str | None
    n_total: int
    cell_group: np.ndarray
    group_names: list[str]
    k_per_group: np.ndarray
    hvg_mask: np.ndarray | None


def _resolve(data: Any, p: MetacellParams) -> _Resolved:
    matrix_src, close_src = None, False
    if is_matrix_input(data):
        if p.copy:
            raise ValueError("copy=True: not possible for a path / matrix input (there is no AnnData).")
        if p.counts_key not in (None, "X") or p.lognorm_key is not None:
            raise ValueError(
                "counts_key / lognorm_key: a path / matrix input holds raw counts only; leave both None."
            )
        close_src = not isinstance(data, CellSource)
        matrix_src, data = resolve_matrix_input(data, p.obs)
        p.inplace = False
    elif p.obs is not None:
        raise ValueError("obs: only for a path / matrix input; an AnnData brings its own obs.")
    try:
        return _resolve_rest(data, p, matrix_src, close_src)
    except BaseException:  # e.g. a bad hvg_key: the source opened from a path is closed
        _close_opened(matrix_src, close_src)
        raise


def _close_opened(matrix_src: CellSource | None, close_src: bool) -> None:
    """Close the source of a path / matrix input if this call opened it."""
    if matrix_src is not None and close_src:
        matrix_src.close()


def _resolve_rest(data: Any, p: MetacellParams, matrix_src, close_src: bool) -> _Resolved:
    handler = DataHandler(data, p.mod)
    adata = handler.adata
    p.datatypes = resolve_datatypes(p.datatypes, handler.mod or p.mod)
    counts_layer = None if matrix_src is not None else resolve_counts_key(handler, p.counts_key)
    if p.lognorm_key is not None:
        handler.matrix(p.lognorm_key, arg="lognorm_key")
    n_total = resolve_n_metacell(adata.n_obs, p.n_metacell, p.gamma, DEFAULT_GAMMA)
    p.check_density_weight(adata.n_obs)
    cell_group, group_names = resolve_groups(handler, p.batch_key)
    group_sizes = np.bincount(cell_group, minlength=max(len(group_names), 1))
    k_per_group = allocate_metacells(group_sizes, n_total, batch_key=p.batch_key, names=group_names)
    hvg_mask = handler.var_mask(p.hvg_key, arg="hvg_key") if p.hvg_key is not None else None
    if hvg_mask is not None and hvg_mask.sum() < MIN_HVG:
        raise ValueError(
            f"hvg_key={p.hvg_key!r}: selects {int(hvg_mask.sum())} genes; at least {MIN_HVG} needed."
        )
    return _Resolved(
        handler, matrix_src, close_src, counts_layer, n_total, cell_group, group_names, k_per_group, hvg_mask
    )


def _preprocess(r: _Resolved, p: MetacellParams, counts_src, lognorm_src, executor, timings: dict):
    """Library sizes (and gene statistics), the HVGs and their z-score statistics, streamed."""
    adata = r.handler.adata
    counts_arg = f"counts_key={p.counts_key!r}" if p.counts_key is not None else "counts_key (X)"
    t_stage = time.perf_counter()
    scan = scan_cells(
        counts_src, lognorm_src, gene_stats=r.hvg_mask is None, counts_arg=counts_arg,
        lognorm_arg=f"lognorm_key={p.lognorm_key!r}", chunk_size=p.chunk_size, progress=p.progress,
        executor=executor,
    )  # fmt: skip
    empty = np.flatnonzero(scan.library_size <= 0)
    if empty.size:
        raise ValueError(
            f"{counts_arg}: {empty.size} cells have zero total counts (e.g. "
            f"{list(adata.obs_names[empty[:3]])}); remove them first, e.g. "
            "sc.pp.filter_cells(adata, min_counts=1)."
        )
    hvg_mask = r.hvg_mask
    if hvg_mask is None:
        hvg_mask = select_hvg(scan.gene_mean, scan.gene_var, p.n_top_genes)
        if hvg_mask.sum() < MIN_HVG:
            raise ValueError(
                f"hvg_key=None: only {int(hvg_mask.sum())} genes vary across cells; "
                f"at least {MIN_HVG} needed."
            )
    hvg_idx = np.flatnonzero(hvg_mask)
    timings["seconds_scan"] = time.perf_counter() - t_stage
    t_stage = time.perf_counter()
    norm = HVGNormalizer(counts_src, lognorm_src, hvg_idx, scan.library_size)
    if r.matrix_src is None and in_memory(adata, r.counts_layer, p.lognorm_key):
        norm.cache(chunk_size=p.chunk_size, progress=p.progress)  # sparse cells × HVGs, for in-memory inputs
    fit_hvg_stats(norm, chunk_size=p.chunk_size, progress=p.progress, executor=executor)
    timings["seconds_hvg_stats"] = time.perf_counter() - t_stage
    return scan, norm, hvg_idx


def metacell_single(data: Any, p: MetacellParams, t_start: float):
    """Metacells of one modality (see :func:`scmetacell.tl.metacell`); ``p`` is checked."""
    r = _resolve(data, p)
    try:
        return _metacell_single(r, p, t_start)
    finally:  # a source opened from a path is closed on every way out
        _close_opened(r.matrix_src, r.close_src)


def _metacell_single(r: _Resolved, p: MetacellParams, t_start: float):
    from ..model import fit as fit_model

    adata = r.handler.adata
    executor = ChunkExecutor(p.client)
    counts_src = r.matrix_src if r.matrix_src is not None else AnnDataSource(adata, r.counts_layer)
    lognorm_src = None if p.lognorm_key is None else AnnDataSource(adata, p.lognorm_key)
    timings: dict[str, float] = {}
    scan, norm, hvg_idx = _preprocess(r, p, counts_src, lognorm_src, executor, timings)
    logg.info(
        f"computing {r.n_total} metacells of {adata.n_obs} cells on {hvg_idx.size} HVGs"
        + (f" within {len(r.group_names)} samples of {p.batch_key!r}" if p.batch_key else "")
    )
    group_sizes = np.bincount(r.cell_group, minlength=max(len(r.group_names), 1))
    mtc = None if p.max_train_cells is None else int(p.max_train_cells)
    settings = p.train_settings(group_sizes, r.k_per_group, max_train_cells=mtc, executor=executor)
    with p.threads():
        fit = fit_model(norm, r.cell_group, r.k_per_group, settings)
    log_fit(fit.diagnostics, single=True)
    if fit.diagnostics["n_delivered"] < r.n_total:  # pragma: no cover - ruled out by validation
        logg.warning(
            f"delivered {fit.diagnostics['n_delivered']} of {r.n_total} metacells: "
            "some samples have fewer cells than entries."
        )

    # ------------------------------------------------------------------ aggregation (one pass)
    t_stage = time.perf_counter()
    ids = metacell_ids(r.n_total)

    def _lognorm_chunk(block, start, stop, lib=scan.library_size):
        return lognormalize(block, lib[start:stop])

    x_mean, counts_sum = aggregate_mean_and_sum(
        counts_src, fit.labels, r.n_total, transform=_lognorm_chunk if lognorm_src is None else None,
        value_source=lognorm_src, chunk_size=p.chunk_size, progress=p.progress, desc="aggregating",
        executor=executor, library_size=scan.library_size,
    )  # fmt: skip
    hvg_mean, hvg_std = norm.mean, norm.std
    del norm, scan, _lognorm_chunk  # the cells' library sizes are not needed any more
    trim_heap(force=True)  # the run's freed temporaries go back to the OS before the per-cell results
    obs = aggregate_obs(adata.obs, fit.labels, r.n_total, ids)
    obs.insert(0, "n_cells", np.bincount(fit.labels, minlength=r.n_total).astype(np.int64))
    add_trust_columns(obs, fit.homogeneity)
    add_sample_column(obs, p.batch_key, r.group_names, r.k_per_group)
    timings["seconds_aggregate"] = time.perf_counter() - t_stage
    return _finish(p, r, fit, ids, obs, x_mean, counts_sum, hvg_idx, hvg_mean, hvg_std, timings, t_start)


def _finish(p, r, fit, ids, obs, x_mean, counts_sum, hvg_idx, hvg_mean, hvg_std, timings, t_start):
    """Record the run in ``uns['metacell']``, build the metacells, write back onto the cells."""
    handler, adata = r.handler, r.handler.adata
    params = p.record(
        mod=handler.mod or "None", n_metacell=r.n_total, gamma=float(adata.n_obs / r.n_total),
        hvg_key=p.hvg_key if isinstance(p.hvg_key, str) or p.hvg_key is None else "custom",
        n_hvg=int(hvg_idx.size), counts_key=p.counts_key, lognorm_key=p.lognorm_key, datatypes=p.datatypes,
        n_latent=int(fit.module.config.n_latent),
        max_train_cells=-1 if p.max_train_cells is None else int(p.max_train_cells),
        input="matrix" if r.matrix_src is not None else "anndata",
        dask_workers=len(p.client.scheduler_info().get("workers", {})) if p.client is not None else 0,
    )  # fmt: skip
    diag = dict(fit.diagnostics, **timings, seconds_total=float(time.perf_counter() - t_start))
    cfg = fit.module.config
    model = {
        "state_dict": module_state(fit),
        "config": {
            "n_input": cfg.n_input, "n_latent": cfg.n_latent, "n_codes": cfg.n_codes,
            "n_hidden": cfg.n_hidden, "residual_scale": cfg.residual_scale,
        },
        **({"depth": fit.depth} if fit.depth is not None else {}),
        "hvg_names": np.asarray(adata.var_names[hvg_idx], dtype=str),
        "hvg_mean": hvg_mean,
        "hvg_std": hvg_std,
        "target_sum": 1e4,
    }  # fmt: skip
    uns = metacell_uns(fit, params, diag, model, r.group_names, r.k_per_group)
    mc = AnnData(X=x_mean, obs=obs, var=adata.var.copy(), layers={"counts": counts_sum})
    mc.obsm["X_codebook"] = fit.codebook
    mc.uns["metacell"] = uns
    target = DataHandler(handler.data.copy(), p.mod) if p.copy else handler if p.inplace else None
    deliver(
        target, [handler.mod], uns, fit, ids, cells=adata.obs_names, params=params, paired=False,
        n_total=r.n_total,
    )  # fmt: skip
    result = mc
    if handler.is_mudata:
        import mudata as md

        result = md.MuData({handler.mod: mc})
    if p.copy:
        return target.data, result
    return result
