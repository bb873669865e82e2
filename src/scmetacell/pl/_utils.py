"""Shared helpers of the plotting functions: feature lookup, colours, show/return in scanpy's manner."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..data import DataHandler, as_source
from ..data._source import DEFAULT_CHUNK_SIZE

PASS_COLOR = "#9e9e9e"
FAIL_COLOR = "#d62728"
TRUE_COLOR = "#d62728"
FALSE_COLOR = "#d3d3d3"
NA_COLOR = "#e6e6e6"


def default_palette(n: int) -> list[str]:
    """Scanpy's default categorical palette for ``n`` categories."""
    from scanpy.plotting import palettes

    if n <= 20:
        pal = palettes.default_20
    elif n <= 28:
        pal = palettes.default_28
    else:
        pal = palettes.default_102
    return [pal[i % len(pal)] for i in range(n)]


def category_colors(adata, key: str, categories: Sequence[str], mdata=None) -> list[str]:
    """Colours of ``key``'s categories: ``uns[f"{key}_colors"]`` when it fits, else scanpy's palette."""
    for uns in (adata.uns, getattr(mdata, "uns", {}) if mdata is not None else {}):
        cols = uns.get(f"{key}_colors") if hasattr(uns, "get") else None
        if cols is not None and len(cols) >= len(categories):
            return [str(c) for c in list(cols)[: len(categories)]]
    return default_palette(len(categories))


def basis_key(adata, basis: str, *, arg: str = "basis") -> str:
    """Resolve ``"umap"`` / ``"X_umap"`` to the ``obsm`` key that exists."""
    for key in (basis, f"X_{basis}", basis[2:] if basis.startswith("X_") else None):
        if key is not None and key in adata.obsm:
            return key
    raise KeyError(
        f"{arg}={basis!r}: no such embedding in obsm (tried {basis!r} and 'X_...'); "
        f"obsm has {list(adata.obsm)}. Run e.g. sc.tl.umap first."
    )


def basis_label(basis: str) -> str:
    """Axis label stem: ``"X_umap"`` -> ``"UMAP"``."""
    name = basis[2:] if basis.startswith("X_") else basis
    return {"umap": "UMAP", "tsne": "tSNE", "pca": "PC", "draw_graph_fa": "FA"}.get(name, name)


class Feature:
    """A feature's values and how to colour them (``kind``: categorical, bool or numeric)."""

    def __init__(self, name: str, values: Any, kind: str, source: str):
        self.name, self.values, self.kind, self.source = name, values, kind, source


def _classify(name: str, col: pd.Series, source: str) -> Feature:
    if col.dtype == bool or (col.dtype == object and set(pd.unique(col.dropna())) <= {True, False}):
        if col.isna().any():
            return Feature(name, pd.Categorical(col.astype(object).astype(str)), "categorical", source)
        return Feature(name, col.to_numpy(dtype=bool), "bool", source)
    if isinstance(col.dtype, pd.CategoricalDtype):
        return Feature(name, pd.Categorical(col), "categorical", source)
    if pd.api.types.is_numeric_dtype(col):
        return Feature(name, col.to_numpy(dtype=np.float64), "numeric", source)
    return Feature(name, pd.Categorical(col.astype(object)), "categorical", source)


def get_features(
    handler: DataHandler,
    features: Sequence[str],
    *,
    layer: str | None = None,
    gene_symbols: str | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> list[Feature]:
    """Look each feature up as an obs column (modality, then MuData), a gene name, then a symbol.

    Gene values are read for all requested genes in one chunked pass over cells.
    """
    adata = handler.adata
    if gene_symbols is not None and gene_symbols not in adata.var.columns:
        raise KeyError(f"gene_symbols={gene_symbols!r}: no such var column; columns are {list(adata.var)}.")
    symbols = adata.var[gene_symbols].astype(str) if gene_symbols is not None else None
    out: list[Feature | None] = []
    genes: dict[int, int] = {}  # position in features -> var index
    for i, name in enumerate(features):
        if name in adata.obs.columns:
            out.append(_classify(name, adata.obs[name], "obs"))
        elif handler.mdata is not None and name in handler.mdata.obs.columns:
            out.append(_classify(name, handler.obs_column(name), "mdata.obs"))
        elif name in adata.var_names:
            out.append(None)
            genes[i] = int(adata.var_names.get_loc(name))
        elif symbols is not None and (symbols == name).any():
            out.append(None)
            genes[i] = int(np.flatnonzero((symbols == name).to_numpy())[0])
        else:
            pool = [*adata.obs.columns, *adata.var_names]
            if symbols is not None:
                pool += list(symbols)
            close = difflib.get_close_matches(str(name), [str(p) for p in pool], n=3)
            hint = f" Did you mean {close}?" if close else ""
            raise KeyError(
                f"features: {name!r} is not an obs column, a gene in var_names"
                + (f" or a symbol in var[{gene_symbols!r}]" if gene_symbols else "")
                + f"{handler._where()}.{hint}"
            )
    if genes:
        handler.matrix(layer)  # clear error for a missing layer
        cols = np.array(sorted(set(genes.values())))
        pos = {g: k for k, g in enumerate(cols)}
        vals = np.zeros((adata.n_obs, cols.size))
        src = as_source(adata, layer)
        for start, stop, block in src.iter_chunks(chunk_size, progress=False):
            vals[start:stop] = block[:, cols].toarray()
        for i, g in genes.items():
            out[i] = Feature(str(features[i]), vals[:, pos[g]], "numeric", "gene")
    return [f for f in out if f is not None]


def finish(fig, *, show: bool | None, return_fig: bool | None, save: str | None = None):
    """Save / show / return a figure the same way in every function of ``scmetacell.pl``.

    ``return_fig=None`` returns the Figure unless ``show=True``; ``show=True`` calls ``plt.show()``.
    """
    if save is not None:
        fig.savefig(save, bbox_inches="tight", dpi=fig.dpi)
    if show:
        import matplotlib.pyplot as plt

        plt.show()
    if return_fig is None:
        return_fig = not show
    return fig if return_fig else None
