"""Runner for the methods of the scmetacell environment: ``random``, ``kmeans``, ``scmetacell``,
``scmetacell-trained`` and ``scmetacell-e0``.

``kmeans`` computes its 50 PCs itself (same recipe as the scoring embedding), so its wall time includes
the PCA, like the peers' preprocessing. ``scmetacell`` calls ``scm.tl.metacell(adata, n_metacell=n)`` with
defaults on the raw counts (untrained since the default became ``train_epoch=0``);
``scmetacell-trained`` the same with ``train_epoch=30`` (the former default), so that trained and untrained
partitions can be compared side by side. ``scmetacell-e0`` (explicit ``train_epoch=0``) is kept for
re-running rows of tables measured when the default trained.
"""

from __future__ import annotations

import time

import _runner_io as rio

# the scmetacell methods: keywords of scm.tl.metacell beyond n_metacell and the seed
SCM_KWARGS = {
    "scmetacell": {},
    "scmetacell-trained": {"train_epoch": 30},
    "scmetacell-e0": {"train_epoch": 0},
}
METHODS = ["random", "kmeans", *SCM_KWARGS]
args = rio.parse_args(__doc__, [("--method", {"choices": METHODS, "required": True})])

t0 = time.perf_counter()
import anndata as ad  # noqa: E402
import numpy as np  # noqa: E402
from baselines import kmeans_grouping, random_grouping  # noqa: E402

adata = ad.read_h5ad(args.input)
notes = ""
if args.method == "random":
    labels = random_grouping(adata.n_obs, args.n_metacells, seed=args.seed)
    version = np.__version__
elif args.method == "kmeans":
    import sklearn
    from embedding import shared_pca

    labels = kmeans_grouping(shared_pca(adata, seed=args.seed), args.n_metacells, seed=args.seed)
    version = sklearn.__version__
else:
    import scmetacell as scm

    kwargs = SCM_KWARGS[args.method]
    before = set(adata.obs.columns)
    scm.tl.metacell(adata, n_metacell=args.n_metacells, random_seed=args.seed, **kwargs)
    added = [c for c in adata.obs.columns if c not in before]
    key = "metacell" if "metacell" in added else added[0]
    labels = adata.obs[key].to_numpy()
    version = scm.__version__
    notes = ", ".join([f"obs['{key}']", *(f"{k}={v}" for k, v in kwargs.items())])
wall = time.perf_counter() - t0
rio.write_outputs(args.out, adata.obs_names, labels, wall_s=wall, version=version, notes=notes)
