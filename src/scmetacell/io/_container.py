"""The old ``metacell.storage`` batch directory (spec §6): YAML + UMIs ``.mmm`` + names + per-profile data.

Two naming generations are read (and written):

=================  ==============================  ==============================
                   ``"readme"`` (older)            ``"api"`` (newer)
=================  ==============================  ==============================
UMIs matrix        ``matrix.umis.mmm``             ``gp.umis.mmm``
gene names         ``genes.name.txt``              ``g.name.txt``
cell barcodes      ``profiles.barcode.txt``        ``p.barcode.txt``
per-cell data      ``profiles.NAME.txt|npy``       ``p.NAME.txt|npy``
per-gene data      ``genes.NAME.txt|npy``          ``g.NAME.txt|npy``
other matrices     ``matrix.NAME.mmm``             ``gp.NAME.mmm``
=================  ==============================  ==============================

Metadata: ``profiles_batch.yaml`` (``profiles.yaml`` is also read).
"""

from __future__ import annotations

import hashlib
import re
from os import PathLike
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from anndata import AnnData

from ._errors import MMMFormatError
from ._format import read_txt
from ._reader import open_mmm
from ._writer import _tmp_name, remove_quietly, swap_into_place, write_mmmatrix

_PREFIXES = {
    "api": {"g": "g", "p": "p", "gp": "gp"},
    "readme": {"g": "genes", "p": "profiles", "gp": "matrix"},
}
_YAML_NAMES = ("profiles_batch.yaml", "profiles.yaml")
_DATA_FILE = re.compile(r"^(g|genes|p|profiles|gp|matrix)\.([^.]+)\.(txt|npy|mmm)$")
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_\-]+$")


def _md5(path: Path) -> str:
    h = hashlib.md5()
    if path.is_dir():  # a sharded matrix: md5 over the shards' digests, in name order
        for f in sorted(path.glob("*.mmm")):
            h.update(_md5(f).encode("ascii"))
        return h.hexdigest()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_array(path: Path, count: int) -> np.ndarray | None:
    if path.suffix == ".txt":
        values = np.asarray(read_txt(path), dtype=object)
    else:
        values = np.load(path, allow_pickle=False)
    if values.ndim != 1 or values.shape[0] != count:
        return None
    return values


def read_mmm_container(path: str | PathLike, *, dtype: np.dtype | type = np.int32) -> AnnData:
    """Read an old ``metacell.storage`` batch directory into an AnnData.

    Parameters
    ----------
    path
        The batch directory: ``profiles_batch.yaml`` and ``gp.umis.mmm`` or ``matrix.umis.mmm``
        (a ``.mmm`` file, or a shard directory), gene names (``g.name.txt`` / ``genes.name.txt``)
        and barcodes (``p.barcode.txt`` / ``profiles.barcode.txt``); both naming generations are accepted.
    dtype
        The dtype of ``X`` and the layers (``int32`` counts by default).

    Returns
    -------
    An AnnData: ``X`` the UMIs (cells × genes CSR), other ``gp.*`` / ``matrix.*`` matrices as
    ``layers``, other per-profile arrays as ``obs`` columns, other per-gene arrays as ``var``
    columns, and the YAML metadata in ``uns["mmm_container"]``.

    Examples
    --------
    >>> import os, tempfile
    >>> import scmetacell as scm
    >>> adata = scm.datasets.pbmc3k()
    >>> path = os.path.join(tempfile.mkdtemp(), "pbmc3k")
    >>> scm.io.write_mmm_container(path, adata, organism="human")
    >>> back = scm.io.read_mmm_container(path)
    >>> back.shape, back.uns["mmm_container"]["organism"], bool((back.obs_names == adata.obs_names).all())
    ((2700, 32738), 'human', True)
    """
    import yaml

    root = Path(path)
    if not root.is_dir():
        raise FileNotFoundError(f"path={str(root)!r}: not a directory.")
    meta: dict = {}
    for name in _YAML_NAMES:
        if (root / name).is_file():
            loaded = yaml.safe_load((root / name).read_text(encoding="utf-8"))
            if not isinstance(loaded, dict):
                raise MMMFormatError(f"{name} does not hold a mapping of keys", None, root / name)
            meta = loaded
            break
    umis = next((root / n for n in ("gp.umis.mmm", "matrix.umis.mmm") if (root / n).exists()), None)
    if umis is None:
        raise FileNotFoundError(f"path={str(root)!r}: neither gp.umis.mmm nor matrix.umis.mmm found.")
    with open_mmm(umis) as m:
        X = m.to_csr()
        obs_names, var_names = m.obs_names, m.var_names
    n_obs, n_vars = X.shape
    for key, value in (("profiles_count", n_obs), ("genes_count", n_vars)):
        if key in meta and meta[key] != value:
            raise MMMFormatError(f"the YAML says {key}={meta[key]!r} but {umis.name} has {value}", None, root)
    obs = pd.DataFrame(index=obs_names)
    var = pd.DataFrame(index=var_names)
    layers = {}
    used = {"name", "barcode"}
    for f in sorted(root.iterdir()):
        match = _DATA_FILE.match(f.name)
        if match is None:
            continue
        kind, key, ext = match.groups()
        if kind in ("gp", "matrix"):
            if key != "umis" and ext == "mmm":
                with open_mmm(f) as lm:
                    if lm.shape == X.shape:
                        layers[key] = lm.to_csr().astype(dtype, copy=False)
            continue
        frame, count = (obs, n_obs) if kind in ("p", "profiles") else (var, n_vars)
        if ext == "mmm" or key in frame.columns:
            continue
        if key in used and not (key == "name" and kind in ("p", "profiles")):
            continue
        values = _read_array(f, count)
        if values is not None:
            frame[key] = values
    if "name" in obs.columns and (obs["name"].to_numpy() == obs.index.to_numpy()).all():
        del obs["name"]
    adata = AnnData(X=X.astype(dtype, copy=False), obs=obs, var=var, layers=layers or None)
    adata.uns["mmm_container"] = {str(k): v for k, v in meta.items()}
    return adata


def _check_names(names: pd.Index, what: str) -> list[str]:
    out = [str(x) for x in names]
    if any("\n" in x or "\r" in x for x in out):
        raise ValueError(f"adata: {what} contain line breaks; they cannot be written one per line.")
    return out


def _write_txt(path: Path, values) -> None:
    path.write_text("".join(f"{v}\n" for v in values), encoding="utf-8")


def write_mmm_container(
    path: str | PathLike,
    adata: AnnData,
    *,
    layer: str | None = None,
    generation: Literal["api", "readme"] = "api",
    profiles_kind: str = "cells",
    organism: str = "unknown",
) -> None:
    """Write an AnnData as an old ``metacell.storage`` batch directory (atomically).

    Writes ``profiles_batch.yaml`` (``profiles_count``, ``genes_count``, ``profiles_kind``,
    ``organism``, ``genes_uuid`` = md5 of the gene names file, ``uuid`` = md5 of the UMIs matrix), the
    UMIs matrix (canonical ``.mmm``; a shard directory past 4 GiB), the gene names, the barcodes
    (``obs_names``), and each ``obs`` / ``var`` column whose name is a plain word, as ``.npy``
    (numbers, booleans) or ``.txt`` (anything else, as text; missing values as empty lines).
    Gene names are written as they are (the old package kept them sorted and upper case).

    Parameters
    ----------
    path
        The directory to create (replaced if it exists).
    adata
        Cells × genes non-negative integer counts.
    layer
        ``None`` / ``"X"`` for ``X``, else the layer holding the UMIs.
    generation
        ``"api"`` (``gp.umis.mmm``, ``g.name.txt``, ``p.barcode.txt``) or ``"readme"``
        (``matrix.umis.mmm``, ``genes.name.txt``, ``profiles.barcode.txt``).
    profiles_kind
        The YAML ``profiles_kind`` (``"cells"``, ``"metacells"``, …).
    organism
        The YAML ``organism``.

    Returns
    -------
    Nothing; the directory is at ``path``.

    Examples
    --------
    >>> import os, tempfile
    >>> import scmetacell as scm
    >>> path = os.path.join(tempfile.mkdtemp(), "batch")
    >>> scm.io.write_mmm_container(path, scm.datasets.pbmc3k(), generation="readme")
    >>> [f for f in sorted(os.listdir(path)) if "name" in f or "umis" in f or "barcode" in f]
    ['genes.name.txt', 'matrix.umis.mmm', 'profiles.barcode.txt']
    """
    import yaml

    if not isinstance(adata, AnnData):
        raise TypeError(f"adata: an AnnData expected, got {type(adata).__name__}.")
    if generation not in _PREFIXES:
        raise ValueError(f"generation={generation!r}: expected 'api' or 'readme'.")
    pre = _PREFIXES[generation]
    root = Path(path)
    if not root.parent.is_dir():
        raise FileNotFoundError(f"path={str(root)!r}: the directory {str(root.parent)!r} does not exist.")
    genes = _check_names(adata.var_names, "var_names")
    cells = _check_names(adata.obs_names, "obs_names")
    tmp = _tmp_name(root)
    try:
        tmp.mkdir()
        umis = tmp / f"{pre['gp']}.umis.mmm"
        write_mmmatrix(umis, adata, layer=layer)
        _write_txt(tmp / f"{pre['g']}.name.txt", genes)
        _write_txt(tmp / f"{pre['p']}.barcode.txt", cells)
        for frame, kind in ((adata.obs, pre["p"]), (adata.var, pre["g"])):
            for col in frame.columns:
                if not isinstance(col, str) or not _SAFE_NAME.match(col) or col in ("name", "barcode"):
                    continue
                s = frame[col]
                if s.dtype.kind in "biuf":
                    np.save(tmp / f"{kind}.{col}.npy", s.to_numpy())
                else:
                    values = ["" if pd.isna(v) else str(v) for v in s]
                    if any("\n" in v or "\r" in v for v in values):
                        continue
                    _write_txt(tmp / f"{kind}.{col}.txt", values)
        meta = {
            "genes_count": int(adata.n_vars),
            "genes_uuid": _md5(tmp / f"{pre['g']}.name.txt"),
            "organism": str(organism),
            "profiles_count": int(adata.n_obs),
            "profiles_kind": str(profiles_kind),
            "uuid": _md5(umis),
        }
        (tmp / "profiles_batch.yaml").write_text(yaml.safe_dump(meta, sort_keys=True), encoding="utf-8")
        swap_into_place(tmp, root)
    except BaseException:
        remove_quietly(tmp)
        raise
