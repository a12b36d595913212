"""Tests of the input transforms, the block-scaled embedding and the presets of build_model."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import scipy.sparse as sp
from test_training import N_GENES, N_PEAKS, make_data, nearest_centroid_accuracy

from mmae_utils import pp
from mmae_utils.config import DEFAULT_PRESET, PRESETS, ModelConfig
from mmae_utils.layers import InputTransform
from mmae_utils.model import build_model
from mmae_utils.training import build_for, embed, load_model, reconstruct, save_model, train

K = 8
JAE_SMALL = {"preset": "jae", "latent_dim": 6, "hidden": (32,), "n_components": K}


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def data():
    return make_data()


def test_gex_svd_is_the_block_scaled_pca(data):
    gex, _, _ = data
    t = InputTransform("gex", "svd", N_GENES, K).fit(gex)
    got = _np(t(gex.toarray()))
    dense = gex.toarray().astype(np.float64)
    centred = dense - dense.mean(axis=0)
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    ref = u[:, :K] * s[:K]
    # unit variance per component on average, relative sizes kept
    assert np.var(got, axis=0, ddof=1).mean() == pytest.approx(1.0, rel=1e-4)
    scale = np.sqrt(np.var(ref, axis=0, ddof=1).mean())
    for j in range(K):
        r = np.corrcoef(got[:, j], ref[:, j])[0, 1]
        assert abs(r) > 0.9999
        assert np.std(got[:, j]) * scale == pytest.approx(np.std(ref[:, j]), rel=1e-3)
    # inverse maps back through the kept components: the rank-K PCA reconstruction
    recon = ref @ vt[:K] + dense.mean(axis=0)
    np.testing.assert_allclose(t.inverse(got), recon, rtol=1e-3, atol=1e-3)


def test_atac_svd_is_the_lsi_of_the_baselines(data):
    _, atac, _ = data
    t = InputTransform("atac", "svd", N_PEAKS, K).fit(atac)
    got = _np(t(atac.toarray()))
    ref = pp.lsi(atac, K)[0]  # TF-IDF, SVD with one extra component, first dropped
    assert np.abs(got.mean(axis=0)).max() < 1e-5
    assert np.var(got, axis=0).mean() == pytest.approx(1.0, rel=1e-4)
    for j in range(K):
        assert abs(np.corrcoef(got[:, j], ref[:, j])[0, 1]) > 0.999


def test_standardize_and_tfidf_inputs(data):
    gex, atac, _ = data
    g = InputTransform("gex", "standardize", N_GENES, clip=2.0).fit(gex)
    dense = gex.toarray().astype(np.float64)
    sd = dense.std(axis=0, ddof=1)
    expected = np.clip((dense - dense.mean(0)) / np.where(sd > 0, sd, np.inf), -2, 2)
    np.testing.assert_allclose(_np(g(gex.toarray())), expected, rtol=1e-4, atol=1e-4)
    a = InputTransform("atac", "tfidf", N_PEAKS).fit(atac)
    np.testing.assert_allclose(
        _np(a(atac.toarray())), pp.tfidf(atac).toarray(), rtol=1e-5, atol=1e-5
    )
    assert InputTransform("gex", "log", N_GENES).fitted  # the identity needs no fitting
    assert not InputTransform("gex", "svd", N_GENES, K).fitted


def test_losses_follow_the_atac_input(data):
    gex, atac, _ = data
    model = build_model(N_GENES, N_PEAKS, **{**JAE_SMALL, "atac_input": "tfidf"})
    model.gex_transform.fit(gex)
    model.atac_transform.fit(atac)
    x = {"gex": gex[:10].toarray(), "atac": atac[:10].toarray()}
    y_pred = model(x)
    g_loss, a_loss = model.per_cell_losses(x, y_pred)
    t = model.transform(x)
    np.testing.assert_allclose(
        _np(a_loss), ((_np(y_pred["atac"]) - _np(t["atac"])) ** 2).mean(1), rtol=1e-5
    )
    np.testing.assert_allclose(
        _np(g_loss), ((_np(y_pred["gex"]) - _np(t["gex"])) ** 2).mean(1), rtol=1e-5
    )
    assert y_pred["gex"].shape == (10, K) and y_pred["atac"].shape == (10, N_PEAKS)


def test_fits_of_the_same_content_are_reused(data, monkeypatch):
    """A report trains one model per seed on the same cells: the exact SVD is done once."""
    gex, atac, _ = data
    calls = []
    for name in ("pca", "lsi"):
        real = getattr(pp, name)
        monkeypatch.setattr(pp, name, lambda *a, _f=real, **k: calls.append(1) or _f(*a, **k))
    t = [InputTransform("gex", "svd", N_GENES, K + 1).fit(gex) for _ in range(2)]
    t.append(InputTransform("gex", "svd", N_GENES, K + 1).fit(gex.copy().toarray()))
    assert len(calls) == 1  # same content, dense or sparse: computed once
    ref = _np(t[0](gex.toarray()))
    for other in t[1:]:
        np.testing.assert_array_equal(_np(other(gex.toarray())), ref)
    changed = gex.copy()
    changed.data[:10] += 1.0
    moved = InputTransform("gex", "svd", N_GENES, K + 1).fit(changed)
    assert len(calls) == 2 and not np.allclose(_np(moved(gex.toarray())), ref)
    InputTransform("gex", "svd", N_GENES, K + 2).fit(gex)  # other options: computed anew
    InputTransform("atac", "svd", N_PEAKS, K + 1).fit(atac)
    assert len(calls) == 4


def test_train_fits_transforms_once_and_blocks_are_balanced(tmp_path, data):
    gex, atac, labels = data
    model = build_model(N_GENES, N_PEAKS, seed=0, **JAE_SMALL)
    assert not model.transforms_fitted
    history = train(model, gex, atac, epochs=30, patience=None, seed=0, verbose=0)
    assert model.transforms_fitted
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]
    z = embed(model, gex, atac)
    code = embed(model, gex, atac) / _np(model.block_scale.factors).repeat([3, 3])
    gex_var, atac_var = np.var(z[:, :3], 0).sum(), np.var(z[:, 3:], 0).sum()
    assert gex_var == pytest.approx(1.0, rel=1e-3) and atac_var == pytest.approx(1.0, rel=1e-3)
    assert not np.allclose(code, z)  # the embedding is scaled, the code is not
    assert nearest_centroid_accuracy(z, labels) > 0.9
    # a second call trains on, without refitting the transforms
    loadings = _np(model.gex_transform._stats["loadings"]).copy()
    train(model, gex[:200], atac[:200], epochs=1, patience=None, seed=1, verbose=0)
    np.testing.assert_array_equal(_np(model.gex_transform._stats["loadings"]), loadings)
    # saved and loaded: same config, fitted transforms, same embedding
    names = {"gex_features": [f"g{i}" for i in range(N_GENES)]}
    names["atac_features"] = [f"p{i}" for i in range(N_PEAKS)]
    path = save_model(model, tmp_path / "jae.keras", **names)
    again = load_model(path)
    assert again.config == model.config and again.transforms_fitted
    np.testing.assert_array_equal(embed(again, gex, atac), embed(model, gex, atac))
    # one modality alone: the other is zeroed after its transform, whatever is passed
    alone = embed(model, gex, None, from_="gex")
    np.testing.assert_array_equal(
        alone, embed(model, gex, np.ones(atac.shape, np.float32), from_="gex")
    )
    assert not np.allclose(alone, z)
    # reconstructions come back in the inputs' space
    assert reconstruct(model, gex[:5], atac[:5], modality="gex").shape == (5, N_GENES)
    assert reconstruct(model, gex[:5], atac[:5], modality="atac").shape == (5, N_PEAKS)


def test_presets_and_their_errors():
    assert DEFAULT_PRESET in PRESETS and all(isinstance(c, ModelConfig) for c in PRESETS.values())
    seed = build_model(2500, 5000, preset="seed")
    assert (seed.gex_input, seed.atac_input, seed.latent_scaling) == ("log", "binary", "none")
    jae = build_model(2500, 5000, preset="jae", batch_norm=False)  # options override presets
    assert jae.gex_input == "svd" and jae.batch_norm is False and jae.latent_scaling == "block"
    with pytest.raises(ValueError, match="Unknown preset 'best'"):
        build_model(20, 30, preset="best")
    with pytest.warns(UserWarning, match="n_components=100 asked.*using n_components=19"):
        adapted = build_model(20, 300, preset="jae")  # more components than genes: adapts
    assert adapted.config.n_components == 19 == adapted.gex_transform.n_components
    with pytest.raises(ValueError, match="gex_input must be one of"):
        build_model(20, 30, preset="seed", gex_input="tfidf")
    with pytest.raises(ValueError, match="latent_scaling must be one of"):
        build_model(20, 30, preset="seed", latent_scaling="unit")
    small = build_model(N_GENES, N_PEAKS, **JAE_SMALL)
    with pytest.raises(ValueError, match="needs more than 9 cells"):
        small.gex_transform.fit(sp.random(5, N_GENES, density=0.5, format="csr"))


def test_original_preset_is_the_seed_notebooks_model(data):
    """ "original": own decoders, ReLU outputs, and BCE on the ReLU read as a probability."""
    gex, atac, _ = data
    model = build_model(N_GENES, N_PEAKS, preset="original", latent_dim=6, hidden=(16,))
    assert model.decoders == "own" and model.output_activation == "relu"
    assert model.atac_decoder[-1].activation is keras.activations.relu
    assert PRESETS["seed"].output_activation == "linear"  # the fixed one stays linear
    x = {
        "gex": pp.log_normalize(gex[:40]).toarray(),
        "atac": pp.binarize(atac[:40]).toarray(),
    }
    out = model(x)
    assert _np(out["atac"]).min() >= 0 and _np(out["gex"]).min() >= 0
    _, atac_loss = model.per_cell_losses(x, out)
    p = np.clip(_np(out["atac"]).astype(np.float64), 1e-7, 1 - 1e-7)
    t = x["atac"]
    expected = -(t * np.log(p) + (1 - t) * np.log(1 - p)).mean(axis=1)
    np.testing.assert_allclose(_np(atac_loss), expected, rtol=1e-4)
    probabilities = reconstruct(model, gex[:40], atac[:40], modality="atac")
    np.testing.assert_allclose(probabilities, p, rtol=1e-5)  # the clipped ReLU itself
    with pytest.raises(ValueError, match='output_activation="relu".*gex_likelihood="mse"'):
        ModelConfig(output_activation="relu", gex_likelihood="nb")
    with pytest.raises(ValueError, match="output_activation must be one of"):
        ModelConfig(output_activation="sigmoid")


def test_build_for_reads_the_batches_or_builds_without_them(small_mdata):
    """The default preset conditions on the batch: built from obs[batch_key]; data without
    batches get the same model without conditioning, and a warning, not an error."""
    from mmae_utils.data import split_modalities

    gex, atac = split_modalities(small_mdata)
    config = PRESETS["jae_batch"].replace(latent_dim=6, hidden=(16,), n_components=K)
    model = build_for(gex, atac, config=config)
    assert model.batch_categories == tuple(sorted(gex.obs["batch"].astype(str).unique()))
    assert model.gex_features == tuple(gex.var_names) and model.config.batch_conditioning
    for key in (None, "sample"):
        with pytest.warns(UserWarning, match=f"no batches \\(batch_key={key!r}\\)"):
            plain = build_for(gex, atac, config=config, batch_key=key)
        assert plain.batch_categories is None and not plain.config.needs_batch
        assert plain.config == model.config.replace(batch_conditioning=False)
    adversarial = config.replace(batch_conditioning=False, adversarial_batch=0.5)
    with pytest.warns(UserWarning, match="no batches"):
        assert (
            build_for(gex, atac, config=adversarial, batch_key=None).config.adversarial_batch == 0
        )


def test_harmony_integration_corrects_the_code_and_keeps_it(small_mdata):
    """integration="harmony": embed corrects the code for the batch with the same Harmony
    call the harmony baseline makes, keeps the code beside it, and needs the batches."""
    from mmae_utils import integration
    from mmae_utils.data import split_modalities

    gex, atac = split_modalities(small_mdata)
    config = PRESETS["jae_harmony"].replace(latent_dim=6, hidden=(16,), n_components=K, seed=3)
    assert "Harmony" in config.describe() and "Harmony" not in PRESETS["jae_batch"].describe()
    model = build_for(gex, atac, config=config)
    train(model, gex, atac, epochs=2, batch_size=64, seed=3, verbose=0)
    adata = gex.copy()
    z = embed(model, gex, atac, adata=adata)
    code = embed(model, gex, atac, integrate=False)
    np.testing.assert_array_equal(adata.obsm["X_mmae_code"], code)
    np.testing.assert_array_equal(adata.obsm["X_mmae"], z)
    batches = gex.obs["batch"].to_numpy()
    np.testing.assert_array_equal(z, integration.harmony(code, batches, seed=3))
    assert np.abs(z - code).max() > 0.01  # corrected (how well: the test below)
    with pytest.raises(ValueError, match="batch_key is None.*integrate=False"):
        embed(model, gex, atac, batch_key=None)
    with pytest.raises(ValueError, match="obs has no column 'donor'"):
        embed(model, gex, atac, batch_key="donor")
    with pytest.raises(ValueError, match="integration must be one of"):
        config.replace(integration="scanorama")
    with pytest.warns(UserWarning, match="no batches"):
        assert build_for(gex, atac, config=config, batch_key=None).config.integration == "none"


def test_harmony_checks_its_labels_and_leaves_one_batch_alone():
    from mmae_utils import integration

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 4)).astype(np.float32)
    np.testing.assert_array_equal(integration.harmony(x, ["a"] * 60), x)
    with pytest.raises(ValueError, match="one batch label per cell: 60 cells, 59 labels"):
        integration.harmony(x, ["a", "b"] * 29 + ["a"])
    shifted = x + np.repeat([[0.0] * 4, [3.0] * 4], 30, axis=0)
    out = integration.harmony(shifted, ["a"] * 30 + ["b"] * 30, seed=0)
    gap = np.linalg.norm(out[:30].mean(0) - out[30:].mean(0))
    assert out.dtype == np.float32 and gap < 0.5 * np.linalg.norm([3.0] * 4)


def test_architecture_figure_shows_the_harmony_step():
    import matplotlib.pyplot as plt

    from mmae_utils import plotting

    def texts(preset):
        model = build_model(
            50, 80, preset=preset, latent_dim=6, hidden=(16,), n_components=8,
            batch_categories=("a", "b"),
        )  # fmt: skip
        fig = plotting.architecture(model)
        out = " ".join(t.get_text() for t in fig.axes[0].texts)
        plt.close(fig)
        return out

    assert "Harmony (batch)" in texts("jae_harmony")
    assert "Harmony" not in texts("jae_batch") and "batch one-hot" in texts("jae_batch")
