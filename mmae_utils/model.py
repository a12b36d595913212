"""The multi-modal autoencoder of Figure 4 (Guo et al. 2019, after Ngiam et al. 2011).

::

    gex  (cells x genes) --> GEX encoder  --> z_gex  (latent_dim // 2) --+
                                                                         +--> z (latent_dim) --> GEX decoder  --> GEX reconstruction
    atac (cells x peaks) --> ATAC encoder --> z_atac (the rest)      ----+                  --> ATAC decoder --> ATAC logits

Each modality has its own encoder (Dense layers of ``hidden`` units, then a linear Dense
to its part of the latent code). The two parts are concatenated into ONE joint code ``z``
and, by default (``decoders="joint"``), BOTH decoders read the whole of ``z``: this is
what lets the code reconstruct either modality from both, and (with
``modality_dropout``) from either one. ``decoders="own"`` reproduces the original
notebook's wiring, where each decoder reads only its own modality's half of ``z``: two
independent autoencoders side by side, kept only for comparison.

How ``latent_dim`` is split: the GEX encoder gets ``latent_dim // 2`` units and the ATAC
encoder the remaining ``latent_dim - latent_dim // 2`` (10 + 10 for the default 20;
10 + 11 for 21). Pass ``gex_latent_dim`` to choose another split.

Losses: each decoder reconstructs its modality as the network sees it (the input
transform of :class:`~mmae_utils.layers.InputTransform`: log-normalised genes or their
principal components, binarised peaks or their LSI components), under the mean squared
error, or, for binarised peaks (``atac_input="binary"``), as *logits* under binary
cross-entropy (:func:`mmae_utils.training.reconstruct` turns logits into probabilities).
The total loss is ``gex_loss_weight * GEX loss + atac_loss_weight * ATAC loss`` (0.5 /
0.5 as in the original notebook). The options are those of
:class:`~mmae_utils.config.ModelConfig`.

The model takes its inputs by name, ``{"gex": ..., "atac": ...}`` (dense float32
tensors, cells x features) and returns ``{"gex": ..., "atac": ...}``; it never sees
AnnData or column offsets. :mod:`mmae_utils.training` streams sparse AnnData into it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from ._cpu import bce_logits_per_cell, mse_per_cell
from .config import (
    DEFAULT_CONFIG,
    DEFAULT_PRESET,
    MODALITIES,
    PRESETS,
    ModelConfig,
    check_int,
    check_names,
    overrides,
)
from .layers import BlockScale, InputTransform, ModalityDropout

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_PRESET",
    "PRESETS",
    "BlockScale",
    "InputTransform",
    "ModalityDropout",
    "ModelConfig",
    "MultiModalAutoencoder",
    "bce_logits_per_cell",
    "build_model",
    "mse_per_cell",
    "overrides",
]

#: Options of earlier versions that are gone, with the values that did nothing: a saved
#: model that used them at these values still loads (see ``from_config``).
_REMOVED_OPTIONS = {"latent_activation": (None, "linear"), "latent_batch_norm": (False,)}


def _seeds(seed: int | None, n: int) -> list[int | None]:
    """``n`` independent integer seeds derived from ``seed`` (``None`` -> unseeded)."""
    if seed is None:
        return [None] * n
    return [int(s) for s in np.random.default_rng(seed).integers(0, 2**31 - 1, size=n)]


def _as_config(config) -> ModelConfig:
    if not isinstance(config, ModelConfig):
        raise TypeError(
            f"config must be a ModelConfig (see mmae_utils.config), got {type(config).__name__}."
        )
    return config


@keras.saving.register_keras_serializable(package="mmae")
class MultiModalAutoencoder(keras.Model):
    """Multi-modal autoencoder: modality encoders -> one joint code -> both decoders.

    Build it with :func:`build_model`, which also compiles it. The options are those of
    its :class:`~mmae_utils.config.ModelConfig` (``model.config``), each also an attribute
    of the model (``model.latent_dim``, ``model.gex_input``, ...). The model is built on
    construction (its weights exist before the first call) and round-trips through
    ``get_config`` / ``from_config``, hence through ``.keras`` files (see
    :func:`mmae_utils.training.save_model`).

    Parameters
    ----------
    gex_dim, atac_dim
        Number of input features per modality.
    config
        The options (default: ``ModelConfig()``, the ``"seed"`` preset).
    gex_features, atac_features
        Names of the input features, saved with the model.
    name, **kwargs
        Passed to ``keras.Model``.

    Attributes
    ----------
    gex_dim, atac_dim
        Number of input features per modality.
    gex_latent_dim, atac_latent_dim
        Size of each modality encoder's part of the joint code.
    gex_features, atac_features
        Names of the features the model was trained on (``None`` until known).
    """

    def __init__(
        self,
        gex_dim: int,
        atac_dim: int,
        config: ModelConfig | None = None,
        *,
        gex_features: Sequence[str] | None = None,
        atac_features: Sequence[str] | None = None,
        name: str = "mmae",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.gex_dim = check_int("gex_dim", gex_dim)
        self.atac_dim = check_int("atac_dim", atac_dim)
        # more components than the data allow adapt, with a warning; config records them
        config = _as_config(ModelConfig() if config is None else config)
        config = config.fitted_to(self.gex_dim, self.atac_dim)
        self.gex_latent_dim, self.atac_latent_dim = config.latent_split
        self._config = config.replace(gex_latent_dim=self.gex_latent_dim)
        for option in ModelConfig.option_names():  # model.latent_dim, model.gex_input, ...
            if option != "gex_latent_dim":
                setattr(self, option, getattr(self._config, option))
        self.gex_transform = InputTransform(
            "gex", self.gex_input, self.gex_dim, self.n_components, name="gex_transform"
        )
        self.atac_transform = InputTransform(
            "atac", self.atac_input, self.atac_dim, self.n_components, name="atac_transform"
        )
        self._pretransformed = ()  # modalities fed already transformed (fed_transformed)
        # Plain tuples (not lists) so Keras' attribute tracking leaves them alone.
        self._gex_features = None
        self._atac_features = None
        self.gex_features = gex_features
        self.atac_features = atac_features
        self._make_layers()
        self._build_all()
        self.gex_loss_tracker = keras.metrics.Mean(name="gex_loss")
        self.atac_loss_tracker = keras.metrics.Mean(name="atac_loss")

    # ------------------------------------------------------------------ construction
    def _make_layers(self):
        """The modality dropout, encoders, latent dropout, decoders and block scaling.

        Each layer that draws random numbers gets its own seed, derived from ``seed`` in
        this order (so the same seed gives the same initial weights and masks).
        """
        n_hidden = len(self.hidden)
        seeds = iter(_seeds(self.seed, 4 * (n_hidden + 1) + 4 * (n_hidden + 1) + 3))
        self.modality_dropout_layer = ModalityDropout(
            self.modality_dropout, seed=next(seeds), name="modality_dropout"
        )
        self.gex_encoder = self._stack("gex_encoder", self.hidden, self.gex_latent_dim, seeds)
        self.atac_encoder = self._stack("atac_encoder", self.hidden, self.atac_latent_dim, seeds)
        self.latent_dropout_layer = (
            keras.layers.Dropout(self.latent_dropout, seed=next(seeds), name="latent_dropout")
            if self.latent_dropout > 0
            else None
        )
        rev = tuple(reversed(self.hidden))
        self.gex_decoder = self._stack("gex_decoder", rev, self.gex_transform.output_dim, seeds)
        self.atac_decoder = self._stack("atac_decoder", rev, self.atac_transform.output_dim, seeds)
        self.block_scale = (
            BlockScale(self.gex_latent_dim, name="block_scale")
            if self.latent_scaling == "block"
            else None
        )

    def _stack(self, name, hidden, out_dim, seeds):
        """Dense(+BN)(+activation)(+Dropout) blocks, then a linear Dense of ``out_dim``."""
        layers = []
        for i, units in enumerate(hidden):
            layers.append(
                keras.layers.Dense(
                    units,
                    activation=None if self.batch_norm else self.activation,
                    kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)),
                    name=f"{name}_dense{i}",
                )
            )
            if self.batch_norm:
                layers.append(keras.layers.BatchNormalization(name=f"{name}_bn{i}"))
                if self.activation is not None:
                    layers.append(keras.layers.Activation(self.activation, name=f"{name}_act{i}"))
            if self.dropout > 0:
                layers.append(
                    keras.layers.Dropout(self.dropout, seed=next(seeds), name=f"{name}_dropout{i}")
                )
        layers.append(
            keras.layers.Dense(
                out_dim,
                kernel_initializer=keras.initializers.GlorotUniform(seed=next(seeds)),
                name=f"{name}_out",
            )
        )
        return layers

    @staticmethod
    def _build_stack(layers, dim):
        shape = (None, dim)
        for layer in layers:
            layer.build(shape)
            shape = layer.compute_output_shape(shape)
        return shape[-1]

    def _build_all(self):
        self.gex_transform.build((None, self.gex_dim))
        self.atac_transform.build((None, self.atac_dim))
        if self.block_scale is not None:
            self.block_scale.build((None, self.latent_dim))
        gex_in, atac_in = self.gex_transform.output_dim, self.atac_transform.output_dim
        self.modality_dropout_layer.build((None, gex_in), (None, atac_in))
        self._build_stack(self.gex_encoder, gex_in)
        self._build_stack(self.atac_encoder, atac_in)
        gex_in = self.latent_dim if self.decoders == "joint" else self.gex_latent_dim
        atac_in = self.latent_dim if self.decoders == "joint" else self.atac_latent_dim
        self._build_stack(self.gex_decoder, gex_in)
        self._build_stack(self.atac_decoder, atac_in)
        self.built = True

    def build(self, input_shape=None):  # noqa: D102 - built in __init__
        self.built = True

    def get_build_config(self):  # noqa: D102 - built in __init__ from the config
        return None

    def build_from_config(self, config):  # noqa: D102 - built in __init__ from the config
        return None

    @property
    def transforms_fitted(self) -> bool:
        """Whether both input transforms have their statistics (see :class:`InputTransform`)."""
        return self.gex_transform.fitted and self.atac_transform.fitted

    # ------------------------------------------------------------------ features
    @property
    def gex_features(self) -> tuple[str, ...] | None:
        return self._gex_features

    @gex_features.setter
    def gex_features(self, names):
        self._gex_features = self._check_names("gex_features", names, self.gex_dim)

    @property
    def atac_features(self) -> tuple[str, ...] | None:
        return self._atac_features

    @atac_features.setter
    def atac_features(self, names):
        self._atac_features = self._check_names("atac_features", names, self.atac_dim)

    @staticmethod
    def _check_names(what, names, dim):
        if names is None:
            return None
        if isinstance(names, str):
            raise TypeError(f"{what} must be a sequence of feature names, not a string.")
        names = tuple(str(n) for n in names)
        if len(names) != dim:
            raise ValueError(f"{what} has {len(names)} names but the model has {dim} inputs.")
        return names

    # ------------------------------------------------------------------ forward
    @staticmethod
    def _run(layers, x, training):
        for layer in layers:
            x = layer(x, training=training)
        return x

    def _unpack(self, inputs):
        if not isinstance(inputs, dict):
            raise TypeError(
                'The model takes its inputs by name: {"gex": gex_batch, "atac": atac_batch}; '
                f"got {type(inputs).__name__}."
            )
        unknown = set(inputs) - set(MODALITIES)
        missing = set(MODALITIES) - set(inputs)
        if unknown or missing:
            raise KeyError(
                f'Inputs must have exactly the keys "gex" and "atac"; missing {sorted(missing)}, '
                f"unexpected {sorted(unknown)}."
            )
        return inputs["gex"], inputs["atac"]

    @contextlib.contextmanager
    def fed_transformed(self, modalities: Sequence[str]):
        """Within this block the model takes ``modalities`` already through their input
        transform (:func:`mmae_utils.training.train` projects SVD inputs once, up front).

        On leaving, the traced train / test / predict steps are dropped, since they
        assumed projected inputs and must never run on raw ones.
        """
        unknown = sorted(set(modalities) - set(MODALITIES))
        if unknown:
            raise ValueError(f"Unknown modalities {unknown}; choose from {MODALITIES}.")
        self._pretransformed = tuple(modalities)
        try:
            yield self
        finally:
            self._pretransformed = ()
            self.train_function = self.test_function = self.predict_function = None

    def transform(self, inputs) -> dict:
        """``{"gex": ..., "atac": ...}`` as the network sees them (and reconstructs them).

        The identity for ``gex_input="log"`` / ``atac_input="binary"``; see
        :class:`InputTransform` for the others.
        """
        gex, atac = self._unpack(inputs)
        # training.train may feed inputs it has projected already (SVD inputs)
        if "gex" not in self._pretransformed:
            gex = self.gex_transform(gex)
        if "atac" not in self._pretransformed:
            atac = self.atac_transform(atac)
        return {"gex": gex, "atac": atac}

    def encode(self, inputs, training=False, missing: str | None = None):
        """Joint code ``z`` (cells x latent_dim): GEX part first, then ATAC part.

        ``missing="gex"`` or ``"atac"`` zeroes that modality after its input transform
        (what ``modality_dropout`` trains for), to encode from the other one alone.
        """
        t = self.transform(inputs)
        gex, atac = t["gex"], t["atac"]
        if missing == "gex":
            gex = ops.zeros_like(gex)
        elif missing == "atac":
            atac = ops.zeros_like(atac)
        elif missing is not None:
            raise ValueError(f'missing must be None, "gex" or "atac", got {missing!r}.')
        gex, atac = self.modality_dropout_layer(gex, atac, training=training)
        z_gex = self._run(self.gex_encoder, gex, training)
        z_atac = self._run(self.atac_encoder, atac, training)
        return ops.concatenate([z_gex, z_atac], axis=-1)

    def embedding(self, inputs, missing: str | None = None):
        """The cells' embedding: the joint code (inference mode), block-scaled when
        ``latent_scaling="block"`` (see :class:`BlockScale`)."""
        z = self.encode(inputs, training=False, missing=missing)
        return z if self.block_scale is None else self.block_scale(z)

    def decode(self, z, training=False):
        """Reconstructions from the joint code ``z``, in the space of :meth:`transform`.

        ``{"gex": log-normalised values, "atac": logits}`` with the default inputs.
        """
        if self.latent_dropout_layer is not None:
            z = self.latent_dropout_layer(z, training=training)
        if self.decoders == "joint":
            z_for_gex = z_for_atac = z
        else:  # the original notebook: each decoder reads only its own half
            z_for_gex = z[:, : self.gex_latent_dim]
            z_for_atac = z[:, self.gex_latent_dim :]
        return {
            "gex": self._run(self.gex_decoder, z_for_gex, training),
            "atac": self._run(self.atac_decoder, z_for_atac, training),
        }

    def call(self, inputs, training=None):
        return self.decode(self.encode(inputs, training=training), training=training)

    def compute_output_spec(self, inputs, training=None):
        gex, _ = self._unpack(inputs)
        n = gex.shape[0]
        return {
            "gex": keras.KerasTensor((n, self.gex_transform.output_dim), dtype=self.compute_dtype),
            "atac": keras.KerasTensor(
                (n, self.atac_transform.output_dim), dtype=self.compute_dtype
            ),
        }

    # ------------------------------------------------------------------ training
    def per_cell_losses(self, y, y_pred):
        """Per-cell reconstruction losses, each the mean over the modality's outputs.

        GEX: mean squared error. ATAC: binary cross-entropy on logits for
        ``atac_input="binary"``, mean squared error otherwise. Targets are the inputs
        passed through :meth:`transform`.

        Parameters
        ----------
        y
            Targets: the model inputs ``{"gex": log-normalised values, "atac": 0/1}``
            (cells x features).
        y_pred
            Model outputs (see :meth:`decode`).

        Returns
        -------
        ``(gex_loss, atac_loss)``: two tensors of shape (cells,).
        """
        gex_t = ops.convert_to_tensor(y["gex"], dtype=y_pred["gex"].dtype)
        atac_t = ops.convert_to_tensor(y["atac"], dtype=y_pred["atac"].dtype)
        t = self.transform({"gex": gex_t, "atac": atac_t})
        gex_loss = mse_per_cell(t["gex"], y_pred["gex"])
        if self.atac_input == "binary":
            atac_loss = bce_logits_per_cell(t["atac"], y_pred["atac"])
        else:
            atac_loss = mse_per_cell(t["atac"], y_pred["atac"])
        return gex_loss, atac_loss

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """``gex_loss_weight * MSE(GEX) + atac_loss_weight * BCE(ATAC logits)``.

        Both terms are averaged over features then cells (weighted by ``sample_weight``
        if given). The unweighted terms are tracked as the metrics ``gex_loss`` and
        ``atac_loss`` (averaged over the cells of an epoch, like Keras' ``loss``), so
        they appear in the progress bar and the history next to ``loss`` (and with
        ``val_`` on validation data).
        """
        if y is None:
            y = x
        gex_cell, atac_cell = self.per_cell_losses(y, y_pred)
        n = ops.cast(ops.shape(gex_cell)[0], "float32")
        if sample_weight is not None:
            w = ops.reshape(ops.cast(sample_weight, gex_cell.dtype), (-1,))
            total_w = ops.maximum(ops.sum(w), 1e-12)
            gex_loss = ops.sum(gex_cell * w) / total_w
            atac_loss = ops.sum(atac_cell * w) / total_w
        else:
            gex_loss = ops.mean(gex_cell)
            atac_loss = ops.mean(atac_cell)
        self.gex_loss_tracker.update_state(gex_loss, sample_weight=n)
        self.atac_loss_tracker.update_state(atac_loss, sample_weight=n)
        total = self.gex_loss_weight * gex_loss + self.atac_loss_weight * atac_loss
        if self.losses:  # regularisation terms added by layers, if any
            total = total + ops.sum(self.losses)
        return total

    def compile(self, optimizer="adam", **kwargs):
        """Compile with an optimizer; the losses are the model's own (see ``compute_loss``).

        The weighted total is logged as ``loss``, the unweighted per-modality losses as
        ``gex_loss`` (MSE) and ``atac_loss`` (BCE). Other keyword arguments (e.g.
        ``jit_compile``, ``metrics``) go to ``keras.Model.compile``.
        """
        for key in ("loss", "loss_weights"):
            if kwargs.pop(key, None) is not None:
                raise ValueError(
                    f"{key}= is not accepted: the GEX MSE and ATAC BCE losses are part of the "
                    "model; set gex_loss_weight / atac_loss_weight in build_model()."
                )
        super().compile(optimizer=optimizer, **kwargs)

    @property
    def jit_compile(self):
        """Whether the train/predict steps are XLA-compiled (see ``keras.Model.compile``)."""
        if self._jit_compile is None:
            self._jit_compile = self._resolve_auto_jit_compile()
        return self._jit_compile

    @jit_compile.setter
    def jit_compile(self, value):
        # Keras refuses XLA whenever TensorFlow op determinism is enabled, because some ops
        # lack deterministic XLA kernels (GPU scatters). This model uses only dense matmuls,
        # element-wise ops and reductions, and XLA follows TensorFlow's determinism flag,
        # so XLA stays available (mmae_utils.training.train(jit_compile=True)).
        self._jit_compile = bool(value)

    def compile_from_config(self, config):
        """Recompile from a saved compile config (used when loading a ``.keras`` file)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if getattr(self, "optimizer", None) is not None and self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------ config
    @property
    def config(self) -> ModelConfig:
        """The options of this model (``gex_latent_dim`` resolved to its value)."""
        return self._config

    def get_config(self):
        base = super().get_config()
        return {
            **{k: v for k, v in base.items() if k in ("name", "trainable", "dtype")},
            "gex_dim": self.gex_dim,
            "atac_dim": self.atac_dim,
            **{
                k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self.config).items()
            },
            "gex_features": None if self.gex_features is None else list(self.gex_features),
            "atac_features": None if self.atac_features is None else list(self.atac_features),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        dims = config.pop("gex_dim"), config.pop("atac_dim")
        for option, no_ops in _REMOVED_OPTIONS.items():  # files saved by earlier versions
            value = config.pop(option, no_ops[0])
            if value not in no_ops:
                raise ValueError(
                    f"This model was saved with {option}={value!r}, an option that no longer "
                    "exists; load it with the mmae_utils version that wrote it."
                )
        names = ModelConfig.option_names()
        options = {k: config.pop(k) for k in names if k in config}
        return cls(*dims, ModelConfig(**options), **config)


def build_model(
    gex_dim: int,
    atac_dim: int,
    *,
    preset: str | None = None,
    config: ModelConfig | None = None,
    gex_features: Sequence[str] | None = None,
    atac_features: Sequence[str] | None = None,
    n_cells: int | None = None,
    name: str = "mmae",
    **options,
) -> MultiModalAutoencoder:
    """Build and compile the multi-modal autoencoder of Figure 4.

    Parameters
    ----------
    gex_dim, atac_dim
        Number of GEX and ATAC input features (e.g. 2,500 genes and 5,000 peaks).
    preset
        Named configuration to start from (:data:`~mmae_utils.config.PRESETS`). ``None``
        uses :data:`~mmae_utils.config.DEFAULT_PRESET` (``"jae"``, the configuration chosen
        by the ablation in ``benchmarks/ablation.md``); ``"seed"`` is the original
        notebook's model (the before of the tutorial's before-and-after).
    config
        A :class:`~mmae_utils.config.ModelConfig` to start from instead of a preset.
    gex_features, atac_features
        Feature names the model is (to be) trained on, saved with it.
    n_cells
        Number of cells the model will be trained on, if known: then ``n_components``
        is also kept below it (the input transforms are fitted on those cells).
    name
        Name of the Keras model.
    **options
        Options of :class:`~mmae_utils.config.ModelConfig` (the one list of them, with
        their defaults and meaning), overriding those of the preset or ``config``;
        unknown names raise a ``TypeError``, bad values a ``TypeError`` / ``ValueError``.
        An ``n_components`` the data cannot give (``"svd"`` inputs need fewer components
        than features, and than ``n_cells``) adapts to the most they allow, with a
        ``UserWarning`` (:meth:`~mmae_utils.config.ModelConfig.fitted_to`); the model's
        ``config`` records the value used.

    Returns
    -------
    A built :class:`MultiModalAutoencoder` taking ``{"gex": ..., "atac": ...}`` and
    returning ``{"gex": GEX reconstruction, "atac": ATAC logits}``. It is compiled with
    Adam (learning rate 1e-3; the losses are part of the model, ``model.compute_loss``),
    so that it can be evaluated, and saved and loaded with its optimizer state, before
    training; :func:`mmae_utils.training.train` compiles it anew with its own optimizer.

    Examples
    --------
    >>> model = build_model(2500, 5000)  # the original notebook's sizes
    >>> model.gex_latent_dim, model.atac_latent_dim
    (10, 10)
    >>> build_model(2500, 5000, preset="seed").config.gex_input
    'log'

    """
    allowed = (*ModelConfig.option_names(), "gex_features", "atac_features", "name")
    check_names("build_model()", options, allowed)
    if config is None:
        config = ModelConfig.from_preset(preset)
    elif preset is not None:
        raise ValueError("Pass preset= or config=, not both.")
    config = _as_config(config).replace(**options)
    if n_cells is not None:
        n_cells = check_int("n_cells", n_cells)
    config = config.fitted_to(
        check_int("gex_dim", gex_dim), check_int("atac_dim", atac_dim), n_cells
    )
    model = MultiModalAutoencoder(
        gex_dim,
        atac_dim,
        config,
        gex_features=gex_features,
        atac_features=atac_features,
        name=name,
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3))
    # create the optimizer state now, so that a saved untrained model reloads cleanly
    model.optimizer.build(model.trainable_variables)
    return model
