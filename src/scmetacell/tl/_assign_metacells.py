"""``scm.tl.assign_metacells``: map new cells onto existing metacells with the trained model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..data import AnnDataSource, DataHandler
from ..model._preprocess import HVGNormalizer, scan_cells
from ._resolve import resolve_counts_key


def _metacell_uns(metacells: Any, mod: str) -> tuple[dict, pd.Index]:
    mh = DataHandler(metacells, mod)
    uns = mh.adata.uns.get("metacell")
    if not isinstance(uns, dict) or "model" not in uns:
        raise ValueError(
            "metacells: no trained model in uns['metacell']['model']; pass the result of scm.tl.metacell."
        )
    return uns, mh.adata.obs_names


def assign_metacells(
    data: Any,
    metacells: Any,
    *,
    mod: str = "rna",
    counts_key: str | None = None,
    lognorm_key: str | None = None,
    key_added: str = "metacell",
    top_k: int | None = None,
    chunk_size: int = 8192,
    copy: bool = False,
    progress: bool | None = None,
):
    """Assign new cells to existing metacells with the model trained by :func:`scmetacell.tl.metacell`.

    The cells are normalised with the training statistics (same HVGs, same per-gene mean and standard
    deviation), embedded with the trained encoder and given the nearest codebook entry (without the size
    cap used in training). When the metacells were built per sample (``batch_key``) and the new cells have
    that ``obs`` column, each cell is only assigned to metacells of its own sample.

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

    from ..model._assign import nearest_topk, soft_memberships
    from ..model._module import VQConfig, VQModule
    from ..model._train import embed_cells

    uns, ids = _metacell_uns(metacells, mod)
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
    codes = module.codebook.detach().numpy()

    groups = np.asarray(model["groups"]).astype(str)
    batch_key = params.get("batch_key", "None")
    cell_group = code_group = None
    if groups.size and batch_key != "None" and batch_key in adata.obs.columns:
        col = adata.obs[batch_key].astype(str)
        unknown = ~col.isin(groups)
        if unknown.any():
            raise ValueError(
                f"data: obs[{batch_key!r}] has samples without metacells, "
                f"e.g. {list(col[unknown].unique()[:3])}."
            )
        cell_group = pd.Index(groups).get_indexer(col).astype(np.int64)
        code_group = np.asarray(model["code_group"], dtype=np.int64)
    k = int(top_k if top_k is not None else params.get("top_k", 5))
    top_idx, top_d2 = nearest_topk(z, codes, k, cell_group=cell_group, code_group=code_group)
    weights = soft_memberships(top_d2)
    labels = top_idx[:, 0]

    target = DataHandler(handler.data.copy(), mod) if copy else handler
    target.set_obs(key_added, pd.Categorical.from_codes(labels, categories=ids))
    target.set_obs(f"{key_added}_confidence", weights[:, 0])
    target.set_obsm(f"{key_added}_topk", top_idx.astype(np.int32))
    target.set_obsm(f"{key_added}_topk_weights", weights)
    return target.data if copy else None
