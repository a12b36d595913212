"""The multi-modal autoencoder of Figure 4 (Guo et al. 2019, after Ngiam et al. 2011).

::

    gex  (cells x genes) --> GEX encoder  --> z_gex  (latent_dim // 2) --+
                                                                         +--> z (latent_dim) --> GEX decoder  --> GEX reconstruction
    atac (cells x peaks) --> ATAC encoder --> z_atac (the rest)      ----+                  --> ATAC decoder --> ATAC logits

Each modality has its own encoder (Dense layers of ``hidden`` units). With
``fusion="concat"`` (the default) each ends in a linear Dense to its part of the latent
code and the two parts are concatenated into ONE joint code ``z``; with ``"shared"``
(Ngiam et al.'s bimodal autoencoder, the shared representation of Figure 4) one linear
Dense layer reads both encoders' last hidden layers and makes the whole of ``z``, every
unit from both modalities. By default (``decoders="joint"``) BOTH decoders read the whole
of ``z``: this is what lets the code reconstruct either modality from both, and (with
``modality_dropout``, which zeroes one modality's input) from either one.
``decoders="own"`` reproduces the original notebook's wiring, where each decoder reads
only its own modality's half of ``z``: two independent autoencoders side by side, kept
only for comparison.

How ``latent_dim`` is split (``"concat"``): the GEX encoder gets ``latent_dim // 2``
units and the ATAC encoder the remaining ``latent_dim - latent_dim // 2`` (10 + 10 for
the default 20; 10 + 11 for 21). Pass ``gex_latent_dim`` to choose another split.

Batches: the encoders never read the cell's batch, so any cells can be embedded. With
``batch_conditioning`` both decoders read ``z`` and a one-hot of the batch (as scVI and
MultiVI), so ``z`` need not carry it; with ``adversarial_batch`` a small classifier
predicts the batch from ``z`` through a gradient-reversal layer
(:class:`~mmae_utils.layers.GradientReversal`), so the encoders learn to hide it.

Losses (``gex_likelihood`` / ``atac_likelihood``): under ``"mse"`` a decoder reconstructs
its modality as the network sees it (the input transform of
:class:`~mmae_utils.layers.InputTransform`: log-normalised genes or their principal
components, TF-IDF peaks or their LSI components) under the mean squared error. Under a
count likelihood it reconstructs the selected features themselves, whatever the input:
GEX ``"nb"``, the negative binomial of the raw counts with mean ``softmax(output) *
library size`` and a learned inverse dispersion per gene
(:mod:`mmae_utils.likelihoods`); ATAC ``"bernoulli"`` (also what ``"auto"`` means for
``atac_input="binary"``), one *logit* per peak under binary cross-entropy on the
binarised peaks (:func:`mmae_utils.training.reconstruct` turns logits into
probabilities). The total loss is ``gex_loss_weight * GEX loss + atac_loss_weight * ATAC
loss`` (0.5 / 0.5 as in the original notebook), plus ``adversarial_batch`` times the
batch classifier's cross-entropy. The options are those of
:class:`~mmae_utils.config.ModelConfig`.

The model takes its inputs by name, ``{"gex": ..., "atac": ...}`` (dense float32
tensors, cells x features; plus ``"batch"``, int32 codes into ``batch_categories``, when
it reads batches) and returns ``{"gex": ..., "atac": ...}`` (plus ``"batch_logits"``);
it never sees AnnData or column offsets. :mod:`mmae_utils.training` streams sparse
AnnData into it.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence

import keras
from keras import ops

from ._cpu import bce_logits_per_cell, mse_per_cell
from .config import (
    DEFAULT_CONFIG,
    DEFAULT_PRESET,
    MODALITIES,
    PRESETS,
    ModelConfig,
    check_categories,
    check_int,
    check_names,
    overrides,
)
from .distribute import DistributedSteps, replica_share
from .layers import (
    BlockScale,
    GradientReversal,
    InputTransform,
    ModalityDropout,
    batch_classifier,
    dense,
    dense_stack,
    derived_seeds,
)
from .likelihoods import (
    NegativeBinomial,
    batch_cross_entropy_per_cell,
    bce_probabilities_per_cell,
)

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_PRESET",
    "PRESETS",
    "BlockScale",
    "GradientReversal",
    "InputTransform",
    "ModalityDropout",
    "ModelConfig",
    "MultiModalAutoencoder",
    "NegativeBinomial",
    "bce_logits_per_cell",
    "build_model",
    "mse_per_cell",
    "overrides",
]

#: Options of earlier versions that are gone, with the values that did nothing: a saved
#: model that used them at these values still loads (see ``from_config``).
_REMOVED_OPTIONS = {"latent_activation": (None, "linear"), "latent_batch_norm": (False,)}


def _as_config(config) -> ModelConfig:
    if not isinstance(config, ModelConfig):
        raise TypeError(
            f"config must be a ModelConfig (see mmae_utils.config), got {type(config).__name__}."
        )
    return config


@keras.saving.register_keras_serializable(package="mmae")
class MultiModalAutoencoder(DistributedSteps, keras.Model):
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
    batch_categories
        Names of the batches, saved with the model; needed (and fixed) when the config
        reads batches (``batch_conditioning`` or ``adversarial_batch``): the decoders'
        one-hot and the classifier's outputs have one entry per batch, in this order.
    name, **kwargs
        Passed to ``keras.Model``.

    Attributes
    ----------
    gex_dim, atac_dim
        Number of input features per modality.
    gex_latent_dim, atac_latent_dim
        Size of each modality encoder's part of the joint code (``None`` with
        ``fusion="shared"``: one code, no parts).
    gex_features, atac_features
        Names of the features the model was trained on (``None`` until known).
    batch_categories
        Names of the batches the model knows (``None`` if none were given).
    """

    def __init__(
        self,
        gex_dim: int,
        atac_dim: int,
        config: ModelConfig | None = None,
        *,
        gex_features: Sequence[str] | None = None,
        atac_features: Sequence[str] | None = None,
        batch_categories: Sequence[str] | None = None,
        name: str = "mmae",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.gex_dim = check_int("gex_dim", gex_dim)
        self.atac_dim = check_int("atac_dim", atac_dim)
        # more components than the data allow adapt, with a warning; config records them
        config = _as_config(ModelConfig() if config is None else config)
        config = config.fitted_to(self.gex_dim, self.atac_dim)
        if config.fusion == "shared":
            self.gex_latent_dim = self.atac_latent_dim = None
            self._config = config
        else:
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
        self._batch_categories = self._needed_categories(batch_categories)
        self._make_layers()
        self._build_all()
        self.gex_loss_tracker = keras.metrics.Mean(name="gex_loss")
        self.atac_loss_tracker = keras.metrics.Mean(name="atac_loss")
        if self.adversarial_batch > 0:
            self.batch_loss_tracker = keras.metrics.Mean(name="batch_loss")
            self.recon_loss_tracker = keras.metrics.Mean(name="recon_loss")

    def _needed_categories(self, categories) -> tuple[str, ...] | None:
        categories = check_categories(categories)
        if categories is None and self._config.needs_batch:
            options = [
                text
                for on, text in (
                    (self.batch_conditioning, "batch_conditioning=True"),
                    (self.adversarial_batch > 0, f"adversarial_batch={self.adversarial_batch}"),
                )
                if on
            ]
            raise ValueError(
                f"{' and '.join(options)} read each cell's batch, so the model must know the "
                "batches: pass batch_categories= their names, e.g. "
                'build_model(..., batch_categories=sorted(gex.obs["batch"].unique())).'
            )
        return categories

    # ------------------------------------------------------------------ construction
    def _make_layers(self):
        """The modality dropout, encoders, shared code, latent dropout, decoders, block
        scaling, batch classifier and NB dispersions (those the options ask for).

        Each layer that draws random numbers gets its own seed, derived from ``seed`` in
        this order (so the same seed gives the same initial weights and masks); the shared
        code and the batch classifier draw from a second stream (see
        :func:`~mmae_utils.layers.derived_seeds`).
        """
        n_hidden = len(self.hidden)
        seeds = iter(derived_seeds(self.seed, 4 * (n_hidden + 1) + 4 * (n_hidden + 1) + 3))
        extra = iter(derived_seeds(self.seed, 3, stream=1))
        self.modality_dropout_layer = ModalityDropout(
            self.modality_dropout, seed=next(seeds), name="modality_dropout"
        )
        shared = self.fusion == "shared"  # the encoders end at their last hidden layer
        self.gex_encoder = self._stack("gex_encoder", self.hidden, self.gex_latent_dim, seeds)
        self.atac_encoder = self._stack("atac_encoder", self.hidden, self.atac_latent_dim, seeds)
        self.shared_code = (
            dense(self.latent_dim, next(extra), name="shared_code") if shared else None
        )
        self.latent_dropout_layer = (
            keras.layers.Dropout(self.latent_dropout, seed=next(seeds), name="latent_dropout")
            if self.latent_dropout > 0
            else None
        )
        rev = tuple(reversed(self.hidden))
        out = "relu" if self.output_activation == "relu" else None  # the seed's, or linear
        self.gex_decoder = self._stack("gex_decoder", rev, self.output_dim("gex"), seeds, out)
        self.atac_decoder = self._stack("atac_decoder", rev, self.output_dim("atac"), seeds, out)
        self.block_scale = (
            BlockScale(self.gex_latent_dim, name="block_scale")
            if self.latent_scaling == "block"
            else None
        )
        self.batch_classifier = (
            batch_classifier(self.n_batches, extra) if self.adversarial_batch > 0 else None
        )
        self.gex_nb = (
            NegativeBinomial(self.gex_dim, name="gex_nb") if self.gex_likelihood == "nb" else None
        )

    def _stack(self, name, hidden, out_dim, seeds, out_activation=None):
        options = {"activation": self.activation, "batch_norm": self.batch_norm}
        options["out_activation"] = out_activation
        return dense_stack(name, hidden, out_dim, seeds, dropout=self.dropout, **options)

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
        hidden = self._build_stack(self.gex_encoder, gex_in)
        hidden += self._build_stack(self.atac_encoder, atac_in)
        if self.shared_code is not None:
            self.shared_code.build((None, hidden))
        gex_in = self.latent_dim if self.decoders == "joint" else self.gex_latent_dim
        atac_in = self.latent_dim if self.decoders == "joint" else self.atac_latent_dim
        n_batches = self.n_batches if self.batch_conditioning else 0  # the batch one-hot
        self._build_stack(self.gex_decoder, gex_in + n_batches)
        self._build_stack(self.atac_decoder, atac_in + n_batches)
        if self.batch_classifier is not None:
            self._build_stack(self.batch_classifier, self.latent_dim)
        if self.gex_nb is not None:
            self.gex_nb.build()
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

    @property
    def likelihoods(self) -> dict[str, str]:
        """Each modality's loss: ``{"gex": "mse" or "nb", "atac": "mse" or "bernoulli"}``
        (see :attr:`~mmae_utils.config.ModelConfig.likelihoods`)."""
        return self._config.likelihoods

    def reconstructs_features(self, modality: str) -> bool:
        """Whether ``modality``'s decoder outputs one value per feature under a count
        likelihood (``"nb"``, ``"bernoulli"``), rather than the input transform's space."""
        return self.likelihoods[modality] in ("nb", "bernoulli")

    def output_dim(self, modality: str) -> int:
        """Width of ``modality``'s decoder output: its features under a count likelihood,
        else the input transform's output (e.g. ``n_components`` for ``"svd"``)."""
        if self.reconstructs_features(modality):
            return self.gex_dim if modality == "gex" else self.atac_dim
        transform = self.gex_transform if modality == "gex" else self.atac_transform
        return transform.output_dim

    # ------------------------------------------------------------------ batches
    @property
    def batch_categories(self) -> tuple[str, ...] | None:
        """Names of the batches the model knows, in the order of its codes (fixed at
        construction: the decoders' one-hot and the classifier have one entry each)."""
        return self._batch_categories

    @property
    def n_batches(self) -> int:
        """Number of batches the model knows (0 if none)."""
        return 0 if self._batch_categories is None else len(self._batch_categories)

    @property
    def needs_batch(self) -> bool:
        """Whether the model reads each cell's batch (``inputs["batch"]``): with
        ``batch_conditioning`` (to decode) or ``adversarial_batch`` (in the loss)."""
        return self._config.needs_batch

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
        allowed = (*MODALITIES, "batch") if self.needs_batch else MODALITIES
        unknown = set(inputs) - set(allowed)
        missing = set(MODALITIES) - set(inputs)
        if unknown or missing:
            raise KeyError(
                'Inputs must have the keys "gex" and "atac"'
                + (' (and "batch", the batch codes)' if self.needs_batch else " only")
                + f"; missing {sorted(missing)}, unexpected {sorted(unknown)}."
            )
        return inputs["gex"], inputs["atac"]

    def _batch_codes(self, inputs, why: str):
        """``inputs["batch"]`` (integer codes into :attr:`batch_categories`), or a clear
        ``ValueError`` saying ``why`` the model needs it."""
        codes = inputs.get("batch") if isinstance(inputs, dict) else None
        if codes is None:
            raise ValueError(
                f"This model {why}: pass inputs['batch'], each cell's integer code into "
                "model.batch_categories (mmae_utils.training reads it from obs[batch_key])."
            )
        return ops.reshape(ops.cast(codes, "int32"), (-1,))

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

    def input_width(self, modality: str) -> int:
        """Columns the model takes for ``modality``: inside :meth:`fed_transformed` naming
        it, its input transform's output width; else its feature count."""
        if modality in self._pretransformed:
            return (self.gex_transform if modality == "gex" else self.atac_transform).output_dim
        return self.gex_dim if modality == "gex" else self.atac_dim

    def _transform_one(self, modality: str, x):
        if modality in self._pretransformed:  # training.train projected it already
            return x
        return (self.gex_transform if modality == "gex" else self.atac_transform)(x)

    def transform(self, inputs) -> dict:
        """``{"gex": ..., "atac": ...}`` as the network sees them.

        The identity for ``gex_input="log"`` / ``atac_input="binary"``; see
        :class:`InputTransform` for the others. Under ``"mse"`` the decoders reconstruct
        this space.
        """
        gex, atac = self._unpack(inputs)
        return {"gex": self._transform_one("gex", gex), "atac": self._transform_one("atac", atac)}

    def encode(self, inputs, training=False, missing: str | None = None):
        """Joint code ``z`` (cells x latent_dim); never reads the batch.

        With ``fusion="concat"`` the GEX part first, then the ATAC part; with
        ``"shared"`` one Dense layer's output from both encoders' last hidden layers.
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
        z = ops.concatenate([z_gex, z_atac], axis=-1)
        return z if self.shared_code is None else self.shared_code(z)

    def embedding(self, inputs, missing: str | None = None):
        """The cells' embedding: the joint code (inference mode), block-scaled when
        ``latent_scaling="block"`` (see :class:`BlockScale`)."""
        z = self.encode(inputs, training=False, missing=missing)
        return z if self.block_scale is None else self.block_scale(z)

    def decode(self, z, training=False, batch=None):
        """Reconstructions from the joint code ``z``.

        Each in the space of :meth:`transform` under ``"mse"``; one value per feature
        under a count likelihood (GEX under ``"nb"``: the logits of the softmax profile;
        ATAC under ``"bernoulli"``, as for ``atac_input="binary"``: logits). With
        ``batch_conditioning``, ``batch`` (integer codes, one per cell) is required: both
        decoders read ``z`` and its one-hot.
        """
        if self.latent_dropout_layer is not None:
            z = self.latent_dropout_layer(z, training=training)
        if self.decoders == "joint":
            z_for_gex = z_for_atac = z
        else:  # the original notebook: each decoder reads only its own half
            z_for_gex = z[:, : self.gex_latent_dim]
            z_for_atac = z[:, self.gex_latent_dim :]
        if self.batch_conditioning:
            codes = self._batch_codes({"batch": batch}, "decodes with each cell's batch")
            one_hot = ops.one_hot(codes, self.n_batches, dtype=z.dtype)
            z_for_gex = ops.concatenate([z_for_gex, one_hot], axis=-1)
            z_for_atac = ops.concatenate([z_for_atac, one_hot], axis=-1)
        return {
            "gex": self._run(self.gex_decoder, z_for_gex, training),
            "atac": self._run(self.atac_decoder, z_for_atac, training),
        }

    def batch_logits(self, z, training=False):
        """The batch classifier's logits (cells x batches) from the code, through the
        gradient reversal (``adversarial_batch > 0`` only)."""
        if self.batch_classifier is None:
            raise ValueError("This model has no batch classifier (adversarial_batch=0).")
        return self._run(self.batch_classifier, z, training)

    def call(self, inputs, training=None):
        z = self.encode(inputs, training=training)
        batch = inputs.get("batch") if self.batch_conditioning else None
        out = self.decode(z, training=training, batch=batch)
        if self.batch_classifier is not None:
            out["batch_logits"] = self.batch_logits(z, training=training)
        return out

    def compute_output_spec(self, inputs, training=None):
        gex, _ = self._unpack(inputs)
        n = gex.shape[0]
        out = {
            m: keras.KerasTensor((n, self.output_dim(m)), self.compute_dtype) for m in MODALITIES
        }
        if self.batch_classifier is not None:
            out["batch_logits"] = keras.KerasTensor((n, self.n_batches), self.compute_dtype)
        return out

    # ------------------------------------------------------------------ training
    def per_cell_losses(self, y, y_pred):
        """Per-cell reconstruction losses, each the mean over the modality's outputs.

        GEX: mean squared error in the space of :meth:`transform` (``"mse"``), or the
        negative binomial negative log-likelihood of the counts (``"nb"``, see
        :func:`~mmae_utils.likelihoods.nb_nll_per_cell`). ATAC: binary cross-entropy of the
        binarised peaks on logits (``"bernoulli"``), or the mean squared error in the
        space of :meth:`transform` (``"mse"``).

        Parameters
        ----------
        y
            Targets (cells x features): ``"gex"``, the GEX model input (``"mse"``; passed
            through :meth:`transform`) or the raw counts of the genes (``"nb"``);
            ``"atac"``, the ATAC model input (``"mse"``; transformed) or the binarised
            peaks (``"bernoulli"``); optionally ``"library"`` (cells,), the library size
            of ``"nb"`` (default: the sum of the counts).
        y_pred
            Model outputs (see :meth:`decode`).

        Returns
        -------
        ``(gex_loss, atac_loss)``: two tensors of shape (cells,).
        """
        gex_t = ops.convert_to_tensor(y["gex"], dtype=y_pred["gex"].dtype)
        atac_t = ops.convert_to_tensor(y["atac"], dtype=y_pred["atac"].dtype)
        if self.gex_nb is not None:
            library = y.get("library")
            library = ops.sum(gex_t, axis=-1) if library is None else library
            gex_loss = self.gex_nb(gex_t, y_pred["gex"], library)
        else:
            gex_loss = mse_per_cell(self._transform_one("gex", gex_t), y_pred["gex"])
        if self.likelihoods["atac"] == "bernoulli" and self.output_activation == "relu":
            atac_loss = bce_probabilities_per_cell(atac_t, y_pred["atac"])  # the seed's
        elif self.likelihoods["atac"] == "bernoulli":  # the peaks themselves, untransformed
            atac_loss = bce_logits_per_cell(atac_t, y_pred["atac"])
        else:
            atac_loss = mse_per_cell(self._transform_one("atac", atac_t), y_pred["atac"])
        return gex_loss, atac_loss

    @staticmethod
    def _mean(per_cell, sample_weight):
        """Mean over cells, weighted by ``sample_weight`` if given."""
        if sample_weight is None:
            return ops.mean(per_cell)
        w = ops.reshape(ops.cast(sample_weight, per_cell.dtype), (-1,))
        return ops.sum(per_cell * w) / ops.maximum(ops.sum(w), 1e-12)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        """``gex_loss_weight * GEX loss + atac_loss_weight * ATAC loss`` (+
        ``adversarial_batch * batch loss``).

        Each term is averaged over features then cells (weighted by ``sample_weight`` if
        given); the batch loss is the classifier's cross-entropy on ``x["batch"]``. The
        unweighted terms are tracked as the metrics ``gex_loss``, ``atac_loss`` (and
        ``batch_loss``, with the weighted reconstruction alone as ``recon_loss``), averaged over the cells of an epoch like Keras' ``loss``, so
        they appear in the progress bar and the history next to ``loss`` (and with
        ``val_`` on validation data). :meth:`~mmae_utils.config.ModelConfig.loss_label`
        names them. Under a ``tf.distribute`` strategy with several replicas the returned
        total is divided by their number (:func:`~mmae_utils.distribute.replica_share`).
        """
        if y is None:
            y = x
        gex_cell, atac_cell = self.per_cell_losses(y, y_pred)
        n = ops.cast(ops.shape(gex_cell)[0], "float32")
        gex_loss = self._mean(gex_cell, sample_weight)
        atac_loss = self._mean(atac_cell, sample_weight)
        self.gex_loss_tracker.update_state(gex_loss, sample_weight=n)
        self.atac_loss_tracker.update_state(atac_loss, sample_weight=n)
        total = self.gex_loss_weight * gex_loss + self.atac_loss_weight * atac_loss
        if self.batch_classifier is not None:
            codes = self._batch_codes(x, "has an adversarial batch classifier")
            batch_cell = batch_cross_entropy_per_cell(codes, y_pred["batch_logits"])
            batch_loss = self._mean(batch_cell, sample_weight)
            self.batch_loss_tracker.update_state(batch_loss, sample_weight=n)
            self.recon_loss_tracker.update_state(total, sample_weight=n)
            total = total + self.adversarial_batch * batch_loss
        if self.losses:  # regularisation terms added by layers, if any
            total = total + ops.sum(self.losses)
        return replica_share(total)  # divided by the replicas under tf.distribute

    def compile(self, optimizer="adam", **kwargs):
        """Compile with an optimizer; the losses are the model's own (see ``compute_loss``).

        The weighted total is logged as ``loss``, the unweighted per-modality losses as
        ``gex_loss`` and ``atac_loss`` (and the batch classifier's as ``batch_loss``).
        Other keyword arguments (e.g. ``jit_compile``, ``metrics``) go to
        ``keras.Model.compile``.
        """
        for key in ("loss", "loss_weights"):
            if kwargs.pop(key, None) is not None:
                raise ValueError(
                    f"{key}= is not accepted: the GEX and ATAC losses are part of the model; "
                    "choose them with gex_likelihood / atac_likelihood and weigh them with "
                    "gex_loss_weight / atac_loss_weight in build_model()."
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
            "batch_categories": (
                None if self.batch_categories is None else list(self.batch_categories)
            ),
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
    batch_categories: Sequence[str] | None = None,
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
        uses :data:`~mmae_utils.config.DEFAULT_PRESET` (``"jae_harmony"``, chosen on development
        draws, ``benchmarks/ablation.md``; its decoders read the batch, so it needs
        ``batch_categories``); ``"original"`` is the seed notebook's model (the before of
        the tutorial's before-and-after). :func:`mmae_utils.training.build_for` builds from
        AnnData and reads the batches itself.
    config
        A :class:`~mmae_utils.config.ModelConfig` to start from instead of a preset.
    gex_features, atac_features
        Feature names the model is (to be) trained on, saved with it.
    batch_categories
        Names of the batches (e.g. ``sorted(gex.obs["batch"].unique())``), saved with the
        model; required when it reads batches (``batch_conditioning=True`` or
        ``adversarial_batch > 0``), whose layers have one entry per batch.
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
    A built :class:`MultiModalAutoencoder` taking ``{"gex": ..., "atac": ...}`` (and
    ``"batch"``, integer batch codes, when it reads batches) and returning ``{"gex": GEX
    reconstruction, "atac": ATAC reconstruction or logits}`` (and ``"batch_logits"`` with
    ``adversarial_batch``; see :meth:`MultiModalAutoencoder.decode`). It is compiled with
    Adam (learning rate 1e-3; the losses are part of the model, ``model.compute_loss``),
    so that it can be evaluated, and saved and loaded with its optimizer state, before
    training; :func:`mmae_utils.training.train` compiles it anew with its own optimizer.

    Examples
    --------
    >>> model = build_model(2500, 5000, batch_categories=["s1d1", "s1d2"])  # the seed's sizes
    >>> model.gex_latent_dim, model.atac_latent_dim
    (10, 10)
    >>> build_model(2500, 5000, preset="seed").config.gex_input
    'log'

    """
    names = ("gex_features", "atac_features", "batch_categories", "name")
    allowed = (*ModelConfig.option_names(), *names)
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
        batch_categories=batch_categories,
        name=name,
    )
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=1e-3))
    # create the optimizer state now, so that a saved untrained model reloads cleanly
    model.optimizer.build(model.trainable_variables)
    return model
