"""``scm.tl.assign_metacells``: map new cells (one modality or several, paired) onto trained metacells."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..data import (
    AnnDataSource,
    DataHandler,
    RowSubset,
    arg_for,
    is_mudata,
    match_groups,
    pair_cells,
    resolve_counts_key,
    write_cell_results,
)
from ..preprocess import HVGNormalizer, scan_cells

SMOOTH_MIN_CELLS = 100  # new cells smoothed over their own kNN graph from this many (smooth=None) ...
SMOOTH_MAX_CELLS = 50_000  # ... up to this many


def trained_model(uns: Any) -> dict:
    """``uns['metacell']`` of metacells made by ``tl.metacell`` (a clear error when it has no model)."""
    if not isinstance(uns, dict) or "model" not in uns:
        raise ValueError(
            "metacells: no trained model in uns['metacell']['model']; pass the result of scm.tl.metacell."
        )
    return uns


def nearest_metacells(z, codes, model: dict, params: dict, col: pd.Series | None, top_k: int | None):
    """Return new cells' ``top_k`` nearest entries and their soft memberships.

    Within their sample when the metacells were built per sample and ``col`` (the cells'
    ``batch_key`` column) is given.
    """
    from ..assign import nearest_topk, soft_memberships

    groups = np.asarray(model["groups"]).astype(str)
    batch_key = str(params.get("batch_key", "None"))
    cell_group = code_group = None
    if groups.size and batch_key != "None":
        cell_group = match_groups(col, groups, batch_key)
        if cell_group is not None:
            code_group = np.asarray(model["code_group"], dtype=np.int64)
    k = int(top_k if top_k is not None else params.get("top_k", 5))
    top_idx, top_d2 = nearest_topk(z, codes, k, cell_group=cell_group, code_group=code_group)
    return top_idx, soft_memberships(top_d2)


def assign_metacells(
    data: Any,
    metacells: Any,
    *,
    mod: str = "rna",
    counts_key: str | None = None,
    lognorm_key: str | None = None,
    key_added: str = "metacell",
    top_k: int | None = None,
    smooth: bool | None = None,
    chunk_size: int = 8192,
    copy: bool = False,
    progress: bool | None = None,
):
    """Assign new cells to existing metacells with the model trained by :func:`scmetacell.tl.metacell`.

    The cells are normalised with the training statistics (same HVGs, same per-gene mean and standard
    deviation), embedded with the trained encoder and given the nearest codebook entry (without the size
    cap used in training). When the metacells were built per sample (``batch_key``) and the new cells have
    that ``obs`` column, each cell is only assigned to metacells of its own sample.

    Multimodal metacells (``datatypes=['rna', 'adt']``): ``data`` must be a MuData with the same
    modalities (same features by name); cells are paired by ``obs_names`` and only the cells measured in
    every modality are assigned (the others get no metacell). Each modality is transformed with its
    training statistics; the joint result goes to ``mdata.obs[key_added]`` and to every modality's
    ``obs`` / ``obsm`` as for the training cells. ``counts_key`` and ``lognorm_key`` may then be
    mappings ``{modality: layer}``.

    Parameters
    ----------
    data
        AnnData or MuData of the new cells; must contain the model's HVGs (by name).
    metacells
        The metacells returned by :func:`scmetacell.tl.metacell`.
    mod
        Modality of MuData inputs.
    counts_key, lognorm_key
        As in :func:`scmetacell.tl.metacell`.
    key_added
        Name of the ``obs`` column written on the new cells.
    top_k
        Number of soft memberships (default: as in training).
    smooth
        kNN-smooth the new cells' embeddings over their own kNN graph, as the training cells' were
        (``n_smooth`` of :func:`scmetacell.tl.metacell`). ``None``: when the training did and the new
        cells are between :data:`SMOOTH_MIN_CELLS` (100) and :data:`SMOOTH_MAX_CELLS` (50,000) — a
        few cells have no neighbourhood of their own, and the exact kNN graph grows with the square of
        the cells. One modality.
    chunk_size
        Cells per chunk.
    copy
        Annotate and return a copy of ``data`` instead of ``data`` itself.
    progress
        Show progress bars.

    Returns
    -------
    ``None`` (``data`` annotated in place), or the annotated copy with ``copy=True``. Written:
    ``obs[key_added]`` (categorical, the metacells' ``obs_names``), ``obs[f'{key_added}_confidence']``,
    ``obsm[f'{key_added}_topk']`` and ``obsm[f'{key_added}_topk_weights']``.

    Examples
    --------
    >>> import scmetacell as scm
    >>> adata = scm.datasets.pbmc3k()
    >>> mc = scm.tl.metacell(adata, gamma=30, key_added="mc_train", progress=False)
    >>> scm.tl.assign_metacells(adata, mc, key_added="mc_mapped", progress=False)
    >>> bool((adata.obs["mc_mapped"] == adata.obs["mc_train"]).mean() > 0.8)
    True
    """
    import torch

    from ..model import VQConfig, VQModule, embed_cells
    from ._metacell_joint import is_multimodal

    if is_multimodal(metacells):  # several modalities
        return assign_multimodal(
            data, metacells, counts_key=counts_key, lognorm_key=lognorm_key, key_added=key_added,
            top_k=top_k, chunk_size=chunk_size, copy=copy, progress=progress,
        )  # fmt: skip
    mh = DataHandler(metacells, mod)
    uns, ids = trained_model(mh.adata.uns.get("metacell")), mh.adata.obs_names
    model = uns["model"]
    params = uns.get("params", {})
    handler = DataHandler(data, mod)
    adata = handler.adata
    hvg_names = pd.Index(np.asarray(model["hvg_names"]).astype(str))
    missing = hvg_names.difference(adata.var_names)
    if len(missing):
        raise KeyError(
            f"data: {len(missing)} of the model's {len(hvg_names)} HVGs are not in var_names, e.g. "
            f"{list(missing[:5])}."
        )
    counts_layer = resolve_counts_key(handler, counts_key)
    if lognorm_key is not None:
        handler.matrix(lognorm_key, arg="lognorm_key")
    counts_src = AnnDataSource(adata, counts_layer)
    lognorm_src = None if lognorm_key is None else AnnDataSource(adata, lognorm_key)
    scan = scan_cells(
        counts_src,
        lognorm_src,
        gene_stats=False,
        counts_arg=f"counts_key={counts_key!r}",
        lognorm_arg=f"lognorm_key={lognorm_key!r}",
        chunk_size=chunk_size,
        progress=progress,
    )
    hvg_idx = adata.var_names.get_indexer(hvg_names)
    order = np.argsort(hvg_idx)  # the normaliser reads columns in sorted order
    norm = HVGNormalizer(
        counts_src,
        lognorm_src,
        hvg_idx[order],
        scan.library_size,
        np.asarray(model["hvg_mean"], dtype=np.float32)[order],
        np.asarray(model["hvg_std"], dtype=np.float32)[order],
    )
    cfg = {k: (float(v) if k == "residual_scale" else int(v)) for k, v in model["config"].items()}
    module = VQModule(VQConfig(**cfg), np.asarray(model["code_group"]))
    state = {k: torch.as_tensor(np.asarray(v)) for k, v in model["state_dict"].items()}
    # the encoder's first layer expects the training HVG order: permute its columns to sorted order
    state["proj.weight"] = state["proj.weight"][:, torch.as_tensor(order)]
    module.load_state_dict(state)
    norm.set_projection(module.proj.weight.detach().numpy(), module.proj.bias.detach().numpy())
    z = embed_cells(module, norm, chunk_size=chunk_size, progress=progress)
    n_smooth = int(params.get("n_smooth", 0))
    if smooth is None:
        smooth = n_smooth > 0 and SMOOTH_MIN_CELLS <= z.shape[0] <= SMOOTH_MAX_CELLS
    if smooth and n_smooth > 0 and z.shape[0] > 2:
        from ..assign import knn_graph, smooth_embedding

        # models saved before n_neighbors was a keyword were smoothed over 15 neighbours
        z = smooth_embedding(z, knn_graph(z, int(params.get("n_neighbors", 15))), n_smooth)
    codes = module.codebook.detach().numpy()
    depth = model.get("depth")
    if depth is not None:  # the depth coordinate of the assignment space, from the new cells' depths
        from ..assign import depth_values, with_depth

        center = (float(depth["log_mean"]), float(depth["log_std"]))
        z = with_depth(z, depth_values(scan.library_size, center), float(depth["scale"]))
        codes = with_depth(codes, np.asarray(depth["code_depth"]), 1.0)  # already scaled

    batch_key = str(params.get("batch_key", "None"))
    col = adata.obs[batch_key] if batch_key in adata.obs.columns else None
    top_idx, weights = nearest_metacells(z, codes, model, params, col, top_k)
    target = DataHandler(handler.data.copy(), mod) if copy else handler
    write_cell_results(
        target, [target.mod], key_added, labels=top_idx[:, 0], ids=ids, confidence=weights[:, 0],
        topk=top_idx, topk_weights=weights,
    )  # fmt: skip
    return target.data if copy else None


def assign_multimodal(
    data: Any,
    metacells: Any,
    *,
    counts_key: str | Mapping[str, str] | None,
    lognorm_key: str | Mapping[str, str] | None,
    key_added: str,
    top_k: int | None,
    chunk_size: int,
    copy: bool,
    progress: bool | None,
):
    """Assign the paired cells of ``data`` to multimodal metacells (as ``tl.assign_metacells``)."""
    import torch

    from ..model import MultiVQConfig, MultiVQModule, embed_fixed
    from ..preprocess import embed_new_cells

    uns = trained_model(metacells.uns["metacell"])
    model, params = uns["model"], uns["params"]
    mods = [str(m) for m in np.atleast_1d(params["datatypes"])]
    if not is_mudata(data):
        raise ValueError(
            f"data: these metacells were built from the modalities {mods}; pass a MuData with them, "
            f"got {type(data).__name__}."
        )
    absent = [m for m in mods if m not in data.mod]
    if absent:
        raise KeyError(
            f"data: the MuData lacks the modalities {absent} of these metacells; it has {list(data.mod)}."
        )
    common, rows = pair_cells(data, mods, "intersection")
    hs = []
    for m in mods:
        spec = model["modalities"][m]
        kind = str(spec["kind"])
        h = DataHandler(data, m)
        ck = arg_for(counts_key, m)
        counts_src = RowSubset(AnnDataSource(h.adata, resolve_counts_key(h, ck)), rows[m])
        lk = arg_for(lognorm_key, m) if kind == "rna" else None
        lognorm_src = None
        if lk is not None:
            h.matrix(lk, arg="lognorm_key")
            lognorm_src = RowSubset(AnnDataSource(h.adata, lk), rows[m])
        h_m = embed_new_cells(
            kind, spec, counts_src, lognorm_src, name=m, counts_arg=f"counts_key={ck!r}",
            lognorm_arg=f"lognorm_key={lk!r}", chunk_size=chunk_size, progress=progress,
        )  # fmt: skip
        hs.append(h_m)
    c = model["config"]
    config = MultiVQConfig(
        dims=[int(d) for d in np.atleast_1d(c["dims"])],
        n_features=[int(p) for p in np.atleast_1d(c["n_features"])],
        n_codes=int(c["n_codes"]),
        n_hidden=int(c["n_hidden"]),
        residual_scale=float(c["residual_scale"]),
    )
    module = MultiVQModule(config, np.asarray(model["code_group"]))
    module.load_state_dict({k: torch.as_tensor(np.asarray(v)) for k, v in model["state_dict"].items()})
    module.eval()
    with torch.no_grad():
        z = embed_fixed(module, hs, chunk_size)
    codes = module.codebook.detach().numpy()
    batch_key = str(params.get("batch_key", "None"))
    try:
        col = DataHandler(data, mods[0]).obs_column(batch_key, arg="batch_key").iloc[rows[mods[0]]]
    except KeyError:
        col = None
    top_idx, weights = nearest_metacells(z, codes, model, params, col, top_k)
    target = data.copy() if copy else data
    write_cell_results(
        target, mods, key_added, labels=top_idx[:, 0], ids=metacells.obs_names, confidence=weights[:, 0],
        topk=top_idx, topk_weights=weights, cells=common,
    )  # fmt: skip
    return target if copy else None
