"""Tests of mmae_utils.pp: normalisation, binarisation, TF-IDF, the SVD, block scaling."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mmae_utils import pp


def test_in_place_transforms_equal_the_copying_ones_and_leave_inputs_alone(mdata, monkeypatch):
    from mmae_utils import _utils
    from mmae_utils.pp import binarize, log_normalize

    counts = mdata.layers["counts"].tocsr().astype(np.float32)
    counts.data[::7] = 0  # explicit zeros must disappear from the results
    before = counts.copy()
    # tiny row blocks, so that the block-wise code paths really run block by block
    real_blocks = _utils.row_blocks
    monkeypatch.setattr(_utils, "row_blocks", lambda x, max_nnz=0: real_blocks(x, 50))
    expected = np.log1p(
        before.toarray() / np.maximum(before.toarray().sum(1, keepdims=True), 1e-30) * 1e4
    )
    copied = log_normalize(counts)
    assert (counts != before).nnz == 0  # copy=True leaves the input alone
    np.testing.assert_allclose(copied.toarray(), expected, rtol=1e-5, atol=1e-5)
    assert copied.nnz == (before.toarray() != 0).sum()
    owned = counts.copy()
    in_place = log_normalize(owned, copy=False)
    assert in_place is owned and (in_place != copied).nnz == 0
    b = binarize(counts)
    assert (counts != before).nnz == 0
    assert set(np.unique(b.data)) == {1.0} and b.nnz == (before.toarray() != 0).sum()
    owned = counts.copy()
    b2 = binarize(owned, copy=False)
    assert b2 is owned and (b2 != b).nnz == 0


def test_tfidf_matches_signac_formula():
    x = sp.csr_matrix(np.array([[1, 0, 1, 1], [0, 1, 1, 0], [1, 1, 1, 0]], dtype=np.float32))
    got = pp.tfidf(x).toarray()
    dense = x.toarray()
    tf = dense / dense.sum(axis=1, keepdims=True)
    idf = dense.shape[0] / dense.sum(axis=0)
    np.testing.assert_allclose(got, np.log1p(tf * idf * 1e4), rtol=1e-6)


def test_svd_equals_sklearn():
    from sklearn.decomposition import PCA, TruncatedSVD

    rng = np.random.default_rng(0)
    x = sp.random(300, 40, density=0.3, format="csr", dtype=np.float32, random_state=1)
    x.data = rng.poisson(2, x.nnz).astype(np.float32) + 1
    scores, comps, _ = pp.svd(x, 5)
    ref = TruncatedSVD(5, algorithm="arpack", random_state=0).fit(x)
    ref_scores = ref.transform(x)
    for j in range(5):
        sign = np.sign(comps[j] @ ref.components_[j])
        np.testing.assert_allclose(scores[:, j], sign * ref_scores[:, j], rtol=1e-3, atol=1e-3)
        # signs fixed: the largest absolute loading is positive
        assert comps[j][np.argmax(np.abs(comps[j]))] > 0
    # implicit centring gives PCA
    scores, comps, mean = pp.svd(x, 4, center=True)
    pca = PCA(4, svd_solver="full").fit(x.toarray().astype(np.float64))
    np.testing.assert_allclose(mean, pca.mean_, rtol=1e-5)
    for j in range(4):
        assert abs(np.corrcoef(scores[:, j], pca.transform(x.toarray())[:, j])[0, 1]) > 0.9999


def _low_rank(n: int, f: int, rank: int, seed: int = 0) -> sp.csr_matrix:
    """Sparse data of a given rank, well separated singular values (40, 35, ... apart by
    at least 10 %), plus a little noise; a third of the entries stored as zeros."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.standard_normal((n, rank)))[0]
    v = np.linalg.qr(rng.standard_normal((f, rank)))[0]
    x = (u * (40.0 * 0.8 ** np.arange(rank))) @ v.T + rng.standard_normal((n, f)) * 0.01
    x[rng.random((n, f)) < 0.3] = 0.0
    return sp.csr_matrix(x.astype(np.float32))


def test_randomized_svd_finds_the_exact_leading_components():
    x = _low_rank(700, 120, rank=6)
    for center in (False, True):
        exact, comps, mean = pp.svd(x, 6, center=center)
        approx, rcomps, rmean = pp.svd(x, 6, center=center, solver="randomized", block=128)
        np.testing.assert_allclose(rmean, mean)
        # same signs convention, same components and scores (the gap makes them unique)
        np.testing.assert_allclose(rcomps, comps, atol=1e-3)
        np.testing.assert_allclose(approx, exact, rtol=1e-3, atol=1e-3 * np.abs(exact).max())
    again = pp.randomized_svd(x, 6, block=128)
    np.testing.assert_array_equal(again[0], pp.randomized_svd(x, 6, block=128)[0])  # seeded
    np.testing.assert_allclose(again[0], pp.randomized_svd(x, 6)[0], atol=1e-5)  # any block
    other_seed = pp.randomized_svd(x, 6, n_iter=0, seed=1)[0]  # no iteration: a rough start
    assert not np.allclose(other_seed, pp.randomized_svd(x, 6, n_iter=0, seed=0)[0])


def test_auto_is_exact_below_its_threshold_and_randomized_above(monkeypatch):
    x = _low_rank(300, 50, rank=4)
    exact = pp.svd(x, 4)[0]
    np.testing.assert_array_equal(pp.svd(x, 4, solver="auto")[0], exact)
    monkeypatch.setattr(pp, "RANDOMIZED_FROM", {"cells": 300, "features": 50})
    np.testing.assert_array_equal(
        pp.svd(x, 4, solver="auto")[0], pp.svd(x, 4, solver="randomized")[0]
    )
    assert not np.array_equal(pp.svd(x, 4, solver="auto")[0], exact)
    with pytest.raises(ValueError, match="solver must be"):
        pp.svd(x, 4, solver="arpack")


def test_input_transform_fits_by_the_solver_asked_and_caches_per_solver():
    from mmae_utils.layers import InputTransform

    x = _low_rank(400, 60, rank=5)
    exact = InputTransform("gex", "svd", 60, n_components=20).fit(x, solver="exact")
    approx = InputTransform("gex", "svd", 60, n_components=20).fit(x, solver="randomized")
    loadings = {t: np.asarray(t._stats["loadings"]) for t in (exact, approx)}
    # the leading components agree; the 20th of a rank-5 matrix is noise and need not
    np.testing.assert_allclose(loadings[approx][:, :5], loadings[exact][:, :5], atol=1e-3)
    assert not np.array_equal(loadings[approx], loadings[exact])  # not served from the cache
