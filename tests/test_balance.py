from __future__ import annotations

import numpy as np
import pytest

from scmetacell.assign import dissolve_and_split, enforce_min_size


@pytest.fixture(scope="module")
def blobs():
    rng = np.random.default_rng(0)
    centers = rng.normal(scale=5, size=(12, 8))
    z = np.concatenate([c + rng.normal(size=(rng.integers(40, 120), 8)) for c in centers]).astype(np.float32)
    # stray cells far away: nearest-entry assignment gives them singleton entries
    z = np.concatenate([z, rng.normal(scale=25, size=(15, 8)).astype(np.float32)])
    return z


def _kmeans_labels(z, k, seed=0):
    from sklearn.cluster import KMeans

    return KMeans(k, n_init=1, random_state=seed).fit_predict(z)


def test_floor_keeps_count_and_removes_small(blobs):
    k = 60
    labels = _kmeans_labels(blobs, k)
    assert np.bincount(labels, minlength=k).min() < 3  # the problem exists
    new, changed, moved = enforce_min_size(blobs, labels, k, 3)
    sizes = np.bincount(new, minlength=k)
    assert sizes.min() >= 3
    assert (sizes > 0).sum() == k  # every entry still used
    assert moved > 0 and changed.size > 0
    # cells of untouched entries did not move
    untouched = ~np.isin(labels, changed)
    assert np.array_equal(new[untouched], labels[untouched])


def test_floor_respects_groups_and_capacity(blobs):
    k = 40
    n = blobs.shape[0]
    cell_group = (np.arange(n) % 2).astype(np.int64)
    code_group = np.repeat([0, 1], k // 2)
    labels = np.empty(n, dtype=np.int64)
    for g in (0, 1):
        idx = np.flatnonzero(cell_group == g)
        labels[idx] = _kmeans_labels(blobs[idx], k // 2) + g * (k // 2)
    cap = np.full(k, 40)
    new, _, _ = enforce_min_size(
        blobs, labels, k, 3, capacity=cap, cell_group=cell_group, code_group=code_group
    )
    assert np.array_equal(code_group[new], cell_group)  # nobody changed sample
    sizes = np.bincount(new, minlength=k)
    assert sizes.min() >= 3 and (sizes > 0).all()
    assert sizes.max() <= max(40, np.bincount(labels, minlength=k).max())


def test_floor_of_one_is_identity(blobs):
    labels = _kmeans_labels(blobs, 30)
    new, changed, moved = enforce_min_size(blobs, labels, 30, 1)
    assert np.array_equal(new, labels) and changed.size == 0 and moved == 0


def test_floor_never_empties_entries_it_cannot_refill():
    # 10 cells, 5 entries of 2: a floor of 3 cannot hold for all; nothing may end up empty
    z = np.arange(10, dtype=np.float32)[:, None]
    labels = np.repeat(np.arange(5), 2)
    new, _, _ = enforce_min_size(z, labels, 5, 3)
    assert (np.bincount(new, minlength=5) > 0).all()


def test_metacell_applies_the_floor(pbmc3k):
    import scmetacell as scm

    a = pbmc3k[:1200].copy()
    mc = scm.tl.metacell(a, gamma=10, train_epoch=2, progress=False)
    sizes = mc.obs["n_cells"].to_numpy()
    assert mc.n_obs == 120 and sizes.min() >= 2 and sizes.sum() == 1200
    assert mc.uns["metacell"]["diagnostics"]["min_size"] == 2  # the default floor
    mc = scm.tl.metacell(a, gamma=10, train_epoch=2, min_size_factor=0.25, progress=False, inplace=False)
    sizes = mc.obs["n_cells"].to_numpy()
    assert mc.n_obs == 120 and sizes.min() >= 3 and sizes.sum() == 1200
    d = mc.uns["metacell"]["diagnostics"]
    assert d["min_size"] == 3
    raw = scm.tl.metacell(a, gamma=10, train_epoch=2, min_size=1, progress=False, inplace=False)
    assert raw.n_obs == 120 and raw.obs["n_cells"].min() < 3  # the stray cells the floor fixes
    with pytest.raises(ValueError, match="min_size_factor"):
        scm.tl.metacell(a, gamma=10, min_size_factor=1.5, progress=False)
    with pytest.raises(ValueError, match="min_size=0"):
        scm.tl.metacell(a, gamma=10, min_size=0, progress=False)
    with pytest.raises(ValueError, match="n_smooth=-1"):
        scm.tl.metacell(a, gamma=10, n_smooth=-1, progress=False)


def test_floor_searches_all_dissolved_cells_at_once(blobs):
    """One search for every dissolved cell (a large codebook's two-level index is built once), read back
    in chunks: the same result whatever the chunk size."""
    from scmetacell.assign import flat_search

    labels = _kmeans_labels(blobs, 60)
    calls = []
    exact = flat_search()

    def counting(z, codes, k, cell_group, rows=None, out=None):
        calls.append(None if rows is None else len(rows))
        return exact(z, codes, k, cell_group, rows=rows, out=out)

    one, changed_one, moved_one = dissolve_and_split(blobs, labels, 60, 3, search=counting)
    chunked, changed_chunked, _ = dissolve_and_split(blobs, labels, 60, 3, search=counting, chunk_size=4)
    assert moved_one > 4  # several chunks of 4 cells
    assert calls == [moved_one, moved_one]  # one search per call, over all the dissolved cells
    np.testing.assert_array_equal(one, chunked)
    np.testing.assert_array_equal(changed_one, changed_chunked)


def test_floor_falls_back_to_farther_entries_when_the_nearest_are_full():
    """Dissolved cells whose 16 nearest kept entries are all at capacity go to the nearest entry with
    room among all kept entries (here in a far cluster, later split to refill the freed entries), and
    no capacity is exceeded."""
    rng = np.random.default_rng(0)
    near = rng.normal(size=(200, 4))  # entries 0..19: 10 cells each, at capacity
    far = rng.normal(size=(40, 4)) + 30  # entries 20..29: 4 cells each, room to spare
    single = rng.normal(size=(10, 4)) * 0.5  # entries 30..39: one cell each, among the full ones
    z = np.concatenate([near, far, single]).astype(np.float32)
    labels = np.concatenate(
        [np.repeat(np.arange(20), 10), np.repeat(np.arange(20, 30), 4), np.arange(30, 40)]
    )
    cap = np.r_[np.full(20, 10), np.full(20, 100)]
    new, _, moved = dissolve_and_split(z, labels, 40, 3, capacity=cap)
    assert moved == 10
    assert not np.isin(new[240:], new[:200]).any()  # none joined a full entry: a far one took them
    sizes = np.bincount(new, minlength=40)
    assert (sizes <= cap).all() and sizes.min() >= 3
