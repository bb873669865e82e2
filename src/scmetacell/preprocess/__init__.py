"""Streamed model inputs, one modality at a time (the step between the data and the model).

- RNA (:mod:`._rna`): library sizes and gene statistics (:func:`scan_cells`), HVGs (:func:`select_hvg`),
  z-scored log-normalized HVG rows (:class:`HVGNormalizer`, :func:`fit_hvg_stats`) and their PCA
  (:func:`streamed_pca`), chunk by chunk.
- Large inputs (:mod:`._sample`): the training sample (:class:`SampledNormalizer`,
  :func:`training_sample`) and read-ahead of chunks (:func:`prefetched_rows`).
- Several modalities (:mod:`._modalities`): each modality's fixed embedding and decoder target
  (:func:`rna_input`, :func:`adt_input`, :func:`atac_input`), weighed against each other
  (:func:`weigh_modalities`); new cells with the training transform (:func:`embed_new_cells`).

Imports ``data`` only; no torch.
"""

from ._modalities import (
    DEFAULT_TOP_PEAKS,
    ModalityInput,
    adt_input,
    atac_input,
    binarize,
    clr,
    embed_new_cells,
    rna_input,
    tfidf,
    weigh_modalities,
)
from ._rna import (
    GENE_SCALINGS,
    TARGET_SUM,
    HVGNormalizer,
    ScanResult,
    check_gene_scaling,
    check_lognorm_block,
    fit_hvg_stats,
    lognormalize,
    scan_cells,
    select_hvg,
    streamed_pca,
    two_view_pca,
)
from ._sample import SampledNormalizer, prefetched_rows, training_sample

__all__ = [
    "DEFAULT_TOP_PEAKS",
    "GENE_SCALINGS",
    "TARGET_SUM",
    "HVGNormalizer",
    "ModalityInput",
    "SampledNormalizer",
    "ScanResult",
    "adt_input",
    "atac_input",
    "binarize",
    "check_gene_scaling",
    "check_lognorm_block",
    "clr",
    "embed_new_cells",
    "fit_hvg_stats",
    "lognormalize",
    "prefetched_rows",
    "rna_input",
    "scan_cells",
    "select_hvg",
    "streamed_pca",
    "tfidf",
    "training_sample",
    "two_view_pca",
    "weigh_modalities",
]
