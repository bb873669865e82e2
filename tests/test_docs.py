from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import scmetacell as scm

ROOT = Path(__file__).resolve().parents[1]


def test_sphinx_builds_with_warnings_as_errors(tmp_path):
    cmd = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-q"]
    out = subprocess.run(
        [*cmd, str(ROOT / "docs"), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    assert (tmp_path / "index.html").exists()
    assert (tmp_path / "api.html").exists()


def _public_functions():
    for ns in ("pp", "tl", "pl", "io", "datasets"):
        mod = getattr(scm, ns)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isfunction(obj):
                yield f"{ns}.{name}", obj


@pytest.mark.parametrize(("name", "fn"), list(_public_functions()))
def test_public_function_documented(name, fn):
    doc = inspect.getdoc(fn) or ""
    assert doc, f"{name} has no docstring"
    for section in ("Parameters", "Returns", "Examples"):
        if section == "Parameters" and not inspect.signature(fn).parameters:
            continue
        assert f"\n{section}\n" in "\n" + doc, f"{name}: docstring lacks a {section} section"


def test_api_page_lists_every_public_function():
    api = (ROOT / "docs" / "api.md").read_text()
    missing = [name for name, _ in _public_functions() if name not in api]
    assert not missing, f"docs/api.md does not list {missing}"
