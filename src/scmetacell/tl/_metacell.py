"""``scm.tl.metacell``: the public face, its keywords checked once by :class:`MetacellParams`.

The way runs in :mod:`._metacell_single` (one modality) or :mod:`._metacell_joint` (several):
resolve → preprocess →
fit → aggregate → write back.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ._params import MetacellParams


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
    train_epoch: int = 0,
    adam_learning_rate: float = 1e-3,
    adam_weight_decay: float = 1e-2,
    codebook_init: str = "kmeans",
    converge_threshold: int = 3,
    converge_tol: float = 0.01,
    batch_size: int = 512,
    n_latent: int = 50,
    top_k: int = 5,
    max_size_factor: float = 5.0,
    min_size: int = 2,
    min_size_factor: float = 0.0,
    n_smooth: int = 2,
    n_neighbors: int = 30,
    gene_scaling: str = "both",
    density_weight: float = 0.0,
    depth_weight: float = 1.0,
    split_dubious: bool = False,
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
    k-means on the embeddings (or on random cells); each cell goes to its nearest entry. On inputs trained
    on whole (up to ``max_train_cells`` cells) the embedding is kNN-smoothed (``n_smooth``) first, so that
    metacells follow the data's manifold. No metacell holds more than ``max_size_factor`` × γ cells, none
    fewer than ``min_size`` and none is empty, so exactly ``n_metacell`` metacells are delivered. Every
    metacell gets a homogeneity statistic: whether its cells differ by more than count noise
    (``obs['dubious']``).

    Training is optional (``train_epoch > 0``, e.g. the exprmat notebook's ``train_epoch=300``): encoder,
    codebook and a multinomial decoder of each cell's raw HVG counts from its codebook entry are then
    trained together with Lightning (straight-through gradient, commitment term, AdamW; the codebook is
    moved to its cells' mean after every epoch). Training stops when fewer than ``converge_tol`` of the
    cells change metacell during ``converge_threshold`` consecutive epochs, or after ``train_epoch``
    epochs; entries left without cells are re-seeded inside the largest metacell. It is off by default
    because it does not measurably improve the metacells: on PBMC 3k, mouse pancreas and Kang 2018 at
    γ = 10, 30 and 75 (six seeds), 30 epochs changed mean purity by −0.003 … +0.002 and INV by −0.002 …
    +0.008 and cost 1.0–3.9× the CPU time of the untrained call (``docs/benchmarks.md``).

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
        Maximum number of training epochs. ``0`` (default): the k-means (or random) initialisation is the
        model, no training (and no Lightning import); see above for why.
    adam_learning_rate, adam_weight_decay
        AdamW learning rate and decoupled weight decay (training only, ``train_epoch > 0``).
    codebook_init
        ``'kmeans'`` (k-means++ and Lloyd iterations on the initial embeddings) or ``'random'``
        (randomly chosen cells; without training these stay the metacells' centres, so use it with
        ``train_epoch > 0``).
    converge_threshold
        Consecutive stable epochs that stop training (training only).
    converge_tol
        An epoch is stable when fewer than this fraction of cells changed metacell (default 1 %) and no
        entry had to be re-seeded.
    batch_size
        Cells per training minibatch (honoured exactly; the last batch of an epoch may be smaller).
    n_latent
        Embedding dimensions (number of principal components of the encoder's first layer).
    top_k
        Number of nearest metacells kept as soft memberships.
    max_size_factor
        No metacell takes more than ``max_size_factor`` × γ cells (γ of its sample).
    min_size
        No metacell holds fewer than ``max(min_size, ceil(min_size_factor × γ))`` cells (``1`` turns the
        floor off). Nearest-entry assignment leaves stray cells alone in entries of their own (about 40 %
        of the metacells hold one or two cells on PBMC 3k at γ = 10, for k-means too). A metacell of one
        cell (a stray cell) joins its nearest metacell, and its entry goes to the metacell whose split in
        two most reduces its spread (the clearest two-part metacell). A metacell of two cells or more
        below the floor is grown with the cells nearest to its centre taken from its nearest neighbours
        (each keeping at least the floor), so a small isolated population keeps its own metacell; only
        where no neighbour has cells to spare is it dissolved and its entry given to half of the largest
        metacell of the sample.
    min_size_factor
        The floor as a fraction of γ (``0``: ``min_size`` alone).
    n_smooth
        kNN-smoothing steps of the embedding: each moves every cell half-way to the mean of its
        ``n_neighbors`` nearest cells (a graph fixed from the initial embeddings). Continuous
        trajectories are then cut along their length and border cells follow their own population: on
        mouse pancreas (γ = 10, mean of 3 seeds) mean purity 0.882 → 0.897, SEACells compactness
        0.020 → 0.008, INV 2.12 → 2.07. Only for inputs trained on whole (at most ``max_train_cells``
        cells, one modality); ``0``: off.
    n_neighbors
        Neighbours of each cell in the smoothing graph (exact search in the initial embedding; as
        SEACells' 30). Mean of 6 seeds at γ = 10 / 30 / 75, ``30`` vs ``15``: mean purity on PBMC 3k
        0.911 / 0.901 / 0.888 → 0.921 / 0.908 / 0.894 (purity over cells +0.009 … +0.012), on mouse
        pancreas and Kang 2018 within −0.004 … +0.003; SEACells separation higher in 5 rows of 9. On
        random 60 % subsets of the three (``--subset 0.6``) the purity gain is a wash (higher in 27 of
        54 seed × row pairs) while INV over cells is lower in 38 of 54 (``benchmarks/quality_seeds.py``,
        ``docs/benchmarks.md``). These figures are of ``gene_scaling="zscore"``; with the default
        ``"both"``, 15 and 30 give the same mean purity on PBMC 3k within noise, 30 a higher purity
        over cells (+0.001 … +0.006). Used only when ``n_smooth > 0``.
    gene_scaling
        The view of the HVGs whose PCA is the encoder's first layer: ``"zscore"`` (each gene scaled
        to unit variance, as ``sc.pp.scale`` before ``sc.pp.pca``; the only view until this
        keyword), ``"none"`` (centred log-normalized expression, not scaled), or ``"both"``
        (default): half the ``n_latent`` axes from each view, each view's block weighing the same in
        distances. Z-scoring lifts the sampling noise of weakly expressed genes to the weight of the
        strongest markers; unscaled, the well-measured genes lead. Side by side, cells share a
        metacell only when they are close in both views. Mean of 6 seeds at γ = 10 / 30 / 75,
        ``"both"`` vs ``"zscore"``: mean purity on PBMC 3k 0.919 / 0.906 / 0.894 → 0.929 / 0.919 /
        0.911, mouse pancreas 0.897 / 0.884 / 0.870 → 0.907 / 0.892 / 0.879, Kang 2018 +0.0002 …
        +0.002; purity over cells and INV over cells better in all 9 rows; SEACells compactness worse
        on PBMC 3k at γ = 10 / 30 (``benchmarks/quality_seeds.py``, ``docs/benchmarks.md``). One
        modality (multimodal inputs: ``"zscore"``).
    density_weight
        Density-adaptive sizes (the exprmat notebook: "in regions of higher phenotypic density, more
        original cells may be aggregated into a single metacell"). ``0`` (default): the codebook's
        k-means weighs every cell once, so metacells hold about γ cells wherever they are. ``> 0``: each
        cell weighs ``(r / median r) ** density_weight``, ``r`` its distance to its 30th nearest cell in
        the (smoothed) embedding, so sparse regions get more, smaller metacells and dense regions fewer,
        larger ones (the size cap ``max_size_factor`` and the floor still hold). It trades scores: mean
        of 3 seeds at γ = 10 / 30 / 75 with ``density_weight=2``, mean purity on PBMC 3k 0.908 / 0.902 /
        0.891 → 0.931 / 0.928 / 0.917, but on Kang 2018 0.992 / 0.988 / 0.986 → 0.987 / 0.981 / 0.982
        and on mouse pancreas within ±0.004, with a worse SEACells compactness on PBMC 3k
        (``benchmarks/quality_seeds.py``, ``docs/benchmarks.md``). Sparse regions are also where cells
        have few counts, which is why it is off by default. One modality; the input must be trained on
        whole (at most ``max_train_cells`` cells; an exact kNN search over them).
    depth_weight
        Weight of the sequencing-depth coordinate of the assignment space: the codebook's k-means and
        every cell's assignment see one more coordinate, the cell's standardised ``log1p`` library size
        times ``depth_weight`` times the embedding's root-mean-square per coordinate. Metacells then
        pool cells of similar depth, whose normalised profiles are equally noisy (smoothing alone
        mixes depths). Mean of 3 seeds, ``1`` vs ``0``: mean INV lower at every γ of 10 / 30 / 75 on
        PBMC 3k (1.039 / 1.137 / 1.253 → 1.034 / 1.122 / 1.211), mouse pancreas and Kang, also
        averaged over cells; mean purity within ±0.006; SEACells compactness about the same
        (``benchmarks/quality_seeds.py``, ``docs/benchmarks.md``). Larger weights lower INV further
        (``1.5``: 1.028 / 1.105 / 1.191 on PBMC 3k) but cost purity there (−0.007 / −0.010 at γ = 30 / 75,
        8 seeds). ``0``: off (the embedding alone). The embedding, the smoothing and training do not see
        the coordinate (trained runs keep each entry's depth from the initialisation);
        :func:`assign_metacells` gives new cells theirs from their library sizes. One modality.
    split_dubious
        Split every dubious metacell (see Returns) with at least ``2 × min_size`` cells in two by
        2-means on the embeddings, freeing an entry for each by merging the cheapest pair of
        neighbouring homogeneous metacells (Ward cost, within the size cap): the number of metacells is
        kept. One modality.
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
        ``scmetacell.assign.LARGE_K`` (2,000) metacells per sample, nearest-metacell
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
    - trust diagnostics: ``obs['homogeneity']``, Pearson's dispersion ``χ² / df`` of the metacell's raw
      counts of its 128 most variable HVGs around one Poisson profile scaled by each cell's library size
      (1: the cells are indistinguishable under count noise; real counts sit above 1),
      ``obs['homogeneity_score']`` (robust z-score of its log among the metacells: (log φ − median) /
      (1.4826 · MAD)) and ``obs['dubious']`` (score above 3: an outlier of heterogeneity, in the spirit
      of mcRigor's dubious metacells), computed in one streamed pass (one modality);
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
    p = MetacellParams(
        mod=mod, n_metacell=n_metacell, gamma=gamma, hvg_key=hvg_key, n_top_genes=n_top_genes,
        counts_key=counts_key, lognorm_key=lognorm_key, datatypes=datatypes,
        modality_weights=modality_weights,
        pair=pair, batch_key=batch_key, key_added=key_added, device=device, random_seed=random_seed,
        train_epoch=train_epoch, adam_learning_rate=adam_learning_rate, adam_weight_decay=adam_weight_decay,
        codebook_init=codebook_init, converge_threshold=converge_threshold, converge_tol=converge_tol,
        batch_size=batch_size, n_latent=n_latent, top_k=top_k, max_size_factor=max_size_factor,
        min_size=min_size, min_size_factor=min_size_factor, n_smooth=n_smooth, n_neighbors=n_neighbors,
        gene_scaling=gene_scaling, density_weight=density_weight, depth_weight=depth_weight,
        split_dubious=split_dubious,
        trainer_kwargs=trainer_kwargs, chunk_size=chunk_size,
        max_train_cells=max_train_cells, obs=obs, n_threads=n_threads, client=client, inplace=inplace,
        copy=copy, progress=progress,
    ).check()  # fmt: skip
    if p.multimodal:
        from ._metacell_joint import metacell_joint

        return metacell_joint(data, p, t_start)
    from ._metacell_single import metacell_single

    return metacell_single(data, p, t_start)
