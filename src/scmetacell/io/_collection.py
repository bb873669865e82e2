"""Sharded ``.mmm`` collections: a directory of ``.mmm`` shards read as one matrix.

Written by :func:`~scmetacell.io.write_mmmatrix` when a matrix does not fit one file (u32 offsets cap a
file at 4 GiB). The directory holds ``shard-00000.mmm``, ``shard-00001.mmm``, … and
``mmm_collection.json``::

    {"format": "scmetacell.mmm-collection", "version": 1, "profiles_count": P, "genes_count": G,
     "shards": [{"file": "shard-00000.mmm", "profiles_count": P0}, ...]}

Profiles are numbered by concatenating the shards in list order (the old ``ProfilesCollection`` idea).
"""

from __future__ import annotations

import json
from os import PathLike
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from ._errors import MMMCollectionError
from ._mmmatrix import MMMatrix, MMMatrixBase
from ._writer import COLLECTION_FILE, COLLECTION_FORMAT


def _stack(parts: list[sp.csr_matrix], n_cols: int) -> sp.csr_matrix:
    if not parts:
        return sp.csr_matrix((0, n_cols), dtype=np.int32)
    if len(parts) == 1:
        return parts[0]
    return sp.vstack(parts, format="csr", dtype=np.int32)


class MMMCollection(MMMatrixBase):
    """A directory of ``.mmm`` shards read as one memory-mapped matrix (same API as :class:`MMMatrix`).

    Parameters
    ----------
    path
        The directory (holding ``mmm_collection.json``).

    Examples
    --------
    >>> import os, tempfile, numpy as np
    >>> import scmetacell as scm
    >>> path = os.path.join(tempfile.mkdtemp(), "big.mmm")
    >>> X = np.arange(40).reshape(8, 5) % 7
    >>> scm.io.write_mmmatrix(path, X, _shard_bytes=120)  # tiny shards, for the example
    >>> with scm.io.MMMCollection(path) as m:
    ...     print(m.shape, len(m.shards) > 1, (m.to_csr().toarray() == X).all())
    (8, 5) True True
    """

    def __init__(self, path: str | PathLike):
        self.path = Path(path)
        meta_path = self.path / COLLECTION_FILE
        try:
            meta = json.loads(meta_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise MMMCollectionError(f"cannot read {COLLECTION_FILE}: {err}", None, self.path) from err
        if not isinstance(meta, dict) or meta.get("format") != COLLECTION_FORMAT:
            raise MMMCollectionError(
                f"{COLLECTION_FILE} is not a {COLLECTION_FORMAT!r} file", None, self.path
            )
        shards = meta.get("shards")
        genes = meta.get("genes_count")
        total = meta.get("profiles_count")
        if not isinstance(shards, list) or not isinstance(genes, int) or not isinstance(total, int):
            raise MMMCollectionError(
                f"{COLLECTION_FILE} needs integer profiles_count, genes_count and a shards list",
                None,
                self.path,
            )
        self.shards: list[MMMatrix] = []
        try:
            for k, entry in enumerate(shards):
                name = entry.get("file") if isinstance(entry, dict) else None
                if not isinstance(name, str) or Path(name).name != name or not name.endswith(".mmm"):
                    raise MMMCollectionError(f"shard {k}: bad file name {name!r}", None, self.path)
                m = MMMatrix(self.path / name)
                self.shards.append(m)
                if m.genes_count != genes:
                    raise MMMCollectionError(
                        f"shard {name} has genes_count {m.genes_count}, the collection {genes}", 52, m.path
                    )
                if entry.get("profiles_count") != m.profiles_count:
                    raise MMMCollectionError(
                        f"shard {name} has profiles_count {m.profiles_count}, the metadata says "
                        f"{entry.get('profiles_count')}",
                        48,
                        m.path,
                    )
            counts = [m.profiles_count for m in self.shards]
            if sum(counts) != total:
                raise MMMCollectionError(
                    f"shards hold {sum(counts)} profiles, the metadata says {total}", None, self.path
                )
        except BaseException:
            self.close()
            raise
        self.profiles_count = int(total)
        self.genes_count = int(genes)
        self._first = np.concatenate([[0], np.cumsum(counts, dtype=np.int64)])

    def _names_dir(self) -> Path | None:
        # names of a container's matrix.umis.mmm/ live beside it; a bare collection may hold its own
        from ._format import sidecar_dir

        outer = sidecar_dir(self.path)
        return outer if outer is not None else self.path

    def __reduce__(self):
        return (type(self), (str(self.path),))

    def close(self) -> None:
        """Release the shards' memory maps."""
        for m in getattr(self, "shards", []):
            m.close()

    def read_rows(self, start: int, stop: int) -> sp.csr_matrix:
        """Rows ``start:stop`` as a ``profiles × genes`` CSR matrix (int32 values), across shards."""
        start, stop = self._check_range(start, stop)
        parts = []
        k = int(np.searchsorted(self._first, start, side="right")) - 1
        while start < stop:
            lo = int(self._first[k])
            hi = min(stop, int(self._first[k + 1]))
            if hi > start:
                parts.append(self.shards[k].read_rows(start - lo, hi - lo))
            start = max(start, hi)
            k += 1
        return _stack(parts, self.genes_count)

    def take(self, idx) -> sp.csr_matrix:
        """Rows ``idx`` (any order, repeats allowed, or a boolean mask) as CSR, in the order given."""
        idx = self._check_idx(idx)
        if idx.size == 0:
            return sp.csr_matrix((0, self.genes_count), dtype=np.int32)
        shard = np.searchsorted(self._first, idx, side="right") - 1
        order = np.argsort(shard, kind="stable")
        parts = []
        for k in np.unique(shard):
            sel = idx[order[shard[order] == k]]
            parts.append(self.shards[k].take(sel - self._first[k]))
        out = _stack(parts, self.genes_count)
        if np.any(np.diff(shard) < 0):
            inv = np.empty_like(order)
            inv[order] = np.arange(order.size)
            out = out[inv]
        return out
