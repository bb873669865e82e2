"""Execute the tutorial notebooks on small settings so they cannot rot.

The first code cell of a tutorial holds its settings (``GAMMA``, ``MAX_EPOCHS`` ...); the test inserts a cell
right after it that overrides them with small values, then runs every cell with :mod:`nbclient` in a kernel of
the running interpreter (the same environment as the tests). Any cell error fails the test.

Run as a script to execute the tutorials with their full settings and store the outputs in place::

    PYTHONPATH=src python tests/test_tutorials.py [tutorials/metacell.ipynb ...]
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TUTORIALS = ROOT / "tutorials"

#: small settings per tutorial: the values replace those of the notebook's first code cell
SMALL = {
    "metacell.ipynb": {
        "GAMMA": 20,
        "MAX_EPOCHS": 2,
        "N_CELLS": 800,
        "KANG_N_CELLS": 1200,
    },
}


def _kernel_env(tmp: Path) -> dict[str, str]:
    """Environment whose ``python3`` kernel is this interpreter, with ``src`` importable."""
    spec = tmp / "kernels" / "python3"
    spec.mkdir(parents=True)
    argv = [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"]
    (spec / "kernel.json").write_text(
        json.dumps({"argv": argv, "display_name": "Python 3", "language": "python"})
    )
    env = {"JUPYTER_PATH": str(tmp), "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    src = str(ROOT / "src")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p)
    return env


def _literal(value: object) -> str:
    """Python source of ``value`` (paths as ``Path(...)``, which the notebooks import)."""
    return f"Path({str(value)!r})" if isinstance(value, Path) else repr(value)


def execute(path: Path, overrides: dict[str, object] | None = None, *, timeout: int = 1200):
    """Execute the notebook at ``path`` (cwd = its folder); return the executed notebook.

    ``overrides`` are assigned in a cell inserted after the first code cell.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    if overrides:
        first = next(i for i, c in enumerate(nb.cells) if c.cell_type == "code")
        src = "\n".join(f"{k} = {_literal(v)}" for k, v in overrides.items())
        nb.cells.insert(first + 1, nbformat.v4.new_code_cell(src))
    with tempfile.TemporaryDirectory() as tmp:
        env = _kernel_env(Path(tmp))
        old = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            client = NotebookClient(
                nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
            )
            client.execute()
        finally:
            for k, v in old.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return nb


@pytest.mark.parametrize("name", sorted(SMALL))
def test_tutorial_executes(name, tmp_path):
    path = TUTORIALS / name
    # nbclient raises CellExecutionError when a cell fails
    nb = execute(path, {**SMALL[name], "OUT_DIR": tmp_path / "out"})
    assert (tmp_path / "out").is_dir()
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")


def test_tutorials_are_stored_executed():
    """The docs show the stored outputs: every code cell has run, in order, and no cell stored an error."""
    import nbformat

    for path in sorted(TUTORIALS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        counts = [c.execution_count for c in nb.cells if c.cell_type == "code"]
        assert all(counts), f"{path.name}: a code cell was not executed"
        assert counts == sorted(counts), f"{path.name}: cells were executed out of order"
        for c in nb.cells:
            for out in c.get("outputs", []):
                assert out.output_type != "error", f"{path.name}: a stored output is an error"


def test_small_settings_name_real_parameters():
    """The overridden names exist in the tutorial's first code cell (a renamed setting would go unnoticed)."""
    import nbformat

    for name, params in SMALL.items():
        nb = nbformat.read(TUTORIALS / name, as_version=4)
        first = next(c for c in nb.cells if c.cell_type == "code").source
        for key in params:
            assert f"\n{key} = " in "\n" + first, f"{name}: {key} is not set in the first code cell"


if __name__ == "__main__":
    import nbformat

    for arg in sys.argv[1:] or sorted(str(p) for p in TUTORIALS.glob("*.ipynb")):
        p = Path(arg).resolve()
        executed = execute(p)
        nbformat.write(executed, p)
        print(f"executed {p}")
