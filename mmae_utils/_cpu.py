"""The measured CPU speed-ups of training, in one place.

Each of these changes how fast a training step runs on CPU, not what it computes (the
tests check each against the plain formula). The numbers are those recorded in
``benchmarks/README.md``, section Training (full scale: 69,249 cells, the ``"seed"``
network's 3,773,520 parameters, batch size 128, on the 2-core benchmark machine; single
runs vary by +-30 %, op times by +-10 %), and in the commits that made each change.

- :func:`fused_adam`: Keras' Adam update run as TensorFlow's fused ``ResourceApplyAdam``
  kernel. Without XLA Keras' Adam is ten element-wise ops per variable, 7.2 ms per step;
  the fused kernel takes 3.6-4.5 ms per step (memory-bound: at least 3.3 ms at the
  machine's 32 GB/s). It is what lets :func:`mmae_utils.training.train` run without XLA
  by default: wall time per epoch within noise of XLA's, CPU time per epoch 24.0-25.0 s
  against 26.8-29.9 s with XLA in three full-scale runs, 0.1-0.15 GB less memory and no
  5-8 s compilation per call (commit f9baf1c "Training without XLA by default, with
  TensorFlow's fused Adam"). Its gain in seconds per epoch over Keras' Adam without XLA
  was not measured separately.
- :func:`tune_malloc`: glibc's ``mallopt`` thresholds raised so that freed multi-MB
  tensors are reused instead of returned to the kernel: about 7,000 page faults per step
  before, 140 after; about 1.4x less CPU time per epoch, peak RSS unchanged within noise;
  a batch through ``tf.data`` 1.3-1.7 ms instead of 6 ms (commit f9baf1c, "glibc page
  faults").
- :func:`mse_per_cell`, :func:`bce_logits_per_cell`: the per-cell losses with their
  gradients written out, one element-wise op for the MSE's gradient and three for the
  BCE's (about eight before), and the BCE forward in three ops instead of seven:
  element-wise op time per step fell from about 7.5 to 5.7 ms (summed over two threads;
  commits 55bf464, 9dac976 "Written-out loss gradients" and f7e8d97 "Loss docstrings:
  count the element-wise ops exactly").
- tf.data autotuning off, in :func:`mmae_utils.training.make_dataset` (kept there: it is
  an option of the dataset): deleting an epoch's iterator waited up to 10 s for the
  autotuner's thread, so about half the epochs started with an 8-10 s stall; 12.2 s
  instead of 20.1 s per epoch at the same CPU time, and 0.13-0.15 s instead of
  0.18-0.36 s per epoch on the 5,000-cell demo data (commits 55bf464 "Turn tf.data
  autotuning off: ..." and 9dac976, "Epoch-start stall").

:mod:`mmae_utils.training` re-exports :func:`fused_adam` and :func:`tune_malloc`,
:mod:`mmae_utils.model` the two losses.
"""

from __future__ import annotations

import ctypes
import sys

from keras import ops

from ._utils import logger

__all__ = ["bce_logits_per_cell", "fused_adam", "mse_per_cell", "on_cpu", "tune_malloc"]


# ---------------------------------------------------------------------------- losses
@ops.custom_gradient
def mse_per_cell(target, pred):
    """Mean over features of ``(pred - target) ** 2``: one value per cell (row).

    The same numbers as ``ops.mean(ops.square(pred - target), axis=-1)``, with the
    gradient written out (``2 (pred - target) / features``, scaled by the upstream
    gradient of each cell, reusing the forward difference) so that backpropagation costs
    one element-wise op over the batch instead of the several that automatic
    differentiation of the mean, the square and the difference takes (see
    ``benchmarks/README.md``, Training).
    """
    diff = pred - target
    loss = ops.mean(ops.square(diff), axis=-1)

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        scale = ops.expand_dims(upstream * (2.0 / ops.cast(ops.shape(diff)[-1], diff.dtype)), -1)
        d_pred = diff * scale
        return -d_pred, d_pred

    return loss, grad


@ops.custom_gradient
def bce_logits_per_cell(target, logits):
    """Mean over features of the binary cross-entropy of ``sigmoid(logits)`` against
    ``target``: one value per cell (row).

    Computed as ``softplus(logits) - target * logits``, the same quantity as
    ``ops.binary_crossentropy(target, logits, from_logits=True)`` (TensorFlow's
    ``max(x, 0) - x t + log1p(exp(-|x|))``) up to round-off, with three element-wise ops
    instead of seven; the gradient ``(sigmoid(logits) - target) / features`` is written
    out: three ops instead of about eight (see ``benchmarks/README.md``, Training).
    """
    loss = ops.mean(ops.softplus(logits) - target * logits, axis=-1)

    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        scale = ops.expand_dims(upstream / ops.cast(ops.shape(logits)[-1], logits.dtype), -1)
        d_logits = (ops.sigmoid(logits) - target) * scale
        return -logits * scale, d_logits

    return loss, grad


# ---------------------------------------------------------------------------- device
def on_cpu() -> bool:
    """Whether TensorFlow trains on the CPU (it sees no GPU).

    The speed-ups below were measured on CPU only: :func:`mmae_utils.training.train` uses
    the fused Adam and the allocator tuning there, and Keras' own Adam and glibc's defaults
    where a GPU runs the steps.
    """
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")


# ---------------------------------------------------------------------------- optimizer
def _fused_adam_class():
    import keras

    @keras.saving.register_keras_serializable(package="mmae")
    class FusedAdam(keras.optimizers.Adam):
        """Keras' Adam with the update done by TensorFlow's fused ``ResourceApplyAdam``.

        The same update rule as ``keras.optimizers.Adam`` (bias-corrected step size,
        epsilon outside the square root), but one multi-threaded kernel pass per variable
        instead of about ten element-wise ops: without XLA, Keras' Adam costs several
        milliseconds per step for the 3.8 million parameters of the default model.
        Falls back to Keras' implementation for AMSGrad, weight decay and non-TensorFlow
        backends.
        """

        def update_step(self, gradient, variable, learning_rate):
            if self.amsgrad or keras.backend.backend() != "tensorflow":
                return super().update_step(gradient, variable, learning_rate)
            import tensorflow as tf

            dtype = variable.dtype
            step = ops.cast(self.iterations + 1, dtype)
            beta_1 = ops.cast(self.beta_1, dtype)
            beta_2 = ops.cast(self.beta_2, dtype)
            index = self._get_variable_index(variable)
            tf.raw_ops.ResourceApplyAdam(
                var=variable.handle,
                m=self._momentums[index].handle,
                v=self._velocities[index].handle,
                beta1_power=ops.power(beta_1, step),
                beta2_power=ops.power(beta_2, step),
                lr=ops.cast(learning_rate, dtype),
                beta1=beta_1,
                beta2=beta_2,
                epsilon=ops.cast(self.epsilon, dtype),
                grad=ops.cast(gradient, dtype),
                use_locking=False,
            )

    return FusedAdam


_FUSED_ADAM = None


def fused_adam(learning_rate: float = 1e-3, **kwargs):
    """A ``keras.optimizers.Adam`` whose update runs as TensorFlow's fused Adam kernel.

    Parameters
    ----------
    learning_rate
        Step size.
    **kwargs
        Other ``keras.optimizers.Adam`` arguments.

    Returns
    -------
    The optimizer (class ``FusedAdam``, registered as ``mmae>FusedAdam`` for saving).
    """
    global _FUSED_ADAM
    if _FUSED_ADAM is None:
        _FUSED_ADAM = _fused_adam_class()
    return _FUSED_ADAM(learning_rate=learning_rate, **kwargs)


# ---------------------------------------------------------------------------- allocator
_MALLOC_TUNED = False


def tune_malloc(
    *, mmap_threshold: int = 32 << 20, trim_threshold: int = 256 << 20, top_pad: int = 64 << 20
) -> bool:
    """Stop glibc from returning (and re-faulting) memory at every training step.

    With glibc's default settings every training step of TensorFlow on CPU (and every
    densified batch) gets fresh, zero-filled pages from the kernel for its multi-MB
    tensors: thousands of page faults per step, about a third of the CPU time of an epoch
    on the benchmark machine. Raising the mmap and trim thresholds (the documented
    ``MALLOC_MMAP_THRESHOLD_`` / ``MALLOC_TRIM_THRESHOLD_`` / ``MALLOC_TOP_PAD_``
    tunables, set here with ``mallopt``) lets freed blocks be reused instead. The cost is that up to
    ``trim_threshold`` bytes of freed memory may stay with the process. Process-wide and
    applied once; a no-op (returning False) where glibc is not available.

    Parameters
    ----------
    mmap_threshold
        Allocations below this size come from the heap, not from fresh mmaps.
    trim_threshold
        Free memory at the top of the heap kept before returning it to the system.
    top_pad
        Extra memory requested from the system whenever a heap grows (or kept when it
        shrinks); the per-thread heaps of tf.data and TensorFlow need it too.

    Returns
    -------
    Whether the settings are in effect.
    """
    global _MALLOC_TUNED
    if _MALLOC_TUNED:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # pragma: no cover - musl or other libc
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3
    ok = mallopt(m_mmap_threshold, int(mmap_threshold)) == 1
    ok = mallopt(m_trim_threshold, int(trim_threshold)) == 1 and ok
    ok = mallopt(m_top_pad, int(top_pad)) == 1 and ok
    _MALLOC_TUNED = ok
    logger.debug("glibc malloc tuning %s", "applied" if ok else "failed")
    return ok
