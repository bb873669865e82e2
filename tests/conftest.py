from __future__ import annotations

from pathlib import Path

import anndata as ad
import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
DATA = SHARED / "data"


def _read(name: str) -> ad.AnnData:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"real dataset {path} not found (expected ../shared/data beside the repository)")
    return ad.read_h5ad(path)


@pytest.fixture(scope="session")
def _pbmc3k_cached():
    import scmetacell as scm

    return scm.datasets.pbmc3k()


@pytest.fixture
def pbmc3k(_pbmc3k_cached):
    """The bundled PBMC 3k (a fresh copy per test)."""
    return _pbmc3k_cached.copy()


@pytest.fixture(scope="session")
def _pancreas_cached():
    return _read("mouse_pancreas_endocrinogenesis_raw.h5ad")


@pytest.fixture
def pancreas(_pancreas_cached):
    return _pancreas_cached.copy()


@pytest.fixture(scope="session")
def _kang_cached():
    return _read("kang2018_pbmc_5donors_raw.h5ad")


@pytest.fixture
def kang(_kang_cached):
    return _kang_cached.copy()


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.exists():
        pytest.skip("../shared not found")
    return SHARED
