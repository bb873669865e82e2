"""MetaCell-2 (``metacells``) runner: target size gamma cells (and gamma x median cell UMIs).

MC2 cannot be asked for a number of metacells; we set ``target_metacell_size = gamma`` and
``target_metacell_umis = gamma * median UMIs per cell`` so that both of its size targets agree, and
``min_metacell_size = min(12, gamma // 2)``. All cells are kept (no ``exclude_cells``: every method gets the
same cells); genes with no UMI are dropped (MC2 requires it). Ribosomal genes are marked lateral
(``RP[LS]`` by name, as in MC2's vignette); no noisy genes. Deviant cells come back as ``-1``.
"""

from __future__ import annotations

import time

import _runner_io as rio

args = rio.parse_args(__doc__)

t0 = time.perf_counter()
import anndata as ad  # noqa: E402
import metacells as mc  # noqa: E402
import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

adata = ad.read_h5ad(args.input)
cells = adata.obs_names.copy()
X = sp.csr_matrix(adata.X, dtype=np.float32)
keep = np.asarray(X.sum(axis=0)).ravel() > 0
adata = ad.AnnData(X[:, keep], obs=adata.obs[[]], var=adata.var[[]].iloc[keep])
adata.var_names_make_unique()
mc.ut.set_name(adata, "bench")
umis = np.asarray(adata.X.sum(axis=1)).ravel()
gamma = max(1, round(args.gamma))
mc.pl.mark_lateral_genes(adata, lateral_gene_patterns=["RP[LS].*", "Rp[ls].*"])
mc.pl.mark_noisy_genes(adata, noisy_gene_names=[])
mc.pl.divide_and_conquer_pipeline(
    adata,
    target_metacell_size=gamma,
    target_metacell_umis=int(gamma * float(np.median(umis))),
    min_metacell_size=max(1, min(12, gamma // 2)),
    random_seed=args.seed + 1,  # 0 means "not reproducible" in MC2
)
labels = np.asarray(adata.obs["metacell"]).astype(np.int64)
wall = time.perf_counter() - t0
rio.write_outputs(
    args.out,
    cells,
    np.where(labels < 0, -1, labels),
    wall_s=wall,
    version=mc.__version__ if hasattr(mc, "__version__") else "",
    notes=f"target_metacell_size={gamma}",
)
