"""What every ``tl.metacell`` run hands back, one modality or several.

``uns['metacell']`` (params,
history, diagnostics, model, and the cells' results when they are not written back), the samples of the
metacells, the write-back onto the cells and the log lines.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from .. import _logging as logg
from ..data import h5ad_safe, write_cell_results


def metacell_ids(n: int) -> pd.Index:
    """Return the metacells' ``obs_names``: ``mc0 .. mc{n-1}``."""
    return pd.Index([f"mc{j}" for j in range(n)])


def add_sample_column(obs: pd.DataFrame, batch_key: str | None, names: list[str], k_per_group) -> None:
    """Each metacell's sample in ``obs[batch_key]`` (unless the aggregation already made that column)."""
    if batch_key is not None and batch_key not in obs.columns:
        obs[batch_key] = pd.Categorical(np.asarray(names)[np.repeat(np.arange(len(names)), k_per_group)])


def add_trust_columns(obs: pd.DataFrame, homogeneity) -> None:
    """Add the metacells' homogeneity statistic, its robust score and the ``dubious`` flag (if computed)."""
    if homogeneity is None:
        return
    obs["homogeneity"] = homogeneity.dispersion.astype(np.float32)
    obs["homogeneity_score"] = homogeneity.score.astype(np.float32)
    obs["dubious"] = np.asarray(homogeneity.dubious, dtype=bool)


def module_state(fit) -> dict[str, np.ndarray]:
    """Return the trained weights as numpy arrays."""
    return {k: v.detach().cpu().numpy() for k, v in fit.module.state_dict().items()}


def metacell_uns(fit, params: dict, diagnostics: dict, model: dict, names: list[str], k_per_group) -> dict:
    """``uns['metacell']``; ``model`` gets the samples of the entries (for ``tl.assign_metacells``)."""
    model = dict(
        model,
        groups=np.asarray(names, dtype=str),
        code_group=np.repeat(np.arange(k_per_group.size), k_per_group),
    )
    return {
        "params": h5ad_safe(params),
        "history": fit.history,
        "diagnostics": h5ad_safe(diagnostics),
        "model": h5ad_safe(model),
    }


def log_fit(diag: dict, *, single: bool) -> None:
    """Log the lines printed after training."""
    logg.info(f"    quantized reconstruction: {diag['quantized_reconstruction']:.2f}")
    if single:
        logg.info(f"    delta assignment confidence: {diag['delta_assignment_confidence']:.2f}")
        logg.info(f"    codebook loss: {diag['codebook_loss']:.2f}")
    logg.info(f"    trained {diag['epochs_run']} epochs ({diag['stop_reason']})")


def deliver(
    target: Any,
    mods: list[str | None],
    uns: dict,
    fit,
    ids: pd.Index,
    *,
    cells: pd.Index,
    params: dict,
    paired: bool,
    n_total: int,
) -> None:
    """Annotate the cells of ``target`` (``None``: record them in ``uns['cells']``); log the sizes."""
    if target is None:
        uns["cells"] = {
            "obs_names": np.asarray(cells, dtype=str),
            "metacell": np.asarray(ids, dtype=str)[fit.labels],  # no per-cell object array on the way
            "confidence": fit.confidence,
            "topk": np.asarray(fit.topk, dtype=np.int32),
            "topk_weights": fit.topk_weights,
        }
    else:
        write_cell_results(
            target, mods, params["key_added"], labels=fit.labels, ids=ids, confidence=fit.confidence,
            topk=fit.topk, topk_weights=fit.topk_weights, cells=cells if paired else None, params=params,
        )  # fmt: skip
    diag = uns["diagnostics"]
    logg.info(
        f"    delivered {diag['n_delivered']} of {n_total} metacells (sizes {diag['size_min']}–"
        f"{diag['size_max']}, median {diag['size_median']:g}) in {diag['seconds_total']:.1f} s"
    )
