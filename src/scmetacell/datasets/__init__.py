"""Bundled real datasets (and a synthetic multimodal one built from them)."""

from ._pbmc3k import pbmc3k
from ._synthetic_multimodal import pbmc3k_citeseq_like

__all__ = ["pbmc3k", "pbmc3k_citeseq_like"]
