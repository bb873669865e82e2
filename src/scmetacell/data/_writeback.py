"""Write-back of the cells' results, through the :class:`DataHandler` only (after success only).

One function for every caller (``tl.metacell`` and ``tl.assign_metacells``, one modality or several):
``obs[key]`` (categorical metacell), ``obs[f'{key}_confidence']``, ``obsm[f'{key}_topk']`` (int32) and
``obsm[f'{key}_topk_weights']``, and ``uns[key]['params']`` when given.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._handler import DataHandler
from ._resolve import h5ad_safe


def write_cell_results(
    target: Any,
    mods: Sequence[str | None],
    key_added: str,
    *,
    labels: np.ndarray,
    ids: pd.Index,
    confidence: np.ndarray,
    topk: np.ndarray,
    topk_weights: np.ndarray,
    cells: pd.Index | None = None,
    params: dict | None = None,
) -> None:
    """Annotate the cells of ``target`` (an AnnData / MuData, or a :class:`DataHandler`).

    ``mods``: the modalities written (``[None]`` or ``[mod]`` for one). ``cells``: the names of the
    labelled cells when they are not all the modality's cells in order (several modalities, paired by
    name): the others get no metacell (missing category, confidence ``NaN``, top-k ``-1`` / 0), and a
    MuData gets the joint ``mdata.obs[key_added]`` (and ``mdata.uns[key_added]``) too.
    """
    if cells is not None:
        joint = pd.Series(pd.Categorical.from_codes(labels, categories=ids), index=cells)
        conf = pd.Series(confidence, index=cells)
    h = None
    for m in mods:
        h = DataHandler(target, m)
        if cells is None:
            h.set_obs(key_added, pd.Categorical.from_codes(labels, categories=ids))
            h.set_obs(f"{key_added}_confidence", confidence)
            h.set_obsm(f"{key_added}_topk", np.asarray(topk, dtype=np.int32))
            h.set_obsm(f"{key_added}_topk_weights", topk_weights)
        else:
            names = h.adata.obs_names
            h.set_obs(key_added, pd.Categorical(joint.reindex(names), categories=ids))
            h.set_obs(f"{key_added}_confidence", conf.reindex(names).to_numpy())
            r = names.get_indexer(cells)
            tk = np.full((names.size, topk.shape[1]), -1, dtype=np.int32)
            tw = np.zeros((names.size, topk.shape[1]), dtype=topk_weights.dtype)
            tk[r], tw[r] = topk, topk_weights
            h.set_obsm(f"{key_added}_topk", tk)
            h.set_obsm(f"{key_added}_topk_weights", tw)
        if params is not None:
            h.set_uns(key_added, {"params": h5ad_safe(params)})
    if cells is not None and h is not None and h.is_mudata:
        h.set_mudata_obs(key_added, pd.Series(pd.Categorical(joint, categories=ids), index=cells))
        if params is not None:
            h.set_mudata_uns(key_added, {"params": h5ad_safe(params)})
