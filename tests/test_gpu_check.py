"""``benchmarks/gpu_check.sh``: its CPU dry run (tiny sizes) passes and prints the summary."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"
KANG = ROOT.parent / "shared" / "data" / "kang2018_pbmc_5donors_raw.h5ad"


def test_gpu_check_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], check=False).returncode == 0
    out = subprocess.run(["bash", str(SCRIPT), "--help"], capture_output=True, text=True, check=True).stdout
    assert "--dry-run" in out and "10M" in out


@pytest.mark.skipif(not KANG.exists(), reason="needs ../shared/data (Kang 2018)")
def test_gpu_check_dry_run_passes(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    res = subprocess.run(
        ["bash", str(SCRIPT), "--dry-run", "--skip-tests", "--base-cells", "1500", "--epochs", "0",
         "--dir", str(tmp_path)],
        capture_output=True, text=True, env=env, timeout=300, check=False,
    )  # fmt: skip
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-3000:]
    assert "gpu_check summary (dry run on the CPU" in out and "gpu_check: OK" in out
    assert "1500 cells: wall=" in out and "3000 cells: wall=" in out  # the second input: two linked shards
    assert (tmp_path / "cells_3000.mmm" / "mmm_collection.json").is_file()
