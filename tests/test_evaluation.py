"""Tests of mmae_utils.evaluation: metrics on data with known answers, equality with scib."""

from __future__ import annotations

import logging
import warnings
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mmae_utils import evaluation as ev
from mmae_utils._utils import logger
from mmae_utils.metrics import import_scib

LABEL_METRICS = ["NMI", "ARI", "cell_type_ASW", "graph_connectivity"]


@pytest.fixture(scope="module")
def scored(small_mdata):
    """800 synthetic cells with the baselines (10 dims) in obsm, and their evaluation."""
    adata = small_mdata.copy()
    keys = ev.baselines(adata, n_comps=10, seed=0)
    df = ev.evaluate(adata, keys, seed=0, progress=False)
    return adata, keys, df


@pytest.fixture
def log_records():
    """Records of the mmae_utils logger (it does not propagate to the root logger)."""
    records: list[logging.LogRecord] = []

    class Collect(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Collect(level=logging.DEBUG)
    logger.addHandler(handler)
    yield records
    logger.removeHandler(handler)


def _onehot_embedding(labels: pd.Series, noise: float, seed: int = 0) -> np.ndarray:
    codes = pd.Categorical(labels).codes
    rng = np.random.default_rng(seed)
    x = np.eye(codes.max() + 1, dtype=np.float32)[codes] * 5.0
    return x + rng.normal(0, noise, x.shape).astype(np.float32)


# --------------------------------------------------------------------------------------
# Known answers
# --------------------------------------------------------------------------------------


def test_random_embedding_is_the_floor_and_onehot_the_ceiling(small_mdata):
    adata = small_mdata.copy()
    rng = np.random.default_rng(1)
    adata.obsm["X_rand"] = rng.normal(size=(adata.n_obs, 10)).astype(np.float32)
    adata.obsm["X_onehot"] = _onehot_embedding(adata.obs["cell_type"], noise=0.2)
    df = ev.evaluate(
        adata,
        {"random": "X_rand", "onehot": "X_onehot"},
        metrics=LABEL_METRICS,
        progress=False,
    )
    rand, onehot = df.loc["random"], df.loc["onehot"]
    # random: no label information (NMI of a best-of-20 clustering of noise stays small)
    assert rand["NMI"] < 0.2
    assert abs(rand["ARI"]) < 0.05
    # silhouettes of noise are around 0 (scaled 0.5), below it with small cell types
    assert 0.35 < rand["cell_type_ASW"] < 0.55
    assert rand["graph_connectivity"] < 0.6
    # one-hot cell types + small noise: label metrics near 1
    assert onehot["NMI"] > 0.95
    assert onehot["ARI"] > 0.95
    assert onehot["cell_type_ASW"] > 0.9
    assert onehot["graph_connectivity"] > 0.95


def test_shuffling_batches_does_not_change_label_metrics(scored):
    adata, keys, df = scored
    shuffled = adata.copy()
    rng = np.random.default_rng(3)
    shuffled.obs["batch"] = adata.obs["batch"].to_numpy()[rng.permutation(adata.n_obs)]
    embs = {"pca_concat": keys["pca_concat"]}
    metrics = [*LABEL_METRICS, "batch_ASW"]
    df2 = ev.evaluate(shuffled, embs, metrics=metrics, progress=False)
    for m in LABEL_METRICS:
        assert df2.loc["pca_concat", m] == df.loc["pca_concat", m], m
    # ... while the batch metric sees the change
    assert abs(df2.loc["pca_concat", "batch_ASW"] - df.loc["pca_concat", "batch_ASW"]) > 1e-3


def test_table_layout_overall_and_ordering(scored):
    _, keys, df = scored
    assert list(df.columns) == list(ev.COLUMNS)
    assert list(df.index) == list(keys)
    assert df.index.name == "method"
    values = df[list(ev.METRICS)].to_numpy(float)
    assert np.all((values >= 0) & (values <= 1))
    np.testing.assert_allclose(df["overall"], values.mean(axis=1))
    assert (df["n_metrics"] == 6).all()
    # ARI is not part of overall
    assert "ARI" not in ev.METRICS
    # the structured embeddings beat the random floor
    for method in ("pca_concat", "pca_competition", "gex_pca"):
        assert df.loc[method, "overall"] > df.loc["random", "overall"] + 0.1
    details = df.attrs["details"]["pca_concat"]
    assert details["resolution"] in ev.COMPETITION_RESOLUTIONS
    assert set(details["trajectory_by_pseudotime"]) == {
        "GEX_pseudotime_order",
        "ATAC_pseudotime_order",
    }


def test_metric_without_support_is_nan_with_reason(small_mdata, log_records):
    adata = small_mdata.copy()
    del adata.obs["GEX_pseudotime_order"], adata.obs["ATAC_pseudotime_order"]
    # gene symbols that are no cell-cycle genes
    names = adata.var_names.to_numpy().astype(object)
    gex = (adata.var["feature_types"] == "GEX").to_numpy()
    names[gex] = [f"GENE{i}" for i in range(gex.sum())]
    adata.var_names = names
    adata.obsm["X_emb"] = _onehot_embedding(adata.obs["cell_type"], noise=0.5)
    df = ev.evaluate(adata, ["X_emb"], progress=False)
    row = df.loc["X_emb"]
    assert np.isnan(row["trajectory_conservation"])
    assert np.isnan(row["cell_cycle_conservation"])
    assert row["n_metrics"] == 4
    others = [
        m for m in ev.METRICS if m not in ("trajectory_conservation", "cell_cycle_conservation")
    ]
    assert row["overall"] == pytest.approx(row[others].mean())
    messages = " ".join(r.getMessage() for r in log_records)
    assert "trajectory_conservation is NaN" in messages and "GEX_pseudotime_order" in messages
    assert "cell_cycle_conservation is NaN" in messages and "S-phase genes" in messages


def test_one_pseudotime_column_is_enough(small_mdata):
    adata = small_mdata.copy()
    del adata.obs["ATAC_pseudotime_order"]
    adata.obsm["X_emb"] = adata.obsm["GEX_X_pca"][:, :10]
    df = ev.evaluate(adata, ["X_emb"], metrics=["trajectory_conservation"], progress=False)
    d = df.attrs["details"]["X_emb"]
    assert list(d["trajectory_by_pseudotime"]) == ["GEX_pseudotime_order"]
    assert (
        df.loc["X_emb", "trajectory_conservation"]
        == d["trajectory_by_pseudotime"]["GEX_pseudotime_order"]
    )
    assert df.loc["X_emb", "n_metrics"] == 1


def test_deterministic_for_a_seed(scored):
    adata, keys, df = scored
    embs = {k: keys[k] for k in ("pca_concat", "random")}
    again = ev.evaluate(adata, embs, seed=0, progress=False)
    pd.testing.assert_frame_equal(again, df.loc[list(embs)], check_exact=True)


def test_cell_cycle_part_is_computed_once_per_data(scored, monkeypatch):
    """A report scores each seed in its own evaluate call: the embedding-free part of the
    cell-cycle metric (scores, "before" regressions) is computed once for the same data,
    and anew when the data change."""
    adata, keys, df = scored
    scib_pp = import_scib().preprocessing
    calls = []
    real = scib_pp.score_cell_cycle
    monkeypatch.setattr(
        scib_pp, "score_cell_cycle", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    emb = {"random": keys["random"]}
    kwargs = {"metrics": ["cell_cycle_conservation"], "progress": False}
    ev.evaluate(adata, emb, seed=0, **kwargs)
    calls.clear()
    again = ev.evaluate(adata, emb, seed=3, **kwargs)
    assert calls == []
    assert again.loc["random", "cell_cycle_conservation"] == pytest.approx(
        df.loc["random", "cell_cycle_conservation"], abs=1e-12
    )
    moved = adata.copy()
    moved.obs["batch"] = moved.obs["batch"].to_numpy()[::-1]  # other cells in each batch
    ev.evaluate(moved, emb, seed=0, **kwargs)
    assert len(calls) == moved.obs["batch"].nunique()


def test_stores_the_knn_graph(scored):
    adata, keys, _ = scored
    key = keys["gex_pca"]
    nk = ev.neighbors_key(key)
    assert adata.uns[nk]["params"]["use_rep"] == key
    conn = adata.obsp[f"{nk}_connectivities"]
    assert conn.shape == (adata.n_obs, adata.n_obs)
    assert abs(conn - conn.T).max() < 1e-6  # scanpy's symmetric UMAP connectivities


def test_registry_runs_a_subset_in_registry_order(scored):
    adata, keys, df = scored
    assert list(ev.REGISTRY) == [c for c in ev.COLUMNS if c not in ("overall", "n_metrics")]
    emb = {"pca_concat": keys["pca_concat"]}
    out = ev.evaluate(adata, emb, metrics=["batch_ASW", "ARI"], seed=0, progress=False)
    row, full = out.loc["pca_concat"], df.loc["pca_concat"]
    # ARI alone still clusters at the NMI-optimal resolution, on the same graph
    assert row["ARI"] == full["ARI"] and row["batch_ASW"] == full["batch_ASW"]
    assert np.isnan(row["NMI"]) and row["n_metrics"] == 1  # ARI is not in overall
    assert [step for _, step, *_ in out.attrs["timeline"]] == ["kNN graph", "ARI", "batch_ASW"]
    assert (
        out.attrs["details"]["pca_concat"]["resolution"]
        == (df.attrs["details"]["pca_concat"]["resolution"])
    )


def test_metrics_without_a_graph_build_none(scored):
    adata, keys, df = scored
    out = ev.evaluate(
        adata, {"gex_pca": keys["gex_pca"]}, metrics=["cell_type_ASW"], progress=False
    )
    assert [step for _, step, *_ in out.attrs["timeline"]] == ["cell_type_ASW"]
    assert out.loc["gex_pca", "cell_type_ASW"] == df.loc["gex_pca", "cell_type_ASW"]


def test_accepts_arrays_and_lists(scored):
    adata, keys, df = scored
    x = adata.obsm[keys["gex_pca"]]
    out = ev.evaluate(adata, {"arr": x}, metrics=["cell_type_ASW"], progress=False)
    assert out.loc["arr", "cell_type_ASW"] == pytest.approx(df.loc["gex_pca", "cell_type_ASW"])
    assert np.isnan(out.loc["arr", "NMI"]) and out.loc["arr", "n_metrics"] == 1


# --------------------------------------------------------------------------------------
# Without labels, without batches
# --------------------------------------------------------------------------------------

#: The metrics defined without cell-type labels (see evaluation.REGISTRY).
LABEL_FREE = ["cell_cycle_conservation"]


def test_without_labels_only_the_label_free_metrics_are_computed(scored):
    adata, keys, df = scored
    embs = {k: keys[k] for k in ("pca_concat", "random")}
    unlabelled = adata.copy()
    del unlabelled.obs["cell_type"]
    with pytest.raises(KeyError, match="pass label_key=None"):
        ev.evaluate(unlabelled, embs, metrics=["NMI"], progress=False)
    out = ev.evaluate(unlabelled, embs, label_key=None, seed=0, progress=False)
    needs_labels = [m for m in ev.REGISTRY if m not in LABEL_FREE]
    assert out[needs_labels].isna().all().all()
    for m in LABEL_FREE:  # finite, and the same as with labels: they play no part in it
        assert np.isfinite(out[m]).all()
        pd.testing.assert_series_equal(out[m], df.loc[list(embs), m])
    np.testing.assert_array_equal(out["overall"], out["cell_cycle_conservation"])
    assert (out["n_metrics"] == 1).all()
    skipped = out.attrs["skipped"]
    assert list(skipped) == needs_labels
    assert all("cell-type labels" in r and "label_key is None" in r for r in skipped.values())
    text = ev.skipped_metrics(out)
    assert all(m in text for m in needs_labels) and "cell_cycle" not in text
    assert "need cell-type labels (label_key is None)" in text
    # nothing left needs a kNN graph: none is built
    steps = [step for _, step, *_ in out.attrs["timeline"]]
    assert "kNN graph" not in steps and steps.count("cell_cycle_conservation") == 2


def test_without_batches_only_the_batch_asw_is_skipped(scored):
    adata, keys, df = scored
    embs = {k: keys[k] for k in ("pca_concat", "random")}
    out = ev.evaluate(adata, embs, batch_key=None, seed=0, progress=False)
    assert out["batch_ASW"].isna().all()
    others = [m for m in ev.REGISTRY if m != "batch_ASW"]
    assert np.isfinite(out[others].to_numpy()).all()
    assert (out["n_metrics"] == 5).all()
    np.testing.assert_allclose(out["overall"], out[list(ev.METRICS)].mean(axis=1, skipna=True))
    for m in LABEL_METRICS:  # they do not read batches
        pd.testing.assert_series_equal(out[m], df.loc[list(embs), m])
    # cell cycle and trajectory conservation take all cells as one batch
    cc_traj = ["cell_cycle_conservation", "trajectory_conservation"]
    one = adata.copy()
    one.obs["one_batch"] = "all"
    ref = ev.evaluate(one, embs, batch_key="one_batch", metrics=cc_traj, seed=0, progress=False)
    pd.testing.assert_frame_equal(out[cc_traj], ref[cc_traj])
    assert not np.allclose(out[cc_traj], df.loc[list(embs), cc_traj])  # per batch it differs
    assert out.attrs["skipped"] == {"batch_ASW": "needs batches (batch_key is None)"}
    assert "batch_ASW needs batches (batch_key is None)" in ev.skipped_metrics(out)
    assert ev.skipped_metrics(df) == ""


def test_without_labels_batches_or_genes_every_metric_is_nan_with_a_reason(tiny):
    out = ev.evaluate(tiny, ["X_emb"], label_key=None, batch_key=None, progress=False)
    row = out.loc["X_emb"]
    assert row[list(ev.REGISTRY)].isna().all() and np.isnan(row["overall"])
    assert row["n_metrics"] == 0
    skipped = out.attrs["skipped"]
    assert list(skipped) == list(ev.REGISTRY)
    assert skipped["batch_ASW"] == (
        "needs cell-type labels and batches (label_key and batch_key are None)"
    )
    assert "GEX features" in skipped["cell_cycle_conservation"]
    assert "cell_cycle_conservation: adata has no GEX features" in ev.skipped_metrics(out)


def test_cluster_writes_leiden_columns_from_the_stored_graph(scored):
    from sklearn.metrics import normalized_mutual_info_score

    from mmae_utils import metrics, neighbors

    adata, keys, _ = scored
    embs = {k: keys[k] for k in ("pca_concat", "random")}
    table = ev.cluster(adata, embs, seed=0, inplace=False)
    assert list(table.columns) == ["leiden_pca_concat", "leiden_random"]
    assert table.index.equals(adata.obs_names)
    assert not any(c.startswith("leiden_") for c in adata.obs)  # inplace=False
    # on the graph evaluate stored, at the documented resolution
    x = adata.obsm[keys["pca_concat"]]
    g, reused = neighbors.graph_for(adata, keys["pca_concat"], x, 15, 0)
    assert reused
    expected = metrics.leiden(g, ev.CLUSTER_RESOLUTION, seed=0)
    np.testing.assert_array_equal(table["leiden_pca_concat"].astype(str), expected.astype(str))
    # a structured embedding's clusters follow the cell types, those of noise do not
    nmi = {
        k: normalized_mutual_info_score(adata.obs["cell_type"], table[f"leiden_{k}"]) for k in embs
    }
    assert nmi["pca_concat"] > nmi["random"] + 0.2, nmi
    finer = ev.cluster(adata, embs, resolution=3.0, seed=0, inplace=False)
    assert finer["leiden_pca_concat"].nunique() > table["leiden_pca_concat"].nunique()
    # in place: categorical obs columns, named by the return value
    copy = adata.copy()
    assert ev.cluster(copy, embs, seed=0) == {
        "pca_concat": "leiden_pca_concat",
        "random": "leiden_random",
    }
    pd.testing.assert_frame_equal(copy.obs[list(table.columns)], table)
    assert isinstance(copy.obs["leiden_random"].dtype, pd.CategoricalDtype)


def test_stored_graph_is_reused_only_for_the_same_embedding(scored):
    from mmae_utils import neighbors

    adata, keys, _ = scored
    key = keys["pca_concat"]
    x = np.array(adata.obsm[key])
    assert neighbors.graph_for(adata, key, x, 15, 0)[1]  # stored by evaluate
    moved = x.copy()
    moved[0, 0] += 1e-6  # one value of one cell: another embedding, the graph is rebuilt
    assert not neighbors.graph_for(adata, key, moved, 15, 0)[1]
    assert neighbors.fingerprint(x) == neighbors.fingerprint(x.copy())
    assert neighbors.fingerprint(x) != neighbors.fingerprint(x.astype(np.float64))


def test_cluster_stores_a_new_graph_for_the_umaps(scored):
    adata, keys, _ = scored
    fresh = ad.AnnData(obs=pd.DataFrame(index=adata.obs_names))
    fresh.obsm["X_e"] = adata.obsm[keys["gex_pca"]]
    assert ev.cluster(fresh, ["X_e"], n_neighbors=10, seed=1) == {"X_e": "leiden_X_e"}
    params = fresh.uns[ev.neighbors_key("X_e")]["params"]
    assert (params["n_neighbors"], params["random_state"]) == (10, 1)
    with pytest.raises(ValueError, match="resolution must be positive"):
        ev.cluster(fresh, ["X_e"], resolution=0)
    with pytest.raises(ValueError, match="flavor must be"):
        ev.cluster(fresh, ["X_e"], flavor="louvain")


# --------------------------------------------------------------------------------------
# Clear errors
# --------------------------------------------------------------------------------------


@pytest.fixture
def tiny():
    rng = np.random.default_rng(0)
    obs = pd.DataFrame(
        {"cell_type": rng.choice(["a", "b", "c"], 60), "batch": rng.choice(["s1", "s2"], 60)},
        index=[f"c{i}" for i in range(60)],
    )
    adata = ad.AnnData(obs=obs)
    adata.obsm["X_emb"] = rng.normal(size=(60, 5)).astype(np.float32)
    return adata


def test_errors(tiny):
    kw = {"metrics": ["cell_type_ASW"], "progress": False}
    with pytest.raises(KeyError, match="X_missing.*Available obsm keys"):
        ev.evaluate(tiny, {"m": "X_missing"}, **kw)
    with pytest.raises(ValueError, match="59 rows but adata has 60 cells"):
        ev.evaluate(tiny, {"m": np.zeros((59, 5))}, **kw)
    bad = tiny.obsm["X_emb"].copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite values in 1 of 60"):
        ev.evaluate(tiny, {"m": bad}, **kw)
    with pytest.raises(ValueError, match="101 dimensions.*at most 100"):
        ev.evaluate(tiny, {"m": np.zeros((60, 101))}, **kw)
    with pytest.raises(KeyError, match="label_key='celltype'"):
        ev.evaluate(tiny, ["X_emb"], label_key="celltype", **kw)
    with pytest.raises(KeyError, match="batch_key='sample'"):
        ev.evaluate(tiny, ["X_emb"], batch_key="sample", **kw)
    with pytest.raises(ValueError, match="Unknown metrics"):
        ev.evaluate(tiny, ["X_emb"], metrics=["kBET"], progress=False)
    with pytest.raises(ValueError, match="No embeddings"):
        ev.evaluate(tiny, {}, **kw)
    missing = tiny.copy()
    missing.obs.loc["c0", "cell_type"] = np.nan
    with pytest.raises(ValueError, match="missing for 1 cells"):
        ev.evaluate(missing, ["X_emb"], **kw)


# --------------------------------------------------------------------------------------
# Equal to scib / sklearn where we re-implement
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_silhouette_samples_equals_sklearn(dtype):
    from sklearn.metrics import silhouette_samples as sk_silhouette

    rng = np.random.default_rng(0)
    labels = rng.choice(["a", "b", "c", "d"], 500)
    labels[7] = "singleton"  # a label with one cell: silhouette 0, as sklearn
    x = (rng.normal(size=(500, 8)) + (pd.factorize(labels)[0][:, None] == np.arange(8))).astype(
        dtype
    )
    expected = sk_silhouette(x, labels)
    got = ev.silhouette_samples(x, labels)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)
    assert got[7] == 0
    with pytest.raises(ValueError, match="Number of labels is 1"):
        ev.silhouette_samples(x, np.zeros(500))


def test_asw_equal_scib(scored):
    scib = import_scib()

    adata, keys, df = scored
    for method, key in keys.items():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            label = scib.me.silhouette(adata, "cell_type", key)
            batch = scib.me.silhouette_batch(adata, "batch", "cell_type", key, verbose=False)
        assert df.loc[method, "cell_type_ASW"] == pytest.approx(label, abs=1e-6)
        assert df.loc[method, "batch_ASW"] == pytest.approx(batch, abs=1e-6)


def test_cell_cycle_equals_scib(scored):
    scib = import_scib()

    from mmae_utils.data import split_modalities
    from mmae_utils.pp import log_normalized

    adata, keys, df = scored
    gex, _ = split_modalities(adata)
    pre = ad.AnnData(X=log_normalized(gex), obs=adata.obs[["batch"]].copy(), var=gex.var[[]])
    for method in ("pca_concat", "random"):
        post = ad.AnnData(obs=adata.obs[["batch"]].copy(), obsm={"X_emb": adata.obsm[keys[method]]})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            expected = scib.me.cell_cycle(
                pre.copy(), post, "batch", embed="X_emb", organism="human"
            )
        assert df.loc[method, "cell_cycle_conservation"] == pytest.approx(expected, abs=1e-9)


def test_graph_metrics_equal_scib_on_the_same_graph(scored):
    import scanpy as sc

    scib = import_scib()

    adata, keys, df = scored
    key = keys["pca_concat"]
    g = ad.AnnData(obs=adata.obs.copy(), obsm={"X_emb": adata.obsm[key]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(g, n_neighbors=15, use_rep="X_emb", random_state=0)
        gc = scib.me.graph_connectivity(g, "cell_type")
        traj = [
            scib.me.trajectory_conservation(
                g, g, label_key="cell_type", pseudotime_key=k, batch_key="batch"
            )
            for k in ("GEX_pseudotime_order", "ATAC_pseudotime_order")
        ]
    assert df.loc["pca_concat", "graph_connectivity"] == pytest.approx(gc, abs=1e-12)
    assert df.loc["pca_concat", "trajectory_conservation"] == pytest.approx(
        np.mean(traj), abs=1e-12
    )
    # the graph evaluate() stored is the one scanpy builds
    stored = adata.obsp[f"{ev.neighbors_key(key)}_connectivities"]
    assert abs(stored - g.obsp["connectivities"]).max() == 0


def _graph(adata, key):
    import scanpy as sc

    g = ad.AnnData(obs=adata.obs[["cell_type"]].copy(), obsm={"X_emb": adata.obsm[key]})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sc.pp.neighbors(g, n_neighbors=15, use_rep="X_emb", random_state=0)
    return g


def test_full_leidenalg_search_equals_scib(scored):
    scib = import_scib()

    adata, keys, _ = scored
    g = _graph(adata, keys["gex_pca"])
    res, nmi, clusters, scores = ev.optimal_clustering(
        g, "cell_type", search="full", flavor="leidenalg"
    )
    assert len(scores) == 20
    ref = g.copy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res_ref, nmi_ref = scib.me.cluster_optimal_resolution(
            ref,
            label_key="cell_type",
            cluster_key="cluster",
            resolutions=list(ev.COMPETITION_RESOLUTIONS),
            verbose=False,
        )
    assert res == res_ref
    assert nmi == pytest.approx(nmi_ref, abs=1e-12)
    assert (clusters.astype(str).to_numpy() == ref.obs["cluster"].astype(str).to_numpy()).all()


@pytest.mark.parametrize("method", ["pca_concat", "atac_lsi"])
def test_default_search_is_close_to_the_reference(scored, method):
    """The fast default (igraph Leiden, coarse-to-fine) vs scib's full leidenalg sweep."""
    adata, keys, df = scored
    g = _graph(adata, keys[method])
    _, nmi_full_igraph, _, scores_full = ev.optimal_clustering(g, "cell_type", search="full")
    _, nmi_ref, _, _ = ev.optimal_clustering(g, "cell_type", search="full", flavor="leidenalg")
    nmi_default = df.loc[method, "NMI"]
    tried = df.attrs["details"][method]["nmi_by_resolution"]
    assert len(tried) <= 11
    # coarse-to-fine finds the full igraph sweep's optimum, or within 0.02 of it
    assert nmi_default <= nmi_full_igraph + 1e-12
    assert nmi_full_igraph - nmi_default <= 0.02
    for res, value in tried.items():  # same clusterings as in the full sweep
        assert value == pytest.approx(scores_full[res], abs=1e-12)
    # and the igraph flavour is within 0.05 of the reference (leidenalg, scib)
    assert abs(nmi_default - nmi_ref) <= 0.05


# --------------------------------------------------------------------------------------
# Cross-check with scib-metrics (an independent implementation)
# --------------------------------------------------------------------------------------


def test_agrees_with_scib_metrics(scored):
    scib_metrics = pytest.importorskip("scib_metrics")
    from scib_metrics.nearest_neighbors import NeighborsResults

    adata, keys, df = scored
    labels = adata.obs["cell_type"].to_numpy()
    for method in ("pca_concat", "gex_pca", "random"):
        x = adata.obsm[keys[method]]
        # silhouette label: same definition, float32 JAX arithmetic
        asw = scib_metrics.silhouette_label(x, labels, rescale=True)
        assert df.loc[method, "cell_type_ASW"] == pytest.approx(float(asw), abs=1e-4), method
        # the same kNN (self first, then the 14 neighbours scanpy found)
        dist = sp.csr_matrix(adata.obsp[f"{ev.neighbors_key(keys[method])}_distances"])
        k = np.diff(dist.indptr)
        assert (k == 14).all()
        order = np.argsort(dist.data.reshape(-1, 14), axis=1)
        idx = np.take_along_axis(dist.indices.reshape(-1, 14), order, axis=1)
        dst = np.take_along_axis(dist.data.reshape(-1, 14), order, axis=1)
        nn = NeighborsResults(
            indices=np.hstack([np.arange(adata.n_obs)[:, None], idx]),
            distances=np.hstack([np.zeros((adata.n_obs, 1)), dst]).astype(np.float32),
        )
        # NMI / ARI: both optimise Leiden's resolution (scib-metrics: 10 resolutions)
        nmi_ari = scib_metrics.nmi_ari_cluster_labels_leiden(nn, labels)
        assert df.loc[method, "NMI"] == pytest.approx(nmi_ari["nmi"], abs=0.05), method
        assert df.loc[method, "ARI"] == pytest.approx(nmi_ari["ari"], abs=0.1), method
        # graph connectivity: scib-metrics takes strongly connected components of the
        # directed kNN graph (so it can only be lower), scib those of the symmetric graph;
        # given the symmetric kNN graph, scib-metrics' code gives our number exactly
        gc_directed = scib_metrics.graph_connectivity(nn, labels)
        assert gc_directed <= df.loc[method, "graph_connectivity"] + 1e-12
        symmetric = SimpleNamespace(knn_graph_distances=dist.maximum(dist.T).tocsr())
        gc = scib_metrics.graph_connectivity(symmetric, labels)
        assert df.loc[method, "graph_connectivity"] == pytest.approx(gc, abs=1e-12), method


# --------------------------------------------------------------------------------------
# Scale: above 8,192 cells scanpy would approximate the neighbours with pynndescent
# --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_above_10k_cells_with_exact_neighbours():
    """Above 8,192 cells the graph still holds each cell's exact nearest neighbours."""
    n = 12_000
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 6, n)
    x = (np.eye(6)[labels] * 6 + rng.normal(0, 1, (n, 6))).astype(np.float32)
    obs = pd.DataFrame(
        {"cell_type": labels.astype(str), "batch": rng.choice(["s1", "s2"], n)},
        index=[f"c{i}" for i in range(n)],
    )
    adata = ad.AnnData(obs=obs, obsm={"X_emb": x})
    df = ev.evaluate(adata, ["X_emb"], metrics=["graph_connectivity"], progress=False)
    assert df.loc["X_emb", "graph_connectivity"] > 0.99
    dist = adata.obsp[f"{ev.neighbors_key('X_emb')}_distances"]
    assert dist.shape == (n, n)
    dist = sp.csr_matrix(dist)
    assert (np.diff(dist.indptr) == 14).all()  # k - 1 neighbours besides the cell itself
    for i in rng.choice(n, 50, replace=False):  # brute force, here
        d = np.sqrt(((x - x[i]) ** 2).sum(axis=1))
        d[i] = np.inf
        nearest = np.argsort(d, kind="stable")[:14]
        row = dist[i]
        assert set(row.indices) == set(nearest)
        np.testing.assert_allclose(np.sort(row.data), d[nearest], rtol=1e-4)


def test_importing_scib_keeps_the_warning_filters_and_rcparams():
    """scib's import calls warnings.simplefilter("default") and sets seaborn's context."""
    import subprocess
    import sys

    code = (
        "import warnings, matplotlib as mpl\n"
        "warnings.filterwarnings('ignore', category=DeprecationWarning, module='keras')\n"
        "from mmae_utils.metrics import import_scib\n"
        "before, size = list(warnings.filters), mpl.rcParams['font.size']\n"
        "import_scib()\n"
        "assert warnings.filters == before, warnings.filters[:3]\n"
        "assert mpl.rcParams['font.size'] == size\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
