"""Tests of mmae_utils.training: streaming training, embedding, reconstruction, persistence."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from mmae_utils.model import build_model
from mmae_utils.training import (
    HISTORY_COLUMNS,
    check_features,
    embed,
    load_model,
    make_dataset,
    reconstruct,
    save_model,
    train,
    validation_split,
)

N_GENES, N_PEAKS, N_TYPES = 30, 50, 4
SMALL = {"latent_dim": 6, "hidden": (32,), "preset": "seed"}  # the original architecture


def make_data(n=480, seed=0):
    """Learnable paired data: a few cell types -> Poisson GEX (log1p) and Bernoulli ATAC."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % N_TYPES
    rng.shuffle(labels)
    programs = rng.gamma(2.0, 1.5, (N_TYPES, N_GENES)) * (rng.random((N_TYPES, N_GENES)) < 0.4)
    gex = np.log1p(rng.poisson(programs[labels] + 0.05)).astype(np.float32)
    open_prob = np.where(rng.random((N_TYPES, N_PEAKS)) < 0.3, 0.85, 0.03)
    atac = (rng.random((n, N_PEAKS)) < open_prob[labels]).astype(np.float32)
    return sp.csr_matrix(gex), sp.csr_matrix(atac), labels


def as_anndata(x, prefix, n_obs_names=None):
    counts = x.copy()
    if prefix == "gene":
        counts.data = np.expm1(counts.data).round()  # back to counts
    var = pd.DataFrame(index=[f"{prefix}{i}" for i in range(x.shape[1])])
    obs = pd.DataFrame(index=n_obs_names or [f"cell{i}" for i in range(x.shape[0])])
    return ad.AnnData(X=counts.copy(), obs=obs, var=var, layers={"counts": counts})


def nearest_centroid_accuracy(z, labels):
    """Leave-in nearest-centroid accuracy of the cell types in an embedding."""
    centroids = np.stack([z[labels == k].mean(axis=0) for k in range(N_TYPES)])
    d = ((z[:, None, :] - centroids[None]) ** 2).sum(-1)
    return float((d.argmin(axis=1) == labels).mean())


@pytest.fixture(scope="module")
def data():
    return make_data()


@pytest.fixture(scope="module")
def trained(data):
    gex, atac, _ = data
    model = build_model(N_GENES, N_PEAKS, modality_dropout=0.2, seed=0, **SMALL)
    history = train(
        model,
        gex,
        atac,
        epochs=30,
        batch_size=64,
        learning_rate=3e-3,
        patience=5,
        seed=0,
        jit_compile=False,
        verbose=0,
    )
    return model, history


def test_loss_falls_and_history_reports_per_modality_losses(trained, data):
    model, history = trained
    # every column but the adversarial classifier's, which this model does not have
    assert list(history.columns) == [
        c for c in HISTORY_COLUMNS if "batch_loss" not in c and "recon_loss" not in c
    ]
    assert history.index.name == "epoch" and history.index[0] == 1
    first, best = history.iloc[0], history.loc[history.attrs["best_epoch"]]
    for col in ("loss", "gex_loss", "atac_loss", "val_loss", "val_gex_loss", "val_atac_loss"):
        assert best[col] < 0.8 * first[col], col
    # the total is the weighted sum of the (unweighted) per-modality losses
    np.testing.assert_allclose(
        history["loss"], 0.5 * history["gex_loss"] + 0.5 * history["atac_loss"], rtol=1e-4
    )
    np.testing.assert_allclose(
        history["val_loss"],
        0.5 * history["val_gex_loss"] + 0.5 * history["val_atac_loss"],
        rtol=1e-4,
    )
    assert history.attrs["n_train"] + history.attrs["n_val"] == data[0].shape[0]
    assert history.attrs["n_val"] == 48
    assert (history["seconds"] > 0).all()


def test_embedding_separates_cell_types(trained, data):
    model, _ = trained
    gex, atac, labels = data
    z = embed(model, gex, atac)
    assert z.shape == (gex.shape[0], 6) and z.dtype == np.float32
    assert nearest_centroid_accuracy(z, labels) > 0.95
    # modality dropout trained the code to work from a single modality too
    assert nearest_centroid_accuracy(embed(model, gex, None, from_="gex"), labels) > 0.9
    assert nearest_centroid_accuracy(embed(model, None, atac, from_="atac"), labels) > 0.9


def test_embed_is_batch_independent_and_writes_obsm(trained, data):
    model, _ = trained
    gex, atac, _ = data
    adata = ad.AnnData(obs=pd.DataFrame(index=[f"c{i}" for i in range(gex.shape[0])]))
    z_big = embed(model, gex, atac, batch_size=1024, adata=adata)
    z_small = embed(model, gex, atac, batch_size=37)
    np.testing.assert_allclose(z_big, z_small, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(adata.obsm["X_mmae"], z_big)
    embed(model, gex, atac, adata=adata, key_added="X_other")
    assert "X_other" in adata.obsm
    with pytest.raises(ValueError, match="adata has 3 cells"):
        embed(model, gex, atac, adata=adata[:3].copy())


def test_reconstruct_either_modality(trained, data):
    model, _ = trained
    gex, atac, _ = data
    rec_gex = reconstruct(model, gex, atac, modality="gex", batch_size=100)
    assert rec_gex.shape == gex.shape and rec_gex.dtype == np.float32
    # better than predicting every gene's mean
    mse_model = np.mean((rec_gex - gex.toarray()) ** 2)
    mse_mean = np.mean((gex.toarray() - gex.toarray().mean(axis=0)) ** 2)
    assert mse_model < 0.5 * mse_mean
    prob = reconstruct(model, gex, atac, modality="atac")
    logits = reconstruct(model, gex, atac, modality="atac", logits=True)
    assert prob.min() >= 0 and prob.max() <= 1
    np.testing.assert_allclose(prob, 1 / (1 + np.exp(-logits.astype(np.float64))), atol=1e-6)
    # ATAC from GEX alone: the missing modality is zeros, as in modality dropout
    from_gex = reconstruct(model, gex, None, modality="atac", from_="gex")
    zeros = sp.csr_matrix(atac.shape, dtype=np.float32)
    np.testing.assert_allclose(
        from_gex, reconstruct(model, gex, zeros, modality="atac"), rtol=1e-5, atol=1e-6
    )
    auc_like = from_gex[atac.toarray() == 1].mean() - from_gex[atac.toarray() == 0].mean()
    assert auc_like > 0.3
    with pytest.raises(ValueError, match="modality"):
        reconstruct(model, gex, atac, modality="rna")


def test_same_seed_same_model_and_embedding_default_path(data):
    gex, atac, _ = data
    z = []
    for _ in range(2):
        model = build_model(N_GENES, N_PEAKS, modality_dropout=0.3, dropout=0.1, seed=7, **SMALL)
        train(model, gex, atac, epochs=2, batch_size=64, seed=7, verbose=0)
        assert not model.jit_compile and type(model.optimizer).__name__ == "FusedAdam"
        z.append(embed(model, gex, atac))
    np.testing.assert_array_equal(z[0], z[1])


def test_cpu_speed_ups_stay_off_where_a_gpu_trains(data, monkeypatch):
    """Nothing on the default path is CPU-only: with a GPU visible, train compiles Keras'
    own Adam and leaves glibc's allocator settings alone."""
    import tensorflow as tf

    from mmae_utils import _cpu

    gex, atac, _ = data
    seen = tf.config.list_logical_devices("CPU")[:1]
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda kind=None: seen)  # "a GPU"
    tuned = []
    monkeypatch.setattr(_cpu.ctypes, "CDLL", lambda *a, **k: tuned.append(a))
    monkeypatch.setattr(_cpu, "_MALLOC_TUNED", False)
    assert not _cpu.on_cpu()
    model = build_model(N_GENES, N_PEAKS, seed=0, **SMALL)
    train(model, gex, atac, epochs=1, batch_size=64, seed=0, verbose=0)
    assert type(model.optimizer).__name__ == "Adam" and tuned == []


def test_same_seed_same_model_and_embedding_with_xla(data):
    gex, atac, _ = data
    results = []
    for _ in range(2):
        model = build_model(N_GENES, N_PEAKS, modality_dropout=0.3, dropout=0.1, seed=7, **SMALL)
        # 432 training cells = 9 batches of 48: one XLA compilation for training
        hist = train(model, gex, atac, epochs=2, batch_size=48, seed=7, jit_compile=True, verbose=0)
        assert model.jit_compile  # XLA stays on under op determinism
        results.append((hist, embed(model, gex, atac), model.get_weights()))
    (h1, z1, w1), (h2, z2, w2) = results
    np.testing.assert_array_equal(z1, z2)
    for a, b in zip(w1, w2, strict=True):
        np.testing.assert_array_equal(a, b)
    pd.testing.assert_frame_equal(h1.drop(columns="seconds"), h2.drop(columns="seconds"))


def test_other_seed_other_embedding(data):
    gex, atac, _ = data
    z = {}
    for seed in (7, 8):
        model = build_model(N_GENES, N_PEAKS, modality_dropout=0.3, seed=seed, **SMALL)
        train(model, gex, atac, epochs=1, batch_size=48, seed=seed, jit_compile=False, verbose=0)
        z[seed] = embed(model, gex, atac)
    assert not np.allclose(z[7], z[8], atol=1e-3)


@pytest.fixture(scope="module")
def csr_reference(data):
    gex, atac, _ = data
    model = build_model(N_GENES, N_PEAKS, seed=1, **SMALL)
    hist = train(model, gex, atac, epochs=2, batch_size=64, seed=1, jit_compile=False, verbose=0)
    return hist["loss"].to_numpy(), embed(model, gex, atac)


@pytest.mark.parametrize("kind", ["dense", "csr_array", "csc"])
def test_sparse_and_dense_inputs_give_the_same_result(data, csr_reference, kind):
    gex, atac, _ = data
    convert = {
        "dense": lambda x: x.toarray(),
        "csr_array": sp.csr_array,
        "csc": lambda x: x.tocsc(),
    }[kind]
    g, a = convert(gex), convert(atac)
    model = build_model(N_GENES, N_PEAKS, seed=1, **SMALL)
    hist = train(model, g, a, epochs=2, batch_size=64, seed=1, jit_compile=False, verbose=0)
    np.testing.assert_array_equal(hist["loss"].to_numpy(), csr_reference[0])
    np.testing.assert_array_equal(embed(model, g, a), csr_reference[1])


def test_dataset_streams_batches_and_reshuffles_each_epoch():
    n, bs = 50, 8
    # column 0 holds the row id, so each batch tells which rows it holds
    gex = sp.csr_matrix(np.c_[np.arange(n) + 1, np.zeros((n, 2))].astype(np.float32))
    atac = sp.csr_matrix(np.ones((n, 3), np.float32))
    rows = np.arange(5, n)
    ds = make_dataset(gex, atac, rows, batch_size=bs, shuffle=True, seed=3)
    assert int(ds.cardinality()) == int(np.ceil(len(rows) / bs))

    def epoch(dataset):
        ids = []
        for x, y in dataset:
            assert x["gex"].shape[0] <= bs and x["gex"].shape[1] == 3
            np.testing.assert_array_equal(x["gex"], y["gex"])  # targets are the inputs
            ids.append(x["gex"].numpy()[:, 0].astype(int) - 1)
        return np.concatenate(ids)

    e1, e2 = epoch(ds), epoch(ds)
    assert sorted(e1) == sorted(e2) == list(rows)  # every training row once per epoch
    assert not np.array_equal(e1, e2)  # reshuffled
    again = make_dataset(gex, atac, rows, batch_size=bs, shuffle=True, seed=3)
    np.testing.assert_array_equal(epoch(again), e1)  # same seed, same order
    fixed = make_dataset(gex, atac, rows, batch_size=bs, shuffle=False)
    np.testing.assert_array_equal(epoch(fixed), rows)


def test_dataset_turns_tf_data_autotuning_off():
    # With autotuning on, deleting an epoch's iterator waits for tf.data's model thread,
    # which sleeps up to 10 s between rounds: 8-10 s stalls at the start of about half
    # the epochs at full scale (benchmarks/README.md, Training). Timing it here would be
    # flaky on a shared machine, so this checks the option that prevents it.
    gex = sp.csr_matrix(np.ones((10, 3), np.float32))
    ds = make_dataset(gex, gex, np.arange(10), batch_size=4, shuffle=True, seed=0)
    assert ds.options().autotune.enabled is False


def test_early_stopping_restores_best_weights(data):
    gex, atac, _ = data
    model = build_model(N_GENES, N_PEAKS, seed=2, **SMALL)
    # a far too large learning rate makes the validation loss jump around
    hist = train(
        model,
        gex,
        atac,
        epochs=12,
        batch_size=64,
        learning_rate=0.3,
        patience=2,
        seed=2,
        jit_compile=False,
        verbose=0,
    )
    best = hist.attrs["best_epoch"]
    assert hist.attrs["monitor"] == "val_loss"
    assert best < len(hist), "the scenario needs a worse last epoch"
    assert hist["val_loss"].idxmin() == best
    # recompute the validation loss of the restored model on the same held-out cells
    _, val_rows = validation_split(gex.shape[0], validation_fraction=0.1, seed=2)
    assert len(val_rows) == hist.attrs["n_val"]
    x = {"gex": gex[val_rows].toarray(), "atac": atac[val_rows].toarray()}
    res = model.evaluate(x, x, batch_size=1024, verbose=0, return_dict=True)
    assert res["loss"] == pytest.approx(hist.loc[best, "val_loss"], rel=1e-4)
    assert res["loss"] < hist["val_loss"].iloc[-1]


def test_validation_split_is_seeded_disjoint_and_complete():
    tr, va = validation_split(101, validation_fraction=0.1, seed=4)
    assert len(va) == 10 and len(tr) == 91
    assert sorted(np.concatenate([tr, va])) == list(range(101))
    tr2, va2 = validation_split(101, validation_fraction=0.1, seed=4)
    np.testing.assert_array_equal(va, va2)
    _, va3 = validation_split(101, validation_fraction=0.1, seed=5)
    assert not np.array_equal(va, va3)
    assert len(validation_split(5, validation_fraction=0.01)[1]) == 1
    assert len(validation_split(5, validation_fraction=0.0)[1]) == 0


def test_no_validation_split_monitors_training_loss(data):
    gex, atac, _ = data
    model = build_model(N_GENES, N_PEAKS, seed=0, **SMALL)
    hist = train(
        model,
        gex[:100],
        atac[:100],
        epochs=2,
        validation_fraction=0.0,
        patience=None,
        jit_compile=False,
        verbose=0,
    )
    assert list(hist.columns) == ["loss", "gex_loss", "atac_loss", "seconds"]
    assert hist.attrs["n_val"] == 0 and hist.attrs["monitor"] == "loss"


def test_input_errors_are_clear(data):
    gex, atac, _ = data
    model = build_model(N_GENES, N_PEAKS, **SMALL)
    with pytest.raises(ValueError, match="480 GEX rows and 479 ATAC rows"):
        train(model, gex, atac[:-1], epochs=1, verbose=0)
    bad = gex.copy()
    bad.data[3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        embed(model, bad, atac)
    with pytest.raises(ValueError, match="expects 50 ATAC features but the data has 49"):
        embed(model, gex, atac[:, :-1])
    with pytest.raises(ValueError, match="from_"):
        embed(model, gex, atac, from_="rna")
    with pytest.raises(ValueError, match='from_="gex"'):
        embed(model, gex, None)
    with pytest.raises(TypeError, match="scipy.sparse"):
        embed(model, "gex", atac)
    with pytest.raises(ValueError, match="validation_fraction"):
        train(model, gex, atac, epochs=1, validation_fraction=1.0, verbose=0)
    with pytest.raises(TypeError, match="batch_size"):
        train(model, gex, atac, epochs=1, batch_size=12.5, verbose=0)


def test_anndata_inputs_record_and_check_features(tmp_path, data):
    gex, atac, labels = data
    gex_ad, atac_ad = as_anndata(gex, "gene"), as_anndata(atac, "chr1-")
    model = build_model(N_GENES, N_PEAKS, seed=0, **SMALL)
    train(model, gex_ad, atac_ad, epochs=1, batch_size=64, jit_compile=False, verbose=0)
    assert model.gex_features == tuple(gex_ad.var_names)
    assert model.atac_features == tuple(atac_ad.var_names)
    z = embed(model, gex_ad, atac_ad, adata=gex_ad)
    np.testing.assert_array_equal(gex_ad.obsm["X_mmae"], z)
    # the AnnData path derives the same inputs as the counts -> gex_input/atac_input path
    np.testing.assert_allclose(z, embed(model, _lognorm(gex_ad), atac), rtol=1e-5, atol=1e-6)

    other = gex_ad[:, ::-1].copy()
    with pytest.raises(ValueError, match="different order"):
        embed(model, other, atac_ad)
    renamed = gex_ad.copy()
    renamed.var_names = [f"gene{i}" for i in range(5)] + [f"x{i}" for i in range(5, N_GENES)]
    with pytest.raises(
        ValueError, match="first difference at position 5: model 'gene5', data 'x5'"
    ):
        embed(model, renamed, atac_ad)
    fewer = atac_ad[:, :40].copy()
    with pytest.raises(ValueError, match="ATAC .*model has 50, data has 40"):
        check_features(model, atac_features=fewer.var_names)


def _lognorm(gex_ad):
    from mmae_utils.pp import log_normalized

    return log_normalized(gex_ad)


def test_save_load_round_trip(tmp_path, trained, data):
    model, _ = trained
    gex, atac, _ = data
    genes = [f"gene{i}" for i in range(N_GENES)]
    peaks = [f"chr1-{i}-{i + 1}" for i in range(N_PEAKS)]
    path = save_model(
        model, tmp_path / "sub" / "mmae.keras", gex_features=genes, atac_features=peaks
    )
    assert path.exists() and [p.name for p in path.parent.iterdir()] == ["mmae.keras"]
    loaded = load_model(path)
    assert type(loaded) is type(model)
    assert loaded.config == model.config
    assert loaded.gex_features == tuple(genes) and loaded.atac_features == tuple(peaks)
    np.testing.assert_array_equal(embed(loaded, gex, atac), embed(model, gex, atac))
    np.testing.assert_array_equal(
        reconstruct(loaded, gex, atac, modality="atac", logits=True),
        reconstruct(model, gex, atac, modality="atac", logits=True),
    )
    # the loaded model is compiled with the same losses and can keep training
    assert loaded.compiled
    x = {"gex": gex[:64].toarray(), "atac": atac[:64].toarray()}
    r1 = loaded.evaluate(x, x, verbose=0, return_dict=True)
    r2 = model.evaluate(x, x, verbose=0, return_dict=True)
    assert r1["loss"] == pytest.approx(r2["loss"], rel=1e-6)

    with pytest.raises(ValueError, match=r"\.keras"):
        save_model(model, tmp_path / "mmae.h5")
    with pytest.raises(ValueError, match="GEX features differ"):
        check_features(loaded, gex_features=genes[::-1])


def test_save_without_feature_names_warns(tmp_path):
    model = build_model(N_GENES, N_PEAKS, **SMALL)
    with pytest.warns(UserWarning, match="without feature names"):
        save_model(model, tmp_path / "m.keras")
    assert load_model(tmp_path / "m.keras").gex_features is None


def test_fused_adam_matches_keras_adam():
    import keras
    import tensorflow as tf

    from mmae_utils.training import fused_adam

    rng = np.random.default_rng(0)
    init = rng.standard_normal((7, 5)).astype(np.float32)
    grads = [rng.standard_normal((7, 5)).astype(np.float32) for _ in range(3)]
    results = []
    for opt in (keras.optimizers.Adam(0.01), fused_adam(0.01)):
        var = keras.Variable(init)
        for g in grads:
            opt.apply_gradients([(tf.constant(g), var)])
        results.append(var.numpy())
    assert not np.allclose(results[0], init)
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-6)
    assert type(fused_adam()).__name__ == "FusedAdam"


def test_plateau_schedule_halves_the_learning_rate(data):
    gex, atac, _ = data
    model = build_model(N_GENES, N_PEAKS, seed=0, **SMALL)
    # min_delta so large that no epoch after the first counts as an improvement: the rate
    # is halved after epochs 4 and 7
    history = train(
        model,
        gex,
        atac,
        epochs=7,
        patience=None,
        min_delta=10.0,
        lr_schedule="plateau",
        learning_rate=1e-3,
        seed=0,
        verbose=0,
    )
    assert float(model.optimizer.learning_rate) == pytest.approx(1e-3 / 4)
    assert history.attrs["options"]["lr_schedule"] == "plateau"
    constant = build_model(N_GENES, N_PEAKS, seed=0, **SMALL)
    train(constant, gex, atac, epochs=7, patience=None, min_delta=10.0, seed=0, verbose=0)
    assert float(constant.optimizer.learning_rate) == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="lr_schedule must be"):
        train(constant, gex, atac, epochs=1, lr_schedule="cosine")


def test_learning_rate_errors(data):
    gex, atac, _ = data
    model = build_model(N_GENES, N_PEAKS, **SMALL)
    for bad, err, match in (
        (True, TypeError, "learning_rate must be a positive number, got True"),
        ("0.1", TypeError, "learning_rate must be a positive number, got '0.1'"),
        (0, ValueError, "learning_rate must be > 0, got 0"),
        (float("nan"), ValueError, "learning_rate must be > 0, got nan"),
    ):
        with pytest.raises(err, match=match):
            train(model, gex, atac, epochs=1, learning_rate=bad, verbose=0)


def test_moved_names_stay_importable_from_training_and_model():
    from mmae_utils import model, persistence, training

    for name in ("check_features", "load_model", "save_model"):
        assert getattr(training, name) is getattr(persistence, name)
    assert training.fused_adam.__module__ == training.tune_malloc.__module__ == "mmae_utils._cpu"
    assert (
        model.mse_per_cell.__module__ == model.bce_logits_per_cell.__module__ == "mmae_utils._cpu"
    )
    assert set(training.__all__) <= set(dir(training))
