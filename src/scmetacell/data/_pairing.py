"""Several modalities of a MuData: the kind of each and the pairing of their cells by ``obs_names``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

KINDS = ("rna", "adt", "atac")
KIND_ALIASES = {
    "rna": "rna",
    "gex": "rna",
    "adt": "adt",
    "prot": "adt",
    "protein": "adt",
    "cite": "adt",
    "atac": "atac",
    "peaks": "atac",
    "chromatin": "atac",
}


PAIR_MODES = ("strict", "intersection")


def resolve_modalities(mdata: Any, datatypes: Sequence[str] | Mapping[str, str]) -> dict[str, str]:
    """``{modality name: kind}`` from a list of MuData modality names (kind from the name) or a mapping."""
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


def arg_for(value: Any, mod: str, default: Any = None) -> Any:
    """``value[mod]`` of a per-modality mapping (``default`` when absent), or ``value`` itself."""
    return value.get(mod, default) if isinstance(value, Mapping) else value
