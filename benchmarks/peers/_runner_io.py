"""Shared input/output of the runner scripts (imported by ``run_*.py`` in either virtual environment).

A runner reads one ``.h5ad`` of raw counts, builds metacells, and writes into ``--out``:

- ``assignment.csv``: columns ``cell`` and ``metacell`` (an integer id, ``-1`` for an outlier);
- ``info.json``: ``method_wall_s`` (the method itself, from input read to assignment), ``version`` and
  ``notes`` (free text, e.g. "did not converge").

Only the standard library, numpy, pandas and anndata are used here: both environments have them.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd


def parse_args(description: str, extra: list[tuple[str, dict]] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--input", required=True, help="h5ad with raw counts in X")
    parser.add_argument("--n-metacells", type=int, required=True)
    parser.add_argument("--gamma", type=float, required=True, help="target cells per metacell")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--seed", type=int, default=0)
    for flag, kwargs in extra or []:
        parser.add_argument(flag, **kwargs)
    return parser.parse_args()


def _atomic_write_text(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def write_outputs(out: str | Path, cells, labels, *, wall_s: float, version: str, notes: str = "") -> None:
    """Write ``assignment.csv`` (labels factorised to 0..M-1; missing / -1 -> -1) and ``info.json``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    labels = pd.Series(np.asarray(labels, dtype=object), index=pd.Index(cells))
    missing = labels.isna() | labels.astype(str).isin(["-1", "-1.0", "", "nan", "Outliers"])
    codes = np.full(len(labels), -1, dtype=np.int64)
    codes[~missing.to_numpy()] = pd.factorize(labels[~missing].astype(str), sort=True)[0]
    frame = pd.DataFrame({"cell": labels.index.astype(str), "metacell": codes})
    _atomic_write_text(out / "assignment.csv", frame.to_csv(index=False))
    info = {"method_wall_s": float(wall_s), "version": version, "notes": notes}
    _atomic_write_text(out / "info.json", json.dumps(info, indent=1))
