"""SEACells runner, following the SEACells tutorial.

Preprocessing as in its tutorial: CP10k, log1p, 1,500 HVGs, 50 PCs (scanpy); then
``SEACells(ad, build_kernel_on="X_pca", n_SEACells=n, n_waypoint_eigs=10, convergence_epsilon=1e-5)``,
``construct_kernel_matrix()``, ``initialize_archetypes()``, ``fit(min_iter=10, max_iter=50)``.

SEACells has no seed: we seed numpy's global generator (its archetype initialisation draws from it).
``tqdm.notebook`` (imported by its kernel code) is aliased to plain ``tqdm`` so no widget is needed. When it
does not converge it raises ``RuntimeWarning`` after labelling the cells: we keep the labels and note it.
"""

from __future__ import annotations

import sys
import time

import _runner_io as rio

args = rio.parse_args(__doc__, [("--max-iter", {"type": int, "default": 50})])

t0 = time.perf_counter()
import tqdm.std  # noqa: E402

sys.modules["tqdm.notebook"] = tqdm.std
import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
import scanpy as sc  # noqa: E402
import SEACells  # noqa: E402

np.random.seed(args.seed)  # noqa: NPY002 - SEACells draws from the global generator
adata = ad.read_h5ad(args.input)
adata.X = adata.X.astype(np.float32)
sc.pp.normalize_total(adata, target_sum=1e4)
sc.pp.log1p(adata)
sc.pp.highly_variable_genes(adata, n_top_genes=min(1500, adata.n_vars))
sc.tl.pca(adata, n_comps=50, mask_var="highly_variable", random_state=args.seed)
model = SEACells.core.SEACells(
    adata,
    build_kernel_on="X_pca",
    n_SEACells=args.n_metacells,
    n_waypoint_eigs=10,
    convergence_epsilon=1e-5,
    verbose=True,
)
model.construct_kernel_matrix()
model.initialize_archetypes()
notes = ""
try:
    model.fit(min_iter=10, max_iter=max(10, args.max_iter))
except RuntimeWarning as err:  # labels are set before it raises
    notes = f"not converged after {args.max_iter} iterations ({err})"
labels = adata.obs["SEACell"].to_numpy()
wall = time.perf_counter() - t0
version = getattr(getattr(SEACells, "version", None), "__version__", "")
rio.write_outputs(args.out, adata.obs_names, labels, wall_s=wall, version=str(version), notes=notes)
