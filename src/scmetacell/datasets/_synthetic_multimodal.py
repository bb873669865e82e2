"""PBMC 3k RNA paired with a SYNTHETIC protein (ADT) modality, for testing multimodal metacells."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._pbmc3k import pbmc3k

# protein name -> gene whose RNA drives it (real CITE-seq panel antigens and their genes)
ADT_PANEL: dict[str, str] = {
    "CD3": "CD3E",
    "CD4": "CD4",
    "CD8": "CD8A",
    "CD14": "CD14",
    "CD16": "FCGR3A",
    "CD19": "CD19",
    "CD20": "MS4A1",
    "CD56": "NCAM1",
    "CD127": "IL7R",
    "CD45": "PTPRC",
    "HLA-DR": "HLA-DRA",
    "CD11c": "ITGAX",
    "CD27": "CD27",
    "CD62L": "SELL",
    "CCR7": "CCR7",
    "CD2": "CD2",
}
# cell types split into two synthetic subtypes that differ only in these ADT markers (not in RNA)
SPLIT_TYPES: tuple[str, ...] = ("B", "CD14+ Mono")
SYNTHETIC_MARKERS: tuple[tuple[str, str], tuple[str, str]] = (("synA-1", "synA-2"), ("synB-1", "synB-2"))


def pbmc3k_citeseq_like(*, seed: int = 0) -> Any:
    """PBMC 3k with a **synthetic** protein modality: a CITE-seq-like MuData for multimodal metacells.

    The RNA is real (PBMC 3k, :func:`scmetacell.datasets.pbmc3k`, the 2,638 cells with a cell type); the
    ADT modality is **simulated** from it: no real paired protein data is available here. Each of 16
    panel proteins (``CD3-ADT`` … ``CD2-ADT``) follows the RNA of its gene (70 % the cell type's mean
    expression, 30 % the cell's own) on top of an ambient background, with gamma noise and a per-cell ADT
    library size (negative-binomial-like counts). In addition, the cells of ``'B'`` and ``'CD14+ Mono'``
    are split at random into two synthetic subtypes (``'<type> a'`` / ``'<type> b'``) that differ ONLY in
    four synthetic markers (``synA-1-ADT``, ``synA-2-ADT`` high in subtype a; ``synB-1-ADT``,
    ``synB-2-ADT`` in subtype b): their RNA is identical in distribution, so these states are separable
    only with the protein modality.

    Parameters
    ----------
    seed
        Seeds the simulation (the subtype split and the protein counts).

    Returns
    -------
    :class:`~mudata.MuData` with modalities

    - ``'rna'``: 2,638 cells × 32,738 genes, raw UMI counts in ``X`` (real);
    - ``'adt'``: 2,638 cells × 20 proteins, raw counts in ``X`` (int32 CSR; synthetic),
      ``var['gene']`` = the driving gene (``''`` for the synthetic markers), ``var['synthetic_only']``;

    and in both modalities' ``obs`` and in ``mdata.obs``: ``cell_type`` (the real annotation) and
    ``subtype`` (cell type, with the two split types replaced by their synthetic subtypes).
    ``uns['source']`` describes the simulation.

    Examples
    --------
    >>> import scmetacell as scm
    >>> mdata = scm.datasets.pbmc3k_citeseq_like()
    >>> mdata.mod["adt"].shape
    (2638, 20)
    >>> int((mdata.obs["subtype"] == "B a").sum()) > 100
    True
    """
    import mudata as md
    from anndata import AnnData

    rng = np.random.default_rng(seed)
    rna = pbmc3k()
    rna = rna[rna.obs["cell_type"].notna()].copy()
    ct = rna.obs["cell_type"].astype(str).to_numpy()
    n = rna.n_obs

    # synthetic subtypes: a random half of each split type
    sub = ct.astype(object).copy()
    is_a = rng.random(n) < 0.5
    for t in SPLIT_TYPES:
        m = ct == t
        sub[m & is_a] = f"{t} a"
        sub[m & ~is_a] = f"{t} b"

    # RNA-driven proteins
    genes = list(ADT_PANEL.values())
    x = rna[:, genes].X
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    lib = np.asarray(rna.X.sum(axis=1)).ravel()
    cp10k = x / lib[:, None] * 1e4
    types = pd.Index(sorted(set(ct)))
    code = types.get_indexer(ct)
    type_mean = np.vstack([cp10k[code == j].mean(0) for j in range(len(types))])
    signal = 0.7 * type_mean[code] + 0.3 * cp10k
    signal = signal / np.maximum(type_mean.max(0), 1e-9)  # ~[0, 1] per protein
    n_prot = len(genes)
    strength = rng.uniform(20, 60, n_prot)  # relative abundance of a fully expressed protein
    background = rng.uniform(1, 3, n_prot)  # ambient antibody
    rel = background + strength * signal

    # synthetic-only markers
    syn = np.ones((n, 4)) * rng.uniform(1, 3, 4)
    split = np.isin(ct, SPLIT_TYPES)
    syn[split & is_a, 0:2] += 30.0
    syn[split & ~is_a, 2:4] += 30.0
    rel = np.hstack([rel, syn])

    noise = rng.gamma(shape=4.0, scale=1 / 4.0, size=rel.shape)
    adt_lib = rng.lognormal(mean=np.log(1500), sigma=0.35, size=n)
    rate = rel * noise
    rate = rate / rate.sum(1, keepdims=True) * adt_lib[:, None]
    counts = rng.poisson(rate).astype(np.int32)

    # "-ADT" suffix: protein names must not collide with gene names (MuData needs unique var names)
    names = [f"{p}-ADT" for p in ADT_PANEL] + [f"{m}-ADT" for pair in SYNTHETIC_MARKERS for m in pair]
    var = pd.DataFrame(
        {"gene": genes + [""] * 4, "synthetic_only": [False] * n_prot + [True] * 4}, index=names
    )
    obs = pd.DataFrame(
        {
            "cell_type": pd.Categorical(ct),
            "subtype": pd.Categorical(sub.astype(str)),
        },
        index=rna.obs_names.copy(),
    )
    adt = AnnData(X=sp.csr_matrix(counts), obs=obs.copy(), var=var)
    rna.obs["subtype"] = obs["subtype"].to_numpy()
    source = (
        "RNA: 10x PBMC 3k (real). ADT: SYNTHETIC, simulated from the RNA by "
        f"scmetacell.datasets.pbmc3k_citeseq_like(seed={seed}); subtypes of {list(SPLIT_TYPES)} are a "
        "random split visible only in the synthetic markers."
    )
    adt.uns["source"] = source
    with md.set_options(pull_on_update=False):
        mdata = md.MuData({"rna": rna, "adt": adt})
    mdata.obs["cell_type"] = obs["cell_type"].reindex(mdata.obs_names)
    mdata.obs["subtype"] = obs["subtype"].reindex(mdata.obs_names)
    mdata.uns["source"] = source
    return mdata
