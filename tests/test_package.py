from __future__ import annotations

import json
import logging
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import scmetacell as scm

ROOT = Path(__file__).resolve().parents[1]


def test_import_does_not_load_torch_or_lightning():
    code = (
        "import sys, json; import scmetacell; "
        "print(json.dumps([m for m in ('torch', 'lightning', 'pytorch_lightning') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_default_call_is_untrained_and_does_not_load_lightning():
    # the default train_epoch=0 needs no Trainer: lightning (about 2 s to import) stays unloaded, and the
    # result says why
    code = (
        "import sys, json, numpy as np, scipy.sparse as sp, anndata as ad; import scmetacell as scm\n"
        "rng = np.random.default_rng(0)\n"
        "a = ad.AnnData(sp.csr_matrix(rng.poisson(1.0, (300, 400)).astype(np.float32)))\n"
        "mc = scm.tl.metacell(a, n_metacell=20, progress=False, n_top_genes=200)\n"
        "d = mc.uns['metacell']['diagnostics']\n"
        "print(json.dumps(['lightning' in sys.modules, d['stop_reason'], int(d['epochs_run']), "
        "int(a.obs['metacell'].nunique()), int(mc.uns['metacell']['params']['train_epoch'])]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    loaded, reason, epochs, n, train_epoch = json.loads(out.stdout.strip().splitlines()[-1])
    assert (loaded, epochs, n, train_epoch) == (False, 0, 20, 0)
    assert reason == "train_epoch=0: no training"


def test_untrained_call_still_checks_trainer_kwargs(pbmc3k):
    small = pbmc3k[:300].copy()
    with pytest.raises(TypeError, match="not_a_trainer_keyword"):
        scm.tl.metacell(
            small, n_metacell=10, train_epoch=0, progress=False, trainer_kwargs={"not_a_trainer_keyword": 1}
        )
    assert "metacell" not in small.obs


def test_import_changes_no_global_state():
    # import the dependencies first, then check that importing scmetacell adds nothing on top
    code = (
        "import logging, warnings, sys, json\n"
        "import scanpy, anndata, mudata, scipy.sparse, pandas, matplotlib\n"
        "def state():\n"
        "    root = logging.getLogger()\n"
        "    return [root.level, len(root.handlers), [str(f) for f in warnings.filters]]\n"
        "before = state()\n"
        "import scmetacell\n"
        "print(json.dumps([before, state()]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    before, after = json.loads(out.stdout.strip().splitlines()[-1])
    assert before == after


def test_public_namespaces():
    for name in ("pp", "tl", "pl", "io", "datasets"):
        mod = getattr(scm, name)
        for fn in getattr(mod, "__all__", []):
            assert callable(getattr(mod, fn)) or isinstance(getattr(mod, fn), type), (name, fn)
    assert scm.__version__


def test_pbmc3k_bundled(pbmc3k):
    assert pbmc3k.shape == (2700, 32738)
    X = pbmc3k.X
    assert np.issubdtype(X.dtype, np.integer) or np.all(np.mod(X.data, 1) == 0)
    assert X.sum() == 6_390_631
    assert pbmc3k.obs["cell_type"].nunique(dropna=True) == 9
    assert pbmc3k.obs["cell_type"].isna().sum() == 62
    assert int(pbmc3k.var["mt"].sum()) == 13


def test_pbmc3k_matches_shared_copy(pbmc3k, shared_dir):
    import anndata as ad

    ref = ad.read_h5ad(shared_dir / "data" / "pbmc3k_raw_labeled.h5ad")
    assert (ref.obs_names == pbmc3k.obs_names).all()
    assert (ref.var_names == pbmc3k.var_names).all()
    assert (ref.X != pbmc3k.X).nnz == 0


def test_readme_has_two_setup_commands_and_ci_runs_the_test_one():
    text = (ROOT / "README.md").read_text()
    assert text.count("<!-- demo-command -->") == 1
    assert text.count("<!-- test-command -->") == 1
    ci = (ROOT / ".ci" / "run").read_text()
    assert "torch==2.13.0" in ci and "test-command" in ci


def test_progress_helper_respects_settings(capsys):
    from scmetacell._progress import progress_enabled, track

    assert progress_enabled(False) is False
    assert progress_enabled(True) is True
    old = scm.settings.progress_bar
    try:
        scm.settings.progress_bar = False
        assert progress_enabled() is False
        assert list(track(range(3))) == [0, 1, 2]
        scm.settings.progress_bar = True
        assert progress_enabled() is True
    finally:
        scm.settings.progress_bar = old


def test_quiet_lightning_restores_state():
    from scmetacell._logging import quiet_lightning

    lg = logging.getLogger("lightning.pytorch")
    level = lg.level
    n_filters = len(warnings.filters)
    with quiet_lightning():
        assert lg.level >= logging.WARNING
    assert lg.level == level
    assert len(warnings.filters) == n_filters


def test_pynndescent_guard(monkeypatch):
    import scmetacell._compat as compat

    monkeypatch.setattr(compat, "version", lambda name: "0.7.0")
    msg = compat.check_pynndescent()
    assert msg is not None and "pynndescent<0.7" in msg
    monkeypatch.setattr(compat, "version", lambda name: "0.5.13")
    assert compat.check_pynndescent() is None


def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "scmetacell.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0
    assert "demo" in out.stdout


@pytest.mark.parametrize("bad", [["nonsense"], []])
def test_cli_rejects_bad_arguments(bad):
    out = subprocess.run([sys.executable, "-m", "scmetacell.cli", *bad], capture_output=True, text=True)
    assert out.returncode != 0
