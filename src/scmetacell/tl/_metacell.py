"""``scm.tl.metacell``: metacells from a VQ model (resolve → stream → train → assign → aggregate → write)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from anndata import AnnData

from .. import _logging as logg
from .._memory import trim_heap
from ..data import AnnDataSource, CellSource, DataHandler
from ..model._preprocess import HVGNormalizer, fit_hvg_stats, lognormalize, scan_cells, select_hvg
from ._aggregate import aggregate_mean_and_sum, aggregate_obs
from ._inputs import in_memory, is_matrix_input, resolve_matrix_input
from ._resolve import (
    MIN_HVG,
    allocate_metacells,
    h5ad_safe,
    resolve_counts_key,
    resolve_datatypes,
    resolve_groups,
    resolve_n_metacell,
)

DEFAULT_GAMMA = 15.0
CODEBOOK_INITS = ("kmeans", "random")


def metacell(
    data: Any,
    *,
    mod: str = "rna",
    n_metacell: int | None = None,
    gamma: float | None = None,
    hvg_key: str | Sequence[str] | np.ndarray | None = None,
    n_top_genes: int = 2000,
    counts_key: str | None = None,
    lognorm_key: str | None = None,
    datatypes: str | Sequence[str] | Mapping[str, str] = ("rna",),
    modality_weights: Mapping[str, float] | None = None,
    pair: str = "strict",
    batch_key: str | None = None,
    key_added: str = "metacell",
    device: str = "auto",
    random_seed: int = 0,
    train_epoch: int = 30,
    adam_learning_rate: float = 1e-3,
    adam_weight_decay: float = 1e-2,
    codebook_init: str = "kmeans",
    converge_threshold: int = 3,
    converge_tol: float = 0.01,
    batch_size: int = 512,
    n_latent: int = 50,
    top_k: int = 5,
    max_size_factor: float = 5.0,
    min_size_factor: float = 0.25,
    trainer_kwargs: dict[str, Any] | None = None,
    chunk_size: int = 8192,
    max_train_cells: int | None = 20_000,
    obs: pd.DataFrame | None = None,
    n_threads: int | None = None,
    client: Any = None,
    inplace: bool = True,
    copy: bool = False,
    progress: bool | None = None,
):
    """Group cells into metacells with a vector-quantization model whose codebook entries are the metacells.

    Cells' z-scored log-normalized HVG expression is embedded by an encoder whose first layer is the PCA
    of the HVGs (computed from streamed statistics). A codebook of ``n_metacell`` entries is initialised by
    k-means on the embeddings (or on random cells), then encoder, codebook and a negative-binomial decoder
    of each cell's raw HVG counts from its codebook entry are trained together (straight-through
    gradient, commitment and codebook terms, AdamW). Training stops when fewer than ``converge_tol`` of
    the cells change metacell during ``converge_threshold`` consecutive epochs, or after ``train_epoch``
    epochs. Entries left without cells during training are re-seeded inside the largest metacell; after
    training no metacell holds more than ``max_size_factor`` × γ cells and none is empty, so exactly
    ``n_metacell`` metacells are delivered.

    All passes over the cells read them in chunks (``chunk_size`` cells) from the matrix; no dense
    cells × genes array is built.

    Parameters
    ----------
    data
        :class:`~anndata.AnnData` or :class:`~mudata.MuData` of cells (rows) × genes, in memory, backed
        (``anndata.read_h5ad(path, backed='r')``) or with a dask array ``X``; or raw counts on disk
        without annotations: the path of a ``.mmm`` file or shard directory, an open
        :func:`scmetacell.io.open_mmm` matrix or a :class:`~scmetacell.data.CellSource`. Disk inputs
        are only read, in chunks, and never held in memory whole; for the last three the cells'
        results go to the metacells' ``uns['metacell']['cells']`` (as with ``inplace=False``).
    mod
        Modality of a MuData to use.
    n_metacell
        Number of metacells. Give this or ``gamma``.
    gamma
        Cells per metacell (graining); ``n_metacell = round(n_cells / gamma)``. Default 15 when neither
        is given.
    hvg_key
        Boolean ``var`` column (e.g. ``'highly_variable'``), a boolean mask or a list of gene names of the
        genes the model sees. ``None``: the ``n_top_genes`` most dispersed genes (scanpy's
        ``flavor='seurat'``), computed from streamed statistics.
    n_top_genes
        Number of HVGs when ``hvg_key`` is ``None``.
    counts_key
        Layer with raw counts (non-negative integers), or ``'X'``. ``None``: ``X`` if it holds raw counts,
        else ``layers['counts']``.
    lognorm_key
        Layer (or ``'X'``) with log-normalized expression, used for the model inputs and the metacells'
        ``X``. ``None``: ``log1p(counts / total * 1e4)`` computed chunk by chunk.
    datatypes
        Modalities the model uses. ``['rna']`` (default): the modality ``mod`` alone. Several MuData
        modality names (e.g. ``['rna', 'adt']``, ``['rna', 'atac']``): joint metacells with one shared
        codebook, see *Multimodal metacells* below; the kind of each modality (``'rna'``, ``'adt'``,
        ``'atac'``) is read from its name, or given as a mapping ``{'gex': 'rna', 'prot': 'adt'}``.
    modality_weights
        Several modalities only: relative weight of each modality in the distances between cells and
        metacells (default: 1 each, i.e. equal contributions), e.g. ``{'rna': 1, 'adt': 2}``.
    pair
        Several modalities only: cells are paired across modalities by ``obs_names``. ``'strict'``
        (default): every modality must have the same cells (any order), else a ``ValueError`` names the
        modality and the counts of unmatched cells; ``'intersection'``: use the cells present in every
        modality (the others get no metacell).
    batch_key
        ``obs`` column of samples: metacells are built within each sample (their number proportional to
        the sample's cells, at least 1), and each metacell records its sample in ``obs[batch_key]``.
    key_added
        Name of the cells' ``obs`` column with their metacell.
    device
        ``'auto'`` (CUDA if available), ``'cpu'`` or ``'cuda'`` (falls back to the CPU with a warning when
        CUDA is not available).
    random_seed
        Seeds the model, the initialisation and the minibatch order (identical results on the CPU).
        The global random state is left as it was.
    train_epoch
        Maximum number of training epochs (``0``: the k-means / random initialisation only).
    adam_learning_rate, adam_weight_decay
        AdamW learning rate and decoupled weight decay.
    codebook_init
        ``'kmeans'`` (k-means++ and Lloyd iterations on the initial embeddings) or ``'random'``
        (randomly chosen cells).
    converge_threshold
        Consecutive stable epochs that stop training.
    converge_tol
        An epoch is stable when fewer than this fraction of cells changed metacell (default 1 %) and no
        entry had to be re-seeded.
    batch_size
        Cells per minibatch (honoured exactly; the last batch of an epoch may be smaller).
    n_latent
        Embedding dimensions (number of principal components of the encoder's first layer).
    top_k
        Number of nearest metacells kept as soft memberships.
    max_size_factor
        No metacell takes more than ``max_size_factor`` × γ cells (γ of its sample).
    min_size_factor
        No metacell holds fewer than ``ceil(min_size_factor × γ)`` cells (at least 2; ``0`` turns the
        floor off). Nearest-entry assignment leaves stray cells alone in entries of their own (about 40 %
        of the metacells hold one or two cells on PBMC 3k at γ = 10, for k-means too); such metacells
        are dissolved into their nearest larger metacells and the freed entries split the largest
        metacells of the sample in two, so the number of metacells is kept. This barely changes purity
        counted per cell, but lowers the mean purity per metacell, which one-cell metacells inflate.
    trainer_kwargs
        Extra arguments of :class:`lightning.pytorch.Trainer` (``accelerator``, ``devices``, ``strategy``,
        ``precision`` ...). Data-parallel training: ``{'strategy': 'ddp', 'devices': 4}`` (and
        ``'num_nodes'``) from a script launched with ``python``, ``torchrun`` or ``srun``: every process
        runs the whole call and gets the same metacells; each takes its share of every minibatch, so
        the result equals the single-process one (see the scaling guide). Strategies that spawn or fork
        (``'ddp_spawn'``, ``'ddp_notebook'``) are refused.
    chunk_size
        Cells per chunk on passes over the data.
    max_train_cells
        Large inputs: the PCA, the codebook initialisation and training use a random sample of this
        many cells (read once, in a global random order, and held as sparse HVG rows); every cell is
        then embedded and assigned in a streamed pass. This bounds the training cost and memory
        whatever the number of cells (``None``: train on all cells). Above
        ``scmetacell.model._scale.LARGE_K`` (2,000) metacells per sample, nearest-metacell
        searches use a two-level index (``O(cells × √metacells)``) and the codebook is initialised by
        hierarchical k-means.
    obs
        Cell annotations (one row per cell, in order) for a path / matrix ``data``: aggregated into the
        metacells' ``obs`` like an AnnData's ``obs``.
    n_threads
        Torch CPU threads used during the call (restored afterwards); ``None`` keeps torch's setting.
        On a busy machine ``n_threads=1`` avoids OpenMP spin contention (measured on Kang with a load
        average of 8 on 2 cores: 25.6 s with 2 threads, 9.4 s with 1).
    client
        A :class:`dask.distributed.Client`: the passes over all cells (library sizes and gene
        statistics, HVG statistics, the final embedding of every cell, the aggregation) run as one task
        per chunk on its workers; the results are the same as without it. Disk inputs (``.mmm``,
        backed ``.h5ad``) travel to the workers as their paths, in-memory data once, whole. Training
        (on at most ``max_train_cells`` cells) and the nearest-metacell search run in this process.
        Multi-GPU / multi-node training uses Lightning's ``strategy='ddp'`` instead (``trainer_kwargs``).
    inplace
        Annotate the cells of ``data`` (after success only).
    copy
        Return an annotated copy of ``data`` (``data`` is left untouched).
    progress
        Show progress bars (``None``: :attr:`scmetacell.settings.progress_bar`).

    Returns
    -------
    ``copy=True``: ``(annotated copy of data, metacells)``; otherwise the metacells only. With several
    ``datatypes`` the metacells are a MuData of those modalities (see Notes). Otherwise they are an
    AnnData (a MuData with the modality ``mod`` for a MuData input) with

    - ``X``: mean of the log-normalized expression over the metacell's cells, all genes (CSR);
    - ``layers['counts']``: summed raw counts;
    - ``obs['n_cells']``; for each categorical, string or boolean ``obs`` column of the cells its
      majority value and ``<col>_purity``; numeric columns averaged;
    - ``obsm['X_codebook']``: the codebook vectors; ``var``: copied from the cells;
    - ``uns['metacell']``: ``params``, ``history`` (per epoch), ``diagnostics`` and ``model`` (weights,
      HVG names and normalisation statistics, used by :func:`scmetacell.tl.assign_metacells`); with
      ``inplace=False`` and ``copy=False`` also ``cells`` (``obs_names``, ``metacell``, ``confidence``).

    The annotated cells get ``obs[key_added]`` (categorical metacell id), ``obs[f'{key_added}_confidence']``
    (soft membership of their metacell), ``obsm[f'{key_added}_topk']`` (positions of the ``top_k`` nearest
    metacells in the metacells' ``obs_names``) and ``obsm[f'{key_added}_topk_weights']`` (weights ∝ 1 /
    squared distance, summing to 1), ``uns[key_added]['params']``; for a MuData also
    ``mdata.obs[f'{mod}:{key_added}']``.

    Notes
    -----
    **Multimodal metacells.** With ``datatypes=['rna', 'adt']`` (or ``'atac'``) on a MuData, each modality
    gets its own encoder: a fixed first layer (RNA: PCA of the z-scored log-normalized HVGs; ADT: PCA of
    the z-scored CLR values ``log1p(x) - mean over the cell's proteins of log1p(x)``; ATAC: LSI, i.e.
    truncated SVD of the TF-IDF of the binarised 30,000 most often open peaks, first component dropped)
    and a trainable residual MLP, and its own decoder with a likelihood for its counts (multinomial of the
    raw HVG / protein counts; Poisson-type multinomial over the open peaks). **Weighting**: each
    modality's fixed embedding is centred and scaled to the same total variance (× ``modality_weights``,
    averaged to 1) before the embeddings are concatenated, so every modality contributes equally to the
    squared distances between cells and codebook entries, whatever its number of features or dimensions.
    One codebook lives in the joint space. ``hvg_key``, ``n_top_genes`` and ``lognorm_key`` apply to the
    RNA modality; ``counts_key`` and ``lognorm_key`` may be mappings ``{modality: layer}``. The result is
    a MuData with every modality aggregated by the same partition: RNA ``X`` = mean log-normalized
    expression, ADT ``X`` = mean CLR, ATAC ``X`` = mean accessibility (fraction of cells with the peak
    open), ``layers['counts']`` = summed raw counts in each; ``obs`` with ``n_cells`` and majority labels
    (+ ``_purity``) in each modality and, for ``mdata.obs``'s own columns, in the result's ``obs``;
    ``obsm['X_codebook']``; ``uns['metacell']`` (``params``, ``history``, ``diagnostics``, ``model``). The
    cells get the joint partition in ``mdata.obs[key_added]`` and, in every modality, ``obs[key_added]``,
    ``obs[f'{key_added}_confidence']``, ``obsm[f'{key_added}_topk']`` (``-1`` for unpaired cells) and
    ``mdata.obs[f'{mod}:{key_added}']``. :func:`scmetacell.tl.assign_metacells` maps new paired cells onto
    them.

    Examples
    --------
    >>> import scmetacell as scm
    >>> adata = scm.datasets.pbmc3k()
    >>> mc = scm.tl.metacell(adata, gamma=30, progress=False)
    >>> mc.n_obs
    90
    >>> int(mc.obs["n_cells"].sum())
    2700

    Joint RNA + protein metacells (the protein modality of this dataset is synthetic):

    >>> mdata = scm.datasets.pbmc3k_citeseq_like()
    >>> mmc = scm.tl.metacell(mdata, datatypes=["rna", "adt"], gamma=30, train_epoch=3, progress=False)
    >>> list(mmc.mod), mmc.n_obs
    (['rna', 'adt'], 88)
    """
    t_start = time.perf_counter()
    # ------------------------------------------------------------------ arguments
    if codebook_init not in CODEBOOK_INITS:
        raise ValueError(f"codebook_init={codebook_init!r}: must be one of {CODEBOOK_INITS}.")
    for name, val, lo in (
        ("batch_size", batch_size, 1),
        ("train_epoch", train_epoch, 0),
        ("converge_threshold", converge_threshold, 1),
        ("top_k", top_k, 1),
        ("n_latent", n_latent, 2),
        ("n_top_genes", n_top_genes, MIN_HVG),
        ("chunk_size", chunk_size, 1),
    ):
        if isinstance(val, bool) or int(val) != val or val < lo:
            raise ValueError(f"{name}={val!r}: must be an integer >= {lo}.")
    if not adam_learning_rate > 0:
        raise ValueError(f"adam_learning_rate={adam_learning_rate!r}: must be > 0.")
    if not adam_weight_decay >= 0:
        raise ValueError(f"adam_weight_decay={adam_weight_decay!r}: must be >= 0.")
    if not 0 <= converge_tol < 1:
        raise ValueError(f"converge_tol={converge_tol!r}: must be in [0, 1).")
    if not max_size_factor >= 1:
        raise ValueError(f"max_size_factor={max_size_factor!r}: must be >= 1.")
    if not 0 <= min_size_factor < 1:
        raise ValueError(f"min_size_factor={min_size_factor!r}: must be in [0, 1).")
    # ------------------------------------------------------------------ several modalities: own module
    if isinstance(datatypes, Mapping) or (not isinstance(datatypes, str) and len(list(datatypes)) > 1):
        from ..model._train import _resolve_accelerator
        from ._metacell_multimodal import metacell_multimodal

        if client is not None:
            raise ValueError(
                "client: dask passes are available for one modality; several datatypes run in this process."
            )

        tk = dict(trainer_kwargs or {})
        accel = tk.pop("accelerator", None) or _resolve_accelerator(device)
        return metacell_multimodal(
            data, datatypes=datatypes, modality_weights=modality_weights, pair=pair, n_metacell=n_metacell,
            gamma=gamma, default_gamma=DEFAULT_GAMMA, hvg_key=hvg_key, n_top_genes=n_top_genes,
            counts_key=counts_key, lognorm_key=lognorm_key, batch_key=batch_key, key_added=key_added,
            settings_kwargs={
                "n_latent": int(n_latent), "max_epochs": int(train_epoch), "lr": float(adam_learning_rate),
                "weight_decay": float(adam_weight_decay), "batch_size": int(batch_size),
                "converge_threshold": int(converge_threshold), "converge_tol": float(converge_tol),
                "codebook_init": codebook_init, "seed": int(random_seed), "top_k": int(top_k),
                "accelerator": accel, "trainer_kwargs": tk, "chunk_size": int(chunk_size),
                "progress": progress,
            },
            device=device, n_latent=int(n_latent), max_size_factor=float(max_size_factor),
            min_size_factor=float(min_size_factor),
            chunk_size=int(chunk_size), inplace=inplace, copy=copy, progress=progress, n_threads=n_threads,
            params_extra={
                "random_seed": int(random_seed), "train_epoch": int(train_epoch),
                "adam_learning_rate": float(adam_learning_rate),
                "adam_weight_decay": float(adam_weight_decay),
                "codebook_init": codebook_init, "converge_threshold": int(converge_threshold),
                "converge_tol": float(converge_tol), "batch_size": int(batch_size), "top_k": int(top_k),
                "n_top_genes": int(n_top_genes), "accelerator": str(accel),
            },
        )  # fmt: skip
    if max_train_cells is not None and (
        isinstance(max_train_cells, bool) or int(max_train_cells) != max_train_cells or max_train_cells < 2
    ):
        raise ValueError(f"max_train_cells={max_train_cells!r}: must be None or an integer >= 2.")
    matrix_src = None
    if is_matrix_input(data):
        if copy:
            raise ValueError("copy=True: not possible for a path / matrix input (there is no AnnData).")
        if counts_key not in (None, "X") or lognorm_key is not None:
            raise ValueError(
                "counts_key / lognorm_key: a path / matrix input holds raw counts only; leave both None."
            )
        close_src = not isinstance(data, CellSource)
        matrix_src, data = resolve_matrix_input(data, obs)
        inplace = False
    elif obs is not None:
        raise ValueError("obs: only for a path / matrix input; an AnnData brings its own obs.")
    handler = DataHandler(data, mod)
    adata = handler.adata
    dts = resolve_datatypes(datatypes, handler.mod or mod)
    counts_layer = None if matrix_src is not None else resolve_counts_key(handler, counts_key)
    if lognorm_key is not None:
        handler.matrix(lognorm_key, arg="lognorm_key")
    n_total = resolve_n_metacell(adata.n_obs, n_metacell, gamma, DEFAULT_GAMMA)
    cell_group, group_names = resolve_groups(handler, batch_key)
    group_sizes = np.bincount(cell_group, minlength=max(len(group_names), 1))
    k_per_group = allocate_metacells(group_sizes, n_total, batch_key=batch_key, names=group_names)
    hvg_mask = handler.var_mask(hvg_key, arg="hvg_key") if hvg_key is not None else None
    if hvg_mask is not None and hvg_mask.sum() < MIN_HVG:
        raise ValueError(
            f"hvg_key={hvg_key!r}: selects {int(hvg_mask.sum())} genes; at least {MIN_HVG} needed."
        )

    from ..data._executor import ChunkExecutor

    executor = ChunkExecutor(client)
    counts_src = matrix_src if matrix_src is not None else AnnDataSource(adata, counts_layer)
    lognorm_src = None if lognorm_key is None else AnnDataSource(adata, lognorm_key)
    counts_arg = f"counts_key={counts_key!r}" if counts_key is not None else "counts_key (X)"
    lognorm_arg = f"lognorm_key={lognorm_key!r}"

    # ------------------------------------------------------------------ streamed preprocessing
    timings = {}
    t_stage = time.perf_counter()
    scan = scan_cells(
        counts_src,
        lognorm_src,
        gene_stats=hvg_mask is None,
        counts_arg=counts_arg,
        lognorm_arg=lognorm_arg,
        chunk_size=chunk_size,
        progress=progress,
        executor=executor,
    )
    empty = np.flatnonzero(scan.library_size <= 0)
    if empty.size:
        raise ValueError(
            f"{counts_arg}: {empty.size} cells have zero total counts (e.g. "
            f"{list(adata.obs_names[empty[:3]])}); remove them first, e.g. "
            "sc.pp.filter_cells(adata, min_counts=1)."
        )
    if hvg_mask is None:
        hvg_mask = select_hvg(scan.gene_mean, scan.gene_var, n_top_genes)
        if hvg_mask.sum() < MIN_HVG:
            raise ValueError(
                f"hvg_key=None: only {int(hvg_mask.sum())} genes vary across cells; "
                f"at least {MIN_HVG} needed."
            )
    hvg_idx = np.flatnonzero(hvg_mask)
    timings["seconds_scan"] = time.perf_counter() - t_stage
    t_stage = time.perf_counter()
    norm = HVGNormalizer(counts_src, lognorm_src, hvg_idx, scan.library_size)
    if matrix_src is None and in_memory(adata, counts_layer, lognorm_key):
        norm.cache(chunk_size=chunk_size, progress=progress)  # sparse cells × HVGs, for in-memory inputs
    fit_hvg_stats(norm, chunk_size=chunk_size, progress=progress, executor=executor)
    timings["seconds_hvg_stats"] = time.perf_counter() - t_stage
    logg.info(
        f"computing {n_total} metacells of {adata.n_obs} cells on {hvg_idx.size} HVGs"
        + (f" within {len(group_names)} samples of {batch_key!r}" if batch_key else "")
    )

    # ------------------------------------------------------------------ model
    from ..model._train import TrainSettings, _resolve_accelerator, fit_metacells

    tk = dict(trainer_kwargs or {})
    accelerator = tk.pop("accelerator", None) or _resolve_accelerator(device)
    gamma_g = group_sizes / k_per_group
    capacity = np.repeat(np.maximum(np.floor(max_size_factor * gamma_g), np.ceil(gamma_g)), k_per_group)
    settings = TrainSettings(
        n_latent=int(n_latent),
        max_epochs=int(train_epoch),
        lr=float(adam_learning_rate),
        weight_decay=float(adam_weight_decay),
        batch_size=int(batch_size),
        converge_threshold=int(converge_threshold),
        converge_tol=float(converge_tol),
        codebook_init=codebook_init,
        seed=int(random_seed),
        top_k=int(top_k),
        max_size=capacity.astype(np.int64),
        min_size=int(max(2, np.ceil(min_size_factor * float(gamma_g.min())))) if min_size_factor > 0 else 1,
        accelerator=accelerator,
        trainer_kwargs=tk,
        chunk_size=int(chunk_size),
        progress=progress,
        max_train_cells=None if max_train_cells is None else int(max_train_cells),
        executor=executor,
    )
    import torch

    saved_threads = torch.get_num_threads()
    if n_threads is not None:
        if isinstance(n_threads, bool) or int(n_threads) != n_threads or n_threads < 1:
            raise ValueError(f"n_threads={n_threads!r}: must be a positive integer or None.")
        torch.set_num_threads(int(n_threads))
    try:
        fit = fit_metacells(norm, cell_group, k_per_group, settings)
    finally:
        torch.set_num_threads(saved_threads)
    diag = fit.diagnostics
    logg.info(f"    quantized reconstruction: {diag['quantized_reconstruction']:.2f}")
    logg.info(f"    delta assignment confidence: {diag['delta_assignment_confidence']:.2f}")
    logg.info(f"    codebook loss: {diag['codebook_loss']:.2f}")
    logg.info(f"    trained {diag['epochs_run']} epochs ({diag['stop_reason']})")
    if diag["n_delivered"] < n_total:  # pragma: no cover - ruled out by validation
        logg.warning(
            f"delivered {diag['n_delivered']} of {n_total} metacells: "
            "some samples have fewer cells than entries."
        )

    # ------------------------------------------------------------------ aggregation
    t_stage = time.perf_counter()
    ids = pd.Index([f"mc{j}" for j in range(n_total)])
    labels = fit.labels

    def _lognorm_chunk(block, start, stop, lib=scan.library_size):
        return lognormalize(block, lib[start:stop])

    # one pass: mean log-expression and summed counts together (one complex running sum)
    x_mean, counts_sum = aggregate_mean_and_sum(
        counts_src,
        labels,
        n_total,
        transform=_lognorm_chunk if lognorm_src is None else None,
        value_source=lognorm_src,
        chunk_size=chunk_size,
        progress=progress,
        desc="aggregating",
        executor=executor,
        library_size=scan.library_size,
    )
    hvg_mean, hvg_std = norm.mean, norm.std
    del norm, scan, _lognorm_chunk  # the cells' library sizes are not needed any more
    trim_heap(force=True)  # the run's freed temporaries go back to the OS before the per-cell results
    sizes = np.bincount(labels, minlength=n_total)
    obs = aggregate_obs(adata.obs, labels, n_total, ids)
    obs.insert(0, "n_cells", sizes.astype(np.int64))
    if batch_key is not None and batch_key not in obs.columns:
        obs[batch_key] = pd.Categorical(
            np.asarray(group_names)[np.repeat(np.arange(len(group_names)), k_per_group)]
        )

    timings["seconds_aggregate"] = time.perf_counter() - t_stage
    if matrix_src is not None and close_src:
        matrix_src.close()
    params = {
        "mod": handler.mod or "None",
        "n_metacell": n_total,
        "gamma": float(adata.n_obs / n_total),
        "hvg_key": hvg_key if isinstance(hvg_key, str) or hvg_key is None else "custom",
        "n_hvg": int(hvg_idx.size),
        "counts_key": counts_key,
        "lognorm_key": lognorm_key,
        "datatypes": dts,
        "batch_key": batch_key,
        "key_added": key_added,
        "device": str(device),
        "accelerator": str(accelerator),
        "random_seed": int(random_seed),
        "train_epoch": int(train_epoch),
        "adam_learning_rate": float(adam_learning_rate),
        "adam_weight_decay": float(adam_weight_decay),
        "codebook_init": codebook_init,
        "converge_threshold": int(converge_threshold),
        "converge_tol": float(converge_tol),
        "batch_size": int(batch_size),
        "n_latent": int(fit.module.config.n_latent),
        "top_k": int(top_k),
        "max_size_factor": float(max_size_factor),
        "min_size_factor": float(min_size_factor),
        "max_train_cells": -1 if max_train_cells is None else int(max_train_cells),
        "input": "matrix" if matrix_src is not None else "anndata",
        "n_threads": n_threads,
        "dask_workers": len(client.scheduler_info().get("workers", {})) if client is not None else 0,
    }
    diag = dict(diag, **timings, seconds_total=float(time.perf_counter() - t_start))
    model = {
        "state_dict": {k: v.detach().cpu().numpy() for k, v in fit.module.state_dict().items()},
        "config": {
            "n_input": fit.module.config.n_input,
            "n_latent": fit.module.config.n_latent,
            "n_codes": fit.module.config.n_codes,
            "n_hidden": fit.module.config.n_hidden,
            "residual_scale": fit.module.config.residual_scale,
        },
        "hvg_names": np.asarray(adata.var_names[hvg_idx], dtype=str),
        "hvg_mean": hvg_mean,
        "hvg_std": hvg_std,
        "target_sum": 1e4,
        "groups": np.asarray(group_names, dtype=str),
        "code_group": np.repeat(np.arange(k_per_group.size), k_per_group),
    }
    uns = {
        "params": h5ad_safe(params),
        "history": fit.history,
        "diagnostics": h5ad_safe(diag),
        "model": h5ad_safe(model),
    }
    mc = AnnData(X=x_mean, obs=obs, var=adata.var.copy(), layers={"counts": counts_sum})
    mc.obsm["X_codebook"] = fit.codebook
    mc.uns["metacell"] = uns

    # ------------------------------------------------------------------ write back (after success only)
    if copy:
        target = DataHandler(handler.data.copy(), mod)
    elif inplace:
        target = handler
    else:
        target = None
        uns["cells"] = {
            "obs_names": np.asarray(adata.obs_names, dtype=str),
            "metacell": np.asarray(ids, dtype=str)[labels],  # no per-cell object array on the way
            "confidence": fit.confidence,
            "topk": np.asarray(fit.topk, dtype=np.int32),
            "topk_weights": fit.topk_weights,
        }
    if target is not None:
        target.set_obs(key_added, pd.Categorical.from_codes(labels, categories=ids))
        target.set_obs(f"{key_added}_confidence", fit.confidence)
        target.set_obsm(f"{key_added}_topk", np.asarray(fit.topk, dtype=np.int32))
        target.set_obsm(f"{key_added}_topk_weights", fit.topk_weights)
        target.set_uns(key_added, {"params": h5ad_safe(params)})
    result = mc
    if handler.is_mudata:
        import mudata as md

        result = md.MuData({handler.mod: mc})
    logg.info(
        f"    delivered {diag['n_delivered']} of {n_total} metacells (sizes {diag['size_min']}–"
        f"{diag['size_max']}, median {diag['size_median']:g}) in {diag['seconds_total']:.1f} s"
    )
    if copy:
        return target.data, result
    return result
