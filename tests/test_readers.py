"""The readers of the formats users have (10x Cell Ranger ARC .h5, muon .h5mu) and the .h5mu
writer, on small files written in the real layouts (h5py for 10x, mudata for .h5mu)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings

import anndata as ad
import h5py
import mudata as md
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mmae_utils import datasets, report
from mmae_utils.data import FORMATS, MultiomeError, file_format, load_multiome, validate_multiome
from mmae_utils.readers import (
    H5MU_MODALITIES,
    is_10x_h5,
    peak_names,
    read_10x_h5,
    read_h5mu,
    write_h5mu,
)

N_CELLS, N_GENES, N_PEAKS = 64, 14, 24


def _sha(path) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _counts(n_rows, n_cols, seed) -> np.ndarray:
    """Integer counts with no empty row or column (a clean file loads without warnings)."""
    rng = np.random.default_rng(seed)
    x = rng.poisson(0.8, size=(n_rows, n_cols))
    x[np.arange(n_rows), np.arange(n_rows) % n_cols] += 1 + rng.integers(0, 30, n_rows)
    x[np.arange(n_cols) % n_rows, np.arange(n_cols)] += 1
    return x


@pytest.fixture
def tenx(tmp_path):
    """A Cell Ranger ARC ``filtered_feature_bc_matrix.h5``: genes, peaks and 2 antibodies.

    Layout, dtypes and byte strings as cellranger-arc 2.0 writes them.
    """
    genes = [f"GENE{i}" for i in range(N_GENES)]
    genes[0], genes[1] = "MT-CO1", "MT-ND1"
    genes[5] = genes[4]  # two Ensembl ids with one symbol (happens: e.g. TBCE)
    gene_ids = [f"ENSG{i:011d}" for i in range(N_GENES)]
    gene_iv = [f"chr1:{100 * i + 1}-{100 * i + 90}" for i in range(N_GENES)]
    gene_iv[-1] = "NA"  # genes without a position have interval "NA"
    peaks = [f"chr{1 + i % 3}:{1000 * i + 10}-{1000 * i + 510}" for i in range(N_PEAKS)]
    antibodies = ["CD3", "CD4"]
    types = ["Gene Expression"] * N_GENES + ["Peaks"] * N_PEAKS + ["Antibody Capture"] * 2
    dense = _counts(N_CELLS, len(types), seed=1)  # cells x features
    csc = sp.csc_matrix(dense.T)  # Cell Ranger stores features x barcodes, CSC by barcode
    barcodes = [
        f"{''.join(np.random.default_rng(i).choice(list('ACGT'), 16))}-1" for i in range(N_CELLS)
    ]
    path = tmp_path / "filtered_feature_bc_matrix.h5"
    with h5py.File(path, "w") as f:
        f.attrs["filetype"] = "matrix"
        f.attrs["version"] = 2
        f.attrs["software_version"] = "cellranger-arc-2.0.2"
        f.attrs["chemistry_description"] = "Single Cell Multiome ATAC + Gene Expression v1"
        m = f.create_group("matrix")
        m.create_dataset("barcodes", data=np.array(barcodes, dtype="S18"))
        m.create_dataset("data", data=csc.data.astype(np.int32), compression="gzip")
        m.create_dataset("indices", data=csc.indices.astype(np.int64), compression="gzip")
        m.create_dataset("indptr", data=csc.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.array(csc.shape, dtype=np.int32))
        feats = m.create_group("features")
        feats.create_dataset("_all_tag_keys", data=np.array([b"genome", b"interval"]))
        feats.create_dataset("feature_type", data=np.array(types, dtype="S"))
        feats.create_dataset("genome", data=np.array([b"GRCh38"] * len(types)))
        feats.create_dataset("id", data=np.array(gene_ids + peaks + antibodies, dtype="S"))
        feats.create_dataset("name", data=np.array(genes + peaks + antibodies, dtype="S"))
        feats.create_dataset("interval", data=np.array(gene_iv + peaks + ["NA", "NA"], dtype="S"))
    return {
        "path": path,
        "dense": dense,
        "barcodes": barcodes,
        "genes": genes,
        "gene_ids": gene_ids,
        "peaks": peaks,
    }


def _mudata(mods, obs=None):
    with warnings.catch_warnings(), md.settings.override(pull_on_update=False):
        warnings.simplefilter("ignore", FutureWarning)
        mdata = md.MuData(mods)
        if obs is not None:
            mdata.obs = obs.loc[mdata.obs_names]
    return mdata


@pytest.fixture
def h5mu(tmp_path):
    """A muon file: "rna" (counts in layers, normalized X) with 4 cells that "atac" lacks,
    "atac" (counts in X, peaks named chr:start-end), labels in the global obs."""
    n_rna = N_CELLS + 4
    cells = [f"cell{i:03d}" for i in range(n_rna)]
    rna_counts = _counts(n_rna, N_GENES, seed=2).astype(np.float32)
    rna = ad.AnnData(
        X=sp.csr_matrix(np.log1p(rna_counts)),
        obs=pd.DataFrame({"n_genes": (rna_counts > 0).sum(1)}, index=cells),
        var=pd.DataFrame(
            {"gene_ids": [f"ENSG{i:011d}" for i in range(N_GENES)]},
            index=[f"GENE{i}" for i in range(N_GENES)],
        ),
        layers={"counts": sp.csr_matrix(rna_counts)},
    )
    atac_cells = cells[::-1][:N_CELLS]  # another order, and without the first 4 cells
    atac_counts = _counts(N_CELLS, N_PEAKS, seed=3).astype(np.float32)
    atac = ad.AnnData(
        X=sp.csr_matrix(atac_counts),
        obs=pd.DataFrame(index=atac_cells),
        var=pd.DataFrame(index=[f"chr2:{1000 * i}-{1000 * i + 400}" for i in range(N_PEAKS)]),
    )
    rng = np.random.default_rng(4)
    obs = pd.DataFrame(
        {
            "cell_type": rng.choice(["B", "T", "NK"], n_rna),
            "batch": rng.choice(["s1d1", "s2d4"], n_rna),
        },
        index=cells,
    )
    mdata = _mudata({"rna": rna, "atac": atac}, obs)
    mdata.obsm["X_umap"] = rng.normal(size=(mdata.n_obs, 2))
    path = tmp_path / "pbmc.h5mu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        mdata.write_h5mu(path)
    return {
        "path": path,
        "cells": cells,
        "atac_cells": atac_cells,
        "rna_counts": rna_counts,
        "atac_counts": atac_counts,
        "obs": obs,
        "umap": np.asarray(mdata.obsm["X_umap"]),
        "order": list(mdata.obs_names),
    }


# --------------------------------------------------------------------------------------
# 10x Cell Ranger ARC .h5
# --------------------------------------------------------------------------------------


def test_10x_h5_becomes_the_contract(tenx):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean 10x file loads without any warning
        a = load_multiome(tenx["path"])
    assert a.n_obs == N_CELLS and a.n_vars == N_GENES + N_PEAKS  # antibodies dropped
    assert list(a.obs_names) == tenx["barcodes"]
    ft = a.var["feature_types"].to_numpy()
    assert list(ft) == ["GEX"] * N_GENES + ["ATAC"] * N_PEAKS
    genes = a.var_names[:N_GENES]
    assert genes[4] == "GENE4" and genes[5] == "GENE4-1" and genes.is_unique  # made unique
    assert list(a.var["gene_id"][:N_GENES]) == tenx["gene_ids"]
    expected_peaks = [p.replace(":", "-") for p in tenx["peaks"]]
    assert list(a.var_names[N_GENES:]) == expected_peaks
    assert list(a.var["gene_id"][N_GENES:]) == expected_peaks  # as in the GEO file
    counts = a.layers["counts"]
    assert isinstance(counts, sp.csr_matrix) and counts.dtype == np.float32
    np.testing.assert_array_equal(counts.toarray(), tenx["dense"][:, : N_GENES + N_PEAKS])
    assert "cell_type" not in a.obs and "batch" not in a.obs
    assert a.uns["genome"] == "GRCh38"
    validate_multiome(a)  # labels are not part of what is validated


def test_10x_x_is_log_normalized_per_modality_and_qc_columns(tenx):
    a = read_10x_h5(tenx["path"])
    assert sp.issparse(a.X) and a.X.dtype == np.float32
    dense = tenx["dense"].astype(float)
    for cols in (slice(0, N_GENES), slice(N_GENES, N_GENES + N_PEAKS)):
        row_sums = np.asarray(np.expm1(a.X[:, cols].toarray()).sum(axis=1)).ravel()
        np.testing.assert_allclose(row_sums, 1e4, rtol=1e-3)
    gex = dense[:, :N_GENES]
    np.testing.assert_allclose(a.obs["GEX_n_counts"], gex.sum(1))
    np.testing.assert_array_equal(a.obs["GEX_n_genes"], (gex > 0).sum(1))
    np.testing.assert_allclose(
        a.obs["GEX_pct_counts_mt"], 100 * gex[:, :2].sum(1) / gex.sum(1), rtol=1e-5
    )
    np.testing.assert_allclose(
        a.obs["ATAC_nCount_peaks"], dense[:, N_GENES : N_GENES + N_PEAKS].sum(1)
    )


def test_10x_other_feature_types_are_dropped_with_an_info_log(tenx, caplog):
    logger = logging.getLogger("mmae_utils")
    logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.INFO, logger="mmae_utils"):
            a = read_10x_h5(tenx["path"])
    finally:
        logger.removeHandler(caplog.handler)
    assert "dropped 2 'Antibody Capture' features" in caplog.text
    assert "CD3" not in a.var_names and "CD4" not in a.var_names


def test_a_h5_that_is_not_10x_says_what_is_missing(tmp_path, mdata):
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_group("matrix").create_dataset("data", data=np.arange(3))
    assert not is_10x_h5(other)
    with pytest.raises(MultiomeError, match=r"lacks matrix/indices.*matrix/features/id.*outs/"):
        load_multiome(other)
    anndata_h5 = tmp_path / "anndata.h5"
    mdata.write_h5ad(anndata_h5)
    with pytest.raises(MultiomeError, match="AnnData file: rename it to .h5ad"):
        load_multiome(anndata_h5)
    legacy = tmp_path / "legacy.h5"  # Cell Ranger 2: one group per genome, no features/
    with h5py.File(legacy, "w") as f:
        f.create_group("GRCh38").create_dataset("genes", data=np.array([b"ENSG1"]))
    with pytest.raises(MultiomeError, match=r"legacy \(Cell Ranger < 3\) per-genome matrix"):
        load_multiome(legacy)
    junk = tmp_path / "junk.h5"
    junk.write_text("not hdf5")
    with pytest.raises(OSError, match="Cannot read .*junk.h5 as HDF5"):
        load_multiome(junk)


def test_damaged_10x_sizes_are_reported(tenx):
    with h5py.File(tenx["path"], "a") as f:
        del f["matrix/barcodes"]
        f["matrix/barcodes"] = np.array([b"AAAC-1"] * 3)
    assert is_10x_h5(tenx["path"])
    with pytest.raises(MultiomeError, match=f"says {N_CELLS} barcodes.*matrix/barcodes 3"):
        read_10x_h5(tenx["path"])


def test_peak_names():
    got = peak_names(["chr1:100-200", "chrX-5-9", "GL000194.1:10-20", "weird"])
    assert list(got) == ["chr1-100-200", "chrX-5-9", "GL000194.1-10-20", "weird"]


# --------------------------------------------------------------------------------------
# muon .h5mu
# --------------------------------------------------------------------------------------


def test_h5mu_paired_cells_in_global_order_with_obs_merged(h5mu):
    with pytest.warns(
        UserWarning, match=r"Modality 'atac' of pbmc.h5mu has no layers\['counts'\]: taking its X"
    ):
        a = load_multiome(h5mu["path"])
    paired = [c for c in h5mu["order"] if c in set(h5mu["atac_cells"])]
    assert list(a.obs_names) == paired and a.n_obs == N_CELLS
    assert list(a.obs["cell_type"]) == list(h5mu["obs"].loc[paired, "cell_type"])
    assert list(a.obs["batch"]) == list(h5mu["obs"].loc[paired, "batch"])
    rna_rows = [h5mu["cells"].index(c) for c in paired]
    np.testing.assert_array_equal(a.obs["rna:n_genes"], (h5mu["rna_counts"][rna_rows] > 0).sum(1))
    np.testing.assert_allclose(
        a.obsm["X_umap"], h5mu["umap"][[h5mu["order"].index(c) for c in paired]]
    )
    assert "rna" not in a.obsm and "atac" not in a.obsm  # mudata's masks are not data
    counts = a.layers["counts"].toarray()
    np.testing.assert_array_equal(counts[:, :N_GENES], h5mu["rna_counts"][rna_rows])
    atac_rows = [h5mu["atac_cells"].index(c) for c in paired]
    np.testing.assert_array_equal(counts[:, N_GENES:], h5mu["atac_counts"][atac_rows])
    assert list(a.var["feature_types"]) == ["GEX"] * N_GENES + ["ATAC"] * N_PEAKS
    assert a.var_names[N_GENES] == "chr2-0-400" and a.var["gene_id"].iloc[0] == "ENSG00000000000"


def test_h5mu_modality_names(h5mu, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        mdata = md.read_h5mu(h5mu["path"])
    renamed = _mudata({"expr": mdata.mod["rna"], "peaks": mdata.mod["atac"]})
    path = tmp_path / "renamed.h5mu"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        renamed.write_h5mu(path)
    with pytest.raises(
        MultiomeError, match=r"no modality 'rna'.*modalities are \['expr', 'peaks'\]"
    ):
        load_multiome(path)
    with pytest.warns(UserWarning, match="'peaks'"):
        a = load_multiome(path, modalities={"gex": "expr", "atac": "peaks"})
    assert a.n_obs == N_CELLS and (a.var["feature_types"] == "ATAC").sum() == N_PEAKS
    with pytest.raises(ValueError, match="exactly the GEX and the ATAC modality"):
        read_h5mu(path, modalities={"GEX": "expr"})
    assert H5MU_MODALITIES == {"GEX": "rna", "ATAC": "atac"}


# --------------------------------------------------------------------------------------
# Dispatch, errors, inputs left alone
# --------------------------------------------------------------------------------------


def test_unknown_suffix_lists_the_formats(tmp_path):
    path = tmp_path / "data.loom"
    path.write_text("x")
    with pytest.raises(ValueError, match=r"supported are \.h5ad.*\.h5ad\.gz.*\.h5: 10x.*\.h5mu"):
        load_multiome(path)
    assert file_format("X.H5AD.GZ") == ".h5ad.gz" and file_format("a.h5mu") == ".h5mu"
    assert set(FORMATS) == {".h5ad", ".h5ad.gz", ".h5", ".h5mu"}


def test_backed_and_modalities_only_where_they_apply(tenx, h5mu):
    with pytest.raises(ValueError, match="backed=True reads .h5ad files only"):
        load_multiome(tenx["path"], backed=True)
    with pytest.raises(ValueError, match="modalities= applies to .h5mu files only"):
        load_multiome(tenx["path"], modalities={"GEX": "rna", "ATAC": "atac"})


def test_inputs_are_never_modified(tenx, h5mu, tmp_path):
    before = {p: _sha(p) for p in (tenx["path"], h5mu["path"])}
    a = load_multiome(tenx["path"])
    with pytest.warns(UserWarning):
        b = load_multiome(h5mu["path"])
    a.layers["counts"].data[:] = 0  # the results are independent of the files' arrays
    b.obs["cell_type"] = "x"
    b.obsm["X_mmae"] = np.zeros((b.n_obs, 3))
    write_h5mu(b, tmp_path / "out.h5mu", source=h5mu["path"], obsm_keys=["X_mmae"])
    assert {p: _sha(p) for p in before} == before


# --------------------------------------------------------------------------------------
# Writing .h5mu
# --------------------------------------------------------------------------------------


def test_write_h5mu_round_trip_from_the_contract(tenx, tmp_path):
    a = load_multiome(tenx["path"])
    a.obsm["X_mmae"] = np.random.default_rng(0).normal(size=(a.n_obs, 5)).astype(np.float32)
    out = write_h5mu(a, tmp_path / "res" / "embedded.h5mu")
    assert sorted(p.name for p in out.parent.iterdir()) == ["embedded.h5mu"]  # no temp left
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        back = md.read_h5mu(out)
    assert set(back.mod) == {"rna", "atac"}
    np.testing.assert_array_equal(back.obsm["X_mmae"], a.obsm["X_mmae"])
    assert list(back.obs_names) == list(a.obs_names)
    assert list(back.mod["atac"].var_names) == list(a.var_names[N_GENES:])
    again = load_multiome(out)  # and it reads back into the same contract data
    assert (again.layers["counts"] != a.layers["counts"]).nnz == 0
    assert list(again.var_names) == list(a.var_names)
    np.testing.assert_array_equal(again.obsm["X_mmae"], a.obsm["X_mmae"])


def test_write_h5mu_adds_embeddings_to_the_source(h5mu, tmp_path):
    with pytest.warns(UserWarning):
        a = load_multiome(h5mu["path"])
    emb = ad.AnnData(
        obs=a.obs[[]], obsm={"X_mmae": np.arange(a.n_obs * 2, dtype=float).reshape(-1, 2)}
    )
    out = write_h5mu(emb, tmp_path / "pbmc_mmae.h5mu", source=h5mu["path"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        back = md.read_h5mu(out)
    assert list(back.obs_names) == h5mu["order"]  # all cells of the source, unpaired ones too
    x = pd.DataFrame(back.obsm["X_mmae"], index=back.obs_names)
    np.testing.assert_array_equal(x.loc[a.obs_names].to_numpy(), emb.obsm["X_mmae"])
    unpaired = [c for c in h5mu["order"] if c not in set(a.obs_names)]
    assert len(unpaired) == 4 and x.loc[unpaired].isna().all().all()
    np.testing.assert_array_equal(back.mod["rna"].layers["counts"].toarray(), h5mu["rna_counts"])
    with pytest.raises(ValueError, match="the input is never overwritten"):
        write_h5mu(emb, h5mu["path"], source=h5mu["path"])
    with pytest.raises(KeyError, match=r"\['X_nope'\] are not in adata.obsm"):
        write_h5mu(emb, tmp_path / "x.h5mu", source=h5mu["path"], obsm_keys=["X_nope"])


def test_write_h5mu_is_atomic(tenx, tmp_path, monkeypatch):
    a = load_multiome(tenx["path"])
    a.obsm["X_mmae"] = np.ones((a.n_obs, 2))
    target = tmp_path / "out.h5mu"
    target.write_bytes(b"previous content")

    def broken(self, filename, **kwargs):
        open(filename, "wb").write(b"half written")
        raise RuntimeError("disk full")

    monkeypatch.setattr(md.MuData, "write_h5mu", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        write_h5mu(a, target)
    assert target.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "filtered_feature_bc_matrix.h5",
        "out.h5mu",
    ]
    with pytest.raises(ValueError, match="Expected a .h5mu path"):
        write_h5mu(a, tmp_path / "out.h5ad")


# --------------------------------------------------------------------------------------
# load_dataset, the run folder and mmae-report --data
# --------------------------------------------------------------------------------------


def test_load_dataset_reads_10x_and_h5mu_in_memory(tenx, h5mu, tmp_path, monkeypatch):
    import psutil

    # even on a machine whose memory is small next to the file, "auto" does not back a .h5
    fake = psutil.virtual_memory()._replace(total=1)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: fake)
    a = datasets.load_dataset(tenx["path"])
    assert "mmae_backed" not in a.uns and a.n_obs == N_CELLS
    np.testing.assert_array_equal(
        a.layers["counts"].toarray(), tenx["dense"][:, : N_GENES + N_PEAKS]
    )
    with pytest.warns(UserWarning):
        b = datasets.load_dataset(str(h5mu["path"]))
    assert b.n_obs == N_CELLS and "cell_type" in b.obs


def test_save_input_converts_once_and_load_input_reads_the_contract(tenx, tmp_path):
    a = datasets.load_dataset(tenx["path"])
    record = datasets.save_input(a, tmp_path / "run", source=str(tenx["path"]))
    info = json.loads(record.read_text())
    assert info["source"] == str(tenx["path"]) and info["path"].endswith("input.h5ad")
    again = datasets.load_input(tmp_path / "run")
    assert (again.layers["counts"] != a.layers["counts"]).nnz == 0
    assert list(again.var_names) == list(a.var_names)


def test_report_data_path_reaches_load_multiome(tenx, tmp_path, monkeypatch):
    """``mmae-report --data x.h5`` (a relative path) gives notebook 01 a path it can read."""
    import papermill as pm

    seen = {}

    def fake_execute(src, dst, *, parameters, cwd, **kwargs):
        here = os.getcwd()
        os.chdir(cwd)  # the notebooks run in the report folder
        try:
            if "DATA" in parameters:
                seen["DATA"] = parameters["DATA"]
                seen["adata"] = datasets.load_dataset(parameters["DATA"])
        finally:
            os.chdir(here)

    monkeypatch.setattr(pm, "execute_notebook", fake_execute)
    monkeypatch.chdir(tenx["path"].parent)
    argv = ["--data", tenx["path"].name, "--out", str(tmp_path / "rep"), "--no-html", "--quiet"]
    argv += ["--notebooks", "01_load_data"]
    assert report.main(argv) == 0
    assert seen["DATA"] == str(tenx["path"].resolve())
    assert (
        seen["adata"].n_obs == N_CELLS
        and (seen["adata"].var["feature_types"] == "ATAC").sum() == N_PEAKS
    )
