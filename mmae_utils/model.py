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

Losses: GEX is reconstructed as log-normalised values under the mean squared error; ATAC
as *logits* under binary cross-entropy with ``from_logits=True`` (no activation on the
ATAC output; :func:`mmae_utils.training.reconstruct` turns logits into probabilities).
The total loss is ``gex_loss_weight * MSE + atac_loss_weight * BCE`` (0.5 / 0.5 as in the
original notebook).

The model takes its inputs by name, ``{"gex": ..., "atac": ...}`` (dense float32
tensors, cells x features) and returns ``{"gex": ..., "atac": ...}``; it never sees
AnnData or column offsets. :mod:`mmae_utils.training` streams sparse AnnData into it.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

from ._cpu import bce_logits_per_cell, mse_per_cell

__all__ = [
    "DEFAULT_CONFIG",
    "DEFAULT_PRESET",
    "InputTransform",
    "PRESETS",
    "ModalityDropout",
    "MultiModalAutoencoder",
    "bce_logits_per_cell",
    "build_model",
    "mse_per_cell",
]

#: Named configurations of :func:`build_model` (``preset=...``). ``"seed"`` is the
#: original notebook's architecture with its defects fixed: the network sees the
#: log-normalised genes and binarised peaks themselves (MSE / BCE). ``"jae"`` feeds it
#: per-modality SVD components instead (GEX PCA + ATAC LSI, 100 each, both under MSE, as
#: the JAE model of the NeurIPS 2021 competition), with batch normalisation and the two
#: halves of the embedding scaled to equal total variance. See ``benchmarks/ablation.md``.
PRESETS: dict[str, dict] = {
    "seed": {
        "latent_dim": 20,
        "hidden": (250,),
        "gex_latent_dim": None,
        "decoders": "joint",
        "activation": "relu",
        "latent_activation": None,
        "dropout": 0.0,
        "batch_norm": False,
        "latent_dropout": 0.0,
        "latent_batch_norm": False,
        "modality_dropout": 0.0,
        "gex_loss_weight": 0.5,
        "atac_loss_weight": 0.5,
        "gex_input": "log",
        "atac_input": "binary",
        "n_components": 100,
        "latent_scaling": "none",
        "seed": 0,
    },
}
PRESETS["jae"] = {
    **PRESETS["seed"],
    "gex_input": "svd",
    "atac_input": "svd",
    "batch_norm": True,
    "latent_scaling": "block",
}

#: The preset :func:`build_model` starts from when none is named.
DEFAULT_PRESET = "jae"

#: Options of :func:`build_model` and their defaults (:data:`DEFAULT_PRESET`).
DEFAULT_CONFIG: dict = dict(PRESETS[DEFAULT_PRESET])

_GEX_INPUTS = ("log", "standardize", "svd")
_ATAC_INPUTS = ("binary", "tfidf", "svd")
_LATENT_SCALINGS = ("none", "block")
_DECODERS = ("joint", "own")
MODALITIES = ("gex", "atac")


def _check_int(name: str, value, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"{name} must be an integer, got {value!r} ({type(value).__name__}); "
            "layer sizes are whole numbers (use latent_dim // 2, not latent_dim / 2)."
        )
    if int(value) < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}.")
    return int(value)


def _check_rate(name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number in [0, 1), got {value!r}.")
    value = float(value)
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}.")
    return value


def _check_activation(name: str, value) -> str | None:
    if value is None or value == "linear":
        return None
    if not isinstance(value, str):
        raise TypeError(f"{name} must be the name of a Keras activation or None, got {value!r}.")
    try:
        keras.activations.get(value)
    except (ValueError, TypeError) as err:
        raise ValueError(f"Unknown {name} {value!r}: {err}") from None
    return value


def _seeds(seed: int | None, n: int) -> list[int | None]:
    """``n`` independent integer seeds derived from ``seed`` (``None`` -> unseeded)."""
    if seed is None:
        return [None] * n
    return [int(s) for s in np.random.default_rng(seed).integers(0, 2**31 - 1, size=n)]


@keras.saving.register_keras_serializable(package="mmae")
class ModalityDropout(keras.layers.Layer):
    """Zero one whole modality for a random fraction of the cells of each training batch.

    For every cell of a training batch, with probability ``rate`` one of the two
    modalities (GEX or ATAC, with equal probability) is replaced by zeros, so that the
    joint code learns to reconstruct both modalities from either one (Ngiam et al. 2011
    add such single-modality examples to the training set). The reconstruction targets
    are untouched: the model must still reproduce the zeroed modality. Inactive at
    inference (``training=False``). Seeded: the same ``seed`` gives the same masks.

    Parameters
    ----------
    rate
        Fraction of cells, in [0, 1), with one modality dropped.
    seed
        Seed of the masks; ``None`` draws it from Keras' global seed.
    """

    def __init__(self, rate: float = 0.0, *, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.rate = _check_rate("modality_dropout", rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, gex, atac, training=None):
        if not training or self.rate == 0.0:
            return gex, atac
        n = ops.shape(gex)[0]
        u = keras.random.uniform((n, 1), seed=self.seed_generator)
        dropped = ops.cast(u < self.rate, gex.dtype)
        # u < rate: dropped; within dropped cells, u < rate / 2 drops GEX, else ATAC.
        drop_gex = dropped * ops.cast(u < self.rate / 2.0, gex.dtype)
        drop_atac = dropped - drop_gex
        return gex * (1.0 - drop_gex), atac * (1.0 - drop_atac)

    def build(self, gex_shape, atac_shape):
        self.built = True

    def compute_output_shape(self, gex_shape, atac_shape):
        return gex_shape, atac_shape

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@keras.saving.register_keras_serializable(package="mmae")
class InputTransform(keras.layers.Layer):
    """Fixed transformation of one modality's input, fitted once on data (not trained).

    The network can see a modality as it comes (``"log"`` GEX, ``"binary"`` ATAC: the
    identity) or transformed by statistics of the training cells, held as non-trainable
    weights and saved with the model:

    - GEX ``"standardize"``: per-gene z-scores of the log-normalised values, clipped at
      ``clip`` (scanpy's ``pp.scale(max_value=10)``).
    - ATAC ``"tfidf"``: Signac's TF-IDF of the binarised peaks,
      ``log1p(x / cell total * idf * 1e4)`` (:func:`mmae_utils.pp.tfidf`), with
      the inverse document frequencies of the training cells.
    - ``"svd"``: the first ``n_components`` principal components: for GEX a centred PCA
      of the log-normalised values, for ATAC an LSI (TF-IDF, truncated SVD with one extra
      component, the first dropped because it tracks depth), each block divided by the
      root mean square of its components' standard deviations (components keep their
      relative sizes, have unit variance on average, and both modalities weigh the
      same; a total variance of 1 made targets so small that training crawled and
      batch effects crept in: see benchmarks/README.md). The JAE model of the
      NeurIPS 2021 competition fed such components to its autoencoder.

    Parameters
    ----------
    modality
        ``"gex"`` or ``"atac"``.
    mode
        One of ``"log"``, ``"standardize"``, ``"svd"`` (GEX) or ``"binary"``, ``"tfidf"``,
        ``"svd"`` (ATAC).
    n_features
        Input features of the modality.
    n_components
        Components kept by ``"svd"``.
    clip
        Clipping of the z-scores of ``"standardize"``.
    """

    def __init__(
        self,
        modality: str = "gex",
        mode: str = "log",
        n_features: int = 1,
        n_components: int = 100,
        clip: float = 10.0,
        **kwargs,
    ):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if modality not in MODALITIES:
            raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}.")
        modes = _GEX_INPUTS if modality == "gex" else _ATAC_INPUTS
        if mode not in modes:
            raise ValueError(f"{modality}_input must be one of {modes}, got {mode!r}.")
        self.modality = modality
        self.mode = mode
        self.n_features = _check_int("n_features", n_features)
        self.n_components = _check_int("n_components", n_components)
        if mode == "svd" and self.n_components >= self.n_features:
            raise ValueError(
                f"{modality}_input='svd' needs n_components < the {self.n_features} "
                f"{modality.upper()} features, got n_components={self.n_components}."
            )
        self.clip = float(clip)
        f, k = self.n_features, self.n_components
        shapes = {
            "standardize": {"mean": (f,), "inv_sd": (f,)},
            "tfidf": {"idf": (f,)},
            "svd": (
                {"mean": (f,), "loadings": (f, k), "inv_scale": (1,)}
                if modality == "gex"
                else {"idf": (f,), "loadings": (f, k), "center": (k,), "inv_scale": (1,)}
            ),
        }.get(mode, {})
        self._stats = {}
        for name, shape in shapes.items():
            self._stats[name] = self.add_weight(
                shape=shape, initializer="zeros", trainable=False, name=name
            )
        self.fitted_flag = (
            None
            if self.identity
            else self.add_weight(shape=(), initializer="zeros", trainable=False, name="fitted")
        )

    @property
    def identity(self) -> bool:
        """Whether the input is passed on unchanged (``"log"`` / ``"binary"``)."""
        return self.mode in ("log", "binary")

    @property
    def fitted(self) -> bool:
        """Whether the statistics have been computed (always true for the identity)."""
        if self.fitted_flag is None:
            return True
        return bool(float(keras.ops.convert_to_numpy(self.fitted_flag)) > 0)

    @property
    def output_dim(self) -> int:
        return self.n_components if self.mode == "svd" else self.n_features

    def build(self, input_shape=None):
        self.built = True

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.output_dim)

    def _tfidf(self, x):
        total = ops.sum(x, axis=-1, keepdims=True)
        x = x / ops.maximum(total, 1e-12)
        return ops.log1p(x * (self._stats["idf"] * 1e4))

    def call(self, x):
        if self.mode == "standardize":
            z = (x - self._stats["mean"]) * self._stats["inv_sd"]
            return ops.clip(z, -self.clip, self.clip)
        if self.mode == "tfidf":
            return self._tfidf(x)
        if self.mode == "svd":
            if self.modality == "gex":
                scores = ops.matmul(x - self._stats["mean"], self._stats["loadings"])
            else:
                scores = ops.matmul(self._tfidf(x), self._stats["loadings"])
                scores = scores - self._stats["center"]
            return scores * self._stats["inv_scale"]
        return x

    def fit(self, x) -> InputTransform:
        """Compute the statistics from ``x`` (cells x features, CSR or dense float32).

        ``x`` is the model input of the modality (log-normalised GEX or binarised ATAC);
        it is not modified. Deterministic: the SVD is exact (see
        :func:`mmae_utils.pp.svd`), no seed needed. Returns ``self``.
        """
        import scipy.sparse as sp

        from . import pp
        from ._utils import column_sums, to_csr

        if self.identity:
            return self
        x = to_csr(x) if sp.issparse(x) else sp.csr_matrix(np.asarray(x, dtype=np.float32))
        n = x.shape[0]
        if x.shape[1] != self.n_features:
            raise ValueError(
                f"{self.modality.upper()} transform expects {self.n_features} features, "
                f"got {x.shape[1]}."
            )
        if self.mode == "svd" and self.n_components + 1 >= n:
            raise ValueError(
                f"{self.modality}_input='svd' with n_components={self.n_components} needs more "
                f"than {self.n_components + 1} cells, got {n}; lower n_components."
            )
        values: dict[str, np.ndarray] = {}
        if self.mode == "standardize":
            mean = column_sums(x) / n
            var = np.maximum(column_sums(x, squares=True) / n - mean**2, 0.0)
            var *= n / max(n - 1, 1)  # scanpy's pp.scale: unbiased variance
            sd = np.sqrt(var)
            values["mean"] = mean
            values["inv_sd"] = np.divide(1.0, sd, out=np.zeros_like(sd), where=sd > 0)
        elif self.modality == "atac" and self.mode in ("tfidf", "svd"):
            values["idf"] = pp.idf(x)
        if self.mode == "svd":
            values.update(self._fit_svd(x))
        for name, value in values.items():
            self._stats[name].assign(
                np.asarray(value, dtype=np.float32).reshape(self._stats[name].shape)
            )
        self.fitted_flag.assign(1.0)
        return self

    def _fit_svd(self, x) -> dict[str, np.ndarray]:
        from . import pp

        k = self.n_components
        if self.modality == "gex":  # PCA: top eigenvectors of the centred Gram matrix
            scores, comp, mean = pp.pca(x, k, what="gex_input='svd'")
            inv_scale = pp.block_scale_factor(scores, size="rms", ddof=1)
            return {"mean": mean, "loadings": comp.T, "inv_scale": inv_scale}
        scores, comp = pp.lsi(x, k, what="atac_input='svd'")  # TF-IDF, first comp dropped
        center = scores.mean(axis=0)
        inv_scale = pp.block_scale_factor(scores, size="rms")
        return {"loadings": comp.T, "center": center, "inv_scale": inv_scale}

    def inverse(self, y: np.ndarray) -> np.ndarray:
        """Map transformed values back to the input's scale, as far as the mode allows.

        GEX: log-normalised values (exactly for ``"standardize"`` within the clip,
        through the kept components for ``"svd"``). ATAC ``"tfidf"`` / ``"svd"``: TF-IDF
        values (LSI components back-projected), not probabilities.
        """
        y = np.asarray(y, dtype=np.float32)
        stat = {k: keras.ops.convert_to_numpy(v) for k, v in self._stats.items()}
        if self.mode == "standardize":
            sd = np.divide(
                1.0, stat["inv_sd"], out=np.zeros_like(stat["inv_sd"]), where=stat["inv_sd"] > 0
            )
            return y * sd + stat["mean"]
        if self.mode == "svd":
            scores = y / stat["inv_scale"]
            if self.modality == "gex":
                return scores @ stat["loadings"].T + stat["mean"]
            return (scores + stat["center"]) @ stat["loadings"].T
        return y

    def get_config(self):
        return {
            **super().get_config(),
            "modality": self.modality,
            "mode": self.mode,
            "n_features": self.n_features,
            "n_components": self.n_components,
            "clip": self.clip,
        }


@keras.saving.register_keras_serializable(package="mmae")
class BlockScale(keras.layers.Layer):
    """Scale the GEX and ATAC halves of the embedding to equal total variance.

    Two non-trainable factors, computed after training from the training cells' codes
    (:meth:`fit`), so the embedding of any cells is the same fixed linear map of their
    code. The decoders read the unscaled code; only the embedding is scaled. Distances
    then weigh both modalities the same, as in ``pca_concat``.
    """

    def __init__(self, gex_latent_dim: int = 1, **kwargs):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.gex_latent_dim = _check_int("gex_latent_dim", gex_latent_dim)
        self.factors = self.add_weight(
            shape=(2,), initializer="ones", trainable=False, name="factors"
        )

    def build(self, input_shape=None):
        self.built = True

    def compute_output_shape(self, input_shape):
        return input_shape

    def fit(self, z: np.ndarray) -> BlockScale:
        """Set the factors from codes ``z`` (cells x latent_dim). Returns ``self``."""
        z = np.asarray(z, dtype=np.float64)
        k = self.gex_latent_dim
        factors = []
        for block in (z[:, :k], z[:, k:]):
            total = float(np.sqrt(np.var(block, axis=0).sum()))
            factors.append(1.0 / total if total > 0 else 1.0)
        self.factors.assign(np.asarray(factors, dtype=np.float32))
        return self

    def call(self, z):
        k = self.gex_latent_dim
        return ops.concatenate([z[:, :k] * self.factors[0], z[:, k:] * self.factors[1]], axis=-1)

    def get_config(self):
        return {**super().get_config(), "gex_latent_dim": self.gex_latent_dim}


@keras.saving.register_keras_serializable(package="mmae")
class MultiModalAutoencoder(keras.Model):
    """Multi-modal autoencoder: modality encoders -> one joint code -> both decoders.

    Build it with :func:`build_model`, which validates the options and compiles it. All
    parameters are described there. The model is built on construction (its weights
    exist before the first call) and round-trips through ``get_config`` /
    ``from_config``, hence through ``.keras`` files (see
    :func:`mmae_utils.training.save_model`).

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
        *,
        latent_dim: int = 20,
        hidden: Sequence[int] = (250,),
        gex_latent_dim: int | None = None,
        decoders: str = "joint",
        activation: str = "relu",
        latent_activation: str | None = None,
        dropout: float = 0.0,
        batch_norm: bool = False,
        latent_dropout: float = 0.0,
        latent_batch_norm: bool = False,
        modality_dropout: float = 0.0,
        gex_loss_weight: float = 0.5,
        atac_loss_weight: float = 0.5,
        gex_input: str = "log",
        atac_input: str = "binary",
        n_components: int = 100,
        latent_scaling: str = "none",
        seed: int | None = 0,
        gex_features: Sequence[str] | None = None,
        atac_features: Sequence[str] | None = None,
        name: str = "mmae",
        **kwargs,
    ):
        super().__init__(name=name, **kwargs)
        self.gex_dim = _check_int("gex_dim", gex_dim)
        self.atac_dim = _check_int("atac_dim", atac_dim)
        self.latent_dim = _check_int("latent_dim", latent_dim, minimum=2)
        if isinstance(hidden, numbers.Integral) and not isinstance(hidden, bool):
            hidden = (hidden,)
        if isinstance(hidden, str) or not isinstance(hidden, Sequence):
            raise TypeError(f"hidden must be a sequence of integer layer sizes, got {hidden!r}.")
        self.hidden = tuple(_check_int(f"hidden[{i}]", h) for i, h in enumerate(hidden))
        if gex_latent_dim is None:
            gex_latent_dim = self.latent_dim // 2
        self.gex_latent_dim = _check_int("gex_latent_dim", gex_latent_dim)
        self.atac_latent_dim = self.latent_dim - self.gex_latent_dim
        if self.atac_latent_dim < 1:
            raise ValueError(
                f"gex_latent_dim={self.gex_latent_dim} leaves no room for ATAC in "
                f"latent_dim={self.latent_dim}."
            )
        if decoders not in _DECODERS:
            raise ValueError(f"decoders must be one of {_DECODERS}, got {decoders!r}.")
        self.decoders = decoders
        self.activation = _check_activation("activation", activation)
        self.latent_activation = _check_activation("latent_activation", latent_activation)
        self.dropout = _check_rate("dropout", dropout)
        self.batch_norm = bool(batch_norm)
        self.latent_dropout = _check_rate("latent_dropout", latent_dropout)
        self.latent_batch_norm = bool(latent_batch_norm)
        self.modality_dropout = _check_rate("modality_dropout", modality_dropout)
        for wname, w in (
            ("gex_loss_weight", gex_loss_weight),
            ("atac_loss_weight", atac_loss_weight),
        ):
            if (
                isinstance(w, bool)
                or not isinstance(w, numbers.Real)
                or not np.isfinite(w)
                or w < 0
            ):
                raise ValueError(f"{wname} must be a finite number >= 0, got {w!r}.")
        if gex_loss_weight == 0 and atac_loss_weight == 0:
            raise ValueError("gex_loss_weight and atac_loss_weight cannot both be 0.")
        self.gex_loss_weight = float(gex_loss_weight)
        self.atac_loss_weight = float(atac_loss_weight)
        if latent_scaling not in _LATENT_SCALINGS:
            raise ValueError(
                f"latent_scaling must be one of {_LATENT_SCALINGS}, got {latent_scaling!r}."
            )
        self.latent_scaling = latent_scaling
        self.gex_transform = InputTransform(
            "gex", gex_input, self.gex_dim, n_components, name="gex_transform"
        )
        self.atac_transform = InputTransform(
            "atac", atac_input, self.atac_dim, n_components, name="atac_transform"
        )
        self.gex_input, self.atac_input = gex_input, atac_input
        self._pretransformed = ()  # modalities fed already transformed (set by train())
        self.n_components = self.gex_transform.n_components
        if seed is not None:
            seed = _check_int("seed", seed, minimum=0)
        self.seed = seed
        # Plain tuples (not lists) so Keras' attribute tracking leaves them alone.
        self._gex_features = None
        self._atac_features = None
        self.gex_features = gex_features
        self.atac_features = atac_features

        n_hidden = len(self.hidden)
        seeds = iter(_seeds(seed, 4 * (n_hidden + 1) + 4 * (n_hidden + 1) + 3))
        self.modality_dropout_layer = ModalityDropout(
            self.modality_dropout, seed=next(seeds), name="modality_dropout"
        )
        self.gex_encoder = self._stack("gex_encoder", self.hidden, self.gex_latent_dim, seeds)
        self.atac_encoder = self._stack("atac_encoder", self.hidden, self.atac_latent_dim, seeds)
        self.latent_layers = []
        if self.latent_batch_norm:
            self.latent_layers.append(keras.layers.BatchNormalization(name="latent_bn"))
        if self.latent_activation is not None:
            self.latent_layers.append(
                keras.layers.Activation(self.latent_activation, name="latent_activation")
            )
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
        self._build_all()
        self.gex_loss_tracker = keras.metrics.Mean(name="gex_loss")
        self.atac_loss_tracker = keras.metrics.Mean(name="atac_loss")

    # ------------------------------------------------------------------ construction
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
        self._build_stack(self.latent_layers, self.latent_dim)
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
        z = ops.concatenate([z_gex, z_atac], axis=-1)
        return self._run(self.latent_layers, z, training)

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
    def config(self) -> dict:
        """The :func:`build_model` options of this model (without feature names)."""
        return {
            "latent_dim": self.latent_dim,
            "hidden": self.hidden,
            "gex_latent_dim": self.gex_latent_dim,
            "decoders": self.decoders,
            "activation": self.activation,
            "latent_activation": self.latent_activation,
            "dropout": self.dropout,
            "batch_norm": self.batch_norm,
            "latent_dropout": self.latent_dropout,
            "latent_batch_norm": self.latent_batch_norm,
            "modality_dropout": self.modality_dropout,
            "gex_loss_weight": self.gex_loss_weight,
            "atac_loss_weight": self.atac_loss_weight,
            "gex_input": self.gex_input,
            "atac_input": self.atac_input,
            "n_components": self.n_components,
            "latent_scaling": self.latent_scaling,
            "seed": self.seed,
        }

    def get_config(self):
        base = super().get_config()
        return {
            **{k: v for k, v in base.items() if k in ("name", "trainable", "dtype")},
            "gex_dim": self.gex_dim,
            "atac_dim": self.atac_dim,
            **{k: list(v) if isinstance(v, tuple) else v for k, v in self.config.items()},
            "gex_features": None if self.gex_features is None else list(self.gex_features),
            "atac_features": None if self.atac_features is None else list(self.atac_features),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        gex_dim = config.pop("gex_dim")
        atac_dim = config.pop("atac_dim")
        return cls(gex_dim, atac_dim, **config)


def build_model(
    gex_dim: int,
    atac_dim: int,
    *,
    preset: str | None = None,
    learning_rate: float = 1e-3,
    compile: bool = True,
    **config,
) -> MultiModalAutoencoder:
    """Build (and compile) the multi-modal autoencoder of Figure 4.

    Parameters
    ----------
    gex_dim, atac_dim
        Number of GEX and ATAC input features (e.g. 2,500 genes and 5,000 peaks).
    preset
        Named configuration to start from (:data:`PRESETS`); options given in
        ``**config`` override it. ``None`` uses :data:`DEFAULT_PRESET` (``"jae"``).
        ``"seed"`` is the original notebook's model (the before of the tutorial's
        before-and-after); ``"jae"`` is the configuration chosen by the ablation in
        ``benchmarks/ablation.md``.
    learning_rate
        Learning rate of the Adam optimizer the model is compiled with.
        :func:`mmae_utils.training.train` recompiles with its own ``learning_rate``.
    compile
        Compile the model with Adam (the losses, MSE for GEX and BCE from logits for
        ATAC with their weights, are part of the model: ``model.compute_loss``).
    **config
        Architecture options; unknown names raise a ``TypeError``. Defaults are those of
        the preset (:data:`DEFAULT_CONFIG` for the default one; values below are the
        ``"seed"`` preset's, ``"jae"`` differs as noted):

        ``latent_dim`` (20)
            Size of the joint code.
        ``hidden`` ((250,))
            Integer sizes of the hidden Dense layers of each encoder; the decoders
            mirror them.
        ``gex_latent_dim`` (None -> ``latent_dim // 2``)
            GEX encoder's part of the joint code; ATAC gets the rest.
        ``decoders`` ("joint")
            ``"joint"``: both decoders read the whole joint code (Figure 4).
            ``"own"``: each decoder reads only its own modality's part (the original
            notebook's wiring, for comparison).
        ``activation`` ("relu")
            Activation of the hidden layers.
        ``latent_activation`` (None)
            Activation of the joint code (None: linear).
        ``dropout`` (0.0), ``batch_norm`` (False; ``"jae"``: True)
            Dropout rate and batch normalisation after each hidden layer.
        ``latent_dropout`` (0.0), ``latent_batch_norm`` (False)
            The same on the joint code (dropout is applied where the decoders read it;
            the embedding is taken before it).
        ``modality_dropout`` (0.0)
            Fraction of the cells of each training batch whose GEX or ATAC input (one of
            the two, at random) is zeroed, so the code also works from a single modality
            (Ngiam et al.). Active only during training; seeded.
        ``gex_loss_weight`` (0.5), ``atac_loss_weight`` (0.5)
            Weights of the GEX and ATAC losses in the total loss (each loss is a mean
            over its features, so 2,500 genes and 5,000 peaks weigh as the weights say).
        ``gex_input`` ("log"; ``"jae"``: "svd")
            What the network sees of GEX: ``"log"`` the log-normalised values,
            ``"standardize"`` per-gene z-scores (clipped at 10), ``"svd"`` the first
            ``n_components`` principal components (see :class:`InputTransform`). The
            GEX loss is the MSE in that space.
        ``atac_input`` ("binary"; ``"jae"``: "svd")
            ATAC: ``"binary"`` accessible or not, under binary cross-entropy on logits;
            ``"tfidf"`` TF-IDF values or ``"svd"`` LSI components, under MSE.
        ``n_components`` (100)
            Components per modality for the ``"svd"`` inputs. Transforms are fitted on
            the cells of the first :func:`~mmae_utils.training.train` call.
        ``latent_scaling`` ("none"; ``"jae"``: "block")
            ``"block"``: the embedding's GEX and ATAC halves are scaled to the same
            total variance (factors fixed after training, see :class:`BlockScale`).
        ``seed`` (0)
            Seed of the weight initialisation and of the dropout masks (None: Keras'
            global seed).
        ``gex_features``, ``atac_features`` (None)
            Feature names the model is (to be) trained on, saved with it.

    Returns
    -------
    A built :class:`MultiModalAutoencoder` taking ``{"gex": ..., "atac": ...}`` and
    returning ``{"gex": GEX reconstruction, "atac": ATAC logits}``.

    Examples
    --------
    >>> model = build_model(2500, 5000)  # the original notebook's sizes
    >>> model.gex_latent_dim, model.atac_latent_dim
    (10, 10)
    >>> build_model(2500, 5000, preset="seed").config["gex_input"]
    'log'

    """
    allowed = set(DEFAULT_CONFIG) | {"gex_features", "atac_features", "name"}
    unknown = sorted(set(config) - allowed)
    if unknown:
        raise TypeError(
            f"build_model() got unknown option(s) {unknown}; valid options: {sorted(allowed)}."
        )
    preset = DEFAULT_PRESET if preset is None else preset
    if preset not in PRESETS:
        raise ValueError(f"Unknown preset {preset!r}; choose from {sorted(PRESETS)}.")
    if isinstance(config.get("hidden"), list):
        config["hidden"] = tuple(config["hidden"])
    model = MultiModalAutoencoder(gex_dim, atac_dim, **{**PRESETS[preset], **config})
    if compile:
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, numbers.Real):
            raise TypeError(f"learning_rate must be a positive number, got {learning_rate!r}.")
        if not learning_rate > 0:
            raise ValueError(f"learning_rate must be > 0, got {learning_rate}.")
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=float(learning_rate)))
        # create the optimizer state now, so that a saved untrained model reloads cleanly
        model.optimizer.build(model.trainable_variables)
    return model
