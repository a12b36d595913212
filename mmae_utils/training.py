"""Streaming sparse training, embedding and reconstruction of the autoencoder.

The model never sees the whole matrix as one dense array: :func:`train` builds a
``tf.data`` pipeline over row indices that slices the CSR matrices one batch at a time,
densifies only that batch (``batch_size`` x features float32), shuffles every epoch with
a seeded generator and prefetches the next batch while the current one trains.
:func:`embed` and :func:`reconstruct` run the frozen model (``training=False``) in
batches the same way.

Inputs ``gex`` / ``atac`` may be ``scipy.sparse`` matrices or arrays (any format; CSR is
used as is), dense NumPy arrays, or AnnData objects (cells x selected features). AnnData
are turned into model inputs with :func:`mmae_utils.pp.log_normalized` (log1p-normalised
counts) and :func:`mmae_utils.pp.binarized` (binarised counts) from ``layers[layer]``,
and their ``var_names`` are checked against the features the model was trained on.

Saving and loading live in :mod:`mmae_utils.persistence` (:func:`save_model`,
:func:`load_model`, :func:`check_features`, re-exported here); the CPU speed-ups that
training uses (:func:`fused_adam`, :func:`tune_malloc`, also re-exported) in the private
``mmae_utils._cpu``, whose docstring gives what each one measured.
"""

from __future__ import annotations

import math
import numbers
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._cpu import fused_adam, tune_malloc
from ._utils import check_learning_rate, logger, set_seed
from .model import MultiModalAutoencoder
from .persistence import check_features, load_model, save_model

__all__ = [
    "HISTORY_COLUMNS",
    "check_features",
    "embed",
    "epoch_timer",
    "fused_adam",
    "load_model",
    "make_dataset",
    "reconstruct",
    "save_model",
    "train",
    "tune_malloc",
    "validation_split",
]

#: Columns of the history returned by :func:`train`, in order (``val_*`` only with a
#: validation split). ``gex_loss`` is the GEX mean squared error and ``atac_loss`` the ATAC
#: binary cross-entropy, both unweighted; ``loss`` is their weighted sum.
HISTORY_COLUMNS = (
    "loss",
    "gex_loss",
    "atac_loss",
    "val_loss",
    "val_gex_loss",
    "val_atac_loss",
    "seconds",
)

_SOURCES = ("both", "gex", "atac")


# ---------------------------------------------------------------------------- inputs
def _is_anndata(x) -> bool:
    try:
        import anndata
    except ImportError:  # pragma: no cover - anndata is a hard dependency
        return False
    return isinstance(x, anndata.AnnData)


def _as_matrix(x, modality: str, *, layer: str | None):
    """Model input for one modality: (CSR float32 or C-contiguous float32 array, names)."""
    names = None
    if _is_anndata(x):
        from .pp import binarized, log_normalized

        names = tuple(str(n) for n in x.var_names)
        x = log_normalized(x, layer=layer) if modality == "gex" else binarized(x, layer=layer)
    if sp.issparse(x):
        if x.ndim != 2:
            raise ValueError(f"{modality} must be 2-D (cells x features), got shape {x.shape}.")
        x = x if x.format == "csr" else x.tocsr()
        if not isinstance(x, sp.csr_matrix):
            x = sp.csr_matrix(x)  # csr_array -> csr_matrix, sharing the buffers
        if x.dtype != np.float32:
            x = x.astype(np.float32)
        values = x.data
    elif isinstance(x, np.ndarray) or hasattr(x, "__array__"):
        x = np.asarray(x)
        if x.dtype == object or not (
            np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.bool_)
        ):
            raise TypeError(f"{modality} must hold numbers, got dtype {x.dtype}.")
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2:
            raise ValueError(f"{modality} must be 2-D (cells x features), got shape {x.shape}.")
        values = x
    else:
        raise TypeError(
            f"{modality} must be a scipy.sparse matrix, a NumPy array or an AnnData, "
            f"got {type(x).__name__}."
        )
    if not np.isfinite(values).all():
        bad = int(values.size - np.isfinite(values).sum())
        raise ValueError(
            f"{modality} contains {bad} NaN or infinite value(s); the model needs finite "
            "inputs (log-normalised GEX, binarised ATAC)."
        )
    return x, names


def _prepare(model, gex, atac, *, layer, from_="both", record_features=False):
    """Validate and convert both modalities; returns (gex, atac, n_obs)."""
    if not isinstance(model, MultiModalAutoencoder):
        raise TypeError(
            "model must be a MultiModalAutoencoder (see mmae_utils.model.build_model), "
            f"got {type(model).__name__}."
        )
    if from_ not in _SOURCES:
        raise ValueError(f"from_ must be one of {_SOURCES}, got {from_!r}.")
    mats, names = {}, {}
    for modality, x in (("gex", gex), ("atac", atac)):
        if x is None:
            if from_ in ("both", modality):
                raise ValueError(
                    f"{modality} is None but from_={from_!r} needs it; pass "
                    f'from_="{"atac" if modality == "gex" else "gex"}" to use the other '
                    "modality alone."
                )
            mats[modality], names[modality] = None, None
            continue
        mats[modality], names[modality] = _as_matrix(x, modality, layer=layer)
        expected = model.gex_dim if modality == "gex" else model.atac_dim
        if mats[modality].shape[1] != expected:
            raise ValueError(
                f"The model expects {expected} {modality.upper()} features but the data has "
                f"{mats[modality].shape[1]}."
            )
    check_features(model, gex_features=names["gex"], atac_features=names["atac"])
    if record_features:
        if names["gex"] is not None and model.gex_features is None:
            model.gex_features = names["gex"]
        if names["atac"] is not None and model.atac_features is None:
            model.atac_features = names["atac"]
    rows = {m: mats[m].shape[0] for m in mats if mats[m] is not None}
    if len(set(rows.values())) > 1:
        raise ValueError(
            f"gex and atac must describe the same cells in the same order; got "
            f"{rows['gex']} GEX rows and {rows['atac']} ATAC rows."
        )
    n_obs = next(iter(rows.values()))
    if n_obs == 0:
        raise ValueError("No cells to use (0 rows).")
    return mats["gex"], mats["atac"], n_obs


def _dense_rows(x, rows) -> np.ndarray:
    """Rows ``rows`` (indices or a slice) of ``x`` as a dense C-contiguous float32 array."""
    if x is None:
        return None
    if sp.issparse(x):
        return x[rows].toarray()
    return np.ascontiguousarray(x[rows])


def _check_batch_size(batch_size) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral):
        raise TypeError(f"batch_size must be a positive integer, got {batch_size!r}.")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    return int(batch_size)


# ---------------------------------------------------------------------------- pipeline
def make_dataset(gex, atac, rows, *, batch_size: int, shuffle: bool, seed: int | None = 0):
    """``tf.data`` pipeline of ``({"gex", "atac"}, {"gex", "atac"})`` dense batches.

    Only one batch at a time is densified (from CSR rows, with SciPy); the full matrices
    stay sparse. With ``shuffle`` the rows are permuted anew at every pass (epoch) by a
    NumPy generator seeded with ``seed``, so the same seed gives the same batch order.

    Parameters
    ----------
    gex, atac
        CSR float32 matrices or C-contiguous float32 arrays with the same rows.
    rows
        Row indices to iterate over (e.g. the training split).
    batch_size
        Cells per batch (the last batch may be smaller).
    shuffle
        Permute ``rows`` at every pass.
    seed
        Seed of the permutations.

    Returns
    -------
    A ``tf.data.Dataset`` of known cardinality; inputs and targets are the same tensors.
    Its options turn tf.data's autotuning off (see ``benchmarks/README.md``, Training:
    with it on, starting an epoch could wait up to 10 s for the previous epoch's
    iterator to shut down).
    """
    import tensorflow as tf

    rows = np.asarray(rows, dtype=np.int64)
    n_batches = math.ceil(len(rows) / batch_size)
    rng = np.random.default_rng(seed)

    def batches():
        order = rng.permutation(rows) if shuffle else rows
        for start in range(0, len(order), batch_size):
            idx = order[start : start + batch_size]
            yield _dense_rows(gex, idx), _dense_rows(atac, idx)

    ds = tf.data.Dataset.from_generator(
        batches,
        output_signature=(
            tf.TensorSpec((None, gex.shape[1]), tf.float32),
            tf.TensorSpec((None, atac.shape[1]), tf.float32),
        ),
    )
    ds = ds.map(lambda g, a: ({"gex": g, "atac": a}, {"gex": g, "atac": a}))
    ds = ds.apply(tf.data.experimental.assert_cardinality(n_batches))
    # No tf.data autotuning: its model thread sleeps for up to 10 s between rounds, and
    # deleting an iterator waits for it, so every new epoch (Keras makes a new iterator)
    # stalled for up to 10 s (measured: 8-10 s in about half the epochs at full scale, a
    # 20 s epoch instead of 11 s). Nothing here has a parallelism or buffer to tune.
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.prefetch(2).with_options(options)


def _transformed(transform, x, batch_size: int = 4096) -> np.ndarray:
    """``transform`` applied to all rows of ``x`` (CSR or dense), in batches: dense float32."""
    from keras import ops

    n = x.shape[0]
    out = np.empty((n, transform.output_dim), dtype=np.float32)
    for start in range(0, n, batch_size):
        sl = slice(start, min(start + batch_size, n))
        out[sl] = ops.convert_to_numpy(transform(_dense_rows(x, sl)))
    return out


def epoch_timer():
    """A Keras callback that writes each epoch's wall time into its logs as ``seconds``.

    :func:`train` always uses one (the ``seconds`` column of its history);
    ``benchmarks/bench_training.py`` times the dense path with it too.

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


# ---------------------------------------------------------------------------- train
def validation_split(
    n_obs: int, *, validation_fraction: float = 0.1, seed: int | None = 0
) -> tuple[np.ndarray, np.ndarray]:
    """The cells :func:`train` trains on and holds out, chosen at random with ``seed``.

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


def train(
    model: MultiModalAutoencoder,
    gex,
    atac,
    *,
    epochs: int = 100,
    batch_size: int = 128,
    learning_rate: float = 1e-3,
    validation_fraction: float = 0.1,
    patience: int | None = 10,
    min_delta: float = 0.0,
    lr_schedule: str = "constant",
    seed: int | None = 0,
    layer: str | None = "counts",
    jit_compile: bool = False,
    steps_per_execution: int = 8,
    deterministic: bool = True,
    tune_memory: bool = True,
    verbose: int | str = "auto",
    callbacks: Sequence | None = None,
) -> pd.DataFrame:
    """Train the autoencoder on paired GEX + ATAC, streaming sparse batches.

    A model whose inputs are transformed (``gex_input`` / ``atac_input`` other than
    ``"log"`` / ``"binary"``, e.g. the default ``"jae"`` preset's SVD components) gets
    its transforms fitted on all the cells of its first ``train`` call (unsupervised, as
    the PCA baselines are); with ``latent_scaling="block"`` the embedding's two scaling
    factors are set from these cells' codes after training.

    Parameters
    ----------
    model
        A model from :func:`mmae_utils.model.build_model`; trained in place.
    gex, atac
        The same cells in the same order: CSR (or any SciPy sparse) matrices, dense
        arrays, or AnnData (inputs derived from ``layers[layer]``). Cells x selected
        features, matching ``model.gex_dim`` / ``model.atac_dim``.
    epochs
        Maximum number of passes over the training cells.
    batch_size
        Cells per gradient step; only this many rows are ever dense at once.
    learning_rate
        Adam learning rate (the model is recompiled with a fresh optimizer).
    validation_fraction
        Fraction of cells held out (chosen with ``seed``) for ``val_*`` losses and early
        stopping; 0 trains on all cells and early-stops on the training loss.
    patience
        Stop after this many epochs without improvement of the monitored loss by more than
        ``min_delta``, and restore the weights of the best epoch. ``None`` disables early
        stopping (the last epoch's weights are kept).
    min_delta
        Smallest change of the monitored loss that counts as an improvement.
    lr_schedule
        ``"constant"``; or ``"plateau"``: halve the learning rate whenever the monitored
        loss has not improved for 3 epochs (Keras' ``ReduceLROnPlateau``, down to 1/64 of
        ``learning_rate``).
    seed
        Seeds the split, the batch order, TensorFlow and Keras. With ``deterministic``
        the same seed (and the same ``build_model(seed=...)``) gives the same model and
        embedding.
    layer
        Layer of raw counts when AnnData are passed.
    jit_compile
        Compile the training step with XLA, which fuses the optimizer update and the
        element-wise loss ops. Without XLA (the default) the update runs as TensorFlow's
        fused Adam kernel (:func:`fused_adam`) and the matmuls use oneDNN. On the 2-core
        benchmark machine both take about the same time per epoch; XLA holds ~0.15 GB more
        memory and compiles for a few seconds at the start of every call (see
        ``benchmarks/README.md``, section Training).
    steps_per_execution
        Training steps run per call into TensorFlow (fewer Python round trips; the
        progress bar and batch-level callbacks update every this many steps).
    deterministic
        Enable TensorFlow op determinism (see :func:`mmae_utils._utils.set_seed`).
    tune_memory
        Apply :func:`tune_malloc` (glibc only; process-wide): about 1.4x less CPU time per
        epoch on CPU.
    verbose
        Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch, "auto".
    callbacks
        Extra Keras callbacks.

    Returns
    -------
    A ``pandas.DataFrame`` indexed by epoch (from 1) with the columns of
    :data:`HISTORY_COLUMNS`: ``loss`` (weighted total), ``gex_loss`` (GEX MSE),
    ``atac_loss`` (ATAC BCE), the same with ``val_`` on the validation cells, and
    ``seconds`` per epoch. ``attrs`` hold ``best_epoch`` (whose weights the model now
    has, when early stopping is on), ``monitor``, ``n_train``, ``n_val`` and ``options``
    (the training options above, to train again alike). When AnnData
    are passed and the model has no feature names yet, ``model.gex_features`` /
    ``model.atac_features`` are set to their ``var_names``.
    """
    batch_size, learning_rate = _check_options(
        epochs=epochs,
        batch_size=batch_size,
        steps_per_execution=steps_per_execution,
        validation_fraction=validation_fraction,
        patience=patience,
        learning_rate=learning_rate,
        lr_schedule=lr_schedule,
    )
    gex, atac, n_obs = _prepare_inputs(model, gex, atac, layer=layer, tune_memory=tune_memory)
    plan = _split(
        n_obs, validation_fraction=validation_fraction, seed=seed, deterministic=deterministic
    )
    _build_datasets(plan, model, gex, atac, batch_size=batch_size)
    _compile(
        model,
        learning_rate=learning_rate,
        jit_compile=jit_compile,
        steps_per_execution=steps_per_execution,
    )
    _callbacks(
        plan,
        patience=patience,
        min_delta=min_delta,
        lr_schedule=lr_schedule,
        learning_rate=learning_rate,
        extra=callbacks,
    )
    history = _fit(model, plan, epochs=epochs, verbose=verbose)
    options = {  # what notebook 04 records for report.replicate
        "epochs": int(epochs),
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "validation_fraction": float(validation_fraction),
        "patience": None if patience is None else int(patience),
        "min_delta": float(min_delta),
        "lr_schedule": lr_schedule,
    }
    return _finish(model, history, plan, options, gex, atac, n_obs)


# ---------------------------------------------------------------------------- train's steps
@dataclass
class _TrainPlan:
    """What :func:`train` hands ``model.fit``, filled in step by step."""

    train_rows: np.ndarray
    val_rows: np.ndarray
    data_seed: int | None  # seed of the training batches' order
    pretransformed: tuple[str, ...] = ()  # modalities fed as their (fixed) SVD projection
    train_ds: object = None
    val_ds: object = None
    callbacks: list = field(default_factory=list)
    early: object = None  # the EarlyStopping callback, if any

    @property
    def n_val(self) -> int:
        return len(self.val_rows)

    @property
    def monitor(self) -> str:
        """The loss that early stopping and the plateau schedule watch."""
        return "val_loss" if self.n_val else "loss"


def _check_options(
    *,
    epochs,
    batch_size,
    steps_per_execution,
    validation_fraction,
    patience,
    learning_rate,
    lr_schedule,
) -> tuple[int, float]:
    """Check :func:`train`'s options (in this order); returns ``(batch_size, learning_rate)``."""
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"epochs must be a positive integer, got {epochs!r}.")
    batch_size = _check_batch_size(batch_size)
    if (
        isinstance(steps_per_execution, bool)
        or not isinstance(steps_per_execution, numbers.Integral)
        or steps_per_execution < 1
    ):
        raise ValueError(
            f"steps_per_execution must be a positive integer, got {steps_per_execution!r}."
        )
    if not isinstance(validation_fraction, numbers.Real) or not 0 <= validation_fraction < 1:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction!r}.")
    if patience is not None and (
        isinstance(patience, bool) or not isinstance(patience, numbers.Integral) or patience < 0
    ):
        raise ValueError(f"patience must be a non-negative integer or None, got {patience!r}.")
    learning_rate = check_learning_rate(learning_rate)
    if lr_schedule not in ("constant", "plateau"):
        raise ValueError(f'lr_schedule must be "constant" or "plateau", got {lr_schedule!r}.')
    return batch_size, learning_rate


def _prepare_inputs(model, gex, atac, *, layer, tune_memory):
    """Model inputs from the data (recording AnnData feature names), the allocator tuned,
    the input transforms fitted on all cells if not yet; returns ``(gex, atac, n_obs)``."""
    gex, atac, n_obs = _prepare(model, gex, atac, layer=layer, record_features=True)
    if tune_memory:
        tune_malloc()
    if not model.transforms_fitted:
        logger.info(
            "fitting the input transforms (GEX %s, ATAC %s) on %d cells",
            model.gex_input,
            model.atac_input,
            n_obs,
        )
        model.gex_transform.fit(gex)
        model.atac_transform.fit(atac)
    return gex, atac, n_obs


def _split(n_obs, *, validation_fraction, seed, deterministic) -> _TrainPlan:
    """Seed everything, choose the validation cells and derive the batch-order seed."""
    if seed is not None:
        set_seed(seed, deterministic=deterministic)
    train_rows, val_rows = validation_split(
        n_obs, validation_fraction=validation_fraction, seed=seed
    )
    data_seed = None if seed is None else int(np.random.default_rng([seed, 1]).integers(2**31 - 1))
    return _TrainPlan(train_rows, val_rows, data_seed)


def _build_datasets(plan: _TrainPlan, model, gex, atac, *, batch_size: int) -> None:
    """The shuffled training and the ordered validation pipelines, into ``plan``."""
    # SVD inputs are a fixed projection: project every cell once (cells x components,
    # small and dense) and train on that, instead of densifying and projecting thousands
    # of features for every batch of every epoch.
    fed = {"gex": gex, "atac": atac}
    transforms = {"gex": model.gex_transform, "atac": model.atac_transform}
    plan.pretransformed = tuple(m for m in fed if transforms[m].mode == "svd")
    for name in plan.pretransformed:
        fed[name] = _transformed(transforms[name], fed[name])
    plan.train_ds = make_dataset(
        fed["gex"],
        fed["atac"],
        plan.train_rows,
        batch_size=batch_size,
        shuffle=True,
        seed=plan.data_seed,
    )
    plan.val_ds = (
        make_dataset(
            fed["gex"],
            fed["atac"],
            plan.val_rows,
            batch_size=max(batch_size, 1024),
            shuffle=False,
        )
        if plan.n_val
        else None
    )


def _compile(model, *, learning_rate: float, jit_compile, steps_per_execution) -> None:
    """Recompile the model with a fresh optimizer."""
    import keras

    # Under XLA the optimizer update is fused by the compiler; without it, TensorFlow's
    # fused Adam kernel replaces Keras' ten element-wise ops per variable.
    optimizer = (
        keras.optimizers.Adam(learning_rate=learning_rate)
        if jit_compile
        else fused_adam(learning_rate=learning_rate)
    )
    model.compile(
        optimizer=optimizer,
        jit_compile=bool(jit_compile),
        steps_per_execution=int(steps_per_execution),
    )


def _callbacks(plan: _TrainPlan, *, patience, min_delta, lr_schedule, learning_rate, extra):
    """The epoch timer, early stopping, the plateau schedule and ``extra``, into ``plan``."""
    import keras

    plan.callbacks = [epoch_timer()]
    if patience is not None:
        plan.early = keras.callbacks.EarlyStopping(
            monitor=plan.monitor,
            patience=int(patience),
            min_delta=float(min_delta),
            restore_best_weights=True,
            verbose=0,
        )
        plan.callbacks.append(plan.early)
    if lr_schedule == "plateau":
        plan.callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=plan.monitor,
                factor=0.5,
                patience=3,
                min_delta=float(min_delta),
                min_lr=learning_rate / 64,
                verbose=0,
            )
        )
    plan.callbacks.extend(extra or [])


def _fit(model, plan: _TrainPlan, *, epochs, verbose):
    """``model.fit`` on the plan's datasets; returns Keras' ``History``."""
    logger.debug("training on %d cells, validating on %d", len(plan.train_rows), plan.n_val)
    with model.fed_transformed(plan.pretransformed):
        return model.fit(
            plan.train_ds,
            validation_data=plan.val_ds,
            epochs=int(epochs),
            verbose=verbose,
            callbacks=plan.callbacks,
            shuffle=False,
        )


def _finish(model, history, plan: _TrainPlan, options: dict, gex, atac, n_obs) -> pd.DataFrame:
    """The history as :func:`train` returns it; the block scale fitted if the model has one."""
    df = pd.DataFrame(history.history)
    df.index = pd.RangeIndex(1, len(df) + 1, name="epoch")
    cols = [c for c in HISTORY_COLUMNS if c in df] + [c for c in df if c not in HISTORY_COLUMNS]
    df = df[cols]
    df.attrs["monitor"] = plan.monitor
    if plan.early is not None and plan.early.best_weights is not None:
        df.attrs["best_epoch"] = int(plan.early.best_epoch) + 1
    else:
        df.attrs["best_epoch"] = len(df)
    df.attrs["n_train"] = len(plan.train_rows)
    df.attrs["n_val"] = plan.n_val
    df.attrs["options"] = options
    if model.block_scale is not None:  # fixed factors from the trained codes of these cells
        z = _run_batches(model, "code", gex, atac, n_obs, "both", 1024, model.latent_dim)
        model.block_scale.fit(z)
    return df


# ---------------------------------------------------------------------------- inference
_INFERENCE_FNS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _inference_fn(model, what: str, missing: str | None = None):
    """A cached ``tf.function`` running the frozen model (``training=False``)."""
    import tensorflow as tf

    fns = _INFERENCE_FNS.setdefault(model, {})
    key = (what, missing)
    if key not in fns:
        spec = (
            tf.TensorSpec((None, model.gex_dim), tf.float32),
            tf.TensorSpec((None, model.atac_dim), tf.float32),
        )
        if what == "encode":  # the embedding (block-scaled if the model says so)

            def fn(g, a):
                return model.embedding({"gex": g, "atac": a}, missing=missing)
        elif what == "code":  # the joint code the decoders read

            def fn(g, a):
                return model.encode({"gex": g, "atac": a}, training=False, missing=missing)
        else:

            def fn(g, a):
                z = model.encode({"gex": g, "atac": a}, training=False, missing=missing)
                return model.decode(z, training=False)[what]

        fns[key] = tf.function(fn, input_signature=spec, autograph=False)
    return fns[key]


def _run_batches(model, what, gex, atac, n_obs, from_, batch_size, out_dim):
    missing = {"both": None, "gex": "atac", "atac": "gex"}[from_]
    fn = _inference_fn(model, what, missing)
    out = np.empty((n_obs, out_dim), dtype=np.float32)
    for start in range(0, n_obs, batch_size):
        sl = slice(start, min(start + batch_size, n_obs))
        n = sl.stop - sl.start
        g = (
            _dense_rows(gex, sl)
            if from_ in ("both", "gex")
            else np.zeros((n, model.gex_dim), np.float32)
        )
        a = (
            _dense_rows(atac, sl)
            if from_ in ("both", "atac")
            else np.zeros((n, model.atac_dim), np.float32)
        )
        out[sl] = fn(g, a).numpy()
    return out


def embed(
    model: MultiModalAutoencoder,
    gex,
    atac,
    *,
    batch_size: int = 1024,
    from_: str = "both",
    layer: str | None = "counts",
    adata=None,
    key_added: str = "X_mmae",
) -> np.ndarray:
    """Joint embedding of cells by the frozen model, computed in batches.

    Parameters
    ----------
    model
        A trained :class:`~mmae_utils.model.MultiModalAutoencoder`; not modified (run
        with ``training=False``: no dropout, batch norm in inference mode).
    gex, atac
        As in :func:`train`. One of them may be ``None`` when ``from_`` names the other.
    batch_size
        Cells densified and encoded at once.
    from_
        ``"both"``; or ``"gex"`` / ``"atac"`` to encode from one modality with the other
        set to zeros (what ``modality_dropout`` trains the model for).
    layer
        Layer of raw counts when AnnData are passed.
    adata
        If given (an AnnData with the same cells in the same order), the embedding is
        written to ``adata.obsm[key_added]``.
    key_added
        ``obsm`` key to write.

    Returns
    -------
    ``np.ndarray`` of float32, cells x ``model.latent_dim`` (GEX part first). With
    ``adata``, also sets ``adata.obsm[key_added]`` (default ``adata.obsm["X_mmae"]``).
    """
    batch_size = _check_batch_size(batch_size)
    gex, atac, n_obs = _prepare(model, gex, atac, layer=layer, from_=from_)
    if adata is not None and adata.n_obs != n_obs:
        raise ValueError(f"adata has {adata.n_obs} cells but the inputs have {n_obs}.")
    z = _run_batches(model, "encode", gex, atac, n_obs, from_, batch_size, model.latent_dim)
    if adata is not None:
        adata.obsm[key_added] = z
    return z


def reconstruct(
    model: MultiModalAutoencoder,
    gex,
    atac,
    *,
    modality: str = "gex",
    from_: str = "both",
    logits: bool = False,
    batch_size: int = 1024,
    layer: str | None = "counts",
) -> np.ndarray:
    """Reconstruct one modality from the joint code, in batches.

    Parameters
    ----------
    model
        A trained :class:`~mmae_utils.model.MultiModalAutoencoder` (run frozen).
    gex, atac
        As in :func:`embed`; one may be ``None`` when ``from_`` names the other.
    modality
        ``"gex"`` (log-normalised values) or ``"atac"`` (accessibility probabilities;
        for models with ``atac_input="tfidf"`` or ``"svd"``, TF-IDF values instead,
        see :meth:`~mmae_utils.model.InputTransform.inverse`).
    from_
        ``"both"``, or ``"gex"`` / ``"atac"`` to predict from one modality alone (the
        other zeroed), e.g. ATAC from GEX.
    logits
        For ATAC under binary cross-entropy, return logits instead of probabilities.
    batch_size
        Cells processed at once.
    layer
        Layer of raw counts when AnnData are passed.

    Returns
    -------
    Dense ``np.ndarray`` of float32, cells x features of ``modality``. (This is dense by
    nature: at full scale, 69k cells x 5,000 peaks is 1.4 GB; pass a subset of cells.)
    """
    if modality not in ("gex", "atac"):
        raise ValueError(f'modality must be "gex" or "atac", got {modality!r}.')
    batch_size = _check_batch_size(batch_size)
    gex, atac, n_obs = _prepare(model, gex, atac, layer=layer, from_=from_)
    transform = model.gex_transform if modality == "gex" else model.atac_transform
    out = _run_batches(model, modality, gex, atac, n_obs, from_, batch_size, transform.output_dim)
    if not transform.identity:
        return transform.inverse(out).astype(np.float32, copy=False)
    if modality == "atac" and not logits:
        # numerically stable sigmoid, in place
        pos = out >= 0
        e = np.exp(-np.abs(out))
        out = np.where(pos, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)
    return out
