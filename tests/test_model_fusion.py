"""Tests of the options that make the autoencoder more than two encodings side by side:
a shared code (``fusion``), batch awareness (``batch_conditioning``,
``adversarial_batch``) and count likelihoods on the selected features
(``gex_likelihood="nb"``, ``atac_likelihood="bernoulli"``)."""

from __future__ import annotations

import inspect

import keras
import numpy as np
import pytest
import scipy.sparse as sp
import tensorflow as tf
from scipy import stats

from mmae_utils import data, pp, report
from mmae_utils.config import PRESETS, ModelConfig
from mmae_utils.datasets import synthetic_bmmc
from mmae_utils.layers import GradientReversal
from mmae_utils.likelihoods import nb_nll_per_cell
from mmae_utils.model import MultiModalAutoencoder, build_model
from mmae_utils.pipeline import make_dataset
from mmae_utils.training import embed, load_model, reconstruct, save_model, train

G, A = 12, 20
TINY = {"hidden": (16,), "latent_dim": 6}
NEW_OPTIONS = ("fusion", "batch_conditioning", "adversarial_batch")
NEW_OPTIONS += ("gex_likelihood", "atac_likelihood")


def _batch(n=32, seed=0, n_batches=3):
    rng = np.random.default_rng(seed)
    counts = rng.poisson(rng.gamma(1.0, 2.0, G), (n, G)).astype(np.float32)
    atac = (rng.random((n, A)) < 0.3).astype(np.float32)
    codes = rng.integers(0, n_batches, n).astype(np.int32)
    return {"gex": np.log1p(counts), "atac": atac, "batch": codes}, counts


def _np(x):
    return keras.ops.convert_to_numpy(x)


@pytest.fixture(scope="module")
def bmmc():
    """A small draw of the simulator, all features, split by modality (read-only)."""
    gex, atac = data.split_modalities(synthetic_bmmc(360, 300, 500, seed=5))
    return gex, atac, sorted(gex.obs["batch"].unique())


# ---------------------------------------------------------------------------- fusion
def test_shared_code_depends_on_both_modalities_and_concat_parts_do_not():
    x, _ = _batch()
    x = {"gex": x["gex"], "atac": x["atac"]}
    no_gex = {**x, "gex": np.zeros_like(x["gex"])}
    no_atac = {**x, "atac": np.zeros_like(x["atac"])}
    shared = build_model(G, A, preset="seed", fusion="shared", **TINY)
    z = _np(shared.encode(x))
    assert z.shape == (32, 6) and shared.gex_latent_dim is None
    for other in (no_gex, no_atac):  # every unit of the code moves with either input
        assert (np.abs(_np(shared.encode(other)) - z) > 1e-6).all(axis=0).all()
    concat = build_model(G, A, preset="seed", **TINY)
    z = _np(concat.encode(x))
    z_no_atac = _np(concat.encode(no_atac))
    np.testing.assert_array_equal(z_no_atac[:, :3], z[:, :3])  # the GEX part
    assert not np.allclose(z_no_atac[:, 3:], z[:, 3:])


def test_shared_code_is_one_dense_layer_over_both_encoders():
    model = build_model(G, A, preset="seed", fusion="shared", **TINY)
    assert model.shared_code.kernel.shape == (16 + 16, 6)
    assert [layer.name for layer in model.gex_encoder] == ["gex_encoder_dense0"]
    names = {w.path.split("/")[0] for w in model.weights}
    assert "gex_encoder_out" not in names and "shared_code" in names
    assert model.gex_decoder[0].kernel.shape[0] == 6  # both decoders read the whole code


@pytest.mark.parametrize(
    ("options", "fix"),
    [
        ({"gex_latent_dim": 3}, "gex_latent_dim=None"),
        ({"decoders": "own"}, 'decoders="joint"'),
        ({"latent_scaling": "block"}, 'latent_scaling="none"'),
    ],
)
def test_shared_code_refuses_the_options_that_split_it(options, fix):
    with pytest.raises(ValueError, match=f'fusion="shared".*{fix}'):
        ModelConfig(fusion="shared", latent_dim=6, **options)
    with pytest.raises(ValueError, match="no GEX and ATAC parts"):
        ModelConfig(fusion="shared").latent_split  # noqa: B018


def test_modality_dropout_zeroes_one_input_of_the_shared_code():
    model = build_model(G, A, preset="seed", fusion="shared", modality_dropout=0.6, **TINY)
    x, _ = _batch(200)
    x = {"gex": x["gex"], "atac": x["atac"]}
    trained = _np(model.encode(x, training=True))
    options = [_np(model.encode(x, missing=m)) for m in (None, "gex", "atac")]
    # each cell's training code is its code from both, from ATAC alone or from GEX alone
    match = np.stack([np.isclose(trained, o, atol=1e-6).all(axis=1) for o in options])
    assert match.any(axis=0).all()
    assert match[1].sum() > 20 and match[2].sum() > 20 and match[0].sum() > 20


# ---------------------------------------------------------------------------- batches
def test_batch_conditioned_decoders_read_the_batch_and_the_encoder_does_not():
    model = build_model(
        G, A, preset="seed", batch_conditioning=True, batch_categories=list("abc"), **TINY
    )
    x, _ = _batch()
    z = _np(model.encode({"gex": x["gex"], "atac": x["atac"]}))  # no batch needed
    np.testing.assert_array_equal(z, _np(model.encode(x)))
    out = _np(model.decode(z, batch=x["batch"])["gex"])
    other = _np(model.decode(z, batch=(x["batch"] + 1) % 3)["gex"])
    assert (np.abs(out - other) > 1e-7).any(axis=1).all()
    assert model.gex_decoder[0].kernel.shape[0] == 6 + 3  # the code and the one-hot
    with pytest.raises(ValueError, match=r"inputs\['batch'\]"):
        model({"gex": x["gex"], "atac": x["atac"]})
    with pytest.raises(ValueError, match="batch_categories="):
        build_model(G, A, preset="seed", batch_conditioning=True, **TINY)


def test_embedding_needs_no_batch_and_decoding_an_unseen_one_is_refused(bmmc):
    gex, atac, categories = bmmc
    model = build_model(
        gex.n_vars, atac.n_vars, preset="seed", batch_conditioning=True,
        batch_categories=categories, **TINY,
    )  # fmt: skip
    train(model, gex, atac, epochs=1, patience=None, seed=0, verbose=0)
    assert "batch" not in inspect.signature(embed).parameters
    z = embed(model, gex, atac)
    unseen, no_column = gex[:50].copy(), gex[:50].copy()
    unseen.obs["batch"] = "a batch never seen"
    del no_column.obs["batch"]
    # the same 50 cells with their own batches: equal to the last bit; the whole data
    # embeds in larger batches, whose matmuls may round differently on some CPUs
    seen = embed(model, gex[:50], atac[:50])
    np.testing.assert_allclose(seen, z[:50], rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(embed(model, unseen, atac[:50]), seen)
    np.testing.assert_array_equal(embed(model, no_column, atac[:50]), seen)
    with pytest.raises(ValueError, match="does not know.*pass batch= one of the known"):
        reconstruct(model, unseen, atac[:50])
    with pytest.raises(ValueError, match="no column 'batch'"):
        reconstruct(model, no_column, atac[:50])
    as_first = reconstruct(model, unseen, atac[:50], batch=categories[0])
    as_second = reconstruct(model, unseen, atac[:50], batch=categories[1])
    assert as_first.shape == (50, gex.n_vars) and not np.allclose(as_first, as_second)
    with pytest.raises(ValueError, match="no column 'donor'"):
        train(model, gex, atac, epochs=1, batch_key="donor", verbose=0)
    with pytest.raises(ValueError, match="batch_key is None.*a preset that reads none"):
        train(model, gex, atac, epochs=1, batch_key=None, verbose=0)


def test_a_model_reading_no_batches_trains_on_data_without_them(bmmc):
    gex, atac, _ = bmmc
    gex = gex.copy()
    del gex.obs["batch"]
    model = build_model(gex.n_vars, atac.n_vars, preset="seed", **TINY)
    history = train(model, gex, atac, epochs=1, batch_key=None, patience=None, verbose=0)
    assert len(history) == 1 and np.isfinite(history["loss"]).all()
    assert embed(model, gex, atac).shape == (gex.n_obs, TINY["latent_dim"])


def test_gradient_reversal_flips_the_gradient_and_only_the_gradient():
    x = tf.constant(np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32))
    w = tf.constant(np.random.default_rng(1).normal(size=(5, 4)).astype(np.float32))
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = GradientReversal()(x)
        total = tf.reduce_sum(y * w)
    np.testing.assert_array_equal(y, x)
    np.testing.assert_array_equal(tape.gradient(total, x), -w)


def test_adversarial_classifier_gradient_is_reversed_at_the_encoder():
    model = build_model(
        G, A, preset="seed", adversarial_batch=0.5, batch_categories=list("abc"), **TINY
    )
    x, _ = _batch()
    codes = x["batch"]
    classifier = model.batch_classifier[1:]  # without the reversal
    kernel = model.gex_encoder[0].kernel

    def gradients(reversed_):
        with tf.GradientTape(persistent=True) as tape:
            z = model.encode(x)
            tape.watch(z)
            logits = model.batch_logits(z) if reversed_ else classifier[1](classifier[0](z))
            ce = tf.reduce_mean(keras.ops.sparse_categorical_crossentropy(codes, logits, True))
        return tape.gradient(ce, z).numpy(), tape.gradient(ce, kernel).numpy(), ce.numpy()

    dz_rev, dk_rev, ce_rev = gradients(True)
    dz, dk, ce = gradients(False)
    assert ce_rev == ce  # the same classifier, forward unchanged
    assert np.abs(dk).max() > 0
    np.testing.assert_allclose(dz_rev, -dz, rtol=1e-6)  # the code's side of the reversal
    np.testing.assert_allclose(dk_rev, -dk, rtol=1e-5, atol=1e-9)  # the encoder's weights


def test_adversarial_batch_loss_is_weighted_into_the_total_and_logged(bmmc):
    gex, atac, categories = bmmc
    model = build_model(
        gex.n_vars, atac.n_vars, preset="seed", adversarial_batch=0.7,
        batch_categories=categories, **TINY,
    )  # fmt: skip
    history = train(model, gex, atac, epochs=2, patience=None, seed=0, verbose=0)
    assert {"batch_loss", "val_batch_loss"} <= set(history.columns)
    assert (history["batch_loss"] > 0).all()
    expected = 0.5 * history["gex_loss"] + 0.5 * history["atac_loss"]
    expected += 0.7 * history["batch_loss"]
    np.testing.assert_allclose(history["loss"], expected, rtol=1e-4)
    recon = 0.5 * history["val_gex_loss"] + 0.5 * history["val_atac_loss"]
    np.testing.assert_allclose(history["val_recon_loss"], recon, rtol=1e-4)
    assert history.attrs["monitor"] == "val_recon_loss"  # the classifier's term is fought
    assert "batch_loss" not in train(
        build_model(gex.n_vars, atac.n_vars, preset="seed", **TINY), gex, atac, epochs=1,
        patience=None, verbose=0,
    )  # fmt: skip


def test_adversarial_model_trains_with_early_stopping_and_plateau(bmmc):
    """Early stopping and the plateau schedule monitor val_recon_loss, whose direction
    Keras cannot guess from its name: both must be told it is minimised."""
    gex, atac, categories = bmmc
    model = build_model(
        gex.n_vars, atac.n_vars, preset="seed", adversarial_batch=0.1,
        batch_categories=categories, **TINY,
    )  # fmt: skip
    history = train(
        model, gex, atac, epochs=3, patience=1, lr_schedule="plateau", seed=0, verbose=0
    )
    assert history.attrs["monitor"] == "val_recon_loss"
    best = history.attrs["best_epoch"]
    assert history["val_recon_loss"].iloc[best - 1] == history["val_recon_loss"].min()


# ---------------------------------------------------------------------------- likelihoods
def test_nb_nll_equals_the_negative_binomial_log_pmf():
    rng = np.random.default_rng(3)
    counts = rng.poisson(3.0, (6, 5)).astype(np.float32)
    logits = rng.normal(size=(6, 5)).astype(np.float32)
    log_theta = rng.normal(size=5).astype(np.float32)
    library = counts.sum(axis=1) + 1
    got = _np(nb_nll_per_cell(counts, logits, library, log_theta))
    mu = library[:, None] * np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    theta = np.exp(log_theta)
    # scipy's nbinom(n, p): n = theta, p = theta / (theta + mu) has mean mu
    expected = -stats.nbinom.logpmf(counts, theta, theta / (theta + mu)).mean(axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_nb_model_loss_is_the_nll_of_the_counts_with_the_library_offset():
    model = build_model(G, A, preset="seed", gex_likelihood="nb", **TINY)
    model.gex_nb.log_theta.assign(np.linspace(-1, 1, G).astype(np.float32))
    x, counts = _batch()
    x = {"gex": x["gex"], "atac": x["atac"]}
    out = model(x)
    assert out["gex"].shape == (32, G)
    library = counts.sum(axis=1)
    y = {"gex": counts, "atac": x["atac"], "library": library}
    gex_loss, _ = model.per_cell_losses(y, out)
    theta = np.exp(np.linspace(-1, 1, G))
    p = np.exp(_np(out["gex"]))
    mu = library[:, None] * p / p.sum(axis=1, keepdims=True)
    nll = -stats.nbinom.logpmf(counts, theta, theta / (theta + mu)).mean(axis=1)
    np.testing.assert_allclose(_np(gex_loss), nll, rtol=1e-4)
    # without "library" the offset is the counts' total
    no_library = model.per_cell_losses({"gex": counts, "atac": x["atac"]}, out)[0]
    np.testing.assert_allclose(_np(no_library), nll, rtol=1e-4)
    res = model.evaluate(x, y, batch_size=32, verbose=0, return_dict=True)
    assert res["gex_loss"] == pytest.approx(nll.mean(), rel=1e-4)
    assert model.config.loss_label("gex") == "NB NLL"


def test_bernoulli_on_svd_inputs_reconstructs_the_peaks(bmmc):
    gex, atac, _ = bmmc
    model = build_model(
        gex.n_vars, atac.n_vars, preset="jae", latent_scaling="none", n_components=20,
        atac_likelihood="bernoulli", **TINY,
    )  # fmt: skip
    assert model.atac_decoder[-1].units == atac.n_vars  # one logit per peak, not 20
    history = train(model, gex, atac, epochs=2, patience=None, seed=0, verbose=0)
    assert history["atac_loss"].iloc[-1] < history["atac_loss"].iloc[0]
    peaks = (atac.layers["counts"][:40] > 0).toarray().astype(np.float32)
    x = {"gex": pp.log_normalized(gex[:40]).toarray(), "atac": peaks}
    logits = _np(model(x)["atac"])
    bce = np.mean(np.logaddexp(0.0, logits) - peaks * logits, axis=1)
    np.testing.assert_allclose(_np(model.per_cell_losses(x, model(x))[1]), bce, rtol=1e-5)
    probs = reconstruct(model, gex[:40], atac[:40], modality="atac")
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-logits)), rtol=1e-4, atol=1e-6)


def test_nb_needs_the_raw_counts(bmmc):
    gex, atac, _ = bmmc
    model = build_model(gex.n_vars, atac.n_vars, preset="seed", gex_likelihood="nb", **TINY)
    no_counts = gex.copy()
    del no_counts.layers["counts"]
    with pytest.raises(ValueError, match=r"gex.layers\['counts'\] is missing"), pytest.warns():
        train(model, no_counts, atac, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r'layers\["counts"\]'):
        train(model, sp.csr_matrix(gex.layers["counts"]), atac.layers["counts"], epochs=1)
    normalised = gex.copy()
    normalised.layers["counts"] = normalised.layers["counts"] * 0.5
    with pytest.raises(ValueError, match="non-integer"):
        train(model, normalised, atac, epochs=1, verbose=0)


def test_reconstructed_nb_genes_are_on_the_log_normalised_scale(bmmc):
    gex, atac, _ = bmmc
    model = build_model(gex.n_vars, atac.n_vars, preset="seed", gex_likelihood="nb", **TINY)
    train(model, gex, atac, epochs=1, patience=None, verbose=0)
    rec = reconstruct(model, gex[:10], atac[:10], modality="gex")
    np.testing.assert_allclose(np.expm1(rec.astype(np.float64)).sum(axis=1), 1e4, rtol=1e-4)


def test_make_dataset_streams_targets_batches_and_library_by_row():
    rng = np.random.default_rng(0)
    counts = sp.random(50, 7, density=0.4, format="csr", dtype=np.float32, random_state=0)
    counts.data = np.ceil(counts.data * 5)
    inputs = np.log1p(counts.toarray())
    atac = sp.random(50, 9, density=0.3, format="csr", dtype=np.float32, random_state=1)
    codes = rng.integers(0, 4, 50).astype(np.int32)
    library = np.asarray(counts.sum(axis=1), dtype=np.float32).ravel()
    ds = make_dataset(
        inputs, atac, np.arange(50), batch_size=16, shuffle=True, seed=2,
        batch=codes, gex_target=counts, library=library,
    )  # fmt: skip
    for x, y in ds:
        assert set(x) == {"gex", "atac", "batch"} and set(y) == {"gex", "atac", "library"}
        rows = [int(np.flatnonzero((inputs == r).all(axis=1))[0]) for r in x["gex"].numpy()]
        np.testing.assert_array_equal(x["batch"].numpy(), codes[rows])
        np.testing.assert_array_equal(y["gex"].numpy(), counts[rows].toarray())
        np.testing.assert_array_equal(y["library"].numpy(), library[rows])
        np.testing.assert_array_equal(y["atac"].numpy(), x["atac"].numpy())


# ---------------------------------------------------------------------------- the preset
def test_mmae_preset_trains_and_its_loss_falls(bmmc):
    gex, atac, categories = bmmc
    config = PRESETS["mmae"]
    assert (config.fusion, config.batch_conditioning) == ("shared", True)
    assert (config.gex_likelihood, config.atac_likelihood) == ("nb", "bernoulli")
    assert (config.gex_input, config.atac_input) == ("svd", "svd")
    model = build_model(
        gex.n_vars, atac.n_vars, preset="mmae", n_components=20, batch_categories=categories,
        **TINY,
    )  # fmt: skip
    history = train(model, gex, atac, epochs=6, patience=None, seed=0, verbose=0)
    for col in ("loss", "gex_loss", "atac_loss", "val_loss"):
        assert history[col].iloc[-1] < history[col].iloc[0], col
    text = report.training_summary(history, model=model)
    assert "GEX NB NLL went from" in text and "ATAC BCE from" in text
    assert embed(model, gex, atac).shape == (gex.n_obs, 6)


# ---------------------------------------------------------------------------- saving
@pytest.mark.parametrize(
    "options",
    [
        {"fusion": "shared"},
        {"batch_conditioning": True},
        {"adversarial_batch": 0.25},
        {"gex_likelihood": "nb"},
        {"atac_input": "tfidf", "atac_likelihood": "bernoulli"},
        {"atac_input": "tfidf", "atac_likelihood": "mse"},
    ],
)
def test_each_new_option_survives_save_and_load(tmp_path, options):
    model = build_model(
        G, A, preset="seed", batch_categories=["b1", "b2"], seed=4, **TINY, **options
    )
    if model.gex_nb is not None:
        model.gex_nb.log_theta.assign(np.full(G, 0.3, np.float32))
    names = {"gex_features": [f"g{i}" for i in range(G)]}
    names["atac_features"] = [f"p{i}" for i in range(A)]
    again = load_model(save_model(model, tmp_path / "m.keras", **names))
    assert again.config == model.config and again.batch_categories == ("b1", "b2")
    for option, value in options.items():
        assert getattr(again.config, option) == value == getattr(again, option)
    for a, b in zip(model.get_weights(), again.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    x, _ = _batch(8, n_batches=2)
    if not model.needs_batch:
        del x["batch"]
    for key, value in model(x).items():
        np.testing.assert_array_equal(_np(again(x)[key]), _np(value))


def test_configs_saved_before_the_new_options_load_as_today():
    model = build_model(G, A, preset="jae", n_components=5, **TINY)
    old = {
        k: v for k, v in model.get_config().items() if k not in (*NEW_OPTIONS, "batch_categories")
    }
    again = MultiModalAutoencoder.from_config(old)
    assert again.config == model.config
    assert again.fusion == "concat" and again.likelihoods == {"gex": "mse", "atac": "mse"}
    assert not again.needs_batch and again.batch_categories is None
    assert [w.shape for w in again.weights] == [w.shape for w in model.weights]
    seed = PRESETS["seed"]
    assert seed.likelihoods == {"gex": "mse", "atac": "bernoulli"}  # binary peaks: BCE


@pytest.mark.parametrize(
    ("options", "error", "match"),
    [
        ({"fusion": "joint"}, ValueError, "fusion must be one of"),
        ({"gex_likelihood": "poisson"}, ValueError, "gex_likelihood must be one of"),
        ({"atac_likelihood": "mse"}, ValueError, 'use atac_likelihood="auto" or "bernoulli"'),
        ({"batch_conditioning": "yes"}, TypeError, "batch_conditioning must be True or False"),
        ({"adversarial_batch": -0.1}, ValueError, "adversarial_batch must be a finite"),
    ],
)
def test_new_options_are_validated(options, error, match):
    with pytest.raises(error, match=match):
        ModelConfig(**options)


def test_loss_labels_name_what_each_config_trains():
    assert (
        PRESETS["seed"].loss_label("gex") == "MSE" and PRESETS["seed"].loss_label("atac") == "BCE"
    )
    jae = PRESETS["jae"]
    assert jae.loss_label("atac", long=True) == "mean squared error, on components"
    mmae = PRESETS["mmae"]
    assert mmae.loss_label("gex", long=True) == "negative binomial NLL, on counts"
    assert mmae.loss_label("atac", long=True) == "binary cross-entropy, on peaks"
    assert mmae.needs_batch and not jae.needs_batch
