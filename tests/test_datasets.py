from __future__ import annotations

import gzip
import hashlib
import http.server
import json
import threading
import warnings
from functools import partial

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mmae_utils import datasets
from mmae_utils.datasets import BATCH_COUNTS, CELL_TYPE_COUNTS, cell_cycle_genes, synthetic_bmmc

REAL_OBSM = {
    "GEX_X_pca",
    "GEX_X_umap",
    "ATAC_lsi_full",
    "ATAC_lsi_red",
    "ATAC_umap",
    "ATAC_gene_activity",
}
QC_COLUMNS = {
    "GEX_n_counts",
    "GEX_n_genes",
    "GEX_pct_counts_mt",
    "ATAC_nCount_peaks",
    "GEX_size_factors",
}


def _modality(adata, name):
    return adata.layers["counts"][:, np.flatnonzero(adata.var["feature_types"] == name)]


def test_schema_follows_gse194122(small_mdata):
    a = small_mdata
    assert set(a.var["feature_types"].cat.categories) == {"GEX", "ATAC"}
    assert "gene_id" in a.var
    gex_names = a.var_names[a.var["feature_types"] == "GEX"]
    atac_names = a.var_names[a.var["feature_types"] == "ATAC"]
    assert atac_names.str.fullmatch(r"chr(\d+|X)-\d+-\d+").all()
    assert not gex_names.str.startswith("chr").any()
    # GEX first, then ATAC, as in the GEO file
    assert (a.var["feature_types"].iloc[: len(gex_names)] == "GEX").all()
    assert a.obs_names.str.fullmatch(r"[ACGT]{16}-1-s\dd\d+").all()
    assert a.obs_names.is_unique and a.var_names.is_unique
    for col in ("cell_type", "batch", "Site", "DonorNumber"):
        assert isinstance(a.obs[col].dtype, pd.CategoricalDtype), col
    assert QC_COLUMNS <= set(a.obs.columns)
    assert REAL_OBSM == set(a.obsm)
    assert {"GEX_X_pca": 50, "ATAC_lsi_full": 50, "GEX_X_umap": 2}.items() <= {
        k: v.shape[1] for k, v in a.obsm.items()
    }.items()
    assert sp.issparse(a.obsm["ATAC_gene_activity"])
    assert a.obsm["ATAC_gene_activity"].shape[1] == len(a.uns["ATAC_gene_activity_var_names"])
    assert {"dataset_id", "genome", "organism"} <= set(a.uns)
    # cell name suffix is the batch
    assert (a.obs_names.str.split("-").str[-1] == a.obs["batch"].astype(str)).all()


def test_counts_are_raw_and_x_is_normalized(small_mdata):
    counts = small_mdata.layers["counts"]
    assert counts.dtype == np.float32
    assert np.all(np.mod(counts.data, 1) == 0) and counts.data.min() >= 1
    x = small_mdata.X
    assert x.nnz == counts.nnz
    # X is log1p(CP10k) per modality: expm1 of a GEX row sums to 1e4
    gex_x = x[:, np.flatnonzero(small_mdata.var["feature_types"] == "GEX")]
    row_sums = np.asarray(np.expm1(gex_x).sum(axis=1)).ravel()
    np.testing.assert_allclose(row_sums[row_sums > 0], 1e4, rtol=1e-3)


def test_all_types_and_batches_with_nested_design(small_mdata):
    obs = small_mdata.obs
    assert set(obs["cell_type"].cat.categories) == set(CELL_TYPE_COUNTS)
    assert obs["cell_type"].nunique() == 22
    assert list(obs["batch"].cat.categories) == list(BATCH_COUNTS)
    site_of_batch = obs.groupby("batch", observed=True)["Site"].nunique()
    assert (site_of_batch == 1).all()  # each batch belongs to exactly one site
    assert obs["Site"].nunique() == 4


def test_proportions_follow_the_real_file():
    a = synthetic_bmmc(6000, 1000, 2000, seed=3)
    real = pd.Series(CELL_TYPE_COUNTS, dtype=float)
    real /= real.sum()
    sim = a.obs["cell_type"].value_counts(normalize=True).reindex(real.index)
    # the big types are within a few percentage points of the real share
    big = real[real > 0.05].index
    assert np.all(np.abs(sim[big] - real[big]) < 0.03)
    batch = a.obs["batch"].value_counts(normalize=True)
    real_b = pd.Series(BATCH_COUNTS, dtype=float) / sum(BATCH_COUNTS.values())
    assert np.all(np.abs(batch.reindex(real_b.index) - real_b) < 0.005)


def test_sparsity_and_atac_values_are_realistic():
    # the real numbers of genes and a tenth of the peaks, to keep the test quick
    a = synthetic_bmmc(512, 13431, 11649, seed=1)
    gex, atac = _modality(a, "GEX"), _modality(a, "ATAC")
    gex_density = gex.nnz / np.prod(gex.shape)
    atac_density = atac.nnz / np.prod(atac.shape)
    assert 0.08 <= gex_density <= 0.12, gex_density
    assert 0.03 <= atac_density <= 0.08, atac_density
    values, counts = np.unique(atac.data, return_counts=True)
    share = dict(zip(values, counts / counts.sum(), strict=True))
    assert share[1.0] + share[2.0] > 0.9 and share[1.0] > share[2.0]
    lib = np.asarray(gex.sum(axis=1)).ravel()
    assert 1000 < np.median(lib) < 8000


def test_pseudotime_only_on_trajectories(small_mdata):
    obs = small_mdata.obs
    on = obs["GEX_pseudotime_order"].notna()
    trajectory_types = {t for path in datasets.TRAJECTORIES.values() for t in path}
    assert set(obs.loc[on, "cell_type"].astype(str)) <= trajectory_types
    off_types = set(obs["cell_type"].astype(str)) - trajectory_types
    assert obs.loc[obs["cell_type"].isin(off_types), "GEX_pseudotime_order"].isna().all()
    assert obs.loc[on, "GEX_pseudotime_order"].between(0, 1).all()
    # erythroid maturation increases along pseudotime
    pt = obs.groupby("cell_type", observed=True)["GEX_pseudotime_order"].mean()
    assert pt["Proerythroblast"] < pt["Erythroblast"] < pt["Normoblast"]
    # ATAC pseudotime follows the same trajectories, measured on its own (noisier, ahead)
    both = obs.loc[on, ["GEX_pseudotime_order", "ATAC_pseudotime_order"]].dropna()
    assert 0.6 < both.corr().iloc[0, 1] < 0.95


def test_cell_cycle_scoring_recovers_simulated_phase(small_mdata):
    import scanpy as sc

    s_genes, g2m_genes = cell_cycle_genes()
    assert len(s_genes) == 43 and len(g2m_genes) == 54
    gex = small_mdata[:, small_mdata.var["feature_types"] == "GEX"].copy()
    assert set(s_genes + g2m_genes) <= set(gex.var_names)
    sc.tl.score_genes_cell_cycle(gex, s_genes=s_genes, g2m_genes=g2m_genes, random_state=0)
    true = gex.obs["GEX_phase"].astype(str)
    cycling = true != "G1"
    # cycling cells score higher on both programs than G1 cells
    assert (
        gex.obs.loc[true == "S", "S_score"].mean()
        > gex.obs.loc[true == "G1", "S_score"].mean() + 0.2
    )
    assert (
        gex.obs.loc[true == "G2M", "G2M_score"].mean()
        > gex.obs.loc[~cycling, "G2M_score"].mean() + 0.2
    )


def test_markers_are_expressed_where_expected(small_mdata):
    a = small_mdata
    counts = a.layers["counts"]

    def mean_expr(gene, types):
        rows = np.flatnonzero(a.obs["cell_type"].isin(types))
        col = a.var_names.get_loc(gene)
        return counts[rows, col].mean()

    t_cells = ["CD8+ T", "CD4+ T naive"]
    others = ["CD14+ Mono", "Erythroblast"]
    assert mean_expr("CD3E", t_cells) > 5 * mean_expr("CD3E", others)
    assert mean_expr("HBB", ["Erythroblast", "Normoblast"]) > 5 * mean_expr(
        "HBB", ["NK", "CD14+ Mono"]
    )
    assert mean_expr("LYZ", ["CD14+ Mono"]) > 5 * mean_expr("LYZ", ["CD8+ T"])


def test_batch_effects_are_present_and_controllable():
    from sklearn.model_selection import cross_val_score
    from sklearn.neighbors import KNeighborsClassifier

    def batch_accuracy(effect):
        a = synthetic_bmmc(
            1200, 800, 1200, seed=5, batch_effect=effect, cell_types=["CD14+ Mono", "NK"]
        )
        x = np.log1p(_modality(a, "GEX").toarray())
        from sklearn.decomposition import PCA

        z = PCA(10, random_state=0).fit_transform(x)
        return cross_val_score(KNeighborsClassifier(15), z, a.obs["batch"].astype(str), cv=3).mean()

    assert batch_accuracy(2.0) > batch_accuracy(0.0) + 0.1


def test_deterministic_and_seed_dependent():
    a = synthetic_bmmc(300, 600, 900, seed=11)
    b = synthetic_bmmc(300, 600, 900, seed=11)
    c = synthetic_bmmc(300, 600, 900, seed=12)
    assert (a.layers["counts"] != b.layers["counts"]).nnz == 0
    assert a.obs.equals(b.obs)
    assert (a.layers["counts"] != c.layers["counts"]).nnz > 0


def test_result_does_not_depend_on_chunk_size():
    a = synthetic_bmmc(700, 600, 900, seed=2, chunk_size=256)
    b = synthetic_bmmc(700, 600, 900, seed=2, chunk_size=4096)
    assert (a.layers["counts"] != b.layers["counts"]).nnz == 0


def test_row_ranges_cover_all_rows_in_order():
    from mmae_utils._utils import row_ranges

    assert list(row_ranges(700, 256)) == [(0, 256), (256, 512), (512, 700)]
    assert list(row_ranges(512, 256)) == [(0, 256), (256, 512)]
    assert list(row_ranges(0, 256)) == []
    with pytest.raises(ValueError, match="size must be at least 1"):
        row_ranges(10, 0)


def test_streaming_to_disk_equals_in_memory(tmp_path):
    path = tmp_path / "sim.h5ad"
    from mmae_utils.data import is_backed

    backed = synthetic_bmmc(600, 600, 900, seed=4, path=path, chunk_size=256)
    assert is_backed(backed) and backed.X is None and not backed.layers
    on_disk = ad.read_h5ad(path)
    in_mem = synthetic_bmmc(600, 600, 900, seed=4)
    assert (on_disk.layers["counts"] != in_mem.layers["counts"]).nnz == 0
    assert (on_disk.X != in_mem.X).nnz == 0
    assert (on_disk.obsm["ATAC_gene_activity"] != in_mem.obsm["ATAC_gene_activity"]).nnz == 0
    pd.testing.assert_frame_equal(on_disk.obs, in_mem.obs)
    pd.testing.assert_frame_equal(on_disk.var, in_mem.var)
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary file left behind


def test_subsets_of_types_and_batches():
    a = synthetic_bmmc(
        500, 600, 900, seed=0, cell_types=["NK", "CD14+ Mono", "HSC"], batches=["s1d1", "s2d4"]
    )
    assert set(a.obs["cell_type"].astype(str)) == {"NK", "CD14+ Mono", "HSC"}
    assert set(a.obs["batch"].astype(str)) == {"s1d1", "s2d4"}


def test_sparser_atac_setting():
    dense = synthetic_bmmc(300, 600, 2000, seed=0)
    sparse = synthetic_bmmc(300, 600, 2000, seed=0, atac_density=0.4)
    assert _modality(sparse, "ATAC").nnz < 0.6 * _modality(dense, "ATAC").nnz


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_cells": 10}, "n_cells=10 is too small"),
        ({"n_genes": 100}, "n_genes=100 is too small"),
        ({"n_peaks": 1.5e4}, "n_peaks must be an integer"),
        ({"cell_types": ["NK", "Microglia"]}, "Unknown cell types or batches: \\['Microglia'\\]"),
        ({"modality_bias": 2}, "modality_bias must be in"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises((ValueError, TypeError), match=message):
        synthetic_bmmc(**{"n_cells": 300, "n_genes": 600, "n_peaks": 900, **kwargs})


def test_demo_is_larger_than_the_selection():
    # the demo must leave something to select: more than 2,500 genes and 5,000 peaks
    d = datasets.demo()
    ft = d.var["feature_types"].value_counts()
    assert ft["GEX"] > 2500 and ft["ATAC"] > 5000
    assert 2000 <= d.n_obs <= 10000


# ---------------------------------------------------------------------------------------
# fetch_bmmc against a local HTTP server
# ---------------------------------------------------------------------------------------


@pytest.fixture
def http_root(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def _serve_small_h5ad(root, name="bmmc.h5ad.gz"):
    a = synthetic_bmmc(200, 600, 900, seed=9)
    raw = root / "raw.h5ad"
    a.write_h5ad(raw)
    gz = root / name
    with open(raw, "rb") as src, gzip.open(gz, "wb") as dst:
        dst.write(src.read())
    return a, hashlib.sha256(gz.read_bytes()).hexdigest()


def test_fetch_downloads_verifies_and_decompresses(http_root, tmp_path):
    root, url = http_root
    original, digest = _serve_small_h5ad(root)
    cache = tmp_path / "cache"
    path = datasets.fetch_bmmc(cache, url=f"{url}/bmmc.h5ad.gz", sha256=digest, progress=False)
    assert path.name == "bmmc.h5ad" and path.exists()
    back = ad.read_h5ad(path)
    assert (back.layers["counts"] != original.layers["counts"]).nnz == 0
    # cached: a second call does not download again (the server file is gone)
    (root / "bmmc.h5ad.gz").unlink()
    assert (
        datasets.fetch_bmmc(cache, url=f"{url}/bmmc.h5ad.gz", sha256=digest, progress=False) == path
    )


def test_fetch_rejects_a_corrupted_download_and_keeps_nothing(http_root, tmp_path):
    root, url = http_root
    _, digest = _serve_small_h5ad(root)
    gz = root / "bmmc.h5ad.gz"
    data = bytearray(gz.read_bytes())
    data[len(data) // 2] ^= 0xFF  # flip one byte in transit
    gz.write_bytes(bytes(data))
    cache = tmp_path / "cache"
    with pytest.raises(OSError, match="corrupted or is not the expected file"):
        datasets.fetch_bmmc(cache, url=f"{url}/bmmc.h5ad.gz", sha256=digest, progress=False)
    assert not [p for p in cache.iterdir() if p.suffix != ".sha256"]


def test_fetch_without_pinned_hash_logs_it_and_rejects_bad_gzip(http_root, tmp_path, caplog):
    root, url = http_root
    (root / "broken.h5ad.gz").write_bytes(b"this is not gzip at all" * 100)
    cache = tmp_path / "cache"
    with pytest.raises(OSError, match="not a valid gzip file"):
        datasets.fetch_bmmc(cache, url=f"{url}/broken.h5ad.gz", progress=False)
    assert not list(cache.glob("*.h5ad*")) or all(
        p.suffix == ".sha256" for p in cache.glob("*.h5ad*")
    )


def test_fetch_logs_hash_when_not_pinned(http_root, tmp_path, caplog):
    import logging

    root, url = http_root
    _, digest = _serve_small_h5ad(root)
    logger = logging.getLogger("mmae_utils")
    logger.addHandler(caplog.handler)
    try:
        datasets.fetch_bmmc(tmp_path / "c", url=f"{url}/bmmc.h5ad.gz", progress=False)
    finally:
        logger.removeHandler(caplog.handler)
    assert digest in caplog.text


def test_fetch_rejects_a_non_gz_address(tmp_path):
    with pytest.raises(ValueError, match=r"\.h5ad\.gz address"):
        datasets.fetch_bmmc(tmp_path, url="http://127.0.0.1:1/file.h5ad")


def test_load_dataset_resolves_demo_path_and_auto_backed(tmp_path, monkeypatch):
    import psutil

    from mmae_utils.data import is_backed

    a = synthetic_bmmc(300, 600, 900, seed=5)
    path = tmp_path / "mine.h5ad"
    a.write_h5ad(path)
    in_memory = datasets.load_dataset(path)
    assert not is_backed(in_memory) and in_memory.n_obs == 300
    # on a machine whose memory is small next to the file, "auto" keeps the counts on disk
    fake = psutil.virtual_memory()._replace(total=path.stat().st_size * 2)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: fake)
    assert is_backed(datasets.load_dataset(path))
    assert not is_backed(datasets.load_dataset(path, backed=False))
    with pytest.raises(ValueError, match="backed must be True, False or 'auto'"):
        datasets.load_dataset(path, backed="yes")
    assert datasets.load_dataset("demo").n_obs == datasets.demo().n_obs


# ---------------------------------------------------------------------------------------
# save_input / load_input: the run folder records which data a run uses
# ---------------------------------------------------------------------------------------


def test_save_input_writes_in_memory_data_and_load_input_reads_it(tmp_path):
    from mmae_utils.data import is_backed

    a = synthetic_bmmc(200, 600, 900, seed=9)
    run = tmp_path / "run"
    record = datasets.save_input(a, run, source="demo")
    assert record == run / "input.json"
    expected = {"source": "demo", "path": str((run / "input.h5ad").resolve()), "backed": False}
    assert json.loads(record.read_text()) == expected
    with warnings.catch_warnings(record=True) as caught:  # notebook 01 said it already
        warnings.simplefilter("always")
        back = datasets.load_input(run)
    assert not any("are zero in every cell" in str(w.message) for w in caught)
    assert not is_backed(back) and (back.layers["counts"] != a.layers["counts"]).nnz == 0
    assert is_backed(datasets.load_input(run, backed=True))


def test_save_input_references_files_instead_of_copying(tmp_path):
    path = tmp_path / "mine.h5ad"
    synthetic_bmmc(200, 600, 900, seed=9).write_h5ad(path)
    record = datasets.save_input(datasets.load_dataset(path), tmp_path / "run", source=str(path))
    assert json.loads(record.read_text())["path"] == str(path.resolve())
    assert not (tmp_path / "run" / "input.h5ad").exists()
    # backed data (here streamed by the simulator) are referenced and re-read backed
    streamed = synthetic_bmmc(300, 600, 900, seed=4, path=tmp_path / "sim.h5ad")
    record = datasets.save_input(streamed, tmp_path / "run2", source="sim")
    assert json.loads(record.read_text())["backed"] is True


def test_load_input_without_a_record_says_which_notebook_to_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="run notebook 01_load_data"):
        datasets.load_input(tmp_path)
