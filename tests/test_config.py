"""Tests of mmae_utils.config: the model's options, presets and their validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from mmae_utils.config import (
    DEFAULT_CONFIG,
    DEFAULT_PRESET,
    PRESETS,
    ModelConfig,
    check_int,
    check_rate,
    overrides,
)


def test_presets_are_configs_and_jae_harmony_is_the_default():
    # the ablation's choice on development draws (benchmarks/ablation.md)
    assert DEFAULT_PRESET == "jae_harmony" and DEFAULT_CONFIG == PRESETS["jae_harmony"]
    assert PRESETS["jae_batch"] == PRESETS["jae"].replace(batch_conditioning=True)
    assert PRESETS["jae_harmony"] == PRESETS["jae_batch"].replace(integration="harmony")
    assert all(c.integration == "none" for n, c in PRESETS.items() if n != "jae_harmony")
    assert PRESETS["seed"] == ModelConfig()
    jae = PRESETS["jae"]
    assert (jae.gex_input, jae.atac_input, jae.batch_norm, jae.latent_scaling) == (
        "svd",
        "svd",
        True,
        "block",
    )
    back = {"gex_input": "log", "atac_input": "binary", "batch_norm": False}
    assert dataclasses.replace(jae, latent_scaling="none", **back) == PRESETS["seed"]


def test_values_are_normalised_and_frozen():
    config = ModelConfig(hidden=[np.int64(8), 4], dropout=np.float32(0.5), activation="linear")
    assert config.hidden == (8, 4) and type(config.hidden[0]) is int
    assert config.dropout == 0.5 and type(config.dropout) is float
    assert config.activation is None
    assert ModelConfig(hidden=16).hidden == (16,)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.latent_dim = 4
    with pytest.raises(TypeError):
        ModelConfig(20)  # keyword only


def test_latent_split():
    assert ModelConfig().latent_split == (10, 10)
    assert ModelConfig(latent_dim=21).latent_split == (10, 11)
    assert ModelConfig(latent_dim=9, gex_latent_dim=3).latent_split == (3, 6)
    # the default split follows latent_dim through replace()
    assert ModelConfig().replace(latent_dim=30).latent_split == (15, 15)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"latent_dim": 1}, ValueError, "latent_dim must be >= 2"),
        ({"hidden": "250"}, TypeError, "sequence of integer layer sizes"),
        ({"latent_dim": 4, "gex_latent_dim": 4}, ValueError, "no room for ATAC"),
        ({"activation": 3}, TypeError, "name of a Keras activation"),
        ({"latent_dropout": -0.1}, ValueError, r"latent_dropout must be in \[0, 1\)"),
        ({"atac_loss_weight": float("nan")}, ValueError, "atac_loss_weight must be a finite"),
        ({"gex_loss_weight": 0, "atac_loss_weight": 0}, ValueError, "cannot both be 0"),
        ({"atac_input": "log"}, ValueError, "atac_input must be one of"),
        ({"n_components": 0}, ValueError, "n_components must be >= 1"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"seed": 1.5}, TypeError, "seed must be an integer"),
    ],
)
def test_every_option_is_validated(kwargs, error, match):
    with pytest.raises(error, match=match):
        ModelConfig(**kwargs)


def test_from_preset_replace_and_overrides():
    config = ModelConfig.from_preset("seed", latent_dim=8)
    assert config == PRESETS["seed"].replace(latent_dim=8)
    assert ModelConfig.from_preset() == PRESETS[DEFAULT_PRESET]
    with pytest.raises(ValueError, match="Unknown preset 'best'"):
        ModelConfig.from_preset("best")
    with pytest.raises(TypeError, match=r"unknown option\(s\) \['latent_size'\]"):
        config.replace(latent_size=20)
    with pytest.raises(TypeError, match="unknown option"):
        ModelConfig.from_preset("jae", latent_activation="tanh")
    # None means "the preset's"
    assert overrides(latent_dim=6, gex_input=None, batch_norm=False) == {
        "latent_dim": 6,
        "batch_norm": False,
    }


def test_public_checks():
    assert check_int("n", np.int32(3)) == 3
    with pytest.raises(TypeError, match="n must be an integer"):
        check_int("n", True)
    assert check_rate("r", 0) == 0.0
    with pytest.raises(ValueError, match="r must be in"):
        check_rate("r", 1.0)


def test_n_components_above_what_the_data_allow_adapts_with_a_warning():
    import warnings

    from mmae_utils.model import build_model

    jae = ModelConfig.from_preset("jae", latent_dim=4, hidden=(8,))
    assert jae.svd_limit(51, 5000) == 50 and jae.svd_limit(51, 5000, n_cells=30) == 28
    assert jae.replace(gex_input="log").svd_limit(51, 40) == 39  # only 'svd' inputs count
    assert jae.replace(gex_input="log", atac_input="binary").svd_limit(5, 5) is None
    with pytest.warns(UserWarning, match=r"n_components=100 asked.*51 GEX and 5,000 ATAC.*50"):
        model = build_model(51, 5000, config=jae)
    # the model and its saved config describe what was built
    assert model.config.n_components == 50 == model.n_components
    assert model.gex_transform.output_dim == 50 == model.atac_transform.output_dim
    assert model.get_config()["n_components"] == 50
    with pytest.warns(UserWarning, match=r"at most the 40 cells less 2\); using n_components=38"):
        assert build_model(500, 600, config=jae, n_cells=40).config.n_components == 38
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # what fits does not warn
        assert build_model(500, 600, config=jae, n_cells=400).config.n_components == 100


def test_describe_says_what_each_preset_trains():
    jae_batch = PRESETS["jae_batch"].describe()
    assert "100 principal components" in jae_batch and "100 LSI components" in jae_batch
    assert "one-hot of the cell's batch" in jae_batch
    assert "GEX mean squared error, on components; ATAC mean squared error, on components" in (
        jae_batch
    )
    assert "scaled to equal total variance" in jae_batch
    original = PRESETS["original"].describe()
    assert "only its own part" in original and "both outputs pass a ReLU" in original
    assert "batch" not in original
    mmae = PRESETS["mmae"].replace(adversarial_batch=0.1, modality_dropout=0.2).describe()
    assert "one shared code of 20" in mmae and "negative binomial NLL, on counts" in mmae
    assert "binary cross-entropy, on peaks" in mmae
    assert "weight 0.1" in mmae and "20% of each batch's cells" in mmae
