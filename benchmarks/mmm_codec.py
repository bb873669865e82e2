"""Speed of the ``.mmm`` codec: numpy reference codecs vs scmetacell on 1 and 2 threads (read and write).

The matrix is real data resampled (cells of the bundled PBMC 3k, or Kang 2018, drawn with replacement
until it holds ``--nnz`` non-zeros). Every round times, one after the other on the same matrix:

- ``numpy (vectorised)``: the vectorised numpy codec below, written from the specification's recipe
  (§8: a segmented cumulative sum of the deltas and an add-reduce per gene to read; per-entry pair
  counts, one scatter for single pairs and a repeat for the rest to write), bytes checked equal;
- ``reference (pure Python)``: ``tests/_mmm_reference.py`` (``ref_decode`` / ``ref_encode``, the tests'
  oracle), on the first ``--ref-rows`` rows only and compared per non-zero (it would take minutes);
- scmetacell with ``settings.io_threads = 1`` and ``= 2``: ``write_mmmatrix`` (sparse input to the file)
  and ``read_mmmatrix`` (file to an AnnData), plus the decode alone (``MMMatrix.to_csr``);
- with ``--prev SRC``: the same scmetacell calls from another source tree (e.g. a ``git archive`` of
  the previous commit), in a child process (its own threads setting, if it has one, left at default).

Reads and writes of the numpy codecs include the file (``open().read()`` / ``write``), like scmetacell's;
every write makes a new file (the previous one is removed first, untimed).
Each variant runs twice in a row per round and the second run is timed (the first pays the allocator's
first touches of fresh memory, which for the numpy codec's large temporaries can take seconds on a busy
machine). The table shows medians over ``--runs`` rounds and the ratio to the vectorised numpy codec.

    PYTHONPATH=src python benchmarks/mmm_codec.py [--nnz 20000000] [--runs 5] [--dataset pbmc3k|kang]
        [--prev /tmp/prev-io/src] [--ref-rows 300]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
MAGIC = b"METACELL SPARSE MEMORY MAPPED MATRIX VERSION 0\x00\x00"


# ---- the vectorised numpy codec (the baseline) ----------------------------------------------------------
def np_encode(X: sp.csr_matrix) -> bytes:
    """Canonical ``.mmm`` bytes of a CSR matrix of counts, vectorised numpy (spec §3)."""
    X = sp.csr_matrix(X)
    if not X.has_canonical_format:
        X = X.copy()
        X.sum_duplicates()
    X.eliminate_zeros()
    n_rows, n_cols = X.shape
    g = X.indices.astype(np.int64)
    v = X.data.astype(np.int64)
    prev = np.empty_like(g)
    prev[1:] = g[:-1]
    row_len = np.diff(X.indptr)
    prev[X.indptr[:-1][row_len > 0]] = 0
    gap = g - prev
    fill = np.maximum(0, (gap - 1) // 255)  # (255, 0) gap fillers
    vals = (v + 254) // 255  # value pairs: 255s, then the remainder
    n_pairs = fill + vals
    first = np.zeros(g.size + 1, dtype=np.int64)
    np.cumsum(n_pairs, out=first[1:])
    # every entry's pairs hold its single pair (delta, value) first; entries of several pairs are redone
    word = (gap & 0xFF).astype(np.uint16) | (np.minimum(v, 255).astype(np.uint16) << 8)
    out = np.repeat(word, n_pairs).view(np.uint8).reshape(-1, 2)
    multi = np.flatnonzero(n_pairs > 1)
    if multi.size:
        counts = n_pairs[multi]
        ent = np.repeat(multi, counts)
        k = np.arange(ent.size) - np.repeat(np.cumsum(counts) - counts, counts)  # pair within the entry
        f, n = fill[ent], vals[ent]
        pos = first[ent] + k
        out[pos, 0] = np.where(k < f, 255, np.where(k == f, gap[ent] - 255 * f, 0))
        out[pos, 1] = np.where(k < f, 0, np.where(k < f + n - 1, 255, v[ent] - 255 * (n - 1)))
    index = np.empty(n_rows + 1, dtype=np.int64)
    index[:] = 56 + 2 * first[X.indptr]
    data = out.tobytes()
    pad = b"\x00" * (-len(data) % 4)
    return MAGIC + struct.pack("<II", n_rows, n_cols) + data + pad + index.astype("<u4").tobytes()


def np_decode(b: bytes) -> sp.csr_matrix:
    """Decode ``.mmm`` bytes to CSR, vectorised numpy (spec §2 and §8; no validation beyond gene < G)."""
    buf = np.frombuffer(b, dtype=np.uint8)
    n_rows, n_cols = (int(x) for x in buf[48:56].view("<u4"))
    index = buf[buf.size - 4 * (n_rows + 1) :].view("<u4").astype(np.int64)
    if index[0] == 0:
        index = index + 56
    pairs = buf[56 : index[-1]].reshape(-1, 2)
    d, v = pairs[:, 0], pairs[:, 1]
    first = (index[:-1] - 56) // 2  # first pair of each row
    nonempty = index[1:] > index[:-1]
    run = d != 0  # a run (one gene) starts at a non-zero delta or at a row's first pair
    run[first[nonempty]] = True
    starts = np.flatnonzero(run)
    sums = np.add.reduceat(v, starts, dtype=np.int64) if starts.size else np.zeros(0, np.int64)
    cum = np.cumsum(d, dtype=np.int64)
    runs_per_row = np.diff(np.searchsorted(starts, np.append(first, pairs.shape[0])))
    row_start = np.repeat(first, runs_per_row)
    genes = cum[starts] - (cum[row_start] - d[row_start])  # the gene index restarts at 0 in each row
    if genes.size and genes.max() >= n_cols:
        raise ValueError("a gene index at or past genes_count")
    keep = sums != 0
    kept = np.concatenate([[0], np.cumsum(keep)])
    indptr = kept[np.searchsorted(starts, np.append(first, pairs.shape[0]))]
    return sp.csr_matrix(
        (sums[keep].astype(np.int32), genes[keep].astype(np.int32), indptr.astype(np.int32)),
        shape=(n_rows, n_cols),
    )


# ---- data and timing ----------------------------------------------------------------------------------
def _matrix(dataset: str, nnz: float) -> sp.csr_matrix:
    import anndata as ad

    if dataset == "pbmc3k":
        import scmetacell as scm

        base = scm.datasets.pbmc3k()
    else:
        base = ad.read_h5ad(ROOT.parent / "shared" / "data" / "kang2018_pbmc_5donors_raw.h5ad")
    X0 = sp.csr_matrix(base.X)
    n = int(np.ceil(nnz / (X0.nnz / X0.shape[0])))
    X = X0[np.random.default_rng(0).integers(0, X0.shape[0], n)]
    X.data = X.data.astype(np.int32)
    return X


def _timed(fn) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def _scm_once(scm, X, path: Path, threads: int | None) -> dict[str, float]:
    """Time one scmetacell write, read and decode (``threads``: the io_threads setting, if it exists)."""
    if threads is not None:
        scm.settings.io_threads = threads
    out = {}
    path.unlink(missing_ok=True)  # a new file (replacing one would add the freeing of its pages)
    out["write"], _ = _timed(lambda: scm.io.write_mmmatrix(path, X))
    out["read"], back = _timed(lambda: scm.io.read_mmmatrix(path))
    if (back.X != X).nnz:
        raise AssertionError("read back differs")
    del back
    with scm.io.MMMatrix(path) as m:
        out["decode"], _ = _timed(m.to_csr)
    return out


def child(args) -> None:
    """Run in another source tree: time its scmetacell once, print the figures as JSON."""
    import scmetacell as scm

    X = sp.load_npz(args.matrix).tocsr()
    path = Path(args.matrix).with_suffix(".child.mmm")
    _scm_once(scm, X, path, None)  # warm-up, as the in-process variants (numba's kernels, first touches)
    has_threads = hasattr(scm.settings, "io_threads")
    print(json.dumps(_scm_once(scm, X, path, None) | {"has_threads": has_threads}))
    path.unlink()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nnz", type=float, default=20e6)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dataset", choices=["pbmc3k", "kang"], default="pbmc3k")
    parser.add_argument("--prev", type=Path, default=None, help="another tree's src/ to time side by side")
    parser.add_argument("--ref-rows", type=int, default=300, help="rows timed with the pure-Python oracle")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--matrix", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return

    import scmetacell as scm

    sys.path.insert(0, str(ROOT / "tests"))
    import _mmm_reference as ref

    X = _matrix(args.dataset, args.nnz)
    print(
        f"data: {args.dataset} resampled with replacement to {X.shape[0]:,} cells x {X.shape[1]:,} genes, "
        f"{X.nnz:,} non-zeros, max {X.data.max()}; {os.cpu_count()} CPUs, "
        f"{len(os.sched_getaffinity(0))} available, load average {os.getloadavg()[0]:.2f} at start"
    )
    tmp = Path(tempfile.mkdtemp(prefix="scm_mmm_codec_"))
    npz, path, np_path = tmp / "x.npz", tmp / "x.mmm", tmp / "np.mmm"
    sp.save_npz(npz, X, compressed=False)
    times: dict[str, dict[str, list[float]]] = {}

    def add(name: str, figures: dict[str, float]) -> None:
        for key, t in figures.items():
            if isinstance(t, float):
                times.setdefault(name, {}).setdefault(key, []).append(t)

    try:
        # warm-up and checks: numba loads (or compiles) its kernels; both codecs give the same bytes
        scm.io.write_mmmatrix(path, X)
        expected = path.read_bytes()
        if np_encode(X) != expected or (np_decode(expected) != X).nnz:
            raise AssertionError("the numpy codec disagrees with scmetacell")
        small = X[: args.ref_rows]
        if ref.ref_encode(small.toarray()) != np_encode(small):
            raise AssertionError("the reference codec disagrees with the numpy codec")
        prev_has_threads = None
        for _ in range(args.runs):
            for _warm in range(2):  # the second of two back-to-back calls is timed (warm allocator)
                np_path.unlink(missing_ok=True)
                t_w, _ = _timed(lambda: np_path.write_bytes(np_encode(X)))
                t_r, back = _timed(lambda: np_decode(np_path.read_bytes()))
                del back
            add("numpy (vectorised)", {"write": t_w, "read": t_r})
            for threads in (1, 2):
                _scm_once(scm, X, path, threads)
                add(f"scmetacell, {threads} thread{'s' * (threads > 1)}", _scm_once(scm, X, path, threads))
            if args.prev is not None:
                env = dict(os.environ, PYTHONPATH=str(args.prev))
                res = subprocess.run(
                    [sys.executable, __file__, "--child", "--matrix", str(npz)],
                    env=env,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                figures = json.loads(res.stdout.strip().splitlines()[-1])
                prev_has_threads = figures["has_threads"]
                add(f"previous ({args.prev})", figures)
        scm.settings.io_threads = None
        # the pure-Python oracle on the first rows only (per non-zero)
        dense = small.toarray()
        small_bytes = ref.ref_encode(dense)
        ref_w = [_timed(lambda: ref.ref_encode(dense))[0] for _ in range(3)]
        ref_r = [_timed(lambda: ref.ref_decode(small_bytes))[0] for _ in range(3)]
        scale = X.nnz / max(1, small.nnz)
        times["reference (pure Python)"] = {
            "write": [t * scale for t in ref_w],
            "read": [t * scale for t in ref_r],
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    nnz = X.nnz
    base = {k: float(np.median(times["numpy (vectorised)"][k])) for k in ("write", "read")}
    print(
        f"\nmedians of {args.runs} rounds (the pure-Python reference: {args.ref_rows} rows, 3 runs, scaled "
        f"to {nnz:,} non-zeros); x = speed-up over the vectorised numpy codec; warm page cache"
    )
    head = (
        f"{'codec':<34}{'write s':>9}{'Mnnz/s':>8}{'x':>7}{'read s':>9}{'Mnnz/s':>8}{'x':>7}{'decode s':>10}"
    )
    print(head)
    print("-" * len(head))
    order = ["reference (pure Python)", "numpy (vectorised)"] + [
        k for k in times if k not in ("reference (pure Python)", "numpy (vectorised)")
    ]
    for name in order:
        med = {k: float(np.median(v)) for k, v in times[name].items()}
        dec = f"{med['decode']:>10.3f}" if "decode" in med else f"{'':>10}"
        w, r = med["write"], med["read"]
        print(
            f"{name:<34}{w:>9.3f}{nnz / w / 1e6:>8.0f}{base['write'] / w:>7.1f}"
            f"{r:>9.3f}{nnz / r / 1e6:>8.0f}{base['read'] / r:>7.1f}{dec}"
        )
    if prev_has_threads:
        print("(the previous tree has settings.io_threads: it ran with its default)")
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
