"""Same seed → byte-identical partitions: a guard for refactors that must not change behaviour.

``tests/golden_partitions.json`` holds, for each case below, the sha256 of the cells' metacell codes
(``np.int32`` bytes) computed by ``scm.tl.metacell(..., random_seed=0)``: first on the code before the
structure refactor of issue 17 (commit 396857d; the refactor kept them), then recomputed once for the
intended change of issue 18 (the size floor grows small metacells instead of dissolving them, default
floor 2 cells, kNN-smoothed embeddings), then for the depth coordinate of the assignment space
(``depth_weight=1``; the multimodal case kept its hash), then for the two-view PCA
(``gene_scaling="both"``). Floating-point results depend on the CPU (its model and its vector
extensions: the BLAS and torch kernels differ, e.g. every case changed between two "AMD EPYC" machines,
one with AVX-512 and one with AVX2 only, with the same packages) and on the torch / numpy /
scikit-learn builds, so the file holds one record per
environment and the comparison runs where one matches (the test is skipped elsewhere, naming the
environment), with one torch thread.

Recompute (only for an intended change of the partitions, with the reason in the commit message)::

    .venv/bin/python tests/test_golden_partitions.py --update [case ...]
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path

import numpy as np
import pytest

GOLDEN = Path(__file__).with_name("golden_partitions.json")
DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
KANG = "kang2018_pbmc_5donors_raw.h5ad"
N_MMM = 100_000

# name -> (dataset, keywords of scm.tl.metacell)
CASES: dict[str, tuple[str, dict]] = {
    # trained (train_epoch=30, the default until 2026-12-04): the Lightning training path
    "pbmc3k": ("pbmc3k", {"gamma": 10, "train_epoch": 30}),
    "pancreas": ("mouse_pancreas_endocrinogenesis_raw.h5ad", {"gamma": 20, "train_epoch": 30}),
    "kang": (KANG, {"gamma": 30, "train_epoch": 30}),
    "kang_batch_key": (KANG, {"gamma": 30, "batch_key": "donor", "train_epoch": 30}),
    # defaults (untrained)
    "pbmc3k_defaults": ("pbmc3k", {"gamma": 10}),
    "kang_defaults": (KANG, {"gamma": 30}),
    "citeseq_multimodal": (
        "pbmc3k_citeseq_like",
        {"gamma": 10, "datatypes": ["rna", "adt"], "train_epoch": 3},
    ),
    "mmm_100k": ("kang_resampled_100k.mmm", {"gamma": 20, "train_epoch": 3}),
}


def environment() -> dict[str, str]:
    """What the recorded hashes depend on besides the code."""
    import sklearn
    import torch

    return {
        "machine": platform.machine(),
        "cpu": cpu_model(),
        # the vector units the BLAS and torch kernels dispatch on: CPUs of one model name differ in them
        # (AVX2 vs AVX-512), and their sums round differently
        "simd": simd_flags(),
        "torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "scikit-learn": sklearn.__version__,
    }


def _cpuinfo(field: str) -> str | None:
    """The value of the first ``field`` line of ``/proc/cpuinfo`` (``None`` without one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` where there is none)."""
    return _cpuinfo("model name") or platform.processor() or "unknown"


SIMD = ("avx", "avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16", "amx_tile")


def simd_flags() -> str:
    """The CPU's vector extensions among :data:`SIMD` (``/proc/cpuinfo``; ``"unknown"`` without it)."""
    flags = _cpuinfo("flags")
    if flags is None:
        return "unknown"
    have = set(flags.split())
    return " ".join(f for f in SIMD if f in have)


def label_hash(labels) -> str:
    return hashlib.sha256(np.asarray(labels, dtype=np.int32).tobytes()).hexdigest()


def _resampled_mmm(path: Path) -> Path:
    """100,000 Kang cells drawn with replacement, counts Poisson-resampled (as benchmarks/_synth.py)."""
    import anndata as ad
    import scipy.sparse as sp

    import scmetacell as scm

    ref = ad.read_h5ad(DATA / KANG)
    rng = np.random.default_rng(0)
    x = sp.csr_matrix(ref.X)[rng.integers(0, ref.n_obs, N_MMM)].astype(np.int32)
    x.data = rng.poisson(x.data).astype(np.int32)
    x.eliminate_zeros()
    scm.io.write_mmmatrix(path, x)
    return path


def compute(name: str, tmp_dir: Path) -> dict:
    """Run one case; return its label hash and a few figures."""
    import anndata as ad

    import scmetacell as scm

    dataset, kw = CASES[name]
    kw = {"random_seed": 0, "progress": False, "n_threads": 1, **kw}
    if dataset == "pbmc3k":
        data = scm.datasets.pbmc3k()
    elif dataset == "pbmc3k_citeseq_like":
        data = scm.datasets.pbmc3k_citeseq_like()
    elif dataset.endswith(".mmm"):
        if not (DATA / KANG).exists():
            pytest.skip(f"real dataset {DATA / KANG} not found")
        data = str(_resampled_mmm(tmp_dir / dataset))
    else:
        if not (DATA / dataset).exists():
            pytest.skip(f"real dataset {DATA / dataset} not found")
        data = ad.read_h5ad(DATA / dataset)
    mc = scm.tl.metacell(data, **kw)
    if isinstance(data, str):
        cells = mc.uns["metacell"]["cells"]
        labels = mc.obs_names.get_indexer(np.asarray(cells["metacell"]))
        assert (labels >= 0).all()
    elif "datatypes" in kw:
        labels = data.mod["rna"].obs["metacell"].cat.codes.to_numpy()
    else:
        labels = data.obs["metacell"].cat.codes.to_numpy()
    return {
        "sha256": label_hash(labels),
        "n_cells": len(labels),
        "n_metacells": int(mc.n_obs),
        "keywords": {k: v for k, v in kw.items() if k != "progress"},
    }


def _golden() -> dict:
    """The recorded cases of this environment (skips when none is recorded)."""
    if not GOLDEN.exists():
        pytest.skip(f"{GOLDEN.name} not recorded")
    env = environment()
    for record in json.loads(GOLDEN.read_text())["records"]:
        if record["environment"] == env:
            return record["cases"]
    pytest.skip(f"no golden partitions recorded for this environment {env}")


@pytest.mark.parametrize("name", list(CASES))
def test_same_seed_same_partition(name, tmp_path):
    cases = _golden()
    if name not in cases:
        pytest.skip(f"{name}: not recorded for this environment")
    got = compute(name, tmp_path)
    want = cases[name]
    assert (got["n_cells"], got["n_metacells"]) == (want["n_cells"], want["n_metacells"])
    assert got["sha256"] == want["sha256"], f"{name}: the partition changed for the same seed"


if __name__ == "__main__" and "--update" in sys.argv:  # pragma: no cover - recording
    import tempfile

    names = [a for a in sys.argv[1:] if a in CASES] or list(CASES)  # e.g. --update kang
    records = json.loads(GOLDEN.read_text())["records"] if GOLDEN.exists() else []
    env = environment()
    mine = next((r for r in records if r["environment"] == env), None)
    if mine is None or len(names) == len(CASES):  # a full update replaces this environment's record
        records = [r for r in records if r["environment"] != env]
        mine = {"environment": env, "cases": {}}
        records.append(mine)
    with tempfile.TemporaryDirectory() as d:
        for case in names:
            mine["cases"][case] = compute(case, Path(d))
            print(case, mine["cases"][case], flush=True)
    tmp = GOLDEN.with_suffix(".json.tmp")
    tmp.write_text(json.dumps({"records": records}, indent=1) + "\n")
    tmp.replace(GOLDEN)
