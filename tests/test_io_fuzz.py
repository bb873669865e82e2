"""Mutation fuzz of the .mmm reader: corrupted files raise MMMFormatError or decode like the reference.

Thousands of mutations of the spec vectors run by default; set ``SCMETACELL_FUZZ_N`` for another
count, or ``SCMETACELL_SLOW=1`` to add the 50,000-case ``slow`` test.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from scmetacell import io as mio

_spec = importlib.util.spec_from_file_location(
    "_mmm_reference", Path(__file__).with_name("_mmm_reference.py")
)
ref = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref)

VECTORS = Path(__file__).resolve().parents[1].parent / "shared" / "specs" / "mmm-vectors"


def _seeds() -> list[bytes]:
    if not (VECTORS / "manifest.json").exists():
        pytest.skip("spec vectors not found")
    manifest = json.loads((VECTORS / "manifest.json").read_text())
    return [(VECTORS / e["mmm"]).read_bytes() for e in manifest.values()]


def _mutate(b: bytes, rng: np.random.Generator) -> bytes:
    b = bytearray(b)
    kind = rng.integers(0, 8)
    if kind == 0 and b:  # flip random bytes
        for _ in range(rng.integers(1, 4)):
            b[rng.integers(0, len(b))] = rng.integers(0, 256)
    elif kind == 1:  # truncate
        b = b[: rng.integers(0, len(b) + 1)]
    elif kind == 2:  # append junk
        b += bytes(rng.integers(0, 256, rng.integers(1, 9)).astype(np.uint8))
    elif kind == 3 and len(b) >= 56:  # small change to a header count
        field = 48 if rng.random() < 0.5 else 52
        v = int.from_bytes(b[field : field + 4], "little") + int(rng.integers(-3, 4))
        b[field : field + 4] = (v % 2**32).to_bytes(4, "little")
    elif kind == 4 and len(b) >= 60:  # rewrite one index entry near its value
        n = (len(b) - 56) // 4
        i = len(b) - 4 * int(rng.integers(1, max(2, n)))
        v = int.from_bytes(b[i : i + 4], "little") + int(rng.integers(-5, 6))
        b[i : i + 4] = (v % 2**32).to_bytes(4, "little")
    elif kind == 5 and len(b) > 60:  # corrupt the data area (deltas / values)
        i = int(rng.integers(56, len(b)))
        b[i] = 255 if rng.random() < 0.5 else int(rng.integers(0, 256))
    elif kind == 6 and len(b) >= 56:  # random u32 in the header counts
        field = 48 if rng.random() < 0.5 else 52
        b[field : field + 4] = int(rng.integers(0, 2**32)).to_bytes(4, "little")
    else:  # swap two bytes
        if len(b) > 1:
            i, j = rng.integers(0, len(b), 2)
            b[i], b[j] = b[j], b[i]
    return bytes(b)


def _check_one(path: Path, raw: bytes) -> str:
    path.write_bytes(raw)
    expected = ref.ref_decode(raw)
    try:
        with mio.MMMatrix(path) as m:
            got = m.to_csr()
            rows = m.take(np.arange(m.profiles_count)[::-1]) if m.profiles_count else None
    except mio.MMMFormatError as err:
        assert isinstance(err, ValueError)
        assert expected is None, f"rejected a valid file: {err}"
        assert str(path) in str(err)
        return type(err).__name__
    assert expected is not None, "accepted a malformed file"
    assert got.shape == expected.shape and (got != expected).nnz == 0
    if rows is not None:
        assert (rows != sp.csr_matrix(expected)[::-1]).nnz == 0
    return "ok"


def _run(n: int, seed: int, tmp_path: Path) -> dict[str, int]:
    seeds = _seeds()
    rng = np.random.default_rng(seed)
    path = tmp_path / "fuzz.mmm"
    outcomes: dict[str, int] = {}
    for k in range(n):
        raw = seeds[k % len(seeds)]
        for _ in range(int(rng.integers(1, 3))):
            raw = _mutate(raw, rng)
        try:
            outcome = _check_one(path, raw)
        except AssertionError as err:
            raise AssertionError(f"case {k} (seed {seed}): {err}; bytes={raw.hex()}") from err
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
    return outcomes


def test_mutation_fuzz(tmp_path):
    n = int(os.environ.get("SCMETACELL_FUZZ_N", "3000"))
    outcomes = _run(n, 20261121, tmp_path)
    assert sum(outcomes.values()) == n
    # the mutations reach every kind of check, and some still decode
    for kind in ("ok", "MMMMagicError", "MMMTruncatedError", "MMMIndexError", "MMMGeneIndexError"):
        assert outcomes.get(kind, 0) > 0, outcomes


def test_fuzz_read_mmmatrix_public(tmp_path):
    # the public reader on mutations anywhere but genes_count (a large genes_count is a valid file whose
    # numbered names take long to build; test_mutation_fuzz covers that field through MMMatrix)
    seeds = _seeds()
    rng = np.random.default_rng(7)
    path = tmp_path / "p.mmm"
    for k in range(400):
        raw = bytearray(seeds[k % len(seeds)])
        i = int(rng.integers(0, len(raw) - 4))
        i = i + 4 if 52 <= i < 56 else i
        raw[i] = int(rng.integers(0, 256))
        path.write_bytes(bytes(raw))
        expected = ref.ref_decode(bytes(raw))
        if expected is None:
            with pytest.raises(mio.MMMFormatError):
                mio.read_mmmatrix(path)
        else:
            assert (mio.read_mmmatrix(path).X != expected).nnz == 0


@pytest.mark.slow
@pytest.mark.skipif(not os.environ.get("SCMETACELL_SLOW"), reason="set SCMETACELL_SLOW=1 (about 3 minutes)")
def test_mutation_fuzz_large(tmp_path):
    _run(50_000, 1, tmp_path)
