"""Canonical, atomic ``.mmm`` writing (one file, or a sharded collection past the 4 GiB offsets limit)."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Iterator
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from anndata import AnnData

from ._errors import MMMWriteError
from ._format import HEADER_SIZE, MAX_FILE_BYTES, MAX_GENES, file_size, header_bytes

COLLECTION_FILE = "mmm_collection.json"
COLLECTION_FORMAT = "scmetacell.mmm-collection"
INT32_MAX = 2**31 - 1
_BLOCK_NNZ = 1 << 22  # rows per block of dense / backed input: about this many values
_PIECE_BYTES = 1 << 26  # encode at most this many bytes at once


def _resolve_matrix(data: Any, layer: str | None) -> Any:
    if isinstance(data, AnnData):
        if layer is None or layer == "X":
            if data.X is None:
                raise ValueError("data: the AnnData has no X; pass layer=.")
            return data.X
        if layer not in data.layers:
            raise KeyError(f"layer={layer!r}: no such layer; layers are {list(data.layers)}.")
        return data.layers[layer]
    if layer is not None:
        raise ValueError(f"layer={layer!r}: only meaningful when data is an AnnData.")
    if sp.issparse(data) or isinstance(data, np.ndarray) or hasattr(data, "compute"):
        return data
    if hasattr(data, "__array__"):
        return np.asarray(data)
    raise TypeError(
        f"data: expected an AnnData, a scipy sparse matrix or a numpy array, got {type(data).__name__}."
    )


def _check_values(values: np.ndarray, what: str = "data") -> np.ndarray:
    """Validate counts (non-negative integers fitting int32); return them as int32 or int64."""
    kind = values.dtype.kind
    if kind == "b":
        return values.astype(np.int32)
    if kind not in "iuf":
        raise MMMWriteError(
            f"{what}: values of dtype {values.dtype} cannot be written; integer counts expected."
        )
    if values.size == 0:
        return values.astype(np.int32)
    if kind == "f":
        if not np.isfinite(values).all():
            raise MMMWriteError(f"{what}: NaN or infinite values cannot be written as .mmm counts.")
        if (values != np.floor(values)).any():
            bad = values[values != np.floor(values)][0]
            raise MMMWriteError(f"{what}: non-integer value {bad!r}; .mmm holds integer counts only.")
    lo, hi = values.min(), values.max()
    if lo < 0:
        raise MMMWriteError(f"{what}: negative value {lo!r}; .mmm holds non-negative counts only.")
    if hi > INT32_MAX:
        raise MMMWriteError(
            f"{what}: value {hi!r} exceeds {INT32_MAX}, the largest count the reader decodes (int32)."
        )
    if values.dtype in (np.int32, np.int64):
        return values
    return values.astype(np.int64)


class _Block:
    """A block of rows as canonical-enough CSR arrays (sorted indices, validated values)."""

    __slots__ = ("data", "indices", "indptr", "start", "stop")

    def __init__(self, start: int, stop: int, m: sp.spmatrix | sp.sparray, what: str):
        self.start, self.stop = start, stop
        self.indptr = m.indptr
        self.indices = m.indices
        self.data = _check_values(np.asarray(m.data), what)


def _as_csr(block: Any) -> sp.csr_matrix:
    if hasattr(block, "compute") and not sp.issparse(block):
        block = block.compute()
    if hasattr(block, "to_memory"):
        block = block.to_memory()
    if sp.issparse(block):
        return block.tocsr() if block.format != "csr" else block
    arr = np.asarray(block)
    if arr.ndim != 2:
        raise ValueError(f"data: a 2-D cells × genes matrix expected, got {arr.ndim} dimensions.")
    if arr.dtype.kind not in "biuf":
        raise MMMWriteError(f"data: values of dtype {arr.dtype} cannot be written; integer counts expected.")
    return sp.csr_matrix(arr)


def _canonical(m) -> sp.csr_matrix:
    m = sp.csr_matrix(m, copy=True)
    m.sum_duplicates()
    return m


def _blocks(mat: Any, a: int, b: int, n_cols: int) -> Iterator[_Block]:
    """Blocks of validated rows ``a:b``; a CSR matrix in memory is one block (no copy)."""
    if sp.issparse(mat):
        m = _as_csr(mat)
        if not m.has_canonical_format:
            m = _canonical(m)
        yield _Block(0, m.shape[0], m, "data")
        return
    step = max(1, _BLOCK_NNZ // max(1, n_cols))
    for start in range(a, b, step):
        stop = min(b, start + step)
        m = _as_csr(mat[start:stop])
        if not m.has_canonical_format:
            m = _canonical(m)
        yield _Block(start, stop, m, f"data (rows {start}:{stop})")


def _lengths_into(blk: _Block, r0: int, r1: int, lengths: np.ndarray) -> None:
    """Canonical stream lengths of the block's rows ``r0:r1`` into ``lengths`` (threads over row blocks)."""
    from . import _codec, _parallel

    k = _parallel.n_blocks(int(blk.indptr[r1] - blk.indptr[r0])) if r1 > r0 else 1
    bounds = _parallel.split(np.asarray(blk.indptr[r0 : r1 + 1], dtype=np.int64), k) + r0
    statuses = _parallel.run_blocks(
        lambda j: _codec.encode_lengths(
            blk.indptr,
            blk.indices,
            blk.data,
            bounds[j],
            bounds[j + 1],
            lengths[bounds[j] - r0 : bounds[j + 1] - r0],
        )[0],
        k,
    )
    if any(st != _codec.OK for st in statuses):  # pragma: no cover - blocks are canonical
        raise MMMWriteError("data: rows with unsorted gene indices.")


def _encode_rows_into(blk: _Block, r0: int, r1: int, cum: np.ndarray, out: np.ndarray) -> None:
    """Encode the block's rows ``r0:r1`` into ``out`` (exactly their bytes), threads over row blocks.

    ``cum`` holds the bytes before each of the rows ``r0 … r1`` (``cum[0] == 0``, ``cum[-1] == out.size``).
    """
    from . import _codec, _parallel

    k = _parallel.n_blocks(int(blk.indptr[r1] - blk.indptr[r0])) if r1 > r0 else 1
    bounds = _parallel.split(np.asarray(blk.indptr[r0 : r1 + 1], dtype=np.int64), k)
    written = _parallel.run_blocks(
        lambda j: _codec.encode_rows(
            blk.indptr,
            blk.indices,
            blk.data,
            r0 + bounds[j],
            r0 + bounds[j + 1],
            out[cum[bounds[j]] : cum[bounds[j + 1]]],
        ),
        k,
    )
    if int(sum(written)) != out.size:  # pragma: no cover - the two kernels agree
        raise RuntimeError("internal error: encoded size differs from the planned size.")


def _lengths(blocks, n_rows: int) -> np.ndarray:
    lengths = np.zeros(n_rows, dtype=np.int64)
    for b in blocks:
        _lengths_into(b, 0, b.stop - b.start, lengths[b.start : b.stop])
    return lengths


class _Pieces:
    """Encoded streams of consecutive rows held as a few byte arrays (one per thread that encoded them)."""

    def __init__(self, parts: list[np.ndarray]):
        self.parts = parts
        self.ends = np.cumsum([p.size for p in parts]).astype(np.int64)

    def write(self, f, lo: int, hi: int) -> None:
        """Write the encoded bytes ``lo:hi`` (offsets into the concatenation) to ``f``."""
        begin = 0
        for part, end in zip(self.parts, self.ends, strict=True):
            a, b = max(lo, begin), min(hi, int(end))
            if a < b:
                f.write(part[a - begin : b - begin].data)
            begin = int(end)


def _encode_into_grown(blk: _Block, r0: int, r1: int, lengths: np.ndarray) -> np.ndarray:
    """Encode rows ``r0:r1`` in one pass into a buffer grown as needed; lengths into ``lengths[r]``."""
    from . import _codec

    nnz = int(blk.indptr[r1] - blk.indptr[r0])
    out = np.empty(2 * nnz + (nnz >> 4) + 64, dtype=np.uint8)
    r, pos = r0, 0
    while True:
        status, r, pos = _codec.encode_into(blk.indptr, blk.indices, blk.data, r, r1, out, pos, lengths)
        if status == _codec.OK:
            return out[:pos]
        if status != _codec.FULL:  # pragma: no cover - blocks are canonical
            raise MMMWriteError("data: rows with unsorted gene indices.")
        bigger = np.empty(max(2 * out.size, out.size + 2 * (1 << 20)), dtype=np.uint8)
        bigger[:pos] = out[:pos]
        out = bigger


def _encode_block(blk: _Block, n_rows: int) -> tuple[_Pieces, np.ndarray]:
    """Encode a whole in-memory block in one pass per thread: ``(bytes, per-row lengths)``.

    Threads take contiguous row blocks of about equal non-zeros, each encoding into its own buffer; the
    buffers are written to the file one after the other (the same bytes as one buffer).
    """
    from . import _parallel

    lengths = np.zeros(n_rows, dtype=np.int64)
    nnz = int(blk.indptr[n_rows]) if n_rows else 0
    k = _parallel.n_blocks(nnz) if n_rows > 1 else 1
    bounds = _parallel.split(np.asarray(blk.indptr[: n_rows + 1], dtype=np.int64), k)
    parts = _parallel.run_blocks(lambda j: _encode_into_grown(blk, bounds[j], bounds[j + 1], lengths), k)
    return _Pieces(list(parts)), lengths


def _write_encoded(f, n_cols: int, encoded: _Pieces, lengths: np.ndarray, a: int, b: int, base: int) -> None:
    """Write one file of rows ``a:b`` whose streams are ``encoded[base : base + sum(lengths[a:b])]``."""
    data_bytes = int(lengths[a:b].sum())
    f.write(header_bytes(b - a, n_cols))
    encoded.write(f, base, base + data_bytes)
    f.write(b"\x00" * (-data_bytes % 4))
    index = np.empty(b - a + 1, dtype=np.int64)
    index[0] = HEADER_SIZE
    np.cumsum(lengths[a:b], out=index[1:])
    index[1:] += HEADER_SIZE
    f.write(index.astype("<u4").tobytes())


def plan_shards(lengths: np.ndarray, limit: int) -> list[tuple[int, int]]:
    """Cut rows into consecutive shards whose files stay within ``limit`` bytes (at least one shard)."""
    n = lengths.size
    # a shard of rows [a, b) takes 56 + data + pad (<= 3) + 4 (b - a + 1) bytes
    budget = limit - HEADER_SIZE - 4 - 3
    cum = np.concatenate([[0], np.cumsum(lengths + 4)])
    bounds = []
    a = 0
    while True:
        b = int(np.searchsorted(cum, cum[a] + budget, side="right")) - 1
        b = min(b, n)
        if b == a and a < n:
            raise MMMWriteError(
                f"data: row {a} encodes to {int(lengths[a])} bytes, more than one .mmm file can hold "
                f"({limit} bytes)."
            )
        bounds.append((a, b))
        if b >= n:
            return bounds
        a = b


def _write_shard(f, mat, n_cols, lengths, a: int, b: int, blocks_cache: list) -> None:
    f.write(header_bytes(b - a, n_cols))
    for blk in blocks_cache:
        lo, hi = max(a, blk.start), min(b, blk.stop)
        if lo >= hi:
            continue
        cum = np.concatenate([[0], np.cumsum(lengths[lo:hi])])  # bytes before row lo + k
        r = lo
        while r < hi:
            # rows [r, r2) with at most _PIECE_BYTES (at least one row)
            k = int(np.searchsorted(cum, cum[r - lo] + _PIECE_BYTES, side="right")) - 1
            r2 = lo + max(k, r - lo + 1)
            nbytes = int(cum[r2 - lo] - cum[r - lo])
            out = np.empty(nbytes, dtype=np.uint8)
            _encode_rows_into(
                blk, r - blk.start, r2 - blk.start, cum[r - lo : r2 - lo + 1] - cum[r - lo], out
            )
            f.write(out.data)
            r = r2
    data_bytes = int(lengths[a:b].sum())
    f.write(b"\x00" * (-data_bytes % 4))
    index = np.empty(b - a + 1, dtype="<u4")
    index[0] = HEADER_SIZE
    np.cumsum(lengths[a:b], out=index[1:])
    index[1:] += HEADER_SIZE
    f.write(index.tobytes())


def _tmp_name(path: Path, kind: str = "tmp") -> Path:
    return path.with_name(f"{path.name}.{kind}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def swap_into_place(tmp: Path, path: Path) -> None:
    """Atomically move ``tmp`` (a file or a directory) to ``path``, replacing what is there."""
    if (path.is_dir() and not path.is_symlink()) or (tmp.is_dir() and path.exists()):
        old = _tmp_name(path, "old")
        os.replace(path, old)
        try:
            os.replace(tmp, path)
        except BaseException:
            os.replace(old, path)
            raise
        if old.is_dir():
            shutil.rmtree(old, ignore_errors=True)
        else:
            old.unlink(missing_ok=True)
    else:
        os.replace(tmp, path)


def remove_quietly(p: Path) -> None:
    """Remove a temporary file or directory, ignoring errors."""
    try:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    except OSError:  # pragma: no cover
        pass


def write_mmmatrix(
    path: str | PathLike,
    data: AnnData | np.ndarray | sp.spmatrix | sp.sparray,
    *,
    layer: str | None = None,
    _shard_bytes: int = MAX_FILE_BYTES,
) -> None:
    """Write non-negative integer counts (cells × genes) as a canonical ``.mmm`` file.

    The bytes follow the canonical encoding of the format specification (``(255, 0)`` gap fillers,
    values split as 255s then the remainder, absolute offsets, zero padding), so equal matrices give
    identical files. Duplicate entries of sparse input are summed, explicit zeros dropped. Every value
    is validated before anything is written: negative, non-integer, NaN / infinite values and values
    above 2³¹ − 1 (the int32 the reader decodes to) raise :class:`~scmetacell.io.MMMWriteError`.

    The write is atomic: the data go to a temporary file beside ``path``, renamed over ``path`` only
    when complete; an error or an interrupt leaves no partial file.

    When the encoded matrix does not fit one file (u32 offsets: 4 GiB), ``path`` becomes a directory of
    ``.mmm`` shards with a ``mmm_collection.json`` metadata file, read back as one matrix by
    :func:`~scmetacell.io.read_mmmatrix` and :class:`~scmetacell.io.MMMCollection`.

    Parameters
    ----------
    path
        The file to write (conventionally ending in ``.mmm``).
    data
        An AnnData (its ``X`` or ``layers[layer]``; backed AnnData are read in blocks), a scipy sparse
        matrix or array, or a dense 2-D numpy array, of cells × genes.
    layer
        With an AnnData: ``None`` / ``"X"`` for ``X``, else a key of ``layers``.

    Returns
    -------
    Nothing; the file (or shard directory) is at ``path``.

    Examples
    --------
    >>> import os, tempfile
    >>> import scmetacell as scm
    >>> adata = scm.datasets.pbmc3k()
    >>> path = os.path.join(tempfile.mkdtemp(), "pbmc3k.mmm")
    >>> scm.io.write_mmmatrix(path, adata)
    >>> back = scm.io.read_mmmatrix(path)
    >>> back.shape == adata.shape and (back.X != adata.X).nnz == 0
    True
    """
    path = Path(path)
    mat = _resolve_matrix(data, layer)
    if len(getattr(mat, "shape", ())) != 2:
        raise ValueError(
            f"data: a 2-D cells × genes matrix expected, got shape {getattr(mat, 'shape', None)}."
        )
    n_rows, n_cols = (int(x) for x in mat.shape)
    if n_cols > MAX_GENES:
        raise MMMWriteError(f"data: {n_cols} genes; at most {MAX_GENES} are supported.")
    if n_rows > 2**32 - 2:
        raise MMMWriteError(f"data: {n_rows} cells; a .mmm shard holds at most 2**32 - 2.")
    limit = int(_shard_bytes)
    if not file_size(0, 0) <= limit <= MAX_FILE_BYTES:
        raise ValueError(f"_shard_bytes={_shard_bytes}: must lie in [{file_size(0, 0)}, {MAX_FILE_BYTES}].")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"path={str(path)!r}: the directory {str(path.parent)!r} does not exist.")

    # validate every value and size every row, before anything is written: in-memory sparse input is
    # validated, then encoded in one pass (in memory); other input is sized block by block first
    blocks = list(_blocks(mat, 0, n_rows, n_cols)) if sp.issparse(mat) else None
    if blocks is not None:
        encoded, lengths = _encode_block(blocks[0], n_rows)
    else:
        encoded, lengths = None, _lengths(_blocks(mat, 0, n_rows, n_cols), n_rows)
    bounds = plan_shards(lengths, limit)
    starts = np.concatenate([[0], np.cumsum(lengths)])

    def shard_blocks(a: int, b: int):
        # in-memory sparse: the one block; dense / backed input: fetch this shard's rows again
        return blocks if blocks is not None else _blocks(mat, a, b, n_cols)

    tmp = _tmp_name(path)
    try:
        if len(bounds) == 1:
            with open(tmp, "wb") as f:
                if encoded is not None:
                    _write_encoded(f, n_cols, encoded, lengths, 0, n_rows, 0)
                else:
                    _write_shard(f, mat, n_cols, lengths, 0, n_rows, shard_blocks(0, n_rows))
        else:
            tmp.mkdir()
            shards = []
            for k, (a, b) in enumerate(bounds):
                name = f"shard-{k:05d}.mmm"
                with open(tmp / name, "wb") as f:
                    if encoded is not None:
                        _write_encoded(f, n_cols, encoded, lengths, a, b, int(starts[a]))
                    else:
                        _write_shard(f, mat, n_cols, lengths, a, b, shard_blocks(a, b))
                shards.append({"file": name, "profiles_count": b - a})
            meta = {
                "format": COLLECTION_FORMAT,
                "version": 1,
                "profiles_count": n_rows,
                "genes_count": n_cols,
                "shards": shards,
            }
            (tmp / COLLECTION_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        swap_into_place(tmp, path)
    except BaseException:
        remove_quietly(tmp)
        raise
