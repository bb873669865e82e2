from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import scmetacell as scm
from scmetacell import io as mio
from scmetacell.data import MMMSource, as_source

_spec = importlib.util.spec_from_file_location(
    "_mmm_reference", Path(__file__).with_name("_mmm_reference.py")
)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "specs" / "mmm-vectors"


def _manifest() -> dict:
    if not (VECTORS / "manifest.json").exists():
        return {}
    return json.loads((VECTORS / "manifest.json").read_text())


MANIFEST = _manifest()
CANONICAL = [k for k, v in MANIFEST.items() if v["kind"] == "canonical"]
ALL = sorted(MANIFEST)


def _expected(name: str) -> np.ndarray:
    z = np.load(VECTORS / MANIFEST[name]["npz"])
    X = z["profiles_by_genes"]
    assert X.shape == (int(z["profiles_count"]), int(z["genes_count"]))
    return X


def _same(a, b) -> bool:
    a, b = sp.csr_matrix(a), sp.csr_matrix(b)
    return a.shape == b.shape and (a != b).nnz == 0


# ---- spec test vectors ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", CANONICAL)
@pytest.mark.parametrize("form", ["dense", "csr", "csc_float", "anndata_layer"])
def test_canonical_vectors_byte_identical(name, form, tmp_path):
    X = _expected(name)
    data = {
        "dense": X,
        "csr": sp.csr_matrix(X),
        "csc_float": sp.csc_matrix(X.astype(np.float64)),
        "anndata_layer": ad.AnnData(
            X=np.zeros(X.shape, dtype=np.float32), layers={"counts": sp.csr_matrix(X)}
        ),
    }[form]
    out = tmp_path / "v.mmm"
    mio.write_mmmatrix(out, data, layer="counts" if form == "anndata_layer" else None)
    expected = (VECTORS / MANIFEST[name]["mmm"]).read_bytes()
    assert out.read_bytes() == expected
    assert ref.ref_encode(X) == expected  # the test oracle agrees with the vectors too
    assert not list(tmp_path.glob("*.tmp*"))


@pytest.mark.parametrize("name", ALL)
def test_every_vector_decodes(name):
    e = MANIFEST[name]
    X = _expected(name)
    adata = mio.read_mmmatrix(VECTORS / e["mmm"])
    assert adata.X.dtype == np.int32 and sp.isspmatrix_csr(adata.X)
    assert _same(adata.X, X)
    assert list(adata.obs_names) == [str(i) for i in range(X.shape[0])]
    with mio.MMMatrix(VECTORS / e["mmm"]) as m:
        assert (m.profiles_count, m.genes_count) == (e["profiles_count"], e["genes_count"])
        assert m.entries_count() == e["entries_count"] == np.count_nonzero(X)
        assert m.nbytes == e["file_size"]
        np.testing.assert_array_equal(m.to_numpy_matrix(), X.T)  # genes x profiles (the old orientation)
        assert _same(ref.ref_decode((VECTORS / e["mmm"]).read_bytes()), X)


def test_worked_example_api():
    X = _expected("worked_example")
    with mio.MMMatrix(VECTORS / "worked_example.mmm") as m:
        acc = np.ones(600, dtype=np.float32)
        m.add_profile_data(0, acc)
        m.add_profile_data(2, acc)
        np.testing.assert_array_equal(acc, 1 + X[0] + X[2])
        assert acc[300] == 701 and acc[5] == 257
        np.testing.assert_array_equal(m.row_nbytes(), [14, 0, 12])
        with pytest.raises(IndexError, match="profile_index"):
            m.add_profile_data(3, acc)
        with pytest.raises(ValueError, match="shape"):
            m.add_profile_data(0, np.zeros(5))


# ---- round trips with real data ------------------------------------------------------------------------


def test_round_trip_pbmc3k(pbmc3k, tmp_path):
    path = tmp_path / "pbmc.mmm"
    before = pbmc3k.X.copy()
    mio.write_mmmatrix(path, pbmc3k)
    assert _same(pbmc3k.X, before)  # the user's matrix is untouched
    back = mio.read_mmmatrix(path)
    assert back.shape == pbmc3k.shape and back.X.dtype == np.int32
    assert _same(back.X, pbmc3k.X)
    f32 = mio.read_mmmatrix(path, dtype=np.float32)
    assert f32.X.dtype == np.float32 and _same(f32.X, pbmc3k.X)
    # a second write of the same matrix (as dense float rows) gives the same bytes
    path2 = tmp_path / "pbmc_dense.mmm"
    mio.write_mmmatrix(path2, pbmc3k.X[:300].toarray().astype(np.float32))
    path3 = tmp_path / "pbmc_sub.mmm"
    mio.write_mmmatrix(path3, pbmc3k.X[:300])
    assert path2.read_bytes() == path3.read_bytes()
    assert ref.ref_encode(pbmc3k.X[:40].toarray()) == ref.ref_encode(
        mio.read_mmmatrix(path3).X[:40].toarray()
    )
    # ~half the size of the uncompressed CSR (int32 data + int32 indices)
    assert path.stat().st_size < 0.5 * 8 * pbmc3k.X.nnz


def test_round_trip_layer_and_backed(pancreas, tmp_path):
    path = tmp_path / "unspliced.mmm"
    mio.write_mmmatrix(path, pancreas, layer="unspliced")
    assert _same(mio.read_mmmatrix(path).X, pancreas.layers["unspliced"])
    h5 = tmp_path / "p.h5ad"
    pancreas.write_h5ad(h5)
    backed = ad.read_h5ad(h5, backed="r")
    path2 = tmp_path / "backed.mmm"
    mio.write_mmmatrix(path2, backed)
    backed.file.close()
    mio.write_mmmatrix(path, pancreas)
    assert path2.read_bytes() == path.read_bytes()
    with pytest.raises(KeyError, match="layer='nope'"):
        mio.write_mmmatrix(path, pancreas, layer="nope")
    with pytest.raises(ValueError, match="layer"):
        mio.write_mmmatrix(path, pancreas.X, layer="unspliced")


def test_duplicates_and_explicit_zeros_summed(tmp_path):
    coo = sp.coo_matrix(([3, 4, 0, 300], ([0, 0, 1, 1], [2, 2, 5, 7])), shape=(2, 9))
    csr = sp.csr_matrix(coo, copy=False)
    csr.data = np.array([3, 4, 0, 300])
    csr = sp.csr_matrix((np.array([3, 4, 0, 300]), np.array([2, 2, 5, 7]), np.array([0, 2, 4])), shape=(2, 9))
    path = tmp_path / "d.mmm"
    mio.write_mmmatrix(path, csr)
    assert csr.data.tolist() == [3, 4, 0, 300]  # not mutated
    dense = np.zeros((2, 9), dtype=int)
    dense[0, 2], dense[1, 7] = 7, 300
    assert path.read_bytes() == ref.ref_encode(dense)


# ---- MMMatrix API --------------------------------------------------------------------------------------


def test_mmmatrix_rows_take_chunks(kang, tmp_path):
    X = kang.X[:1500]
    path = tmp_path / "k.mmm"
    mio.write_mmmatrix(path, X)
    rng = np.random.default_rng(0)
    with mio.MMMatrix(path) as m:
        assert m.shape == X.shape and len(m) == 1500
        assert _same(m.read_rows(100, 357), X[100:357])
        assert m.read_rows(5, 5).shape == (0, X.shape[1])
        idx = rng.integers(0, 1500, 400)
        idx[:3] = [7, 7, 1499]
        assert _same(m.take(idx), X[idx])
        assert _same(m.take(-np.arange(1, 4)), X[[1499, 1498, 1497]])
        mask = rng.random(1500) < 0.2
        assert _same(m.take(mask), X[mask])
        assert _same(m[10:20], X[10:20]) and _same(m[3], X[3]) and _same(m[::100], X[::100])
        chunks = list(m.iter_chunks(512))
        assert [(a, b) for a, b, _ in chunks] == [(0, 512), (512, 1024), (1024, 1500)]
        assert _same(sp.vstack([c for _, _, c in chunks]), X)
        assert m.entries_count() == X.nnz
        with pytest.raises(IndexError):
            m.read_rows(0, 1501)
        with pytest.raises(IndexError):
            m.take([1500])
        assert "MMMatrix" in repr(m)
    assert m.closed
    with pytest.raises(ValueError, match="closed"):
        m.read_rows(0, 1)


def test_names_from_container_sidecars(tmp_path):
    X = _expected("worked_example")
    d = tmp_path / "batch"
    d.mkdir()
    (d / "gp.umis.mmm").write_bytes((VECTORS / "worked_example.mmm").read_bytes())
    (d / "p.barcode.txt").write_text("AAA\nCCC\nGGG\n")
    (d / "g.name.txt").write_text("".join(f"G{i}\n" for i in range(600)))
    a = mio.read_mmmatrix(d / "gp.umis.mmm")
    assert list(a.obs_names) == ["AAA", "CCC", "GGG"] and a.var_names[599] == "G599"
    assert _same(a.X, X)
    # a lone file elsewhere: numbered names
    (tmp_path / "x.mmm").write_bytes((VECTORS / "worked_example.mmm").read_bytes())
    assert list(mio.read_mmmatrix(tmp_path / "x.mmm").obs_names) == ["0", "1", "2"]


# ---- sharding --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("limit", [3000, 20000])
def test_sharded_collection(kang, tmp_path, limit):
    X = kang.X[:300]
    path = tmp_path / "big.mmm"
    mio.write_mmmatrix(path, X, _shard_bytes=limit)
    assert path.is_dir()
    meta = json.loads((path / "mmm_collection.json").read_text())
    assert meta["profiles_count"] == 300 and meta["genes_count"] == X.shape[1] and len(meta["shards"]) > 2
    for shard in meta["shards"]:
        f = path / shard["file"]
        assert f.stat().st_size <= limit
        assert mio.MMMatrix(f).profiles_count == shard["profiles_count"]
    back = mio.read_mmmatrix(path)
    assert _same(back.X, X)
    rng = np.random.default_rng(1)
    with mio.open_mmm(path) as m:
        assert isinstance(m, mio.MMMCollection)
        assert _same(m.read_rows(17, 263), X[17:263])
        idx = rng.integers(0, 300, 500)
        assert _same(m.take(idx), X[idx])
        assert _same(m.take(np.sort(idx)), X[np.sort(idx)])
        assert m.entries_count() == X.nnz
        np.testing.assert_array_equal(m.to_numpy_matrix(), X.toarray().T)
    # rewriting the same path as one file replaces the directory atomically
    mio.write_mmmatrix(path, X)
    assert path.is_file() and _same(mio.read_mmmatrix(path).X, X)
    # and back to a directory over an existing file
    mio.write_mmmatrix(path, X, _shard_bytes=limit)
    assert path.is_dir() and not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob("*.old*"))


@pytest.mark.parametrize("limit", [None, 3000, 20000])
def test_writer_blocks_match_write_mmmatrix(kang, tmp_path, limit):
    X = kang.X[:300]
    kw = {} if limit is None else {"_shard_bytes": limit}
    mio.write_mmmatrix(tmp_path / "one.mmm", X, **kw)
    with mio.MMMWriter(tmp_path / "blocks.mmm", X.shape[1], **kw) as w:
        for a, b in [(0, 7), (7, 7), (7, 150), (150, 151), (151, 300)]:
            w.append(X[a:b] if a % 2 else X[a:b].toarray())
        assert w.profiles_count == 300
    one, blocks = tmp_path / "one.mmm", tmp_path / "blocks.mmm"
    if limit is None:
        assert blocks.read_bytes() == one.read_bytes()
    else:
        assert sorted(os.listdir(blocks)) == sorted(os.listdir(one))
        for f in os.listdir(one):
            assert (blocks / f).read_bytes() == (one / f).read_bytes()
    assert sorted(os.listdir(tmp_path)) == ["blocks.mmm", "one.mmm"]


def test_writer_bad_block_or_interrupt_leaves_nothing(tmp_path):
    path = tmp_path / "w.mmm"
    with pytest.raises(mio.MMMWriteError, match=r"cells 3:5"):
        with mio.MMMWriter(path, 4) as w:
            w.append(np.ones((3, 4)))
            w.append(np.array([[1, 2, 3, 4], [0, 0, -1, 0]]))
    with pytest.raises(ValueError, match="aborted"):
        w.append(np.ones((1, 4)))
    with pytest.raises(KeyboardInterrupt):
        with mio.MMMWriter(path, 4) as w:
            w.append(np.ones((3, 4)))
            raise KeyboardInterrupt
    with pytest.raises(ValueError, match="genes"):
        with mio.MMMWriter(path, 4) as w:
            w.append(np.ones((3, 5)))
    assert not list(tmp_path.iterdir())
    with mio.MMMWriter(path, 4) as w:  # no block at all: an empty matrix
        pass
    assert mio.read_mmmatrix(path).shape == (0, 4)


def test_shard_row_too_large_and_bad_collections(tmp_path):
    X = np.full((3, 50), 1000)
    with pytest.raises(mio.MMMWriteError, match="row 0"):
        mio.write_mmmatrix(tmp_path / "x.mmm", X, _shard_bytes=100)
    assert not list(tmp_path.iterdir())
    path = tmp_path / "c.mmm"
    mio.write_mmmatrix(path, np.eye(6, dtype=int), _shard_bytes=80)
    meta_path = path / "mmm_collection.json"
    meta = json.loads(meta_path.read_text())
    meta["profiles_count"] = 7
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(mio.MMMCollectionError, match="metadata says 7"):
        mio.open_mmm(path)
    meta["profiles_count"] = 6
    meta["shards"][0]["file"] = "../evil.mmm"
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(mio.MMMCollectionError, match="bad file name"):
        mio.open_mmm(path)
    meta_path.write_text("{not json")
    with pytest.raises(mio.MMMCollectionError):
        mio.open_mmm(path)


# ---- old container ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("generation", ["api", "readme"])
def test_container_round_trip(pbmc3k, tmp_path, generation):
    path = tmp_path / "batch"
    mio.write_mmm_container(path, pbmc3k, generation=generation, organism="human")
    files = set(os.listdir(path))
    names = {"api": {"gp.umis.mmm", "g.name.txt", "p.barcode.txt"}}.get(
        generation, {"matrix.umis.mmm", "genes.name.txt", "profiles.barcode.txt"}
    )
    assert names | {"profiles_batch.yaml"} <= files
    back = mio.read_mmm_container(path)
    assert _same(back.X, pbmc3k.X)
    assert (back.obs_names == pbmc3k.obs_names).all() and (back.var_names == pbmc3k.var_names).all()
    assert (
        back.obs["cell_type"].fillna("").astype(str).tolist()
        == pbmc3k.obs["cell_type"].astype(object).fillna("").astype(str).tolist()
    )
    np.testing.assert_array_equal(back.obs["passed_seurat_qc"], pbmc3k.obs["passed_seurat_qc"])
    meta = back.uns["mmm_container"]
    assert meta["profiles_count"] == 2700 and meta["genes_count"] == 32738 and meta["organism"] == "human"
    import hashlib

    umis = next(p for p in path.iterdir() if p.name.endswith("umis.mmm"))
    assert meta["uuid"] == hashlib.md5(umis.read_bytes()).hexdigest()
    # a bare matrix in a container directory gets the container's names too
    assert (mio.read_mmmatrix(umis).obs_names == pbmc3k.obs_names).all()


def test_container_hand_built_readme_generation(tmp_path):
    X = _expected("gene_gaps")
    d = tmp_path / "old"
    d.mkdir()
    (d / "matrix.umis.mmm").write_bytes((VECTORS / "gene_gaps.mmm").read_bytes())
    (d / "genes.name.txt").write_text("".join(f"GENE{i:04d}\n" for i in range(2000)))
    (d / "profiles.barcode.txt").write_text("a\nb\nc\nd\ne\n")
    np.save(d / "profiles.total_umis.npy", X.sum(1).astype(np.float32))
    (d / "profiles_batch.yaml").write_text(
        "profiles_count: 5\ngenes_count: 2000\nprofiles_kind: cells\ngenes_uuid: x\nuuid: y\n"
    )
    a = mio.read_mmm_container(d)
    assert _same(a.X, X) and list(a.obs_names) == list("abcde") and a.var_names[5] == "GENE0005"
    np.testing.assert_array_equal(a.obs["total_umis"], X.sum(1))
    (d / "profiles_batch.yaml").write_text("profiles_count: 6\ngenes_count: 2000\n")
    with pytest.raises(mio.MMMFormatError, match="profiles_count=6"):
        mio.read_mmm_container(d)


def test_container_sharded_and_errors(kang, tmp_path, monkeypatch):
    from scmetacell.io import _writer

    monkeypatch.setattr(_writer, "MAX_FILE_BYTES", 40000)
    sub = kang[:200].copy()
    orig = _writer.write_mmmatrix

    def small(path, data, *, layer=None):
        return orig(path, data, layer=layer, _shard_bytes=40000)

    monkeypatch.setattr("scmetacell.io._container.write_mmmatrix", small)
    path = tmp_path / "b"
    mio.write_mmm_container(path, sub)
    assert (path / "gp.umis.mmm").is_dir()
    back = mio.read_mmm_container(path)
    assert _same(back.X, sub.X) and (back.obs_names == sub.obs_names).all()
    with pytest.raises(FileNotFoundError):
        mio.read_mmm_container(tmp_path / "missing")
    bad = sub.copy()
    bad.obs_names = [f"c{i}\n" for i in range(200)]
    with pytest.raises(ValueError, match="line breaks"):
        mio.write_mmm_container(tmp_path / "c", bad)
    assert not (tmp_path / "c").exists()


# ---- errors ----------------------------------------------------------------------------------------------


def _vector(name="worked_example") -> bytearray:
    return bytearray((VECTORS / f"{name}.mmm").read_bytes())


def _corrupt(tmp_path, b: bytes) -> Path:
    p = tmp_path / "bad.mmm"
    p.write_bytes(bytes(b))
    return p


def _read_all(p: Path):
    with mio.MMMatrix(p) as m:
        return m.to_csr()


def test_errors_name_problem_and_offset(tmp_path):
    cases = []
    b = _vector()
    b[10] = ord("X")
    cases.append((b, mio.MMMMagicError, 10, "magic"))
    b = _vector()[:75]
    cases.append((b, mio.MMMTruncatedError, None, "not 4-aligned"))
    b = _vector()[:30]
    cases.append((b, mio.MMMTruncatedError, 30, "magic"))
    b = _vector()
    b[48:52] = (1000).to_bytes(4, "little")
    cases.append((b, mio.MMMTruncatedError, 48, "profiles_count 1000"))
    b = _vector()  # index [56, 70, 70, 82] at 84: make entry 2 = 60 < 70
    b[92:96] = (60).to_bytes(4, "little")
    cases.append((b, mio.MMMIndexError, 92, "not monotonic"))
    b = _vector()
    b[88:92] = (69).to_bytes(4, "little")
    cases.append((b, mio.MMMIndexError, 88, "odd-length"))
    b = _vector()
    b[96:100] = (90).to_bytes(4, "little")
    cases.append((b, mio.MMMIndexError, 96, "past the end"))
    b = _vector()
    b[83] = 7
    cases.append((b, mio.MMMPaddingError, 83, "padding"))
    b = _vector()
    b[84:88] = (12).to_bytes(4, "little")
    cases.append((b, mio.MMMIndexError, 84, "first index entry"))
    b = _vector()
    b[80] = 200  # (83, 7) -> (200, 7): gene 516 + 200 >= 600
    cases.append((b, mio.MMMGeneIndexError, 80, "gene index"))
    for data, cls, offset, words in cases:
        p = _corrupt(tmp_path, data)
        with pytest.raises(cls, match=words or None) as info:
            _read_all(p)
        assert isinstance(info.value, ValueError) and isinstance(info.value, mio.MMMFormatError)
        if offset is not None:
            assert info.value.offset == offset and f"byte offset {offset}" in str(info.value)
        assert str(p) in str(info.value)
    # an implausible genes_count: rows still read raw, but no AnnData with billions of gene names
    b = _vector()
    b[52:56] = (2**30).to_bytes(4, "little")
    p = _corrupt(tmp_path, b)
    with mio.MMMatrix(p) as m:
        assert m.read_rows(0, 3).shape == (3, 2**30)
    with pytest.raises(mio.MMMFormatError, match="implausibly large") as info:
        mio.read_mmmatrix(p)
    assert info.value.offset == 52
    p = _corrupt(tmp_path, cases[-1][0])
    # the gene error names the profile and is raised by the public reader too
    with pytest.raises(mio.MMMGeneIndexError, match="profile 2"):
        mio.read_mmmatrix(p)
    with mio.MMMatrix(p) as m:  # rows before the bad one still read
        assert _same(m.read_rows(0, 2), _expected("worked_example")[:2])


@pytest.mark.parametrize(
    ("values", "words"),
    [
        (np.array([[1, -2]]), "negative"),
        (np.array([[1.5, 2]]), "non-integer"),
        (np.array([[np.nan, 2]]), "NaN"),
        (np.array([[np.inf, 2]]), "NaN or infinite"),
        (np.array([[2**31, 2]], dtype=np.int64), "exceeds"),
        (np.array([[2**40, 2]], dtype=np.uint64), "exceeds"),
        (np.array([["a", "b"]]), "dtype"),
    ],
)
def test_write_rejects_bad_values_before_writing(tmp_path, values, words):
    path = tmp_path / "m.mmm"
    path.write_bytes(b"previous")
    with pytest.raises(mio.MMMWriteError, match=words):
        mio.write_mmmatrix(path, values)
    with pytest.raises(mio.MMMWriteError, match=words):
        mio.write_mmmatrix(path, sp.csr_matrix(values) if values.dtype.kind != "U" else values)
    assert path.read_bytes() == b"previous"
    assert sorted(os.listdir(tmp_path)) == ["m.mmm"]


def test_write_bad_values_in_later_dense_block(tmp_path, monkeypatch):
    from scmetacell.io import _writer

    monkeypatch.setattr(_writer, "_BLOCK_NNZ", 10)  # 1 row per block
    X = np.ones((5, 10))
    X[4, 3] = -1
    with pytest.raises(mio.MMMWriteError, match=r"rows 4:5"):
        mio.write_mmmatrix(tmp_path / "m.mmm", X)
    assert not list(tmp_path.iterdir())


def test_pieces_and_blocks_give_the_same_bytes(pancreas, tmp_path, monkeypatch):
    from scmetacell.io import _writer

    X = pancreas.X[:400]
    mio.write_mmmatrix(tmp_path / "a.mmm", X)
    monkeypatch.setattr(_writer, "_PIECE_BYTES", 37)  # encode a few rows at a time
    monkeypatch.setattr(_writer, "_BLOCK_NNZ", 5000)  # dense input: 2 rows per block
    mio.write_mmmatrix(tmp_path / "b.mmm", X)
    mio.write_mmmatrix(tmp_path / "c.mmm", X.toarray())
    mio.write_mmmatrix(tmp_path / "d.mmm", X.toarray(), _shard_bytes=9000)
    a = (tmp_path / "a.mmm").read_bytes()
    assert (tmp_path / "b.mmm").read_bytes() == a == (tmp_path / "c.mmm").read_bytes()
    assert _same(mio.read_mmmatrix(tmp_path / "d.mmm").X, X)


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    from scmetacell.io import _writer

    path = tmp_path / "m.mmm"
    mio.write_mmmatrix(path, np.eye(4, dtype=int))
    before = path.read_bytes()

    def boom(f, *args, **kwargs):
        f.write(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(_writer, "_write_shard", boom)  # dense input
    monkeypatch.setattr(_writer, "_write_encoded", boom)  # in-memory sparse input
    with pytest.raises(KeyboardInterrupt):
        mio.write_mmmatrix(path, np.eye(5, dtype=int))
    with pytest.raises(KeyboardInterrupt):
        mio.write_mmmatrix(path, np.eye(5, dtype=int), _shard_bytes=70)
    with pytest.raises(KeyboardInterrupt):
        mio.write_mmmatrix(tmp_path / "new.mmm", np.eye(5, dtype=int))
    with pytest.raises(KeyboardInterrupt):
        mio.write_mmmatrix(tmp_path / "new.mmm", sp.eye(5, format="csr", dtype=int), _shard_bytes=70)
    with pytest.raises(KeyboardInterrupt):
        mio.write_mmmatrix(path, sp.eye(5, format="csr", dtype=int))
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["m.mmm"]


def test_encoder_buffer_growth(tmp_path):
    # large values and wide gaps need more than 2 bytes per non-zero: the one-pass encoder grows its buffer
    rng = np.random.default_rng(3)
    X = np.zeros((40, 3000), dtype=np.int64)
    X[rng.integers(0, 40, 200), rng.integers(0, 3000, 200)] = rng.integers(1, 5000, 200)
    mio.write_mmmatrix(tmp_path / "g.mmm", sp.csr_matrix(X))
    assert (tmp_path / "g.mmm").read_bytes() == ref.ref_encode(X)


def test_largest_value_round_trip(tmp_path):
    X = sp.csr_matrix(np.array([[0, 2**31 - 1, 3]], dtype=np.int64))
    path = tmp_path / "big.mmm"
    mio.write_mmmatrix(path, X)
    data = 2 * (-(-(2**31 - 1) // 255) + 1)  # ceil(v / 255) pairs, plus one for the 3
    assert path.stat().st_size == 56 + data + (-data % 4) + 8
    assert mio.read_mmmatrix(path).X.toarray().tolist() == [[0, 2**31 - 1, 3]]


# ---- hypothesis: round trips and the naive reference ---------------------------------------------------


@st.composite
def count_matrices(draw):
    n = draw(st.integers(0, 6))
    g = draw(st.integers(0, 1200))
    X = np.zeros((n, g), dtype=np.int64)
    if n and g:
        k = draw(st.integers(0, 3 * n))
        rows = draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k))
        cols = draw(st.lists(st.integers(0, g - 1), min_size=k, max_size=k))
        vals = draw(
            st.lists(
                st.one_of(st.integers(1, 300), st.sampled_from([255, 256, 510, 511, 765, 766, 70000])),
                min_size=k,
                max_size=k,
            )
        )
        X[rows, cols] = vals
    return X


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(X=count_matrices())
def test_hypothesis_round_trip(tmp_path, X):
    path = tmp_path / "h.mmm"
    mio.write_mmmatrix(path, sp.csr_matrix(X))
    raw = path.read_bytes()
    assert raw == ref.ref_encode(X)
    back = mio.read_mmmatrix(path)
    np.testing.assert_array_equal(back.X.toarray(), X)


@st.composite
def pair_streams(draw):
    """Valid but arbitrary (non-canonical) files: any pairs that keep genes < G."""
    g = draw(st.integers(1, 700))
    n = draw(st.integers(0, 5))
    streams = []
    for _ in range(n):
        out = bytearray()
        gene = 0
        for d, v in draw(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)), max_size=12)):
            if gene + d >= g:
                d = 0
            gene += d
            out += bytes((d, v))
        streams.append(bytes(out))
    relative = draw(st.booleans())
    data = b"".join(streams)
    base = 0 if relative else 56
    offsets = np.cumsum([base] + [len(s) for s in streams]).astype("<u4")
    pad = b"\x00" * (-len(data) % 4)
    header = ref.MAGIC + np.array([n, g], dtype="<u4").tobytes()
    return header + data + pad + offsets.tobytes()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(raw=pair_streams())
def test_hypothesis_reader_matches_reference(tmp_path, raw):
    path = tmp_path / "s.mmm"
    path.write_bytes(raw)
    expected = ref.ref_decode(raw)
    assert expected is not None
    with mio.MMMatrix(path) as m:
        got = m.to_csr()
        assert _same(got, expected)
        assert m.entries_count() == expected.nnz
    # re-encoding canonically gives the reference encoding of the decoded matrix
    out = tmp_path / "c.mmm"
    mio.write_mmmatrix(out, got)
    assert out.read_bytes() == ref.ref_encode(expected.toarray())


# ---- integration ---------------------------------------------------------------------------------------


def test_mmm_source_and_as_source(pbmc3k, tmp_path):
    path = tmp_path / "batch"
    mio.write_mmm_container(path, pbmc3k)
    with as_source(path) as whole:  # the batch directory: its UMIs
        assert isinstance(whole, MMMSource) and whole.shape == pbmc3k.shape
    src = as_source(path / "gp.umis.mmm")
    assert isinstance(src, MMMSource) and src.shape == pbmc3k.shape
    assert (src.obs_names == pbmc3k.obs_names).all() and (src.var_names == pbmc3k.var_names).all()
    idx = np.array([2699, 5, 5, 0, 1234])
    assert _same(src.take(idx), pbmc3k.X[idx])
    parts = [c for _, _, c in src.iter_chunks(1000, progress=False)]
    assert _same(sp.vstack(parts), pbmc3k.X)
    src.close()
    shards = tmp_path / "sharded"
    mio.write_mmmatrix(shards, pbmc3k, _shard_bytes=500_000)
    with as_source(str(shards)) as s2, mio.open_mmm(shards) as m:
        assert isinstance(s2, MMMSource) and _same(s2.read_rows(100, 2000), pbmc3k.X[100:2000])
        assert as_source(m).matrix is m
    with pytest.raises(ValueError, match="layer"):
        as_source(shards, layer="counts")


@pytest.mark.parametrize("kind", ["csr_array", "coo_array", "coo_matrix", "csc_array"])
def test_other_sparse_inputs(pancreas, tmp_path, kind):
    X = pancreas.X[:200]
    ref_path = tmp_path / "ref.mmm"
    mio.write_mmmatrix(ref_path, X)
    other = getattr(sp, kind)(X)
    path = tmp_path / "o.mmm"
    mio.write_mmmatrix(path, other)
    assert path.read_bytes() == ref_path.read_bytes()


def test_pickle_reopens(kang, tmp_path):
    import pickle

    X = kang.X[:50]
    mio.write_mmmatrix(tmp_path / "a.mmm", X)
    mio.write_mmmatrix(tmp_path / "b.mmm", X, _shard_bytes=4000)
    for p in ("a.mmm", "b.mmm"):
        with mio.open_mmm(tmp_path / p) as m:
            clone = pickle.loads(pickle.dumps(m))
            assert type(clone) is type(m) and _same(clone.read_rows(3, 40), X[3:40])
            clone.close()


def test_import_compiles_nothing():
    code = "import sys, scmetacell; print('scmetacell.io._codec' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_public_exports():
    for name in ("read_mmmatrix", "write_mmmatrix", "MMMatrix", "MMMCollection", "open_mmm"):
        assert name in scm.io.__all__
    assert issubclass(mio.MMMGeneIndexError, mio.MMMFormatError) and issubclass(
        mio.MMMFormatError, ValueError
    )
