from __future__ import annotations

import numpy as np
import pytest
import scanpy as sc

torch = pytest.importorskip("torch")

from scmetacell.assign import CoarseIndex, kmeans, recall_at_1  # noqa: E402
from scmetacell.assign._coarse import flat_search  # noqa: E402


@pytest.fixture(scope="module")
def kang_pcs(_kang_cached):
    a = _kang_cached.copy()
    sc.pp.normalize_total(a, target_sum=1e4)
    sc.pp.log1p(a)
    sc.pp.highly_variable_genes(a, n_top_genes=1000)
    a = a[:, a.var["highly_variable"]].copy()
    sc.pp.scale(a, max_value=10)
    sc.pp.pca(a, n_comps=30, random_state=0)
    return torch.as_tensor(a.obsm["X_pca"], dtype=torch.float32)


@pytest.fixture(scope="module")
def codebook(kang_pcs):
    g = torch.Generator().manual_seed(0)
    return kmeans(kang_pcs, 300, n_iter=5, generator=g)


def test_kmeans_every_cluster_owns_points(kang_pcs, codebook):
    c, labels = codebook
    assert c.shape == (300, 30)
    assert torch.bincount(labels, minlength=300).min() >= 1
    g2 = torch.Generator().manual_seed(0)
    c2, labels2 = kmeans(kang_pcs, 300, n_iter=5, generator=g2)
    assert torch.equal(labels, labels2) and torch.equal(c, c2)


def test_full_probe_is_exact(kang_pcs):
    cb = kang_pcs[torch.randperm(len(kang_pcs), generator=torch.Generator().manual_seed(1))[:400]]
    idx = CoarseIndex.build(cb, n_probe=10_000)
    assert idx.n_probe == idx.centroids.shape[0]
    d, i = idx.search(kang_pcs, k=3)
    d_ref, i_ref = flat_search(kang_pcs, cb, k=3)
    np.testing.assert_allclose(d.numpy(), d_ref.numpy(), rtol=1e-4, atol=1e-3)
    assert (i[:, 0] == i_ref[:, 0]).float().mean() > 0.999  # ties aside


def test_coarse_recall_on_real_embedding(kang_pcs, codebook):
    cb, _ = codebook
    idx = CoarseIndex.build(cb, n_probe=8)
    assert idx.centroids.shape[0] == 18  # ceil(sqrt(300))
    # each fine entry in exactly one coarse cluster
    assert sorted(idx.order.tolist()) == list(range(300))
    assert recall_at_1(idx, kang_pcs) >= 0.99


def test_search_returns_sorted_distances(kang_pcs):
    cb = kang_pcs[:300]
    idx = CoarseIndex.build(cb, n_probe=4)
    d, i = idx.search(kang_pcs[:500], k=5)
    assert (i >= 0).all()
    assert (d[:, 1:] >= d[:, :-1] - 1e-6).all()
    # distances agree with the ids returned
    ref = ((kang_pcs[:500, None, :] - cb[i]) ** 2).sum(-1)
    np.testing.assert_allclose(d.numpy(), ref.numpy(), rtol=1e-3, atol=1e-2)


def test_kmeans_rejects_bad_k():
    with pytest.raises(ValueError, match="k: must be"):
        kmeans(torch.zeros(5, 2), 6)


def test_index_fitted_on_a_sample_of_many_entries(kang_pcs):
    from scmetacell.assign import _coarse

    # 6,000 entries, 78 coarse clusters: the coarse k-means is fitted on 64 x 78 = 4,992 of them
    cb = kang_pcs[torch.randperm(len(kang_pcs), generator=torch.Generator().manual_seed(2))[:6000]]
    assert cb.shape[0] > _coarse.TRAIN_PER_CLUSTER * 78
    idx = CoarseIndex.build(cb, n_probe=8)
    assert idx.centroids.shape[0] == 78
    assert sorted(idx.order.tolist()) == list(range(6000))  # each entry in exactly one cluster
    # ... the cluster of its nearest coarse centroid
    owner = torch.empty(6000, dtype=torch.long)
    for c in range(78):
        owner[idx.order[idx.offsets[c] : idx.offsets[c + 1]]] = c
    _, nearest = flat_search(cb, idx.centroids, k=1)
    assert (owner == nearest[:, 0]).float().mean() > 0.999  # ties aside
    assert recall_at_1(idx, kang_pcs) >= 0.99
    again = CoarseIndex.build(cb, n_probe=8)  # the sample is drawn from the seed: same index
    assert torch.equal(again.order, idx.order) and torch.equal(again.offsets, idx.offsets)
