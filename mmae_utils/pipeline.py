"""The arrays-to-tensors side of training: ``tf.data`` batches and batched inference.

Everything here takes CSR float32 matrices or dense arrays (never AnnData: turning AnnData
into these arrays is :mod:`mmae_utils.training`'s job, which re-exports the public names):

- :func:`make_dataset`: the seeded, shuffled ``tf.data`` pipeline that densifies one batch
  at a time (inputs, and the targets, batch codes and library sizes the options need);
- :func:`validation_split`: the cells trained on and held out;
- :func:`projected`: a fixed input transform applied to all rows, batch by batch;
- :func:`run_batches`: the frozen model (embedding, code or one decoder) over all rows;
- :func:`epoch_timer`: the callback behind the history's ``seconds``;
- :func:`dense_rows`, :func:`check_batch_size`: the small helpers they share.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import time
import weakref

import numpy as np
import scipy.sparse as sp

from ._utils import progress_bar
from .config import MODALITIES

__all__ = [
    "check_batch_size",
    "dense_rows",
    "epoch_line",
    "epoch_printer",
    "epoch_timer",
    "make_dataset",
    "projected",
    "run_batches",
    "validation_split",
]


def dense_rows(x, rows) -> np.ndarray | None:
    """Rows ``rows`` (indices or a slice) of ``x`` as a dense C-contiguous array.

    CSR matrices are densified (float32); 1-D arrays (batch codes, library sizes) are
    indexed. ``None`` stays ``None``.

    Returns
    -------
    ``np.ndarray`` (or ``None``).
    """
    if x is None:
        return None
    if sp.issparse(x):
        return x[rows].toarray()
    return np.ascontiguousarray(x[rows])


def check_batch_size(batch_size) -> int:
    """``batch_size`` as a positive ``int``; ``TypeError`` / ``ValueError`` otherwise.

    Returns
    -------
    The ``int``.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    return int(batch_size)


def _spec(name: str, x):
    import tensorflow as tf

    if name == "batch":
        return tf.TensorSpec((None,), tf.int32)
    if name == "library":
        return tf.TensorSpec((None,), tf.float32)
    return tf.TensorSpec((None, x.shape[1]), tf.float32)


def _pair(names):
    """The ``(inputs, targets)`` dicts of a batch from the tuple of ``names``' tensors."""

    def pair(*tensors):
        t = dict(zip(names, tensors, strict=True))
        x = {"gex": t["gex"], "atac": t["atac"]}
        if "batch" in t:
            x["batch"] = t["batch"]
        y = {"gex": t.get("gex_target", t["gex"]), "atac": t.get("atac_target", t["atac"])}
        if "library" in t:
            y["library"] = t["library"]
        return x, y

    return pair


def make_dataset(
    gex,
    atac,
    rows,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int | None = 0,
    batch=None,
    gex_target=None,
    atac_target=None,
    library=None,
    order=None,
):
    """``tf.data`` pipeline of ``(inputs, targets)`` dense batches.

    Only one batch at a time is densified (from CSR rows, with SciPy); the full matrices
    stay sparse. With ``shuffle`` the rows are permuted anew at every pass (epoch) by a
    NumPy generator seeded with ``seed``, so the same seed gives the same batch order.

    Parameters
    ----------
    gex, atac
        CSR float32 matrices or C-contiguous float32 arrays with the same rows: the model
        inputs.
    rows
        Row indices to iterate over (e.g. the training split).
    batch_size
        Cells per batch (the last batch may be smaller).
    shuffle
        Permute ``rows`` at every pass.
    seed
        Seed of the permutations.
    batch
        Each cell's batch code (int32 array), given as ``inputs["batch"]``; ``None``: none.
    gex_target, atac_target
        Targets other than the inputs (same rows): the raw counts of
        ``gex_likelihood="nb"``, the binarised peaks of ``atac_likelihood="bernoulli"``
        when the input is their projection. ``None``: the input is the target.
    library
        Each cell's library size (float32 array), given as ``targets["library"]``.
    order
        With ``shuffle``, a function of the NumPy generator that gives each pass's order
        of ``rows`` instead of a permutation (data read from disk a chunk at a time:
        :func:`mmae_utils.streaming.window_order`).

    Returns
    -------
    A ``tf.data.Dataset`` of known cardinality yielding ``({"gex", "atac"[, "batch"]},
    {"gex", "atac"[, "library"]})``; without the optional arrays, inputs and targets are
    the same tensors. Its options turn tf.data's autotuning off (see
    ``benchmarks/README.md``, Training: with it on, starting an epoch could wait up to
    10 s for the previous epoch's iterator to shut down) and shard it by data under a
    multi-worker ``tf.distribute`` strategy (every worker runs the whole pipeline and keeps
    its part of each batch: the same ``seed`` on all of them).
    """
    import tensorflow as tf

    sources = {"gex": gex, "atac": atac, "batch": batch, "gex_target": gex_target}
    sources |= {"atac_target": atac_target, "library": library}
    sources = {name: x for name, x in sources.items() if x is not None}
    rows = np.asarray(rows, dtype=np.int64)
    n_batches = math.ceil(len(rows) / batch_size)
    rng = np.random.default_rng(seed)

    def batches():
        if not shuffle:
            visit = rows
        else:
            visit = rng.permutation(rows) if order is None else order(rng)
        for start in range(0, len(visit), batch_size):
            idx = visit[start : start + batch_size]
            yield tuple(dense_rows(x, idx) for x in sources.values())

    ds = tf.data.Dataset.from_generator(
        batches, output_signature=tuple(_spec(name, x) for name, x in sources.items())
    )
    ds = ds.map(_pair(tuple(sources)))
    ds = ds.apply(tf.data.experimental.assert_cardinality(n_batches))
    # No tf.data autotuning: its model thread sleeps for up to 10 s between rounds, and
    # deleting an iterator waits for it, so every new epoch (Keras makes a new iterator)
    # stalled for up to 10 s (measured: 8-10 s in about half the epochs at full scale, a
    # 20 s epoch instead of 11 s). Nothing here has a parallelism or buffer to tune.
    options = tf.data.Options()
    options.autotune.enabled = False
    # Under a multi-worker tf.distribute strategy each worker keeps its share of every
    # batch (a generator has no files to shard by; this is what AUTO falls back to, with a
    # warning). Correct only if all workers draw the same batches: the same seed.
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return ds.prefetch(2).with_options(options)


def projected(transform, x, batch_size: int = 4096, *, progress: bool = False) -> np.ndarray:
    """``transform`` (an input transform) applied to all rows of ``x`` (CSR, dense, or read
    from disk), in batches; ``progress`` shows a bar (for data read from disk).

    Returns
    -------
    Dense float32 array, rows x ``transform.output_dim``.
    """
    from keras import ops

    n = x.shape[0]
    out = np.empty((n, transform.output_dim), dtype=np.float32)
    desc = f"{transform.modality.upper()} components"
    bar = progress_bar(total=n, desc=desc, unit="cell", disable=not progress)
    for start in range(0, n, batch_size):
        sl = slice(start, min(start + batch_size, n))
        out[sl] = ops.convert_to_numpy(transform(dense_rows(x, sl)))
        bar.update(sl.stop - sl.start)
    bar.close()
    return out


def epoch_timer():
    """A Keras callback that writes each epoch's wall time into its logs as ``seconds``.

    :func:`mmae_utils.training.train` always uses one (the ``seconds`` column of its
    history); ``benchmarks/bench_training.py`` times the dense path with it too.

    Returns
    -------
    A ``keras.callbacks.Callback``.
    """
    import keras

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._t0 = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            if logs is not None:
                logs["seconds"] = time.perf_counter() - self._t0

    return EpochTimer()


def epoch_printer(epochs: int, *, monitor: str = "val_loss", every: int | None = None):
    """A Keras callback that prints one short line every ``every`` epochs (default: a
    tenth of ``epochs``), on the first epoch and on the last one run.

    Each line: the epoch, ``monitor``, the per-modality losses (validation ones when
    there are) and the epoch's seconds (from :func:`epoch_timer`'s ``seconds``, if it
    runs first).

    Returns
    -------
    A ``keras.callbacks.Callback``.
    """
    import keras

    every = max(1, epochs // 10) if every is None else max(1, int(every))

    class EpochPrinter(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            n, logs = epoch + 1, logs or {}
            if n == 1 or n % every == 0 or n == epochs:
                print(epoch_line(n, epochs, logs, monitor), flush=True)
            self._last = (n, logs)

        def on_train_end(self, logs=None):
            n, last = getattr(self, "_last", (0, {}))
            if n and not (n == 1 or n % every == 0 or n == epochs):
                print(epoch_line(n, epochs, last, monitor) + " (stopped)", flush=True)

    return EpochPrinter()


def epoch_line(epoch: int, epochs: int, logs: dict, monitor: str) -> str:
    """``epoch 10/100  val_loss 0.3612  val_gex_loss 0.1200  val_atac_loss 0.4500  1.2 s``."""
    prefix = "val_" if monitor.startswith("val_") else ""
    keys = [monitor, f"{prefix}gex_loss", f"{prefix}atac_loss"]
    parts = [f"{k} {logs[k]:.4f}" for k in dict.fromkeys(keys) if k in logs]
    seconds = f"  {logs['seconds']:.1f} s" if "seconds" in logs else ""
    return f"epoch {epoch}/{epochs}  " + "  ".join(parts) + seconds


def validation_split(
    n_obs: int, *, validation_fraction: float = 0.1, seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The cells :func:`~mmae_utils.training.train` trains on and holds out, chosen at
    random with ``seed``.

    Parameters
    ----------
    n_obs
        Number of cells.
    validation_fraction
        Fraction held out, in [0, 1); rounded, and at least one cell when > 0.
    seed
        Seed of the choice.

    Returns
    -------
    ``(train_rows, val_rows)``: sorted int64 row indices, disjoint, covering all cells.
    """
    if not isinstance(validation_fraction, numbers.Real) or not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}.")
    perm = np.random.default_rng(seed).permutation(n_obs)
    n_val = 0
    if validation_fraction > 0:
        n_val = min(max(int(round(n_obs * validation_fraction)), 1), n_obs - 1)
    if n_obs - n_val < 1:
        raise ValueError(f"Not enough cells ({n_obs}) to train on.")
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ---------------------------------------------------------------------------- inference
_INFERENCE_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _inference_fn(model, what: str, missing: str | None = None, fed: tuple[str, ...] = ()):
    """A cached ``tf.function`` running the frozen model (``training=False``); decoders of
    a batch-conditioned model take the batch codes as a third argument. ``fed`` names the
    modalities given already transformed (traced, and cached, apart): call it inside
    ``model.fed_transformed(fed)``, whose input widths it traces."""
    import tensorflow as tf

    fns = _INFERENCE_FNS.setdefault(model, {})
    key = (what, missing, fed)
    if key not in fns:
        spec = [tf.TensorSpec((None, model.input_width(m)), tf.float32) for m in MODALITIES]
        if what == "encode":  # the embedding (block-scaled if the model says so)

            def fn(g, a):
                return model.embedding({"gex": g, "atac": a}, missing=missing)
        elif what == "code":  # the joint code the decoders read

            def fn(g, a):
                return model.encode({"gex": g, "atac": a}, training=False, missing=missing)
        elif model.batch_conditioning:
            spec.append(tf.TensorSpec((None,), tf.int32))

            def fn(g, a, b):
                z = model.encode({"gex": g, "atac": a}, training=False, missing=missing)
                return model.decode(z, training=False, batch=b)[what]
        else:

            def fn(g, a):
                z = model.encode({"gex": g, "atac": a}, training=False, missing=missing)
                return model.decode(z, training=False)[what]

        fns[key] = tf.function(fn, input_signature=spec, autograph=False)
    return fns[key]


def run_batches(
    model,
    what,
    gex,
    atac,
    n_obs,
    from_,
    batch_size,
    out_dim,
    batch=None,
    *,
    progress=False,
    fed=(),
):
    """The frozen model over all ``n_obs`` rows, ``batch_size`` at a time.

    Parameters
    ----------
    model
        A :class:`~mmae_utils.model.MultiModalAutoencoder`.
    what
        ``"encode"`` (the embedding), ``"code"`` (the joint code) or a modality (its
        decoder's output).
    gex, atac
        Model inputs (CSR or dense); the one ``from_`` leaves out may be ``None`` (zeros).
    n_obs, from_, batch_size, out_dim
        Rows, ``"both"`` / ``"gex"`` / ``"atac"``, rows per step, width of the output.
    batch
        Batch codes (int32, one per row), for the decoders of a batch-conditioned model.
    progress
        Show a progress bar (for data read from disk).
    fed
        Modalities given already through their input transform (training's SVD
        components), run under :meth:`~mmae_utils.model.MultiModalAutoencoder.fed_transformed`.

    Returns
    -------
    Dense float32 array, ``n_obs`` x ``out_dim``.
    """
    fed = tuple(fed)
    with model.fed_transformed(fed) if fed else contextlib.nullcontext():
        return _run_batches(
            model, what, (gex, atac), n_obs, from_, batch_size, out_dim, batch, progress, fed
        )


def _run_batches(model, what, inputs, n_obs, from_, batch_size, out_dim, batch, progress, fed):
    missing = {"both": None, "gex": "atac", "atac": "gex"}[from_]
    fn = _inference_fn(model, what, missing, fed)
    with_batch = what in MODALITIES and model.batch_conditioning
    out = np.empty((n_obs, out_dim), dtype=np.float32)
    desc = {"encode": "embedding", "code": "joint code"}.get(what, f"{what.upper()} output")
    bar = progress_bar(total=n_obs, desc=desc, unit="cell", disable=not progress)
    for start in range(0, n_obs, batch_size):
        sl = slice(start, min(start + batch_size, n_obs))
        n = sl.stop - sl.start
        x = [
            dense_rows(v, sl)
            if from_ in ("both", m)
            else np.zeros((n, model.input_width(m)), np.float32)
            for m, v in zip(MODALITIES, inputs, strict=True)
        ]
        args = (*x, batch[sl]) if with_batch else tuple(x)
        out[sl] = fn(*args).numpy()
        bar.update(n)
    bar.close()
    return out
