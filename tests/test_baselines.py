"""Tests of mmae_utils.baselines: shapes, determinism, what each baseline is, errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mmae_utils import baselines as bl
from mmae_utils import pp


def test_baselines_shapes_keys_and_determinism(small_mdata):
    adata = small_mdata.copy()
    keys = bl.baselines(adata, n_comps=7, seed=1)
    assert keys == {m: f"X_{m}" for m in bl.BASELINES}
    for key in keys.values():
        x = adata.obsm[key]
        assert x.shape == (adata.n_obs, 7) and x.dtype == np.float32
        assert np.isfinite(x).all()
    again = bl.baselines(adata.copy(), n_comps=7, seed=1, inplace=False)
    for method, key in keys.items():
        np.testing.assert_array_equal(again[method], adata.obsm[key])
    other = bl.baselines(adata, n_comps=7, methods=["random"], seed=2, inplace=False)
    assert not np.array_equal(other["random"], adata.obsm["X_random"])


def test_pca_concat_blocks(small_mdata):
    from mmae_utils.data import split_modalities
    from mmae_utils.pp import binarized, log_normalized

    adata = small_mdata.copy()
    x = bl.baselines(adata, n_comps=9, methods=["pca_concat", "gex_pca"], inplace=False)
    pc = x["pca_concat"]
    gex_block, atac_block = pc[:, :5], pc[:, 5:]  # ceil(9/2) GEX components, then 4 LSI
    # each block has total variance 1: both modalities weigh the same
    assert np.var(gex_block, axis=0).sum() == pytest.approx(1, rel=1e-4)
    assert np.var(atac_block, axis=0).sum() == pytest.approx(1, rel=1e-4)
    # the GEX block is the GEX PCA (rescaled): same subspace as gex_pca's first 5 PCs
    ref = x["gex_pca"][:, :5]
    for j in range(5):
        r = np.corrcoef(gex_block[:, j], ref[:, j])[0, 1]
        assert abs(r) > 0.999
    # the LSI block drops the depth component: not correlated with the peaks per cell
    gex, atac = split_modalities(adata)
    depth = np.asarray(binarized(atac).sum(axis=1)).ravel()
    lsi_with_first = pp.lsi(binarized(atac), 4)[0]
    lsi_with_first -= lsi_with_first.mean(axis=0)  # atac_lsi centres its components
    assert lsi_with_first.shape == (adata.n_obs, 4)
    np.testing.assert_allclose(
        atac_block * np.sqrt(np.var(lsi_with_first, axis=0).sum()),
        lsi_with_first,
        rtol=1e-4,
        atol=1e-4,
    )
    from sklearn.decomposition import TruncatedSVD

    first = TruncatedSVD(1, algorithm="arpack", random_state=0).fit_transform(
        pp.tfidf(binarized(atac))
    )[:, 0]
    assert abs(np.corrcoef(first, depth)[0, 1]) > abs(np.corrcoef(atac_block[:, 0], depth)[0, 1])
    assert log_normalized(gex).shape[1] == gex.n_vars


def test_pca_competition_uses_top_sd_features(small_mdata):
    adata = small_mdata.copy()
    # with n_top >= all features it is the PCA of [GEX lognorm | ATAC binary] itself
    from mmae_utils.data import split_modalities
    from mmae_utils.pp import binarized, log_normalized

    gex, atac = split_modalities(adata)
    full = sp.hstack([log_normalized(gex), binarized(atac)]).toarray().astype(np.float64)
    out = bl.baselines(
        adata, n_comps=3, methods=["pca_competition"], n_top_competition=10**6, inplace=False
    )
    centred = full - full.mean(axis=0)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    ref = u[:, :3] * s[:3]
    for j in range(3):
        assert abs(np.corrcoef(out["pca_competition"][:, j], ref[:, j])[0, 1]) > 0.999
    # n_top selects the columns of largest standard deviation
    sel = pp.top_sd(sp.csr_matrix(full), 5).toarray()
    top = np.sort(np.argsort(-full.std(axis=0))[:5])
    np.testing.assert_array_equal(sel, full[:, top])


def test_baseline_errors(small_mdata):
    adata = small_mdata.copy()
    with pytest.raises(ValueError, match="Unknown baselines"):
        bl.baselines(adata, methods=["umap"])
    with pytest.raises(ValueError, match="n_comps must be between 2 and 100"):
        bl.baselines(adata, n_comps=101)
    gex_only = adata[:, adata.var["feature_types"] == "GEX"].copy()
    with pytest.raises(ValueError, match="no ATAC features"):
        bl.baselines(gex_only, methods=["atac_lsi"])
    assert "X_gex_pca" in bl.baselines(gex_only, methods=["gex_pca"], n_comps=4).values()


def test_baselines_free_copies_early_but_give_the_same_embeddings(small_mdata):
    adata = small_mdata.copy()
    counts_before = adata.layers["counts"].copy()
    together = bl.baselines(adata, n_comps=6, seed=0, inplace=False)
    assert list(together) == list(bl.BASELINES)  # the order asked for
    for method in bl.BASELINES:
        alone = bl.baselines(adata, n_comps=6, methods=[method], seed=0, inplace=False)
        np.testing.assert_allclose(alone[method], together[method], rtol=1e-5, atol=1e-5)
    reverse = bl.baselines(adata, n_comps=6, methods=bl.BASELINES[::-1], seed=0, inplace=False)
    assert list(reverse) == list(bl.BASELINES[::-1])
    assert (adata.layers["counts"] != counts_before).nnz == 0  # input never modified


def test_more_components_than_the_data_give_adapts_with_a_warning(small_mdata):
    """51 genes, 30 peaks, 800 cells: each baseline gets what its data give, and says so."""
    import warnings

    gex = np.flatnonzero(small_mdata.var["feature_types"] == "GEX")[:51]
    atac = np.flatnonzero(small_mdata.var["feature_types"] == "ATAC")[:30]
    adata = small_mdata[:, np.r_[gex, atac]].copy()
    with pytest.warns(UserWarning, match=r"n_comps=100 asked.*gex_pca has 51.*atac_lsi has 29"):
        out = bl.baselines(adata, n_comps=100, inplace=False)
    dims = {m: x.shape[1] for m, x in out.items()}
    assert dims == {
        "pca_concat": 50 + 29,
        "pca_competition": 81,
        "gex_pca": 51,
        "atac_lsi": 29,
        "random": 100,
    }
    with pytest.warns(UserWarning, match="20 cells"):
        few_cells = bl.fitted_sizes(adata[:20], ["gex_pca", "pca_concat"], 40)
    assert few_cells == {
        "gex_pca": 19,
        "pca_concat": (19, 18),
    }
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what the data give does not warn
        assert bl.fitted_sizes(adata, ["gex_pca", "pca_concat"], 20) == {
            "gex_pca": 20,
            "pca_concat": (10, 10),
        }


def _signed_svd_scores(x: np.ndarray, n: int) -> np.ndarray:
    """Uncentred SVD scores by numpy, each component signed as pp.svd signs it (its largest
    absolute loading positive)."""
    u, s, vt = np.linalg.svd(x, full_matrices=False)
    signs = np.sign(vt[np.arange(n), np.argmax(np.abs(vt[:n]), axis=1)])
    return u[:, :n] * s[:n] * signs


def test_guanlab_split_follows_n_comps():
    assert bl.guanlab_split(100) == (38, 62)  # their submission
    assert bl.guanlab_split(20) == (8, 12)  # round(7.6)
    assert bl.guanlab_split(10) == (4, 6)
    assert bl.guanlab_split(25) == (10, 15)  # 9.5 rounds half up
    assert bl.guanlab_split(4) == (2, 2)  # at least 2 per modality
    with pytest.raises(ValueError, match="guanlab needs n_comps >= 4"):
        bl.guanlab_split(3)


@pytest.mark.parametrize("n_comps", [10, 20])
def test_guanlab_is_per_cell_zscored_truncated_svd(small_mdata, n_comps):
    from mmae_utils.data import split_modalities
    from mmae_utils.pp import binarized, log_normalized

    adata = small_mdata.copy()
    x = bl.baselines(adata, n_comps=n_comps, methods=["guanlab"], seed=3, inplace=False)
    emb = x["guanlab"]
    assert emb.shape == (adata.n_obs, n_comps) and emb.dtype == np.float32
    n_gex = round(0.38 * n_comps)
    blocks = {"GEX": emb[:, :n_gex], "ATAC": emb[:, n_gex:]}
    for block in blocks.values():  # every cell's block: mean 0, sd 1 across its components
        np.testing.assert_allclose(block.mean(axis=1), 0, atol=1e-5)
        np.testing.assert_allclose(block.std(axis=1), 1, atol=1e-5)
    # each block is the (uncentred) truncated SVD of pca_concat's inputs, z-scored per cell
    gex, atac = split_modalities(adata)
    inputs = {"GEX": log_normalized(gex), "ATAC": binarized(atac)}
    for name, n in (("GEX", n_gex), ("ATAC", n_comps - n_gex)):
        ref = _signed_svd_scores(inputs[name].toarray().astype(np.float64), n)
        ref = (ref - ref.mean(axis=1, keepdims=True)) / ref.std(axis=1, keepdims=True)
        np.testing.assert_allclose(blocks[name], ref, atol=2e-3)


def test_guanlab_deterministic_and_not_pca_concat(small_mdata):
    adata = small_mdata.copy()
    keys = bl.baselines(adata, n_comps=10, methods=["guanlab", "pca_concat"], seed=1)
    assert keys == {"guanlab": "X_guanlab", "pca_concat": "X_pca_concat"}
    first = adata.obsm["X_guanlab"]
    again = bl.baselines(adata.copy(), n_comps=10, methods=["guanlab"], seed=1, inplace=False)
    np.testing.assert_array_equal(again["guanlab"], first)  # same seed, same embedding
    other = bl.baselines(adata.copy(), n_comps=10, methods=["guanlab"], seed=2, inplace=False)
    np.testing.assert_array_equal(other["guanlab"], first)  # exact SVD: no seed enters
    pc = adata.obsm["X_pca_concat"]
    assert first.shape == pc.shape and not np.allclose(first, pc, atol=1e-2)
    assert np.abs(pc[:, :4].mean(axis=1)).max() > 1e-2  # pca_concat is not z-scored per cell
    # the same whichever methods are computed with it (inputs freed early)
    alone = bl.baselines(adata, n_comps=10, methods=["guanlab"], inplace=False)["guanlab"]
    np.testing.assert_allclose(alone, first, rtol=1e-5, atol=1e-5)


def test_guanlab_sizes_and_errors(small_mdata):
    gex = np.flatnonzero(small_mdata.var["feature_types"] == "GEX")[:5]
    atac = np.flatnonzero(small_mdata.var["feature_types"] == "ATAC")[:200]
    adata = small_mdata[:, np.r_[gex, atac]].copy()
    with pytest.warns(UserWarning, match="guanlab has 17"):
        assert bl.fitted_sizes(adata, ["guanlab"], 20) == {"guanlab": (5, 12)}  # 5 genes only
    with pytest.raises(ValueError, match="guanlab needs n_comps >= 4"):
        bl.baselines(adata, n_comps=3, methods=["guanlab"])
    one_gene = small_mdata[:, np.r_[gex[:1], atac]].copy()
    with pytest.raises(ValueError, match="needs at least 2 of each"), pytest.warns(UserWarning):
        bl.baselines(one_gene, n_comps=10, methods=["guanlab"])
