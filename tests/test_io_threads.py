"""The ``.mmm`` codec on several threads: the same bytes, matrices and errors as on one thread."""

from __future__ import annotations

import importlib.util
import json
import struct
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

import scmetacell as scm
from scmetacell import io as mio
from scmetacell.io import _parallel

_spec = importlib.util.spec_from_file_location(
    "_mmm_reference", Path(__file__).with_name("_mmm_reference.py")
)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
VECTORS = SHARED / "specs" / "mmm-vectors"
MANIFEST = json.loads((VECTORS / "manifest.json").read_text()) if (VECTORS / "manifest.json").exists() else {}
# 1 thread; 2 threads; 3 and 7 threads (more threads than cores; up to 4 blocks each)
THREADS = [1, 2, 3, 7]


@pytest.fixture
def threads(monkeypatch):
    """Set the codec's threads; any input is cut into blocks (no minimum work per block)."""
    monkeypatch.setattr(_parallel, "MIN_WORK_PER_BLOCK", 1)

    def set_threads(n: int) -> None:
        monkeypatch.setattr(scm.settings, "io_threads", n)

    return set_threads


def _file(tmp_path: Path, streams: list[bytes], genes: int, name: str = "raw.mmm") -> Path:
    """A ``.mmm`` file from raw pair streams (any encoding, valid or not)."""
    data = b"".join(streams)
    index = np.concatenate([[56], 56 + np.cumsum([len(s) for s in streams])]).astype("<u4")
    body = ref.MAGIC + struct.pack("<II", len(streams), genes) + data + b"\x00" * (-len(data) % 4)
    p = tmp_path / name
    p.write_bytes(body + index.tobytes())
    return p


def _random_counts(rng, n_rows: int, n_cols: int, density: float = 0.05) -> sp.csr_matrix:
    X = sp.random(n_rows, n_cols, density=density, format="csr", random_state=rng, dtype=np.float64)
    X.data = np.ceil(X.data * rng.choice([3, 300, 70_000], X.data.size, p=[0.8, 0.15, 0.05]))
    keep = np.ones(n_rows)
    keep[rng.integers(0, n_rows, max(1, n_rows // 5))] = 0  # empty rows, some at block edges
    X = (sp.diags(keep) @ X).astype(np.int64).tocsr()
    X.eliminate_zeros()
    return X


# ---- the bytes ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("n", THREADS)
@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_vectors_on_threads(name, n, threads, tmp_path):
    e = MANIFEST[name]
    z = np.load(VECTORS / e["npz"])
    X = z["profiles_by_genes"]
    threads(n)
    back = mio.read_mmmatrix(VECTORS / e["mmm"]).X
    assert (back != sp.csr_matrix(X)).nnz == 0 and back.shape == X.shape
    if e["kind"] == "canonical":
        out = tmp_path / "v.mmm"
        mio.write_mmmatrix(out, sp.csr_matrix(X))
        assert out.read_bytes() == (VECTORS / e["mmm"]).read_bytes() == ref.ref_encode(X)


@pytest.mark.parametrize("n", THREADS)
def test_random_counts_bytes_equal_the_reference(n, threads, tmp_path):
    rng = np.random.default_rng(n)
    X = _random_counts(rng, 97, 700)  # gaps above 255 (fillers) and values above 255 (continuations)
    expected = ref.ref_encode(X.toarray())
    threads(n)
    for i, data in enumerate([X, X.toarray(), X.astype(np.float32)]):  # one block / dense blocks / floats
        out = tmp_path / f"x{i}.mmm"
        mio.write_mmmatrix(out, data)
        assert out.read_bytes() == expected
    with mio.MMMWriter(tmp_path / "w.mmm", X.shape[1]) as w:
        for a in range(0, X.shape[0], 40):
            w.append(X[a : a + 40])
    assert (tmp_path / "w.mmm").read_bytes() == expected
    got = mio.read_mmmatrix(tmp_path / "x0.mmm").X
    assert (got != X).nnz == 0 and got.dtype == np.int32 and got.indptr.dtype == np.int32
    assert (ref.ref_decode(expected) != got).nnz == 0
    idx = rng.integers(0, X.shape[0], 300)
    with mio.MMMatrix(tmp_path / "x0.mmm") as m:
        assert (m.take(idx) != X[idx]).nnz == 0
        assert (m.read_rows(13, 80) != X[13:80]).nnz == 0


@pytest.mark.parametrize("n", [2, 7])
def test_shards_on_threads(n, threads, tmp_path):
    X = _random_counts(np.random.default_rng(5), 120, 400)
    mio.write_mmmatrix(tmp_path / "one", X, _shard_bytes=2000)
    threads(n)
    mio.write_mmmatrix(tmp_path / "many", X, _shard_bytes=2000)
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    assert len(names) > 3 and names == sorted(p.name for p in (tmp_path / "many").iterdir())
    for name in names:
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "many" / name).read_bytes()
    assert (mio.read_mmmatrix(tmp_path / "many").X != X).nnz == 0


@pytest.mark.parametrize("n", THREADS)
def test_noncanonical_streams_decode_alike(n, threads, tmp_path):
    # runs whose first value is 0, zero-valued pairs, repeated genes, (255, 0) fillers, empty rows:
    # the per-block count of entries must still be exact
    streams = [
        bytes([5, 0, 0, 3]),  # gene 5 = 3 (a run starting with a zero value)
        b"",
        bytes([0, 0, 0, 0, 0, 7, 2, 0, 1, 0, 0, 0]),  # gene 0 = 7; genes 2, 3 = 0 (dropped)
        bytes([255, 0, 255, 0, 3, 1, 0, 0, 0, 255, 0, 1]),  # gene 513 = 257
        bytes([1, 4, 0, 0, 1, 0, 0, 9]),  # gene 1 = 4, gene 2 = 9
        bytes([0, 0]),  # nothing
        bytes([7, 1, 0, 0, 0, 0, 0, 2]),  # gene 7 = 3
    ] * 5
    p = _file(tmp_path, streams, 600)
    expected = ref.ref_decode(p.read_bytes())
    threads(n)
    with mio.MMMatrix(p) as m:
        assert (m.to_csr() != expected).nnz == 0 and m.to_csr().nnz == expected.nnz
        idx = np.array([34, 0, 3, 3, 17, 6])
        assert (m.take(idx) != expected[idx]).nnz == 0


# ---- the errors ---------------------------------------------------------------------------------------


def _error(p: Path, rows=None):
    with mio.MMMatrix(p) as m, pytest.raises(mio.MMMFormatError) as info:
        m.to_csr() if rows is None else m.take(rows)
    return type(info.value), info.value.offset, str(info.value)


def test_first_bad_row_is_reported_on_every_thread_count(threads, tmp_path):
    good = bytes([3, 1, 10, 2, 0, 5])
    bad = bytes([3, 1, 250, 2])  # its second pair moves the gene index to 253 >= 200
    reverse = np.arange(39, -1, -1)
    for bad_rows in ([37], [5, 37], [0, 1, 38], [39], [12, 13]):
        streams = [bad if r in bad_rows else good for r in range(40)]
        p = _file(tmp_path, streams, 200, f"bad-{'-'.join(map(str, bad_rows))}.mmm")
        row_start = 56 + np.concatenate([[0], np.cumsum([len(s) for s in streams])])
        first, last = bad_rows[0], bad_rows[-1]
        for n in THREADS:
            threads(n)
            cls, offset, message = _error(p)
            assert (cls, offset) == (mio.MMMGeneIndexError, row_start[first] + 2)
            assert f"profile {first}'s gene index" in message
            cls, offset, message = _error(p, reverse)  # in the order taken, the last bad row comes first
            assert (cls, offset) == (mio.MMMGeneIndexError, row_start[last] + 2)
            assert f"profile {last}'s gene index" in message


def test_bad_gene_position_is_the_first_bad_pair(threads, tmp_path):
    # good rows, then a row whose 3rd pair leaves the genes, then another bad row
    streams = [bytes([1, 1] * 4)] * 20 + [bytes([1, 1, 1, 1, 99, 1, 0, 1, 50, 3])] + [bytes([200, 1])] * 5
    p = _file(tmp_path, streams, 100)
    starts = 56 + 8 * 20
    results = set()
    for n in THREADS:
        threads(n)
        results.add(_error(p))
    assert len(results) == 1  # the same error, offset and message on every thread count
    cls, offset, message = results.pop()
    assert (cls, offset) == (mio.MMMGeneIndexError, starts + 4) and "profile 20's" in message
    # no genes at all: the first pair of the first non-empty row is already out of range
    p = _file(tmp_path, [b"", b"", bytes([0, 1])], 0, "g0.mmm")
    for n in THREADS:
        threads(n)
        assert _error(p)[:2] == (mio.MMMGeneIndexError, 56)


def test_value_overflow_is_reported_alike(threads, tmp_path):
    # a run of SAFE_PAIRS + 2 pairs of value 255 on one gene sums past int32: the first row that
    # overflows is named, at the pair where the sum first exceeds 2**31 - 1, on every thread count
    from scmetacell.io._codec import SAFE_PAIRS

    long = np.full((SAFE_PAIRS + 2, 2), 255, dtype=np.uint8)  # gene 255, then (0, 255) pairs
    long[1:, 0] = 0
    long = long.tobytes()
    ok = bytes([1, 5, 2, 7])
    over_at = 56 + 3 * len(ok) + 2 * SAFE_PAIRS  # pair SAFE_PAIRS of row 3 brings the sum past 2**31 - 1
    p = _file(tmp_path, [ok, ok, ok, long, ok, long, ok], 300)
    for n in [1, 2, 3]:
        threads(n)
        cls, offset, message = _error(p)
        assert cls is mio.MMMValueError and "profile 3 " in message
        assert offset == over_at
    threads(2)
    with mio.MMMatrix(p) as m:  # the rows around it still read
        assert m.read_rows(0, 3).toarray()[:, [1, 3]].tolist() == [[5, 7]] * 3


# ---- real data, settings, no compilation at import ---------------------------------------------------


def test_real_data_round_trip_on_threads(threads, tmp_path):
    path = SHARED / "data" / "pbmc3k_raw_labeled.h5ad"
    if not path.exists():
        pytest.skip(f"{path} not found")
    X = sp.csr_matrix(ad.read_h5ad(path).X)
    files = {}
    for n in [1, 2, 3]:
        threads(n)
        files[n] = tmp_path / f"pbmc{n}.mmm"
        mio.write_mmmatrix(files[n], X)
    assert files[1].read_bytes() == files[2].read_bytes() == files[3].read_bytes()
    idx = np.random.default_rng(0).integers(0, X.shape[0], 500)
    for n in [1, 2, 3]:
        threads(n)
        back = mio.read_mmmatrix(files[1]).X
        assert (back != X).nnz == 0 and back.dtype == np.int32
        with mio.MMMatrix(files[1]) as m:
            assert (m.take(idx) != X[idx]).nnz == 0


def test_threads_setting_and_blocks(monkeypatch):
    monkeypatch.setattr(scm.settings, "io_threads", None)
    assert _parallel.io_threads() == _parallel.available_cores() >= 1
    monkeypatch.setattr(scm.settings, "io_threads", 3)
    assert _parallel.io_threads() == 3
    assert _parallel.n_blocks(10) == 1  # small work stays in the calling thread
    assert _parallel.n_blocks(2 * _parallel.MIN_WORK_PER_BLOCK) == 2
    assert _parallel.n_blocks(10**6 * _parallel.MIN_WORK_PER_BLOCK) == 3 * _parallel.BLOCKS_PER_THREAD
    monkeypatch.setattr(scm.settings, "io_threads", 1)
    assert _parallel.n_blocks(10**6 * _parallel.MIN_WORK_PER_BLOCK) == 1
    monkeypatch.setattr(scm.settings, "io_threads", 0)
    with pytest.raises(ValueError, match="io_threads"):
        _parallel.io_threads()
    cum = np.array([0, 10, 10, 30, 31, 60, 100])
    b = _parallel.split(cum, 3)
    assert b[0] == 0 and b[-1] == 6 and len(b) == 4 and (np.diff(b) >= 0).all()
    assert _parallel.split(np.array([0]), 4).tolist() == [0, 0, 0, 0, 0]
    assert _parallel.split(cum, 1).tolist() == [0, 6]

    def boom(j):
        if j == 1:
            raise KeyError("block 1")
        return j

    monkeypatch.setattr(scm.settings, "io_threads", 2)
    with pytest.raises(KeyError, match="block 1"):
        _parallel.run_blocks(boom, 3)
    assert _parallel.run_blocks(lambda j: j * j, 9) == [j * j for j in range(9)]


def test_benchmark_numpy_codec_matches_the_reference(tmp_path):
    """The vectorised numpy codec of benchmarks/mmm_codec.py (the speed baseline) is a correct codec."""
    spec = importlib.util.spec_from_file_location(
        "mmm_codec", Path(__file__).resolve().parents[1] / "benchmarks" / "mmm_codec.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    X = _random_counts(np.random.default_rng(11), 60, 900)
    b = ref.ref_encode(X.toarray())
    assert bench.np_encode(X) == b
    assert (bench.np_decode(b) != X).nnz == 0
    for name in sorted(MANIFEST):
        e = MANIFEST[name]
        expected = sp.csr_matrix(np.load(VECTORS / e["npz"])["profiles_by_genes"])
        assert (bench.np_decode((VECTORS / e["mmm"]).read_bytes()) != expected).nnz == 0
        if e["kind"] == "canonical":
            assert bench.np_encode(expected) == (VECTORS / e["mmm"]).read_bytes()
