from __future__ import annotations

import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mmae_utils.data import split_modalities
from mmae_utils.features import select_atac, select_gex


@pytest.fixture
def modalities(small_mdata):
    return split_modalities(small_mdata)


def test_episcanpy_imports_on_modern_stack_without_leaking_names():
    import anndata
    import numpy

    from mmae_utils._compat import import_episcanpy

    epi = import_episcanpy()
    assert "episcanpy" in sys.modules and hasattr(epi.pp, "cal_var")
    assert not hasattr(numpy, "NaN") and not hasattr(anndata, "read")


def test_select_gex_matches_scanpy_on_counts(modalities):
    import scanpy as sc

    gex = modalities[0].copy()
    select_gex(gex, n_top=300)
    assert gex.var["highly_variable"].sum() == 300
    ref = sc.pp.highly_variable_genes(
        gex, n_top_genes=300, flavor="seurat_v3", layer="counts", inplace=False
    )
    assert (ref["highly_variable"].to_numpy() == gex.var["highly_variable"].to_numpy()).all()
    # on normalised data the ranking differs: the original notebook's mistake
    sc_ref = sc.pp.highly_variable_genes(
        gex.copy(), n_top_genes=300, flavor="seurat_v3", inplace=False, check_values=False
    )
    assert (sc_ref["highly_variable"].to_numpy() != gex.var["highly_variable"].to_numpy()).any()


@pytest.mark.parametrize("kind", ["csr_matrix", "csr_array", "dense"])
def test_select_gex_input_types(modalities, kind):
    gex = modalities[0].copy()
    expected = select_gex(gex, n_top=200, inplace=False)["highly_variable"]
    conv = {"csr_matrix": sp.csr_matrix, "csr_array": sp.csr_array, "dense": lambda m: m.toarray()}[
        kind
    ]
    gex.layers["counts"] = conv(gex.layers["counts"])
    got = select_gex(gex, n_top=200, inplace=False)["highly_variable"]
    assert (got == expected).all()


def test_select_gex_batch_aware():
    from mmae_utils.datasets import synthetic_bmmc

    gex, _ = split_modalities(synthetic_bmmc(1200, 1000, 600, seed=2, batches=["s1d1", "s2d4"]))
    select_gex(gex, n_top=250, batch_key="batch")
    assert gex.var["highly_variable"].sum() == 250
    assert "highly_variable_nbatches" in gex.var


def test_select_gex_tiny_batches_explain_themselves(modalities):
    gex = modalities[0].copy()  # 800 cells in 13 batches: about 60 cells per batch
    with pytest.warns(UserWarning, match="loess fit was singular"):
        try:
            select_gex(gex, n_top=250, batch_key="batch")
        except ValueError as err:
            assert "every batch needs enough cells" in str(err)


def test_select_gex_rejects_normalized_data_for_seurat_v3(modalities):
    gex = modalities[0].copy()
    del gex.layers["counts"]
    with (
        pytest.warns(UserWarning, match="absent, using adata.X"),
        pytest.raises(ValueError, match="expects raw counts.*flavor='seurat'"),
    ):
        select_gex(gex, n_top=100)


def test_select_gex_rejects_mixed_features(small_mdata):
    with pytest.raises(ValueError, match="Split the modalities first"):
        select_gex(small_mdata.copy(), n_top=10)


def test_select_gex_more_than_available_warns(modalities):
    gex = modalities[0][:, :400].copy()
    with pytest.warns(UserWarning, match="Asked for 2500 genes but only 400 exist"):
        select_gex(gex, n_top=2500)
    assert gex.var["highly_variable"].all()


def test_select_atac_score_and_exact_count(modalities):
    atac = modalities[1].copy()
    select_atac(atac, n_top=500)
    assert atac.var["highly_variable"].sum() == 500
    counts = atac.layers["counts"]
    n_cells = np.asarray((counts > 0).sum(axis=0)).ravel()
    np.testing.assert_array_equal(atac.var["n_cells"].to_numpy(), n_cells)  # cells, not fragments
    p = n_cells / atac.n_obs
    np.testing.assert_allclose(atac.var["variability_score"].to_numpy(), 1 - np.abs(p - 0.5))
    kept = atac.var["variability_score"][atac.var["highly_variable"]]
    dropped = atac.var["variability_score"][~atac.var["highly_variable"]]
    assert kept.min() >= dropped.max()


def test_select_atac_ties_are_broken_deterministically():
    # 40 peaks with only 4 distinct scores: heavy ties
    rng = np.random.default_rng(0)
    x = np.zeros((100, 40), dtype=np.float32)
    for j in range(40):
        x[: [10, 30, 50, 70][j % 4], j] = rng.integers(1, 3, [10, 30, 50, 70][j % 4])
    atac = ad.AnnData(
        sp.csr_matrix(x),
        var=pd.DataFrame(index=[f"chr1-{i * 1000}-{i * 1000 + 500}" for i in range(40)]),
    )
    atac.layers["counts"] = atac.X.copy()
    res = select_atac(atac, n_top=15, inplace=False)
    assert res["highly_variable"].sum() == 15
    # the episcanpy way keeps every tie of the cut-off feature: more than asked
    from mmae_utils._compat import import_episcanpy

    epi = import_episcanpy()
    b = ad.AnnData(sp.csr_matrix((x > 0).astype(np.float32)))
    epi.pp.select_var_feature(b, nb_features=15, show=False)
    assert b.n_vars > 15
    # ties are kept in file order: among the score-0.5 peaks (50 cells) the first ones win
    best = np.flatnonzero(res["variability_score"].to_numpy() == res["variability_score"].max())
    assert res["highly_variable"].to_numpy()[best].tolist() == [True] * 10  # all 10 top ones
    second = np.flatnonzero(np.isclose(res["variability_score"].to_numpy(), 0.8))
    chosen = second[res["highly_variable"].to_numpy()[second]]
    np.testing.assert_array_equal(chosen, second[: len(chosen)])


@pytest.mark.parametrize("kind", ["csr_matrix", "csr_array", "dense"])
def test_select_atac_input_types(modalities, kind):
    atac = modalities[1].copy()
    expected = select_atac(atac, n_top=300, inplace=False)
    conv = {"csr_matrix": sp.csr_matrix, "csr_array": sp.csr_array, "dense": lambda m: m.toarray()}[
        kind
    ]
    atac.layers["counts"] = conv(atac.layers["counts"])
    got = select_atac(atac, n_top=300, inplace=False)
    pd.testing.assert_frame_equal(got, expected)


def test_select_atac_more_than_available_and_bad_n_top(modalities):
    atac = modalities[1][:, :100].copy()
    with pytest.warns(UserWarning, match="Asked for 5000 peaks but only 100 exist"):
        select_atac(atac)
    assert atac.var["highly_variable"].all()
    with pytest.raises(TypeError, match="n_top must be an integer"):
        select_atac(atac, n_top=50.0)
    with pytest.raises(ValueError, match="at least 1"):
        select_atac(atac, n_top=0)


def test_newcomer_flow_on_demo_sizes(tmp_path):
    """The README's few lines: simulate, write, read back, split, select 2,500 + 5,000."""
    from mmae_utils.data import load_multiome
    from mmae_utils.datasets import synthetic_bmmc

    synthetic_bmmc(1500, 3000, 6000, seed=1).write_h5ad(tmp_path / "bmmc.h5ad")
    gex, atac = split_modalities(load_multiome(tmp_path / "bmmc.h5ad"))
    select_gex(gex, n_top=2500)
    select_atac(atac, n_top=5000)
    assert gex.var["highly_variable"].sum() == 2500
    assert atac.var["highly_variable"].sum() == 5000


# ---------------------------------------------------------------------------------------
# out-of-core (chunked) selection equals the in-memory one
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def on_disk(tmp_path_factory):
    from mmae_utils.data import load_multiome
    from mmae_utils.datasets import synthetic_bmmc

    adata = synthetic_bmmc(2400, 1500, 3000, seed=13, batches=["s1d1", "s2d4", "s3d10"])
    path = tmp_path_factory.mktemp("disk") / "m.h5ad"
    adata.write_h5ad(path)
    return adata, load_multiome(path, backed=True)


@pytest.mark.parametrize("batch_key", [None, "batch"])
def test_chunked_hvg_equals_scanpy(on_disk, batch_key):
    import scanpy as sc

    adata, backed = on_disk
    gex, _ = split_modalities(adata)
    gex_b, _ = split_modalities(backed)
    ref = sc.pp.highly_variable_genes(
        gex, n_top_genes=400, flavor="seurat_v3", layer="counts", batch_key=batch_key, inplace=False
    )
    got = select_gex(gex_b, n_top=400, batch_key=batch_key, chunk_size=333, inplace=False)
    assert got["highly_variable"].sum() == 400
    np.testing.assert_array_equal(
        got["highly_variable"].to_numpy(), ref["highly_variable"].to_numpy()
    )
    np.testing.assert_array_equal(
        got["highly_variable_rank"].to_numpy(), ref["highly_variable_rank"].to_numpy()
    )
    np.testing.assert_array_equal(got["means"].to_numpy(), ref["means"].to_numpy())
    np.testing.assert_array_equal(got["variances"].to_numpy(), ref["variances"].to_numpy())
    np.testing.assert_allclose(
        got["variances_norm"].to_numpy(), ref["variances_norm"].to_numpy(), rtol=1e-12
    )


def test_chunked_atac_equals_in_memory(on_disk):
    adata, backed = on_disk
    _, atac = split_modalities(adata)
    _, atac_b = split_modalities(backed)
    ref = select_atac(atac, n_top=900, inplace=False)
    got = select_atac(atac_b, n_top=900, chunk_size=500, inplace=False)
    pd.testing.assert_frame_equal(got, ref)


def test_backed_combine_reads_only_selected_columns(on_disk):
    from mmae_utils.data import combine_selected

    adata, backed = on_disk
    gex, atac = split_modalities(adata)
    gex_b, atac_b = split_modalities(backed)
    for g, a in ((gex, atac), (gex_b, atac_b)):
        select_gex(g, n_top=300)
        select_atac(a, n_top=600)
    mem = combine_selected(gex, atac)
    disk = combine_selected(gex_b, atac_b, progress=False)
    assert disk.shape == mem.shape == (adata.n_obs, 900)
    assert (disk.layers["counts"] != mem.layers["counts"]).nnz == 0
    pd.testing.assert_frame_equal(disk.var, mem.var)
    assert (disk.var["feature_types"] == "GEX").sum() == 300


@pytest.mark.parametrize("flavor", ["seurat", "cell_ranger"])
def test_log_flavors_log_normalize_counts_and_rank(modalities, flavor):
    """seurat / cell_ranger are given log-normalised counts (on raw counts scanpy's expm1
    overflows), and get a highly_variable_rank like seurat_v3 (notebook 02 sorts by it)."""
    import scanpy as sc

    from mmae_utils import plotting
    from mmae_utils.pp import log_normalized

    gex = modalities[0].copy()
    select_gex(gex, n_top=200, flavor=flavor)
    ref = sc.pp.highly_variable_genes(
        ad.AnnData(log_normalized(gex)), n_top_genes=200, flavor=flavor, inplace=False
    )
    assert gex.var["highly_variable"].sum() == 200
    np.testing.assert_array_equal(gex.var["highly_variable"], ref["highly_variable"])
    rank = gex.var["highly_variable_rank"].to_numpy()
    assert sorted(rank) == list(range(gex.n_vars))
    assert gex.var["highly_variable"].to_numpy()[rank < 200].all()
    top = gex.var.sort_values("highly_variable_rank").index[0]
    assert top == gex.var["dispersions_norm"].idxmax()
    plotting.highly_variable_genes(gex)  # dispersions, not variances


def test_log_flavor_with_batches_and_backed(on_disk):
    _, backed = on_disk
    gex_b, _ = split_modalities(backed)
    got = select_gex(gex_b, n_top=300, flavor="seurat", batch_key="batch", inplace=False)
    assert got["highly_variable"].sum() == 300
    assert {"dispersions_norm", "highly_variable_nbatches", "highly_variable_rank"} <= set(got)
    with pytest.raises(ValueError, match="chunked=True supports"):
        select_gex(gex_b, n_top=300, flavor="seurat", chunked=True)
