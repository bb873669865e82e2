"""``scm.tl.assign_metacells`` for multimodal metacells: new paired cells → the joint codebook."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ..data import AnnDataSource, DataHandler
from ..data._handler import _is_mudata
from ..data._row_subset import RowSubset
from ._metacell_multimodal import _arg_for, pair_cells
from ._resolve import resolve_counts_key


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

    from ..model._assign import nearest_topk, soft_memberships
    from ..model._multimodal import MultiVQConfig, MultiVQModule
    from ..model._multimodal_inputs import embed_new_cells

    uns = metacells.uns["metacell"]
    if "model" not in uns:
        raise ValueError(
            "metacells: no trained model in uns['metacell']['model']; pass the result of scm.tl.metacell."
        )
    model, params = uns["model"], uns["params"]
    mods = [str(m) for m in np.atleast_1d(params["datatypes"])]
    if not _is_mudata(data):
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
        ck = _arg_for(counts_key, m)
        counts_src = RowSubset(AnnDataSource(h.adata, resolve_counts_key(h, ck)), rows[m])
        lk = _arg_for(lognorm_key, m) if kind == "rna" else None
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
    n = common.size
    z = np.empty((n, config.n_latent), dtype=np.float32)
    with torch.no_grad():
        for s in range(0, n, chunk_size):
            e = min(s + chunk_size, n)
            z[s:e] = module.embed([torch.from_numpy(h[s:e]) for h in hs]).numpy()
    codes = module.codebook.detach().numpy()

    groups = np.asarray(model["groups"]).astype(str)
    batch_key = str(params.get("batch_key", "None"))
    cell_group = code_group = None
    if groups.size and batch_key != "None":
        h0 = DataHandler(data, mods[0])
        try:
            col = h0.obs_column(batch_key, arg="batch_key").iloc[rows[mods[0]]].astype(str)
        except KeyError:
            col = None
        if col is not None:
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
    ids = metacells.obs_names
    joint = pd.Series(pd.Categorical.from_codes(top_idx[:, 0], categories=ids), index=common)
    conf = pd.Series(weights[:, 0], index=common)

    target = data.copy() if copy else data
    for m in mods:
        hm = DataHandler(target, m)
        names = hm.adata.obs_names
        hm.set_obs(key_added, pd.Categorical(joint.reindex(names), categories=ids))
        hm.set_obs(f"{key_added}_confidence", conf.reindex(names).to_numpy())
        r = names.get_indexer(common)
        tk = np.full((names.size, top_idx.shape[1]), -1, dtype=np.int32)
        tw = np.zeros((names.size, top_idx.shape[1]), dtype=weights.dtype)
        tk[r], tw[r] = top_idx, weights
        hm.set_obsm(f"{key_added}_topk", tk)
        hm.set_obsm(f"{key_added}_topk_weights", tw)
    target.obs[key_added] = pd.Categorical(joint.reindex(target.obs_names), categories=ids)
    return target if copy else None
