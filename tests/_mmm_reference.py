"""A naive, independent pure-Python reader of the .mmm spec (the oracle of the io tests)."""

from __future__ import annotations

import struct

import numpy as np
import scipy.sparse as sp

MAGIC = b"METACELL SPARSE MEMORY MAPPED MATRIX VERSION 0\x00\x00"


def ref_decode(b: bytes) -> sp.csr_matrix | None:
    """Decode per spec §1-2 literally; ``None`` for any malformed file."""
    if len(b) < 60 or b[:48] != MAGIC:
        return None
    n_profiles, n_genes = struct.unpack_from("<II", b, 48)
    if n_genes > 2**31 - 1:  # scmetacell's documented limit (int32 gene indices), not the format's
        return None
    at = len(b) - 4 * (n_profiles + 1)
    if at < 56 or at % 4:
        return None
    idx = list(struct.unpack_from(f"<{n_profiles + 1}I", b, at))
    if idx[0] == 0:
        idx = [i + 56 for i in idx]
    elif idx[0] != 56:
        return None
    for p in range(n_profiles):
        if idx[p + 1] < idx[p] or (idx[p + 1] - idx[p]) % 2:
            return None
    end = idx[-1]
    if end > at or at - end >= 4 or any(b[end:at]):
        return None
    rows, cols, vals = [], [], []
    for p in range(n_profiles):
        acc: dict[int, int] = {}
        g = 0
        for k in range(idx[p], idx[p + 1], 2):
            g += b[k]
            if g >= n_genes:
                return None
            acc[g] = acc.get(g, 0) + b[k + 1]
        for gene, v in acc.items():
            if v:
                rows.append(p)
                cols.append(gene)
                vals.append(v)
    return sp.csr_matrix(
        (np.array(vals, dtype=np.int64), (np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64))),
        shape=(n_profiles, n_genes),
    )


def ref_encode(X: np.ndarray) -> bytes:
    """Canonical encoding per spec §3, written from the spec's loops (dense input)."""
    X = np.asarray(X)
    n_profiles, n_genes = X.shape
    streams = []
    for p in range(n_profiles):
        out = bytearray()
        prev = 0
        for gene in np.flatnonzero(X[p]):
            v = int(X[p, gene])
            d = int(gene) - prev
            while d > 255:
                out += bytes((255, 0))
                d -= 255
            while v > 255:
                out += bytes((d, 255))
                d = 0
                v -= 255
            out += bytes((d, v))
            prev = int(gene)
        streams.append(bytes(out))
    data = b"".join(streams)
    offsets = np.cumsum([56] + [len(s) for s in streams])
    pad = b"\x00" * (-len(data) % 4)
    return MAGIC + struct.pack("<II", n_profiles, n_genes) + data + pad + offsets.astype("<u4").tobytes()
