"""Label purity of a partition: max proportion, entropy (SuperCell) and balanced purity (MetaQ)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._partition import encode_partition


def _contingency(
    groups: Any, labels: Any
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray, pd.Index, pd.Index]:
    codes, ids = encode_partition(groups)
    lab = pd.Series(np.asarray(labels, dtype=object) if not isinstance(labels, pd.Series) else labels)
    if len(lab) != len(codes):
        raise ValueError(f"labels: {len(lab)} values for {len(codes)} cells.")
    if isinstance(lab.dtype, pd.CategoricalDtype):
        lab = lab.cat.remove_unused_categories()
        lcodes = lab.cat.codes.to_numpy().astype(np.int64)
        lnames = pd.Index(lab.cat.categories)
    else:
        try:
            lcodes, lnames = pd.factorize(lab, sort=True)
        except TypeError:
            lcodes, lnames = pd.factorize(lab, sort=False)
        lnames = pd.Index(lnames)
    keep = (codes >= 0) & (lcodes >= 0)
    table = sp.csr_matrix(
        (np.ones(keep.sum()), (codes[keep], lcodes[keep])), shape=(len(ids), max(len(lnames), 1))
    )
    table.sum_duplicates()
    return table, codes, lcodes, ids, lnames


def purity(groups: Any, labels: Any) -> pd.DataFrame:
    """Per-metacell label purity: the most frequent label's proportion and the labels' entropy.

    ``purity`` is SEACells' and SuperCell's ``max_proportion`` (higher is better), ``entropy`` is
    SuperCell's Shannon entropy of the label counts, natural log (lower is better). Outlier cells
    (no metacell) and cells with a missing label are left out; a metacell without labelled cells
    gets ``NaN``. Ties go to the first label in sorted (or category) order.

    Parameters
    ----------
    groups
        Metacell id per cell (``NaN``/``None``, or ``-1`` for numeric ids, = outlier).
    labels
        True label per cell (``NaN`` = unknown).

    Returns
    -------
    Table indexed by metacell id with columns ``n_labelled``, ``purity``, ``purity_label`` (the
    metacell's label, categorical) and ``entropy``.

    Examples
    --------
    >>> import scmetacell as scm
    >>> scm.tl.purity([0, 0, 0, 1, 1], ["a", "a", "b", "b", "b"])["purity"].round(3).tolist()
    [0.667, 1.0]
    """
    table, _, _, ids, lnames = _contingency(groups, labels)
    n_lab = np.ravel(table.sum(axis=1))
    best = np.ravel(table.argmax(axis=1))
    top = np.ravel(table.max(axis=1).toarray())
    with np.errstate(invalid="ignore", divide="ignore"):
        pur = np.where(n_lab > 0, top / n_lab, np.nan)
        rows = np.repeat(np.arange(table.shape[0]), np.diff(table.indptr))
        p = table.data / n_lab[rows]
        ent = -np.bincount(rows, weights=p * np.log(p), minlength=table.shape[0])
    ent = np.where(n_lab > 0, ent + 0.0, np.nan)
    cats = lnames if len(lnames) else pd.Index([], dtype=object)
    label = pd.Categorical.from_codes(np.where(n_lab > 0, best, -1), categories=cats)
    return pd.DataFrame(
        {"n_labelled": n_lab.astype(np.int64), "purity": pur, "purity_label": label, "entropy": ent},
        index=ids,
    )


def balanced_purity(groups: Any, labels: Any) -> float:
    """MetaQ's balanced purity: balanced accuracy of each cell's metacell label against its own label.

    A metacell's label is its most frequent label (see :func:`purity`); the score is the mean over
    true labels of the fraction of that label's cells whose metacell carries it (recall averaged
    over classes, as ``sklearn.metrics.balanced_accuracy_score``). Outliers and unlabelled cells are
    left out.

    Parameters
    ----------
    groups
        Metacell id per cell.
    labels
        True label per cell (``NaN`` = unknown).

    Returns
    -------
    The balanced purity in ``[0, 1]`` (``NaN`` when no cell is labelled).

    Examples
    --------
    >>> import scmetacell as scm
    >>> round(scm.tl.balanced_purity([0, 0, 0, 1, 1], ["a", "a", "b", "b", "b"]), 3)
    0.833
    """
    table, codes, lcodes, _, _ = _contingency(groups, labels)
    keep = (codes >= 0) & (lcodes >= 0)
    if not keep.any():
        return float("nan")
    majority = np.ravel(table.argmax(axis=1))
    y_true = lcodes[keep]
    y_pred = majority[codes[keep]]
    n_cls = table.shape[1]
    support = np.bincount(y_true, minlength=n_cls)
    hits = np.bincount(y_true[y_true == y_pred], minlength=n_cls)
    present = support > 0
    return float(np.mean(hits[present] / support[present]))


def rare_type_recall(groups: Any, labels: Any, *, min_cells: int | None = None) -> tuple[float, int]:
    """Fraction of the labels with at least ``min_cells`` cells that are the majority of ≥ 1 metacell.

    A rare population survives metacell construction when at least one metacell is mostly made of it.
    Outliers and unlabelled cells are left out; ties go to the first label, as in :func:`purity`.

    Parameters
    ----------
    groups
        Metacell id per cell (``NaN``/``None``, or ``-1`` for numeric ids, = outlier).
    labels
        True label per cell (``NaN`` = unknown).
    min_cells
        Labels with at least this many cells are counted. Default: ``max(3, ⌈γ / 4⌉)`` with ``γ`` =
        labelled cells / metacells.

    Returns
    -------
    ``(recall, number of labels counted)``; ``(nan, 0)`` when no label is that large.

    Examples
    --------
    >>> import scmetacell as scm
    >>> scm.tl.rare_type_recall([0, 0, 0, 1, 1, 1], ["a", "a", "b", "a", "a", "b"], min_cells=2)
    (0.5, 2)
    """
    table = _contingency(groups, labels)[0]
    per_label = np.ravel(table.sum(axis=0))
    n_groups = int((np.ravel(table.sum(axis=1)) > 0).sum())
    if min_cells is None:
        gamma = per_label.sum() / max(n_groups, 1)
        min_cells = max(3, int(np.ceil(gamma / 4)))
    counted = np.flatnonzero(per_label >= min_cells)
    if counted.size == 0:
        return float("nan"), 0
    has = np.ravel(table.sum(axis=1)) > 0
    majority = np.ravel(table.argmax(axis=1))[has]
    return float(np.isin(counted, majority).mean()), int(counted.size)
