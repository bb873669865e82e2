"""The 10x Genomics PBMC 3k dataset, raw counts with the Seurat-tutorial cell types."""

from __future__ import annotations

from importlib.resources import as_file, files

import anndata as ad

_FILE = "pbmc3k_raw_labeled.h5ad"


def pbmc3k() -> ad.AnnData:
    """2,700 peripheral blood mononuclear cells (PBMCs) of a healthy donor, raw UMI counts.

    Shipped inside the package (gzip-compressed ``.h5ad``), so no download is needed.

    Returns
    -------
    AnnData of 2,700 cells × 32,738 genes with

    - ``X``: raw UMI counts (CSR, int32), total 6,390,631 UMIs;
    - ``obs['cell_type']``: the 9 cell types of the Seurat PBMC 3k tutorial (categorical; NaN for the
      62 cells that tutorial's QC removed), ``obs['passed_seurat_qc']``, ``obs['sample']``;
    - ``var['gene_ids']`` (Ensembl) and ``var['mt']`` (the 13 ``MT-`` genes);
    - ``uns['source']``: provenance.

    Notes
    -----
    Source: 10x Genomics, "3k PBMCs from a healthy donor" (v1 chemistry, Cell Ranger 1.1.0, hg19,
    ``filtered_gene_bc_matrices``), licensed under CC BY 4.0. Cell-type labels: the Seurat PBMC 3k
    guided-clustering tutorial annotation.

    Examples
    --------
    >>> import scmetacell as scm
    >>> adata = scm.datasets.pbmc3k()
    >>> adata.shape
    (2700, 32738)
    """
    with as_file(files(__package__).joinpath("_data", _FILE)) as path:
        adata = ad.read_h5ad(path)
    return adata
