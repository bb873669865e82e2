"""Every public function's (and class's) docstring example runs and prints what it says."""

from __future__ import annotations

import doctest
import inspect

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pytest

import scmetacell as scm

NAMESPACES = ("pp", "tl", "pl", "io", "datasets")
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _public_objects():
    for ns in NAMESPACES:
        mod = getattr(scm, ns)
        for name in getattr(mod, "__all__", []):
            obj = getattr(mod, name)
            if inspect.isfunction(obj) or inspect.isclass(obj):
                yield f"{ns}.{name}", obj


PUBLIC = dict(_public_objects())


def _examples(name: str, obj) -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(recurse=inspect.isclass(obj))
    tests = finder.find(obj, name, globs={}, module=False)
    return [t for t in tests if t.examples]


@pytest.mark.parametrize("name", sorted(PUBLIC))
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    obj = PUBLIC[name]
    tests = _examples(name, obj)
    if inspect.isfunction(obj):
        assert tests, f"{name}: the docstring has no example (>>>)"
    monkeypatch.chdir(tmp_path)  # examples that write files write them here
    monkeypatch.setattr(scm.settings, "progress_bar", False)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    try:
        for test in tests:
            runner.run(test)
    finally:
        plt.close("all")
    result = runner.summarize(verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed"
    if inspect.isfunction(obj):
        assert result.attempted > 0, f"{name}: no example was run"


def test_public_objects_are_found():
    """The parametrisation is not silently empty (e.g. an ``__all__`` renamed)."""
    assert {"tl.metacell", "pp.exclude_nonexisting", "pl.embedding_multi", "io.write_mmmatrix"} <= set(PUBLIC)
