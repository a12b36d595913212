"""The custom layers of the autoencoder: modality dropout, input transforms, block scaling.

- :class:`ModalityDropout` zeroes one whole modality for a random fraction of the cells of
  each training batch;
- :class:`InputTransform` is a fixed transformation of one modality's input (z-scores,
  TF-IDF, PCA / LSI components), fitted once on data and saved with the model;
- :class:`BlockScale` scales the GEX and ATAC parts of the embedding to equal total
  variance;
- :class:`GradientReversal` passes the code on unchanged and flips the sign of its
  gradient (the adversarial batch classifier, ``adversarial_batch``).

The model's blocks of standard Keras layers are made here too, each layer seeded:
:func:`dense_stack` (encoders and decoders), :func:`batch_classifier`, :func:`dense`, from
the seeds of :func:`derived_seeds`.

All are registered for Keras serialization as ``mmae>ClassName``. This module does not
import :mod:`mmae_utils.model`.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from ._utils import ContentCache
from .config import ATAC_INPUTS, GEX_INPUTS, MODALITIES, check_int, check_rate
from .distribute import replicas_in_scope

__all__ = [
    "BATCH_CLASSIFIER_UNITS",
    "BlockScale",
    "GradientReversal",
    "InputTransform",
    "ModalityDropout",
    "batch_classifier",
    "dense",
    "dense_stack",
    "derived_seeds",
    "reverse_gradient",
]

#: Units of the hidden layer of the batch classifier (``adversarial_batch``).
BATCH_CLASSIFIER_UNITS = 32

#: Statistics of :meth:`InputTransform.fit` by (options, content hash of the data), the 8
#: last used. The fit is exact and deterministic, so the models that a report trains on the
#: same cells (one per seed, and the companions) reuse it instead of refitting: an exact
#: SVD of 5,000 peaks at 69,249 cells takes tens of seconds.
_FITTED = ContentCache(8)


def derived_seeds(seed: int | None, n: int, stream: int = 0) -> list[int | None]:
    """``n`` independent integer seeds derived from ``seed`` (``None`` -> unseeded).

    ``stream`` 0 is the original layers' stream; the layers added since (the shared code,
    the batch classifier) draw from stream 1, so that the original layers keep their
    seeds, and models of the original options their initial weights.

    Returns
    -------
    A list of ``n`` ints (or ``None`` s).
    """
    if seed is None:
        return [None] * n
    rng = np.random.default_rng(seed if stream == 0 else [seed, stream])
    return [int(s) for s in rng.integers(0, 2**31 - 1, size=n)]


def dense(units: int, seed: int | None, *, name: str, activation: str | None = None):
    """A ``keras.layers.Dense`` with a Glorot-uniform kernel seeded with ``seed``.

    Returns
    -------
    The layer (not built).
    """
    return keras.layers.Dense(
        units,
        activation=activation,
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed),
        name=name,
    )


def dense_stack(
    name, hidden, out_dim, seeds, *, activation, batch_norm, dropout, out_activation=None
) -> list:
    """Dense(+BN)(+activation)(+Dropout) blocks of ``hidden`` units, then a Dense of
    ``out_dim`` with ``out_activation`` (default linear; none when ``out_dim`` is ``None``:
    the encoders of a shared code).

    Each Dense and Dropout layer takes the next seed of the iterator ``seeds``, in order.
    Built under a ``tf.distribute`` strategy with several replicas, the batch
    normalisation uses the statistics of the global batch (all-reduced over the
    replicas), as on one device.

    Returns
    -------
    The list of layers, named ``{name}_dense{i}``, ``_bn{i}``, ``_act{i}``, ``_dropout{i}``
    and ``{name}_out``.
    """
    layers = []
    # only under a strategy: synchronized moments are computed as E[x^2] - E[x]^2, which
    # would change the round-off of training on one device
    synchronized = replicas_in_scope() > 1
    for i, units in enumerate(hidden):
        act = None if batch_norm else activation
        layers.append(dense(units, next(seeds), name=f"{name}_dense{i}", activation=act))
        if batch_norm:
            layers.append(
                keras.layers.BatchNormalization(name=f"{name}_bn{i}", synchronized=synchronized)
            )
            if activation is not None:
                layers.append(keras.layers.Activation(activation, name=f"{name}_act{i}"))
        if dropout > 0:
            layers.append(
                keras.layers.Dropout(dropout, seed=next(seeds), name=f"{name}_dropout{i}")
            )
    if out_dim is not None:
        layers.append(dense(out_dim, next(seeds), name=f"{name}_out", activation=out_activation))
    return layers


def batch_classifier(n_batches: int, seeds) -> list:
    """The adversarial batch classifier: :class:`GradientReversal`, a ReLU Dense layer of
    :data:`BATCH_CLASSIFIER_UNITS` units and a linear Dense of ``n_batches`` logits.

    Returns
    -------
    The list of layers (seeded from the iterator ``seeds``).
    """
    return [
        GradientReversal(name="gradient_reversal"),
        dense(
            BATCH_CLASSIFIER_UNITS, next(seeds), name="batch_classifier_dense0", activation="relu"
        ),
        dense(check_int("n_batches", n_batches), next(seeds), name="batch_classifier_out"),
    ]


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
        self.rate = check_rate("modality_dropout", rate)
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
        modes = GEX_INPUTS if modality == "gex" else ATAC_INPUTS
        if mode not in modes:
            raise ValueError(f"{modality}_input must be one of {modes}, got {mode!r}.")
        self.modality = modality
        self.mode = mode
        self.n_features = check_int("n_features", n_features)
        self.n_components = check_int("n_components", n_components)
        if mode == "svd" and self.n_components >= self.n_features:
            raise ValueError(
                f"{modality}_input='svd' needs n_components < the {self.n_features} "
                f"{modality.upper()} features, got n_components={self.n_components}."
            )
        self.clip = float(clip)
        self._stats = {}
        for name, shape in self._stat_shapes().items():
            self._stats[name] = self.add_weight(
                shape=shape, initializer="zeros", trainable=False, name=name
            )
        self.fitted_flag = (
            None
            if self.identity
            else self.add_weight(shape=(), initializer="zeros", trainable=False, name="fitted")
        )

    def _stat_shapes(self) -> dict[str, tuple[int, ...]]:
        """Name -> shape of the statistics the mode holds (none for the identity)."""
        f, k = self.n_features, self.n_components
        return {
            "standardize": {"mean": (f,), "inv_sd": (f,)},
            "tfidf": {"idf": (f,)},
            "svd": (
                {"mean": (f,), "loadings": (f, k), "inv_scale": (1,)}
                if self.modality == "gex"
                else {"idf": (f,), "loadings": (f, k), "center": (k,), "inv_scale": (1,)}
            ),
        }.get(self.mode, {})

    @property
    def identity(self) -> bool:
        """Whether the input is passed on unchanged (``"log"`` / ``"binary"``)."""
        return self.mode in ("log", "binary")

    @property
    def fitted(self) -> bool:
        """Whether the statistics have been computed (always true for the identity)."""
        if self.fitted_flag is None:
            return True
        return bool(float(self.fitted_flag.numpy()) > 0)

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

    def fit(self, x, *, solver: str = "auto") -> InputTransform:
        """Compute the statistics from ``x`` (cells x features, CSR or dense float32).

        ``x`` is the model input of the modality (log-normalised GEX or binarised ATAC);
        it is not modified. ``solver`` is :func:`mmae_utils.pp.svd`'s: ``"auto"`` is exact
        except for many cells of many features, where it is a seeded randomized SVD.
        Deterministic either way, so statistics already computed in this process from the
        same content with the same options are reused, not recomputed (a report's seeds
        train on the same cells). Returns ``self``.
        """
        import scipy.sparse as sp

        from ._utils import content_hash, to_csr

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
        key = (self.modality, self.mode, self.n_features, self.n_components, self.clip)
        key += (solver, content_hash(x))
        values = _FITTED.get(key, lambda: self._statistics(x, solver))
        for name, value in values.items():
            self._stats[name].assign(
                np.asarray(value, dtype=np.float32).reshape(self._stats[name].shape)
            )
        self.fitted_flag.assign(1.0)
        return self

    def _statistics(self, x, solver: str) -> dict[str, np.ndarray]:
        """The mode's statistics of ``x`` (CSR float32, validated), computed."""
        from . import pp
        from ._utils import column_sums

        n = x.shape[0]
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
            values.update(self._fit_svd(x, solver))
        return values

    def _fit_svd(self, x, solver: str) -> dict[str, np.ndarray]:
        from . import pp

        k = self.n_components
        if self.modality == "gex":  # PCA of the log-normalised genes
            scores, comp, mean = pp.pca(x, k, what="gex_input='svd'", solver=solver)
            inv_scale = pp.block_scale_factor(scores, size="rms", ddof=1)
            return {"mean": mean, "loadings": comp.T, "inv_scale": inv_scale}
        scores, comp = pp.lsi(x, k, what="atac_input='svd'", solver=solver)  # first dropped
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
        self.gex_latent_dim = check_int("gex_latent_dim", gex_latent_dim)
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


@ops.custom_gradient
def reverse_gradient(x):
    """``x`` unchanged, with the gradient that flows back through it negated."""

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        return -upstream

    return ops.copy(x), grad


@keras.saving.register_keras_serializable(package="mmae")
class GradientReversal(keras.layers.Layer):
    """Identity forward, negated gradient backward (Ganin & Lempitsky 2015).

    Placed between the joint code and the batch classifier: the classifier is trained to
    predict the batch, while the encoders, receiving the opposite gradient, are trained to
    make that prediction fail, so the code carries less of the batch.
    """

    def build(self, input_shape=None):
        self.built = True

    def compute_output_shape(self, input_shape):
        return input_shape

    def call(self, x):
        return reverse_gradient(x)
