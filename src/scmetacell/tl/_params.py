"""``MetacellParams``: the keywords of :func:`scmetacell.tl.metacell`, checked once.

They are turned into the model's :class:`~scmetacell.model.TrainSettings` and recorded in
``uns['metacell']['params']``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..data import MIN_HVG
from ..preprocess import check_gene_scaling

DEFAULT_GAMMA = 15.0
CODEBOOK_INITS = ("kmeans", "random")
INTEGER_MINIMA = (  # keyword, smallest value
    ("batch_size", 1),
    ("train_epoch", 0),
    ("converge_threshold", 1),
    ("top_k", 1),
    ("n_latent", 2),
    ("n_top_genes", MIN_HVG),
    ("chunk_size", 1),
    ("min_size", 1),
    ("n_smooth", 0),
    ("n_neighbors", 1),
)


@dataclass
class MetacellParams:
    """Every keyword of :func:`scmetacell.tl.metacell` (see there); :meth:`check` validates them."""

    mod: str = "rna"
    n_metacell: int | None = None
    gamma: float | None = None
    hvg_key: str | Sequence[str] | np.ndarray | None = None
    n_top_genes: int = 2000
    counts_key: str | Mapping[str, str] | None = None
    lognorm_key: str | Mapping[str, str] | None = None
    datatypes: str | Sequence[str] | Mapping[str, str] = ("rna",)
    modality_weights: Mapping[str, float] | None = None
    pair: str = "strict"
    batch_key: str | None = None
    key_added: str = "metacell"
    device: str = "auto"
    random_seed: int = 0
    train_epoch: int = 0
    adam_learning_rate: float = 1e-3
    adam_weight_decay: float = 1e-2
    codebook_init: str = "kmeans"
    converge_threshold: int = 3
    converge_tol: float = 0.01
    batch_size: int = 512
    n_latent: int = 50
    top_k: int = 5
    max_size_factor: float = 5.0
    min_size: int = 2
    min_size_factor: float = 0.0
    n_smooth: int = 2
    n_neighbors: int = 30
    gene_scaling: str = "both"
    density_weight: float = 0.0
    depth_weight: float = 1.0
    split_dubious: bool = False
    trainer_kwargs: dict[str, Any] | None = None
    chunk_size: int = 8192
    max_train_cells: int | None = 20_000
    obs: pd.DataFrame | None = None
    n_threads: int | None = None
    client: Any = None
    inplace: bool = True
    copy: bool = False
    progress: bool | None = None
    accelerator: str = field(default="", init=False)  # resolved from device by :meth:`resolve_device`

    @property
    def multimodal(self) -> bool:
        """Whether ``datatypes`` names several modalities."""
        dts = self.datatypes
        return isinstance(dts, Mapping) or (not isinstance(dts, str) and len(list(dts)) > 1)

    def check(self) -> MetacellParams:
        """Raise ``ValueError`` naming the first keyword out of range (in the order of the signature)."""
        if self.codebook_init not in CODEBOOK_INITS:
            raise ValueError(f"codebook_init={self.codebook_init!r}: must be one of {CODEBOOK_INITS}.")
        for name, lo in INTEGER_MINIMA:
            val = getattr(self, name)
            if isinstance(val, bool) or int(val) != val or val < lo:
                raise ValueError(f"{name}={val!r}: must be an integer >= {lo}.")
        check_gene_scaling(self.gene_scaling)
        if not self.adam_learning_rate > 0:
            raise ValueError(f"adam_learning_rate={self.adam_learning_rate!r}: must be > 0.")
        if not self.adam_weight_decay >= 0:
            raise ValueError(f"adam_weight_decay={self.adam_weight_decay!r}: must be >= 0.")
        if not 0 <= self.converge_tol < 1:
            raise ValueError(f"converge_tol={self.converge_tol!r}: must be in [0, 1).")
        if not self.max_size_factor >= 1:
            raise ValueError(f"max_size_factor={self.max_size_factor!r}: must be >= 1.")
        if not 0 <= self.min_size_factor < 1:
            raise ValueError(f"min_size_factor={self.min_size_factor!r}: must be in [0, 1).")
        for name in ("density_weight", "depth_weight"):
            val = getattr(self, name)
            if (
                isinstance(val, bool)
                or not isinstance(val, (int, float, np.integer, np.floating))
                or not (np.isfinite(val) and val >= 0)
            ):
                raise ValueError(f"{name}={val!r}: must be a finite number >= 0.")
        dw = self.density_weight
        if self.multimodal:
            if dw > 0:
                raise ValueError(
                    "density_weight: density-adaptive sizes are available for one modality; use 0 with "
                    "several datatypes."
                )
            if self.client is not None:
                raise ValueError(
                    "client: dask passes are available for one modality; several datatypes run in this "
                    "process."
                )
            return self
        mtc = self.max_train_cells
        if mtc is not None and (isinstance(mtc, bool) or int(mtc) != mtc or mtc < 2):
            raise ValueError(f"max_train_cells={mtc!r}: must be None or an integer >= 2.")
        return self

    def check_density_weight(self, n_obs: int) -> None:
        """``density_weight > 0`` needs every cell in training (its kNN radii are those of all cells)."""
        mtc = self.max_train_cells
        if self.density_weight > 0 and mtc is not None and n_obs > int(mtc):
            raise ValueError(
                f"density_weight={self.density_weight!r}: density-adaptive sizes need the input trained on "
                f"whole, but it has {n_obs} cells > max_train_cells={int(mtc)}; pass a larger "
                "max_train_cells (or None), at the cost of an exact kNN search over all cells, or "
                "density_weight=0."
            )

    def check_threads(self) -> None:
        """``n_threads`` must be ``None`` or a positive integer."""
        n = self.n_threads
        if n is not None and (isinstance(n, bool) or int(n) != n or n < 1):
            raise ValueError(f"n_threads={n!r}: must be a positive integer or None.")

    def resolve_device(self) -> dict[str, Any]:
        """Set :attr:`accelerator` (``trainer_kwargs`` or ``device``); return the other Trainer keywords."""
        from ..model import resolve_accelerator

        tk = dict(self.trainer_kwargs or {})
        accelerator = tk.pop("accelerator", None)
        if not self.accelerator:  # once: resolving the device may warn (no CUDA)
            self.accelerator = accelerator or resolve_accelerator(self.device)
        return tk

    def train_settings(self, group_sizes: np.ndarray, k_per_group: np.ndarray, **extra):
        """Return the model's :class:`~scmetacell.model.TrainSettings` (with the size caps and the floor)."""
        from ..model import TrainSettings

        trainer_kwargs = self.resolve_device()
        gamma_g = group_sizes / k_per_group
        capacity = np.repeat(
            np.maximum(np.floor(self.max_size_factor * gamma_g), np.ceil(gamma_g)), k_per_group
        )
        floor = int(max(self.min_size, np.ceil(self.min_size_factor * float(gamma_g.min()))))
        return TrainSettings(
            n_latent=int(self.n_latent), max_epochs=int(self.train_epoch), lr=float(self.adam_learning_rate),
            weight_decay=float(self.adam_weight_decay), batch_size=int(self.batch_size),
            converge_threshold=int(self.converge_threshold), converge_tol=float(self.converge_tol),
            codebook_init=self.codebook_init, seed=int(self.random_seed), top_k=int(self.top_k),
            max_size=capacity.astype(np.int64), min_size=floor, accelerator=self.accelerator,
            trainer_kwargs=trainer_kwargs, chunk_size=int(self.chunk_size), progress=self.progress,
            n_smooth=int(self.n_smooth), n_neighbors=int(self.n_neighbors),
            gene_scaling=self.gene_scaling, density_weight=float(self.density_weight),
            depth_weight=0.0 if self.multimodal else float(self.depth_weight),
            split_dubious=bool(self.split_dubious), **extra,
        )  # fmt: skip

    def record(self, **specific: Any) -> dict[str, Any]:
        """Return ``uns['metacell']['params']``: the keywords as run, after ``specific`` (resolved values)."""
        return {
            **specific,
            "batch_key": self.batch_key,
            "key_added": self.key_added,
            "device": str(self.device),
            "accelerator": str(self.accelerator),
            "random_seed": int(self.random_seed),
            "train_epoch": int(self.train_epoch),
            "adam_learning_rate": float(self.adam_learning_rate),
            "adam_weight_decay": float(self.adam_weight_decay),
            "codebook_init": self.codebook_init,
            "converge_threshold": int(self.converge_threshold),
            "converge_tol": float(self.converge_tol),
            "batch_size": int(self.batch_size),
            "top_k": int(self.top_k),
            "max_size_factor": float(self.max_size_factor),
            "min_size": int(self.min_size),
            "min_size_factor": float(self.min_size_factor),
            "n_smooth": 0 if self.multimodal else int(self.n_smooth),
            "n_neighbors": int(self.n_neighbors),
            "gene_scaling": "zscore" if self.multimodal else self.gene_scaling,
            "density_weight": 0.0 if self.multimodal else float(self.density_weight),
            "depth_weight": 0.0 if self.multimodal else float(self.depth_weight),
            "split_dubious": False if self.multimodal else bool(self.split_dubious),
            "n_threads": self.n_threads,
        }

    @contextlib.contextmanager
    def threads(self):
        """Torch runs with ``n_threads`` CPU threads inside the block (restored afterwards)."""
        import torch

        saved = torch.get_num_threads()
        self.check_threads()
        if self.n_threads is not None:
            torch.set_num_threads(int(self.n_threads))
        try:
            yield
        finally:
            torch.set_num_threads(saved)
