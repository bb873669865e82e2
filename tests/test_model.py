import numpy as np
import pytest
import scanpy as sc
import torch

from scmetacell.assign import capacity_assign, fill_empty, init_codebook, nearest_topk, soft_memberships
from scmetacell.data import as_source
from scmetacell.model import VQConfig, VQModule
from scmetacell.preprocess import (
    HVGNormalizer,
    fit_hvg_stats,
    scan_cells,
    select_hvg,
    streamed_pca,
    two_view_pca,
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tests share a busy 2-core machine: one torch thread avoids OpenMP spin contention (restored after)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_hvg_selection_matches_scanpy_seurat(pbmc3k):
    scan = scan_cells(as_source(pbmc3k), None, gene_stats=True, progress=False)
    np.testing.assert_allclose(scan.library_size, np.asarray(pbmc3k.X.sum(1)).ravel())
    mask = select_hvg(scan.gene_mean, scan.gene_var, 2000)
    ref = pbmc3k.copy()
    sc.pp.normalize_total(ref, target_sum=1e4)
    sc.pp.log1p(ref)
    sc.pp.highly_variable_genes(ref, flavor="seurat", n_top_genes=2000)
    agree = (mask & ref.var["highly_variable"].to_numpy()).sum() / 2000
    assert mask.sum() == 2000
    assert agree > 0.99


def _pancreas_norm(pancreas, n_hvg=300):
    """The pancreas' normalizer over its top ``n_hvg`` HVGs and their dense log-normalized expression."""
    src = as_source(pancreas)
    scan = scan_cells(src, None, gene_stats=True, progress=False)
    hvg = np.flatnonzero(select_hvg(scan.gene_mean, scan.gene_var, n_hvg))
    norm = HVGNormalizer(src, None, hvg, scan.library_size)
    fit_hvg_stats(norm, chunk_size=1000, progress=False)
    ref = pancreas.copy()
    sc.pp.normalize_total(ref, target_sum=1e4)  # library size over all genes, as the model's
    sc.pp.log1p(ref)
    return norm, ref.X[:, hvg].toarray()


def test_streamed_pca_matches_dense_pca(pancreas):
    norm, x = _pancreas_norm(pancreas)
    comps, var = streamed_pca(norm, 10, chunk_size=1000, n_iter=6)
    mean, sd = x.mean(0), x.std(0, ddof=1)
    x = np.minimum((x - mean) / sd, 10)  # clipped like sc.pp.scale(max_value=10)
    # z-scores are centred with the unclipped means, as in the streamed operator: no re-centring
    evals, evecs = np.linalg.eigh(x.T @ x / (x.shape[0] - 1))
    np.testing.assert_allclose(var[:5], evals[::-1][:5], rtol=1e-3)
    # same subspace for the leading axes
    overlap = np.abs(comps[:, :5].T @ evecs[:, ::-1][:, :5])
    assert np.all(overlap.max(1) > 0.99)


def test_unscaled_pca_matches_dense_pca_of_log_expression(pancreas):
    norm, x = _pancreas_norm(pancreas)
    comps, var = streamed_pca(norm, 8, chunk_size=1000, n_iter=6, scaled=False)
    mean, sd = x.mean(0), x.std(0, ddof=1)
    xc = np.minimum(x, mean + 10 * sd) - mean  # the same z = 10 clip, no scaling
    evals, evecs = np.linalg.eigh(xc.T @ xc / (x.shape[0] - 1))
    np.testing.assert_allclose(var[:5], evals[::-1][:5], rtol=1e-3)
    overlap = np.abs(comps[:, :5].T @ evecs[:, ::-1][:, :5])
    assert np.all(overlap.max(1) > 0.99)


def test_two_view_pca_blocks_weigh_the_same_and_act_on_z_scores(pancreas):
    norm, x = _pancreas_norm(pancreas)
    mean, sd = x.mean(0), x.std(0, ddof=1)
    z = np.minimum((x - mean) / sd, 10)
    comps, var = two_view_pca(norm, 9, chunk_size=1000, scaling="both")
    assert comps.shape == (300, 9) and var.shape == (9,)
    h = z @ comps  # the encoder's first layer on z-scored input
    block_var = h.var(0, ddof=1)
    np.testing.assert_allclose(block_var, var, rtol=2e-2)
    # 4 z-scored axes, then 5 unscaled ones; each block's total variance is 1
    np.testing.assert_allclose([block_var[:4].sum(), block_var[4:].sum()], [1.0, 1.0], rtol=2e-2)
    cz, _ = streamed_pca(norm, 4, chunk_size=1000)
    cu, _ = streamed_pca(norm, 5, chunk_size=1000, scaled=False)
    # the second block is the unscaled axes rewritten for z-scored input: z @ (sd * cu) = centred x @ cu
    hu = (np.minimum(x, mean + 10 * sd) - mean) @ cu
    np.testing.assert_allclose(np.abs(np.corrcoef(h[:, 4:].T, hu.T)[:5, 5:].diagonal()), 1, atol=1e-3)
    np.testing.assert_allclose(np.abs(np.corrcoef(h[:, :4].T, (z @ cz).T)[:4, 4:].diagonal()), 1, atol=1e-3)
    same, _ = two_view_pca(norm, 4, chunk_size=1000, scaling="zscore")
    np.testing.assert_allclose(same, cz)
    with pytest.raises(ValueError, match="gene_scaling='log'"):
        two_view_pca(norm, 4, scaling="log")


def test_module_straight_through_reaches_encoder():
    torch.manual_seed(0)
    m = VQModule(VQConfig(n_input=30, n_latent=4, n_codes=6))
    m.proj.requires_grad_(True)
    x = torch.randn(16, 30)
    counts = torch.poisson(torch.rand(16, 30) * 3)
    rows, cols = torch.nonzero(counts, as_tuple=True)
    out = m(m.proj(x), rows, cols, counts[rows, cols], counts.sum(1))
    out.loss.backward()
    # the sparse reconstruction equals the dense one
    q = torch.randn(16, 4)
    dense = m.reconstruction(q, counts)
    sparse = m.sparse_reconstruction(q, rows, cols, counts[rows, cols], counts.sum(1))
    torch.testing.assert_close(dense, sparse)
    assert m.refine[2].weight.grad.abs().sum() > 0  # reconstruction + commitment gradient into the encoder
    assert m.decoder[0].weight.grad.abs().sum() > 0
    assert not m.codebook.requires_grad  # moved by the plan's k-means step, not by gradients
    assert out.index.shape == (16,)


def test_nearest_topk_respects_groups_and_capacity():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 3)).astype(np.float32)
    codes = rng.normal(size=(8, 3)).astype(np.float32)
    cell_group = (np.arange(200) >= 100).astype(np.int64)
    code_group = np.repeat([0, 1], 4)
    idx, d2 = nearest_topk(z, codes, 3, cell_group=cell_group, code_group=code_group)
    assert np.all(code_group[idx] == cell_group[:, None])
    naive = ((z[:, None] - codes[None]) ** 2).sum(-1)
    naive[code_group[None, :] != cell_group[:, None]] = np.inf
    np.testing.assert_array_equal(idx[:, 0], naive.argmin(1))
    cap = np.full(8, 30)
    labels, _ = capacity_assign(z, codes, idx, d2, cap, cell_group=cell_group, code_group=code_group)
    assert np.bincount(labels, minlength=8).max() <= 30
    assert np.all(code_group[labels] == cell_group)
    w = soft_memberships(d2)
    np.testing.assert_allclose(w.sum(1), 1, rtol=1e-5)
    assert np.all(np.diff(w, axis=1) <= 1e-7)  # nearest entry weighs most


def test_fill_empty_leaves_no_entry_empty():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(50, 2))
    labels = np.zeros(50, dtype=np.int64)  # everything in entry 0: entries 1..4 empty
    out, filled = fill_empty(z, labels, 5)
    assert sorted(filled) == [1, 2, 3, 4]
    assert np.all(np.bincount(out, minlength=5) > 0)


def _fill_empty_by_scans(z, labels, n_codes, code_group=None):
    """The direct rule (a scan of the labels per empty entry): the oracle of ``fill_empty``."""
    labels, sizes, filled = labels.copy(), np.bincount(labels, minlength=n_codes), []
    for j in np.flatnonzero(sizes == 0):
        cand = np.arange(n_codes) if code_group is None else np.flatnonzero(code_group == code_group[j])
        big = cand[np.argmax(sizes[cand])]
        if sizes[big] < 2:
            continue
        members = np.flatnonzero(labels == big)
        zm = z[members]
        c = zm.mean(0)
        far = zm[np.argmax(((zm - c) ** 2).sum(1))]
        take = ((zm - far) ** 2).sum(1) < ((zm - c) ** 2).sum(1)
        if take.all() or not take.any():
            take = np.zeros(members.size, dtype=bool)
            take[: members.size // 2] = True
        labels[members[take]] = j
        sizes[j] = int(take.sum())
        sizes[big] -= sizes[j]
        filled.append(int(j))
    return labels, filled


@pytest.mark.parametrize("n_groups", [None, 3])
def test_fill_empty_equals_the_direct_rule(n_groups):
    """Many empty entries, ties between largest metacells, identical cells and samples: the same labels and
    the same filled entries as the scan-per-entry rule (split entries keep being split correctly)."""
    rng = np.random.default_rng(4)
    n, k = 3000, 400
    z = rng.normal(size=(n, 4)).astype(np.float32)
    z[:300] = z[0]  # identical cells: the degenerate split
    cg = None if n_groups is None else np.repeat(np.arange(n_groups), -(-k // n_groups))[:k]
    occupied = np.sort(rng.choice(k, k // 3, replace=False))  # two thirds of the entries empty
    labels = occupied[rng.integers(0, occupied.size, n)]
    got, filled = fill_empty(z, labels, k, cell_group=None if cg is None else cg[labels], code_group=cg)
    want, want_filled = _fill_empty_by_scans(z, labels, k, cg)
    assert filled == want_filled and len(filled) > 100
    np.testing.assert_array_equal(got, want)


def test_random_and_kmeans_init_put_every_entry_on_cells():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 5)).astype(np.float32)
    group = np.zeros(300, dtype=np.int64)
    for method in ("random", "kmeans"):
        codes = init_codebook(z, np.array([40]), group, method=method, seed=0)
        idx, _ = nearest_topk(z, codes, 1)
        assert np.unique(idx[:, 0]).size >= 38, method  # at most exact duplicates share cells
