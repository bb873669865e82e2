from __future__ import annotations

import re
from pathlib import Path

import matplotlib

ROOT = Path(__file__).resolve().parents[1]


def test_readme_notebook_example_runs(monkeypatch, tmp_path):
    """The README's notebook example is real code: run it as written."""
    matplotlib.use("Agg")
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "README.md has no python example"
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "README.md", "exec"), namespace)
    mc = namespace["mc"]
    adata = namespace["adata"]
    assert "metacell" in adata.obs
    assert mc.n_obs == round(adata.n_obs / 10)
    assert int(mc.obs["n_cells"].sum()) == adata.n_obs
