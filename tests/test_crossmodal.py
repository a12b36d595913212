"""Tests of mmae_utils.crossmodal: per-feature scores on held-out cells, and their baselines."""

from __future__ import annotations

import json

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from mmae_utils import crossmodal as cm
from mmae_utils import data, plotting, report, training
from mmae_utils.datasets import synthetic_bmmc
from mmae_utils.model import build_model
from mmae_utils.pp import binarized, log_normalized

TINY = {"preset": "seed", "hidden": (8,), "latent_dim": 4}
FRACTION, SEED = 0.2, 3


@pytest.fixture(scope="module")
def tiny():
    """600 cells x (800 genes + 1,500 peaks)."""
    return synthetic_bmmc(n_cells=600, n_genes=800, n_peaks=1500, seed=21)


@pytest.fixture(scope="module")
def parts(tiny):
    return data.split_modalities(tiny)


@pytest.fixture(scope="module")
def rows(tiny):
    return training.validation_split(tiny.n_obs, validation_fraction=FRACTION, seed=SEED)[1]


@pytest.fixture(scope="module")
def trained(parts):
    gex, atac = parts
    model = build_model(gex.n_vars, atac.n_vars, modality_dropout=0.3, seed=0, **TINY)
    history = training.train(
        model, gex, atac, epochs=1, validation_fraction=FRACTION, seed=SEED, verbose=0
    )
    return model, history


def test_a_perfect_predictor_scores_one():
    rng = np.random.default_rng(0)
    peaks = (rng.random((50, 20)) < 0.3).astype(np.float32)
    peaks[0], peaks[1] = 1, 0  # both classes in every peak
    genes = rng.gamma(1.0, 1.0, (50, 10))
    atac, _ = cm.score_predictions(peaks, {"perfect": 0.2 + 0.5 * peaks}, modality="atac")
    gex, _ = cm.score_predictions(genes, {"perfect": 3 * genes - 1}, modality="gex")
    assert atac.loc["perfect", "median"] == 1.0 and atac.loc["perfect", "n_features"] == 20
    assert gex.loc["perfect", "median"] == pytest.approx(1.0)
    assert gex.loc["perfect", "n_features"] == 10
    backwards, _ = cm.score_predictions(peaks, {"wrong": -peaks}, modality="atac")
    assert backwards.loc["wrong", "median"] == 0.0


def test_auroc_is_sklearns_and_features_with_one_class_are_not_scored():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(1)
    y = (rng.random((40, 3)) < 0.4).astype(float)
    y[:, 2] = 0  # never open among these cells
    p = rng.integers(0, 4, (40, 3)).astype(float)  # with ties
    auc = cm.per_feature_auroc(y, p)
    assert auc[:2] == pytest.approx([roc_auc_score(y[:, j], p[:, j]) for j in range(2)])
    assert np.isnan(auc[2])
    r = cm.per_feature_pearson(np.c_[p[:, :1], np.ones(40)], np.c_[p[:, :1] ** 2, p[:, 1:2]])
    assert np.isfinite(r[0]) and np.isnan(r[1])  # a gene without variance has no r


def test_feature_mean_gives_exactly_one_half_and_no_r(parts, rows):
    gex, atac = parts
    for modality, part in (("atac", atac), ("gex", gex)):
        observed = cm.observed_values(part[rows], modality=modality).toarray()
        base = cm.baseline_predictions(part, rows=rows, modality=modality)
        summary, per_feature = cm.score_predictions(observed, base, modality=modality)
        if modality == "atac":
            defined = per_feature["feature mean"].dropna()
            assert len(defined) > 1000 and (defined == 0.5).all()
            # pooled over (cell, peak) pairs, knowing nothing of the cell scores well above
            # chance: it ranks common peaks above rare ones
            assert summary.loc["feature mean", "pooled"] > 0.6
        else:
            assert summary.loc["feature mean", "n_features"] == 0
            assert np.isnan(summary.loc["feature mean", "median"])
            assert summary.loc["depth x mean", "n_features"] > 700


def test_the_feature_mean_is_the_training_cells_mean(parts, rows):
    gex, _ = parts
    base = cm.baseline_predictions(gex, rows=rows, modality="gex")
    train = np.setdiff1d(np.arange(gex.n_obs), rows)
    expected = log_normalized(gex[train]).toarray().mean(axis=0)
    np.testing.assert_allclose(base["feature mean"].ravel(), expected, rtol=1e-5)


def test_a_prediction_that_knows_only_depth_matches_the_depth_baseline(parts, rows):
    gex, atac = parts
    rng = np.random.default_rng(2)
    depths = {
        "atac": np.asarray(binarized(atac[rows]).sum(axis=1)).ravel(),
        "gex": np.asarray(gex[rows].layers["counts"].sum(axis=1)).ravel(),
    }
    for modality, part in (("atac", atac), ("gex", gex)):
        observed = cm.observed_values(part[rows], modality=modality).toarray()
        base = cm.baseline_predictions(part, rows=rows, modality=modality)
        weights = rng.uniform(0.5, 2.0, part.n_vars)
        depth_only = depths[modality][:, None] * weights[None, :]
        predictions = {"depth only": depth_only, "baseline": base["depth x mean"]}
        _, per_feature = cm.score_predictions(observed, predictions, modality=modality)
        used = base["feature mean"].ravel() > 0  # a feature never seen has a constant baseline
        np.testing.assert_allclose(
            per_feature.loc[used, "depth only"], per_feature.loc[used, "baseline"], atol=1e-12
        )
        assert per_feature.loc[used, "baseline"].notna().sum() > 500


def test_the_cell_type_mean_reads_training_cells_of_the_type_only(parts, rows):
    gex, _ = parts
    base = cm.baseline_predictions(gex, rows=rows, modality="gex", label_key="cell_type")
    values = log_normalized(gex).toarray()
    labels = gex.obs["cell_type"].to_numpy()
    train = np.setdiff1d(np.arange(gex.n_obs), rows)
    for i in (0, len(rows) // 2, len(rows) - 1):
        same = train[labels[train] == labels[rows[i]]]
        np.testing.assert_allclose(base["cell-type mean"][i], values[same].mean(axis=0), rtol=1e-5)
    assert "cell-type mean" not in cm.baseline_predictions(gex, rows=rows, modality="gex")


def test_held_out_cells_are_exactly_the_validation_split(tiny, trained, rows):
    _, history = trained
    assert history.attrs["validation_rows"] == tuple(rows.tolist())
    np.testing.assert_array_equal(cm.held_out_rows(history), rows)
    recomputed = cm.held_out_rows(n_obs=tiny.n_obs, validation_fraction=FRACTION, seed=SEED)
    np.testing.assert_array_equal(recomputed, rows)
    pd.concat([history, history])  # the attrs still compare (a tuple, not an array)


def test_no_held_out_cells_is_a_clear_error(tiny, parts):
    gex, atac = parts
    model = build_model(gex.n_vars, atac.n_vars, seed=0, **TINY)
    all_cells = training.train(
        model, gex, atac, epochs=1, validation_fraction=0.0, patience=None, verbose=0
    )
    with pytest.raises(cm.NoHeldOutCellsError, match="No held-out cells.*VALIDATION_FRACTION"):
        cm.held_out_rows(all_cells)
    with pytest.raises(cm.NoHeldOutCellsError, match="No held-out cells"):
        cm.held_out_rows(n_obs=tiny.n_obs, validation_fraction=0.0, seed=0)
    with pytest.raises(cm.NoHeldOutCellsError):
        cm.score(tiny, model, rows=[])
    with pytest.raises(ValueError, match="validation_rows"):
        cm.held_out_rows(pd.DataFrame({"loss": [1.0]}))


def test_score_predicts_each_modality_from_the_other_alone(tiny, trained, rows):
    model, _ = trained
    scores = cm.score(tiny, model, rows=rows, label_key="cell_type")
    assert list(scores.table.index) == [
        (direction, predictor)
        for direction in ("ATAC from GEX", "GEX from ATAC")
        for predictor in ("mmae", "feature mean", "depth x mean", "cell-type mean")
    ]
    assert scores.observed["atac"].shape == scores.predicted["atac"].shape == (len(rows), 1500)
    assert scores.per_feature["gex"].shape == (800, 4)
    assert "oracle" in scores.table.loc[("ATAC from GEX", "depth x mean"), "note"]
    # the held-out cells' own ATAC does not reach the prediction of their ATAC
    scrambled = tiny.copy()
    counts = scrambled.layers["counts"].tolil()
    atac_cols = np.flatnonzero(scrambled.var["feature_types"] == "ATAC")
    counts[rows[:, None], atac_cols] = 0
    scrambled.layers["counts"] = counts.tocsr()
    again = cm.score(scrambled, model, rows=rows)
    np.testing.assert_array_equal(again.predicted["atac"], scores.predicted["atac"])
    assert not np.array_equal(again.observed["atac"], scores.observed["atac"])


def test_shown_features_prefer_markers_and_balanced_peaks(tiny, trained, rows):
    model, _ = trained
    scores = cm.score(tiny, model, rows=rows)
    shown = cm.shown_features(scores, n=3, markers=["CD34", "LYZ", "not a gene"])
    genes = scores.per_feature["gex"].index
    variance = pd.Series(scores.observed["gex"].var(axis=0), index=genes)
    assert shown["gex"][:2] == variance[["CD34", "LYZ"]].sort_values(ascending=False).index.tolist()
    assert shown["gex"][2] == variance.drop(["CD34", "LYZ"]).idxmax()  # topped up
    open_share = scores.observed["atac"].mean(axis=0)
    for peak in shown["atac"]:
        assert 0.1 <= open_share[scores.per_feature["atac"].index.get_loc(peak)] <= 0.9


def test_crossmodal_figure(tiny, trained, rows, tmp_path):
    model, _ = trained
    adata = tiny.copy()
    training.embed(model, *data.split_modalities(adata), adata=adata)
    scores = cm.score(adata, model, rows=rows)
    out = tmp_path / "figures" / "crossmodal.png"
    fig = plotting.crossmodal(adata, scores, n_neighbors=10, save=out)
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    assert len(titles) == 12 and out.stat().st_size > 10_000
    shown = cm.shown_features(scores)
    assert titles[0] == f"{shown['gex'][0]}\nobserved" and titles[6].startswith(shown["atac"][0])
    assert titles[1].startswith("predicted\nr ") and titles[7].startswith("predicted\nAUROC ")
    assert "X_mmae_umap" in adata.obsm  # the UMAP cached as plotting.umaps caches it
    plt.close("all")


def test_train_model_like_changes_the_config_and_keeps_the_split(tiny, parts, trained, tmp_path):
    model, history = trained
    training.save_model(model, tmp_path / "model.keras")
    report.write_json(history.attrs["options"], tmp_path / "train_options.json")
    assert json.loads((tmp_path / "train_options.json").read_text())["validation_fraction"] == 0.2
    like, like_history = report.train_model_like(tiny, tmp_path, seed=SEED, modality_dropout=0.5)
    assert like.config.modality_dropout == 0.5 and like.config.hidden == model.config.hidden
    assert like_history.attrs["validation_rows"] == history.attrs["validation_rows"]
    with pytest.raises(TypeError):
        report.train_model_like(tiny, tmp_path, seed=SEED, not_an_option=1)
    assert report.train_like(tiny, tmp_path, seed=SEED).shape == (tiny.n_obs, model.latent_dim)


def test_pooled_scores_equal_the_per_feature_scores_of_the_flattened_arrays():
    """The memory-light pooled AUROC (sorted copies) and Pearson r (float64 blocks) give
    what the per-feature scorers give on all pairs as one column, ties included."""
    rng = np.random.default_rng(3)
    observed = (rng.random((300, 40)) < 0.2).astype(np.float32)
    predicted = np.round(rng.random((300, 40)) + 0.3 * observed, 1).astype(np.float32)
    for pred in (predicted, predicted.mean(axis=0, keepdims=True)):  # a (1, features) row too
        flat = np.broadcast_to(pred, observed.shape).reshape(-1, 1)
        expected = cm.per_feature_auroc(observed.reshape(-1, 1), flat)[0]
        assert cm.pooled_auroc(observed, pred) == pytest.approx(expected, abs=1e-12)
    x = rng.random((300, 40)).astype(np.float32)
    y = x + rng.random((300, 40)).astype(np.float32)
    expected = cm.per_feature_pearson(x.reshape(-1, 1), y.reshape(-1, 1))[0]
    assert cm.pooled_pearson(x, y, chunk=64) == pytest.approx(expected, abs=1e-12)
    assert np.isnan(cm.pooled_auroc(np.zeros((3, 3)), np.ones((3, 3))))
