from __future__ import annotations

import gzip
import shutil
import warnings

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp

from mmae_utils.data import (
    MultiomeError,
    annotation_keys,
    load_multiome,
    open_counts,
    split_modalities,
    validate_multiome,
)
from mmae_utils.pp import binarized, log_normalized


def _write(adata, path):
    adata.write_h5ad(path)
    return path


def test_roundtrip_load_split(tmp_path, mdata):
    mdata = mdata[:, np.asarray(mdata.layers["counts"].sum(axis=0)).ravel() > 0].copy()
    path = _write(mdata, tmp_path / "m.h5ad")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean file loads without any warning
        loaded = load_multiome(path)
    gex, atac = split_modalities(loaded)
    assert (gex.var["feature_types"] == "GEX").all() and (atac.var["feature_types"] == "ATAC").all()
    assert gex.n_vars + atac.n_vars == mdata.n_vars
    assert gex.obs.equals(mdata.obs) and atac.obs_names.equals(mdata.obs_names)
    # selection by feature type, not by offsets: shuffle the columns and split again
    perm = np.random.default_rng(0).permutation(mdata.n_vars)
    g2, a2 = split_modalities(mdata[:, perm].copy())
    assert set(g2.var_names) == set(gex.var_names) and set(a2.var_names) == set(atac.var_names)
    x = g2[:, gex.var_names].layers["counts"]
    assert (x != gex.layers["counts"]).nnz == 0


def test_load_gz_does_not_touch_input(tmp_path, mdata):
    raw = _write(mdata, tmp_path / "m.h5ad")
    gz = tmp_path / "m2.h5ad.gz"
    with open(raw, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    before = gz.read_bytes()
    loaded = load_multiome(gz)
    assert loaded.n_obs == mdata.n_obs
    assert gz.read_bytes() == before
    assert not (tmp_path / "m2.h5ad").exists()  # in-memory read leaves no decompressed copy


def test_backed_reads_metadata_and_streams_counts(tmp_path, mdata):
    path = _write(mdata, tmp_path / "m.h5ad")
    backed = load_multiome(path, backed=True)
    assert backed.X is None and not backed.layers
    assert backed.obs.equals(mdata.obs)
    f, counts = open_counts(backed)
    with f:
        block = counts[100:200]
        assert (sp.csr_matrix(block) != mdata.layers["counts"][100:200]).nnz == 0


@pytest.mark.parametrize("backed", [False, True])
def test_missing_and_unreadable_files(tmp_path, backed):
    with pytest.raises(FileNotFoundError, match="does not exist.*DATA='demo'"):
        load_multiome(tmp_path / "nope.h5ad", backed=backed)
    junk = tmp_path / "junk.h5ad"
    junk.write_text("not an hdf5 file")
    with pytest.raises(OSError, match="Cannot read .*junk.h5ad as an AnnData .h5ad file"):
        load_multiome(junk, backed=backed)
    with pytest.raises(IsADirectoryError, match="is a folder"):
        load_multiome(tmp_path, backed=backed)


def test_truncated_gz(tmp_path, mdata):
    raw = _write(mdata, tmp_path / "m.h5ad")
    gz = tmp_path / "t.h5ad.gz"
    with open(raw, "rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    gz.write_bytes(gz.read_bytes()[: gz.stat().st_size // 2])
    with pytest.raises(OSError, match="not a complete gzip archive"):
        load_multiome(gz)


def test_no_feature_types(mdata):
    del mdata.var["feature_types"]
    with pytest.raises(
        MultiomeError, match=r"var\['feature_types'\] is missing.*adata.var\['feature_types'\] ="
    ):
        validate_multiome(mdata)


def test_wrong_feature_types(mdata):
    ft = mdata.var["feature_types"].astype(str).replace({"GEX": "Gene Expression", "ATAC": "Peaks"})
    mdata.var["feature_types"] = ft
    with pytest.raises(MultiomeError, match="10x Cell Ranger names.*map"):
        validate_multiome(mdata)
    mdata.var["feature_types"] = np.where(ft == "Peaks", "ATAC", "Protein")
    with pytest.raises(MultiomeError, match="other than 'GEX' and 'ATAC': 'Protein'"):
        validate_multiome(mdata)


@pytest.mark.parametrize("missing", ["GEX", "ATAC"])
def test_one_modality_absent(mdata, missing):
    keep = mdata.var["feature_types"] != missing
    with pytest.raises(MultiomeError, match=f"No {missing} features"):
        validate_multiome(mdata[:, keep].copy())


def test_duplicated_names(mdata):
    names = mdata.var_names.to_numpy().copy()
    names[5] = names[4]
    mdata.var_names = names
    with pytest.raises(
        MultiomeError, match="feature names occur more than once.*var_names_make_unique"
    ):
        validate_multiome(mdata)
    m2 = mdata.copy()
    m2.var_names_make_unique()
    cells = m2.obs_names.to_numpy().copy()
    cells[1] = cells[0]
    m2.obs_names = cells
    with pytest.raises(
        MultiomeError, match="cell names occur more than once.*obs_names_make_unique"
    ):
        validate_multiome(m2)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (np.nan, "NaN or infinite"),
        (np.inf, "NaN or infinite"),
        (-3.0, "negative values"),
        (2.5, "non-integer values"),
    ],
)
def test_bad_count_values(mdata, value, message):
    counts = mdata.layers["counts"].copy()
    counts.data[17] = value
    mdata.layers["counts"] = counts
    with pytest.raises(MultiomeError, match=message):
        validate_multiome(mdata)


def test_bad_values_detected_in_backed_mode(tmp_path, mdata):
    counts = mdata.layers["counts"].copy()
    counts.data[-1] = -1
    mdata.layers["counts"] = counts
    path = _write(mdata, tmp_path / "neg.h5ad")
    with pytest.raises(MultiomeError, match="negative values"):
        load_multiome(path, backed=True)


def test_empty_cells_and_features_warn_with_numbers(mdata):
    counts = mdata.layers["counts"].tolil()
    counts[:3, :] = 0
    gex_cols = np.flatnonzero(mdata.var["feature_types"] == "GEX")[:4]
    counts[:, gex_cols] = 0
    mdata.layers["counts"] = counts.tocsr()
    with pytest.warns(UserWarning) as record:
        report = validate_multiome(mdata)
    text = " ".join(str(w.message) for w in record)
    assert "3 of 800 cells have no counts" in text
    assert f"{report.empty_features['GEX']} GEX and" in text
    assert report.empty_cells == 3 and report.empty_features["GEX"] >= 4


def test_too_few_cells_or_features(mdata):
    with pytest.raises(MultiomeError, match="Only 20 cells; at least 50"):
        validate_multiome(mdata[:20].copy())
    gex = np.flatnonzero(mdata.var["feature_types"] == "GEX")[:5]
    atac = np.flatnonzero(mdata.var["feature_types"] == "ATAC")
    with pytest.raises(MultiomeError, match="Only 5 GEX features"):
        validate_multiome(mdata[:, np.r_[gex, atac]].copy())


def test_missing_counts_falls_back_to_x_with_warning(tmp_path, mdata):
    del mdata.layers["counts"]
    path = _write(mdata, tmp_path / "nocounts.h5ad")
    with pytest.warns(UserWarning, match=r"layers\['counts'\] is absent: falling back to adata.X"):
        loaded = load_multiome(path)
    gex, atac = split_modalities(loaded)
    with pytest.warns(UserWarning, match="using adata.X"):
        x = binarized(atac)
    assert (x != (atac.X != 0).astype(np.float32)).nnz == 0


def test_inputs_are_derived_from_counts(mdata):
    gex, atac = split_modalities(mdata)
    mdata_x_scrambled = gex.copy()
    mdata_x_scrambled.X = mdata_x_scrambled.X * 0  # X must not matter when counts exist
    x = log_normalized(mdata_x_scrambled)
    counts = gex.layers["counts"].toarray()
    expected = np.log1p(counts / counts.sum(1, keepdims=True) * 1e4)
    np.testing.assert_allclose(x.toarray(), expected, rtol=1e-5, atol=1e-5)
    assert x.dtype == np.float32 and sp.isspmatrix_csr(x)
    b = binarized(atac)
    assert set(np.unique(b.data)) == {1.0}
    assert b.nnz == atac.layers["counts"].nnz
    # csr_array and dense inputs give the same result
    atac.layers["counts"] = sp.csr_array(atac.layers["counts"])
    assert (binarized(atac) != b).nnz == 0
    atac.layers["counts"] = atac.layers["counts"].toarray()
    assert (binarized(atac) != b).nnz == 0


def test_split_needs_feature_types():
    a = ad.AnnData(sp.random(60, 20, density=0.3, format="csr"))
    with pytest.raises(MultiomeError, match="feature_types"):
        split_modalities(a)


def test_annotation_keys_missing_columns_warn_once_and_count_as_none(mdata):
    assert annotation_keys(mdata) == ("cell_type", "batch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # None is taken as given, silently
        assert annotation_keys(mdata, label_key=None, batch_key=None) == (None, None)
    with pytest.warns(UserWarning) as caught:
        keys = annotation_keys(mdata, label_key="celltype", batch_key="batch")
    assert keys == (None, "batch") and len(caught) == 1
    message = str(caught[0].message)
    assert "No cell-type labels: obs['celltype'] does not exist" in message
    assert "LABEL_KEY" in message and "or to None" in message
    mdata.obs["batch"] = np.nan  # a column with no value is no batch either
    with pytest.warns(UserWarning, match=r"No batches: obs\['batch'\] is empty"):
        assert annotation_keys(mdata) == ("cell_type", None)
