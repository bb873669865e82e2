"""Sphinx configuration for scmetacell."""

from __future__ import annotations

import sys
from datetime import date
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

project = "scmetacell"
author = "scmetacell developers"
copyright = f"{date.today().year}, {author}"
release = _version("scmetacell")

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx_autodoc_typehints",
]

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "undoc-members": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = True
napoleon_use_param = True
typehints_defaults = "braces"
always_document_param_types = False
typehints_document_rtype = True

myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3
# Tutorials are stored executed: the docs show their outputs; a test executes them so they cannot rot.
nb_execution_mode = "off"
nb_merge_streams = True

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]

# No intersphinx: CI and build machines have no network, and -W turns a failed inventory fetch into an error.
nitpicky = False
suppress_warnings = ["config.cache", "myst.header"]

html_theme = "furo"
html_title = "scmetacell"
html_static_path = ["_static"]
