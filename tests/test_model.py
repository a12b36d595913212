"""Tests of mmae_utils.model: architecture, wiring, losses, options, serialization."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from mmae_utils.config import DEFAULT_CONFIG, PRESETS, ModelConfig
from mmae_utils.layers import ModalityDropout
from mmae_utils.model import (
    MultiModalAutoencoder,
    bce_logits_per_cell,
    build_model,
    mse_per_cell,
)

G, A = 12, 20


def _batch(n=16, seed=0):
    rng = np.random.default_rng(seed)
    gex = np.log1p(rng.poisson(1.0, (n, G))).astype(np.float32)
    atac = (rng.random((n, A)) < 0.3).astype(np.float32)
    return {"gex": gex, "atac": atac}


def _n_dense_params(sizes):
    return sum(i * o + o for i, o in zip(sizes[:-1], sizes[1:], strict=True))


def test_default_architecture_shapes_dtypes_and_parameter_count():
    model = build_model(G, A, preset="seed")
    assert model.latent_dim == 20 and model.hidden == (250,)
    assert (model.gex_latent_dim, model.atac_latent_dim) == (10, 10)
    assert model.decoders == "joint"
    out = model(_batch(7))
    assert set(out) == {"gex", "atac"}
    assert out["gex"].shape == (7, G) and out["atac"].shape == (7, A)
    assert out["gex"].dtype == tf.float32 and out["atac"].dtype == tf.float32
    z = model.encode(_batch(7))
    assert z.shape == (7, 20) and z.dtype == tf.float32
    # encoders: in -> 250 -> own half; decoders read the whole joint code: 20 -> 250 -> out
    expected = (
        _n_dense_params([G, 250, 10])
        + _n_dense_params([A, 250, 10])
        + _n_dense_params([20, 250, G])
        + _n_dense_params([20, 250, A])
    )
    assert model.count_params() == expected


def test_odd_latent_split_and_explicit_split():
    model = build_model(G, A, preset="seed", latent_dim=21, hidden=(8, 4))
    assert (model.gex_latent_dim, model.atac_latent_dim) == (10, 11)
    assert model.encode(_batch(3)).shape == (3, 21)
    model = build_model(G, A, preset="seed", latent_dim=9, gex_latent_dim=3, hidden=(8,))
    assert (model.gex_latent_dim, model.atac_latent_dim) == (3, 6)
    with pytest.raises(ValueError, match="no room for ATAC"):
        build_model(G, A, preset="seed", latent_dim=4, gex_latent_dim=4)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"latent_dim": 20 / 2}, TypeError, "integer"),
        ({"hidden": (250.0,)}, TypeError, r"hidden\[0\]"),
        ({"hidden": (0,)}, ValueError, ">= 1"),
        ({"decoders": "shared"}, ValueError, "decoders"),
        ({"modality_dropout": 1.0}, ValueError, "modality_dropout"),
        ({"activation": "no_such_activation"}, ValueError, "activation"),
        ({"latent_size": 20}, TypeError, "unknown option"),
        ({"gex_loss_weight": -1}, ValueError, "gex_loss_weight"),
    ],
)
def test_bad_options_give_clear_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        build_model(G, A, preset="seed", **{"hidden": (8,), **kwargs})


def test_non_integer_input_dims_rejected():
    with pytest.raises(TypeError, match="gex_dim"):
        build_model(12.0, A)


def _cross_gradients(model, batch):
    g = tf.constant(batch["gex"])
    a = tf.constant(batch["atac"])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([g, a])
        out = model({"gex": g, "atac": a}, training=False)
        s_gex = tf.reduce_sum(out["gex"])
        s_atac = tf.reduce_sum(out["atac"])
    grads = {
        ("gex", "gex"): tape.gradient(s_gex, g),
        ("gex", "atac"): tape.gradient(s_gex, a),
        ("atac", "gex"): tape.gradient(s_atac, g),
        ("atac", "atac"): tape.gradient(s_atac, a),
    }
    return {k: 0.0 if v is None else float(tf.reduce_max(tf.abs(v))) for k, v in grads.items()}


def test_joint_decoders_read_both_modalities():
    model = build_model(G, A, preset="seed", hidden=(16,), latent_dim=6)
    grads = _cross_gradients(model, _batch())
    # (output, input): every reconstruction depends on both modalities
    assert all(v > 0 for v in grads.values()), grads


def test_own_decoders_read_only_their_own_modality():
    model = build_model(G, A, preset="seed", hidden=(16,), latent_dim=6, decoders="own")
    grads = _cross_gradients(model, _batch())
    assert grads[("gex", "gex")] > 0 and grads[("atac", "atac")] > 0
    assert grads[("gex", "atac")] == 0.0 and grads[("atac", "gex")] == 0.0
    # the own decoders read half of the code each
    assert model.gex_decoder[0].kernel.shape[0] == model.gex_latent_dim
    assert model.atac_decoder[0].kernel.shape[0] == model.atac_latent_dim


def test_inputs_are_taken_by_name():
    model = build_model(G, A, preset="seed", hidden=(8,))
    batch = _batch(5)
    with pytest.raises(TypeError, match="by name"):
        model([batch["gex"], batch["atac"]])
    with pytest.raises(KeyError, match="missing"):
        model({"gex": batch["gex"]})
    # the order of the keys does not matter
    swapped = {"atac": batch["atac"], "gex": batch["gex"]}
    np.testing.assert_array_equal(model(batch)["gex"], model(swapped)["gex"])


def _softplus(x):
    return np.logaddexp(0.0, x)


@pytest.mark.parametrize(("w_gex", "w_atac"), [(0.5, 0.5), (0.8, 0.2)])
def test_losses_are_mse_and_bce_from_logits_with_weights(w_gex, w_atac):
    model = build_model(
        G, A, preset="seed", hidden=(8,), gex_loss_weight=w_gex, atac_loss_weight=w_atac
    )
    batch = _batch(32)
    out = {k: v.numpy() for k, v in model(batch).items()}
    logits = out["atac"]
    assert (logits < 0).any(), "ATAC output must be logits (no ReLU/sigmoid on it)"
    mse = np.mean((out["gex"] - batch["gex"]) ** 2)
    y = batch["atac"]
    bce = np.mean(_softplus(logits) - y * logits)
    res = model.evaluate(batch, batch, batch_size=32, verbose=0, return_dict=True)
    assert res["gex_loss"] == pytest.approx(mse, rel=1e-4)
    assert res["atac_loss"] == pytest.approx(bce, rel=1e-4)
    assert res["loss"] == pytest.approx(w_gex * mse + w_atac * bce, rel=1e-4)


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_written_out_loss_gradients_match_automatic_differentiation(loss):
    # the losses carry hand-written gradients (fewer passes per step); they must equal
    # what autodiff of the textbook formulas gives, for both arguments, with per-cell
    # upstream weights, and stay finite for extreme logits
    rng = np.random.default_rng(0)
    x = rng.normal(0, 4, (24, 50)).astype(np.float32)
    x[0, :4] = [-120.0, 120.0, -30.0, 30.0]
    t = (rng.random((24, 50)) < 0.3).astype(np.float32)
    w = tf.constant(rng.random(24).astype(np.float32))
    if loss == "mse":
        fused = mse_per_cell
        reference = lambda t, x: tf.reduce_mean(tf.square(x - t), axis=-1)  # noqa: E731
    else:
        fused = bce_logits_per_cell
        reference = lambda t, x: tf.reduce_mean(  # noqa: E731
            tf.nn.sigmoid_cross_entropy_with_logits(labels=t, logits=x), axis=-1
        )
    results = []
    for fn in (fused, reference):
        tt, xx = tf.constant(t), tf.constant(x)
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([tt, xx])
            per_cell = fn(tt, xx)
            total = tf.reduce_sum(per_cell * w)
        results.append(
            [per_cell.numpy(), tape.gradient(total, xx).numpy(), tape.gradient(total, tt).numpy()]
        )
    for got, want in zip(*results, strict=True):
        assert np.all(np.isfinite(got))
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_modality_dropout_zeroes_one_modality_per_cell_only_in_training():
    n = 4000
    gex = np.ones((n, 3), np.float32)
    atac = np.ones((n, 5), np.float32)
    layer = ModalityDropout(0.4, seed=1)
    g, a = (t.numpy() for t in layer(gex, atac, training=True))
    g_dropped = (g == 0).all(axis=1)
    a_dropped = (a == 0).all(axis=1)
    # whole rows only, never both modalities of one cell
    assert ((g == 0).any(axis=1) == g_dropped).all() and ((a == 0).any(axis=1) == a_dropped).all()
    assert not (g_dropped & a_dropped).any()
    assert abs(g_dropped.mean() - 0.2) < 0.03 and abs(a_dropped.mean() - 0.2) < 0.03
    g_inf, a_inf = layer(gex, atac, training=False)
    np.testing.assert_array_equal(g_inf, gex)
    np.testing.assert_array_equal(a_inf, atac)
    # seeded: a fresh layer with the same seed draws the same masks, another seed does not
    g2, _ = ModalityDropout(0.4, seed=1)(gex, atac, training=True)
    g3, _ = ModalityDropout(0.4, seed=2)(gex, atac, training=True)
    np.testing.assert_array_equal(g, g2)
    assert not np.array_equal(g, g3.numpy())


def test_modality_dropout_in_model_training_path_only():
    model = build_model(G, A, preset="seed", hidden=(8,), modality_dropout=0.5)
    batch = _batch(64)
    inf1 = model(batch, training=False)["gex"].numpy()
    inf2 = model(batch, training=False)["gex"].numpy()
    np.testing.assert_array_equal(inf1, inf2)
    trn = model(batch, training=True)["gex"].numpy()
    # some cells lost a modality, so their reconstruction changed; the others did not
    changed = ~np.isclose(trn, inf1, atol=1e-6).all(axis=1)
    assert 0 < changed.sum() < len(changed)


def test_same_seed_same_initial_weights_other_seed_differs():
    w1 = build_model(G, A, preset="seed", hidden=(8,), seed=3).get_weights()
    w2 = build_model(G, A, preset="seed", hidden=(8,), seed=3).get_weights()
    w3 = build_model(G, A, preset="seed", hidden=(8,), seed=4).get_weights()
    for a, b in zip(w1, w2, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, b) for a, b in zip(w1, w3, strict=True))
    # distinct layers get distinct initialisations
    model = build_model(G, A, preset="seed", hidden=(8,), seed=3)
    k1 = model.gex_decoder[0].kernel.numpy()
    k2 = model.atac_decoder[0].kernel.numpy()
    assert not np.array_equal(k1, k2)


def test_config_round_trips_and_options_apply():
    config = {
        "latent_dim": 7,
        "hidden": (16, 8),
        "decoders": "own",
        "dropout": 0.1,
        "batch_norm": True,
        "latent_dropout": 0.2,
        "modality_dropout": 0.3,
        "gex_loss_weight": 0.7,
        "atac_loss_weight": 0.3,
        "seed": 5,
    }
    model = build_model(G, A, preset="seed", gex_features=[f"g{i}" for i in range(G)], **config)
    assert isinstance(model.config, ModelConfig)
    for key, value in config.items():
        assert getattr(model.config, key) == value == getattr(model, key)
    names = [layer.name for layer in model._flatten_layers(include_self=False)]
    assert "gex_encoder_bn1" in names and "atac_decoder_dropout0" in names
    assert "latent_dropout" in names

    clone = MultiModalAutoencoder.from_config(model.get_config())
    assert clone.config == model.config
    assert clone.gex_features == model.gex_features and clone.atac_features is None
    serialized = keras.saving.serialize_keras_object(model)
    assert serialized["registered_name"] == "mmae>MultiModalAutoencoder"
    again = keras.saving.deserialize_keras_object(serialized)
    assert isinstance(again, MultiModalAutoencoder) and again.config == model.config
    # same seed in the config -> same initial weights
    for a, b in zip(model.get_weights(), clone.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # the Keras config holds the options as plain values (JSON)
    keras_config = model.get_config()
    assert keras_config["hidden"] == [16, 8] and keras_config["decoders"] == "own"


def test_config_of_files_from_earlier_versions_loads():
    # .keras files written before latent_activation / latent_batch_norm were removed
    # store them at their no-op values; other values cannot be honoured any more
    model = build_model(G, A, preset="seed", hidden=(8,))
    old = {**model.get_config(), "latent_activation": None, "latent_batch_norm": False}
    assert MultiModalAutoencoder.from_config(old).config == model.config
    with pytest.raises(ValueError, match="latent_batch_norm=True"):
        MultiModalAutoencoder.from_config({**old, "latent_batch_norm": True})


def test_build_model_takes_a_config_or_a_preset():
    config = ModelConfig.from_preset("seed", hidden=(8,), latent_dim=6)
    model = build_model(G, A, config=config, dropout=0.1)  # options override the config
    assert model.config == config.replace(dropout=0.1, gex_latent_dim=3)
    with pytest.raises(ValueError, match="not both"):
        build_model(G, A, preset="seed", config=config)
    with pytest.raises(TypeError, match="must be a ModelConfig"):
        build_model(G, A, config={"latent_dim": 6})
    for removed in ("latent_activation", "latent_batch_norm", "learning_rate", "compile"):
        with pytest.raises(TypeError, match="unknown option"):
            build_model(G, A, preset="seed", hidden=(8,), **{removed: None})


def test_feature_names_must_match_dims():
    with pytest.raises(ValueError, match="3 names but the model has 12"):
        build_model(G, A, preset="seed", hidden=(8,), gex_features=["a", "b", "c"])
    with pytest.raises(TypeError, match="not a string"):
        build_model(G, A, preset="seed", hidden=(8,), atac_features="peaks")


def test_default_config_is_the_documented_one():
    assert DEFAULT_CONFIG.latent_dim == 20 and DEFAULT_CONFIG.hidden == (250,)
    assert DEFAULT_CONFIG.gex_loss_weight == DEFAULT_CONFIG.atac_loss_weight == 0.5
    assert build_model(G, A, preset="seed", hidden=(4,)).config == PRESETS["seed"].replace(
        hidden=(4,), gex_latent_dim=10
    )
