"""Count likelihoods of the reconstructions, and the batch classifier's loss.

- :func:`nb_nll_per_cell` and the :class:`NegativeBinomial` layer (which holds the learned
  inverse dispersion per gene): the negative binomial negative log-likelihood of raw GEX
  counts, with the mean ``softmax(decoder output) * library size`` (as scVI), for
  ``gex_likelihood="nb"``;
- :func:`bce_probabilities_per_cell`: the seed notebook's ATAC loss, binary cross-entropy
  on ReLU outputs read as clipped probabilities (``output_activation="relu"``);
- :func:`batch_cross_entropy_per_cell`: the cross-entropy of the batch classifier of
  ``adversarial_batch``;
- :func:`log_normalized_mean`: the NB decoder's output on the log-normalised scale
  (what :func:`mmae_utils.training.reconstruct` returns for GEX).

The binary cross-entropy of the Bernoulli likelihood (``atac_likelihood="bernoulli"``)
and the mean squared error are :func:`mmae_utils.model.bce_logits_per_cell` and
:func:`mmae_utils.model.mse_per_cell` (written out in ``mmae_utils._cpu``). Each loss is
one value per cell, the mean over the modality's features. This module sees tensors only
and does not import the model.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from .config import check_int

__all__ = [
    "PROBABILITY_CLIP",
    "NegativeBinomial",
    "batch_cross_entropy_per_cell",
    "bce_probabilities_per_cell",
    "log_normalized_mean",
    "nb_nll_per_cell",
]


def _lgamma(x):
    # keras.ops has no log-gamma; the package trains on the TensorFlow backend
    import tensorflow as tf

    return tf.math.lgamma(x)


def nb_nll_per_cell(counts, logits, library, log_theta):
    """Mean over genes of the negative binomial negative log-likelihood: one value per cell.

    The mean of gene ``g`` in cell ``c`` is ``mu = library[c] * softmax(logits[c])[g]`` and
    its inverse dispersion ``theta = exp(log_theta[g])`` (variance ``mu + mu**2 / theta``)::

        -log NB(x; mu, theta) = lgamma(theta) + lgamma(x + 1) - lgamma(x + theta)
                                - theta * log(theta / (theta + mu)) - x * log(mu / (theta + mu))

    computed on the log scale (``log(theta + mu)`` as a ``logaddexp``) so that it stays
    finite for tiny means; a library below 1 counts as 1 (a cell with no counts then
    costs only its zeros).

    Parameters
    ----------
    counts
        Raw counts, cells x genes.
    logits
        Decoder outputs, cells x genes (any real numbers; their softmax is the profile).
    library
        Library size of each cell (its total count over these genes), shape (cells,) or
        (cells, 1).
    log_theta
        Log inverse dispersion per gene, shape (genes,).

    Returns
    -------
    A tensor of shape (cells,): the mean over genes of the negative log-likelihood.
    """
    library = ops.reshape(ops.cast(library, logits.dtype), (-1, 1))
    log_mu = ops.log(ops.maximum(library, 1.0)) + ops.log_softmax(logits, axis=-1)
    theta = ops.exp(log_theta)
    log_theta_mu = ops.logaddexp(log_theta, log_mu)
    log_lik = (
        _lgamma(counts + theta)
        - _lgamma(theta)
        - _lgamma(counts + 1.0)
        + theta * (log_theta - log_theta_mu)
        + counts * (log_mu - log_theta_mu)
    )
    return -ops.mean(log_lik, axis=-1)


#: Keras' epsilon: ``binary_crossentropy`` on probabilities clips them to [eps, 1 - eps].
PROBABILITY_CLIP = 1e-7


def bce_probabilities_per_cell(target, probabilities):
    """Mean over peaks of the binary cross-entropy with the outputs read as probabilities.

    The seed notebook's ATAC loss (``output_activation="relu"``): Keras'
    ``binary_crossentropy`` on a ReLU output, which clips it to
    [:data:`PROBABILITY_CLIP`, 1 - :data:`PROBABILITY_CLIP`] first. Where the clip bites
    (every output a ReLU sets to 0, and any above 1) the gradient is 0.

    Returns
    -------
    A tensor of shape (cells,).
    """
    p = ops.clip(probabilities, PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)
    target = ops.cast(target, p.dtype)
    return -ops.mean(target * ops.log(p) + (1.0 - target) * ops.log(1.0 - p), axis=-1)


def batch_cross_entropy_per_cell(codes, logits):
    """Cross-entropy of the batch classifier: ``-log softmax(logits)[code]`` per cell.

    Parameters
    ----------
    codes
        Integer batch codes, shape (cells,), into the model's ``batch_categories``.
    logits
        Classifier outputs, cells x batches.

    Returns
    -------
    A tensor of shape (cells,).
    """
    codes = ops.cast(ops.reshape(codes, (-1,)), "int32")
    return ops.sparse_categorical_crossentropy(codes, logits, from_logits=True)


def log_normalized_mean(logits, target_sum: float = 1e4) -> np.ndarray:
    """The NB decoder's profile on the log-normalised scale: ``log1p(softmax * target_sum)``.

    The same scale as the model's log-normalised GEX input
    (:func:`mmae_utils.pp.log_normalize`), whatever the library size.

    Parameters
    ----------
    logits
        Decoder outputs, cells x genes (NumPy).
    target_sum
        Counts per cell of the normalisation.

    Returns
    -------
    ``np.ndarray`` of float32, cells x genes.
    """
    logits = np.asarray(logits, dtype=np.float64)
    logits = logits - logits.max(axis=1, keepdims=True)
    profile = np.exp(logits)
    profile /= profile.sum(axis=1, keepdims=True)
    return np.log1p(profile * target_sum).astype(np.float32)


@keras.saving.register_keras_serializable(package="mmae")
class NegativeBinomial(keras.layers.Layer):
    """The GEX negative binomial likelihood, with one learned inverse dispersion per gene.

    Holds ``log_theta`` (genes,), trained with the model (initially 0: ``theta = 1``);
    calling it gives :func:`nb_nll_per_cell`.

    Parameters
    ----------
    n_genes
        Number of genes (the GEX features).
    """

    def __init__(self, n_genes: int = 1, **kwargs):
        super().__init__(**kwargs)
        self.n_genes = check_int("n_genes", n_genes)
        self.log_theta = self.add_weight(
            shape=(self.n_genes,), initializer="zeros", trainable=True, name="log_theta"
        )

    def build(self, input_shape=None):
        self.built = True

    def call(self, counts, logits, library):
        return nb_nll_per_cell(counts, logits, library, self.log_theta)

    def compute_output_shape(self, counts_shape, logits_shape=None, library_shape=None):
        return (counts_shape[0],)

    def get_config(self):
        return {**super().get_config(), "n_genes": self.n_genes}
