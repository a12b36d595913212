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
AnnData read with ``data.load_multiome(path, backed=True)`` (restricted to the selected
features) are read from their file a chunk of cells at a time instead, so that no more
cells than fit in memory can be trained on and embedded (:mod:`mmae_utils.streaming`).

Besides the inputs, the model's options may need (only then read, and AnnData only):

- ``gex_likelihood="nb"``: the raw counts of the genes, ``layers[layer]`` (default
  ``layers["counts"]``), kept sparse and densified per batch as the targets, and each
  cell's library size (their row sums, computed once);
- ``atac_likelihood="bernoulli"`` with ``atac_input="svd"``: the binarised peaks as the
  targets (the network sees their LSI components);
- ``batch_conditioning`` / ``adversarial_batch``: each cell's batch, ``obs[batch_key]``
  (default ``obs["batch"]``), as int32 codes into ``model.batch_categories``.

Turning what users pass into checked arrays is :mod:`mmae_utils.inputs`
(:func:`~mmae_utils.inputs.prepare_inputs`, :func:`~mmae_utils.inputs.batch_codes`).
The tf.data batches themselves and the batched inference are in
:mod:`mmae_utils.pipeline` (arrays only; :func:`make_dataset`, :func:`validation_split`
and :func:`epoch_timer` are re-exported here).

Saving and loading live in :mod:`mmae_utils.persistence` (:func:`save_model`,
:func:`load_model`, :func:`check_features`, re-exported here); the CPU speed-ups that
training uses (:func:`fused_adam`, :func:`tune_malloc`, also re-exported) in the private
``mmae_utils._cpu``, whose docstring gives what each one measured.
"""

from __future__ import annotations

import contextlib
import numbers
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from . import integration
from ._cpu import fused_adam, on_cpu, tune_malloc
from ._utils import check_learning_rate, logger, set_seed
from .config import MODALITIES, ModelConfig
from .distribute import check_strategy
from .inputs import batch_codes, batch_labels, gex_counts, prepare_inputs
from .likelihoods import PROBABILITY_CLIP, log_normalized_mean
from .model import MultiModalAutoencoder, build_model
from .persistence import check_features, load_model, save_model
from .pipeline import (
    check_batch_size,
    epoch_printer,
    epoch_timer,
    make_dataset,
    projected,
    run_batches,
    validation_split,
)
from .streaming import FIT_CELLS, fit_sample, is_streamed, window_order

__all__ = [
    "HISTORY_COLUMNS",
    "build_for",
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
#: validation split, ``batch_loss`` and ``recon_loss`` only with ``adversarial_batch``). ``gex_loss`` and
#: ``atac_loss`` are the unweighted losses of the modalities (as the model's config names
#: them, :meth:`~mmae_utils.config.ModelConfig.loss_label`: by default the GEX mean squared
#: error and the ATAC binary cross-entropy), ``batch_loss`` the batch classifier's
#: cross-entropy, ``recon_loss`` the weighted reconstruction alone (what early stopping
#: watches then); ``loss`` is the weighted sum of all.
HISTORY_COLUMNS = (
    "loss",
    "gex_loss",
    "atac_loss",
    "batch_loss",
    "recon_loss",
    "val_loss",
    "val_gex_loss",
    "val_atac_loss",
    "val_batch_loss",
    "val_recon_loss",
    "seconds",
)


def build_for(
    gex, atac, *, config: ModelConfig, batch_key: str | None = "batch"
) -> MultiModalAutoencoder:
    """Build ``config``'s model for these cells: their feature counts and names, their number
    (so ``"svd"`` inputs ask for no more components than they allow) and, when the model
    reads batches, the batches of ``gex.obs[batch_key]``.

    Data without batches (``batch_key`` ``None``, or a column that is missing or empty)
    cannot condition on them: the model is then built without ``batch_conditioning`` and
    ``adversarial_batch``, with a ``UserWarning``, rather than refused, so that the
    default preset runs on any data.

    Parameters
    ----------
    gex, atac
        AnnData of the selected genes and peaks (:func:`mmae_utils.data.split_modalities`).
    config
        The model's options (:class:`~mmae_utils.config.ModelConfig`).
    batch_key
        The ``obs`` column of the batches, or ``None``.

    Returns
    -------
    The built, untrained :class:`~mmae_utils.model.MultiModalAutoencoder`.
    """
    uses_batch = config.needs_batch or config.integration != "none"
    has = batch_key is not None and batch_key in gex.obs and gex.obs[batch_key].notna().any()
    if uses_batch and not has:
        warnings.warn(
            "This model uses the batch (batch_conditioning / adversarial_batch / "
            f"integration), but the data have no batches (batch_key={batch_key!r}): "
            "building it without them. Set BATCH_KEY (batch_key) to the obs column of the "
            'batches to use them, or PRESET = "jae" to silence this.',
            UserWarning,
            stacklevel=2,
        )
        config = config.replace(batch_conditioning=False, adversarial_batch=0.0, integration="none")
    categories = None
    if config.needs_batch:  # only the decoders and the adversary need the categories
        categories = sorted(gex.obs[batch_key].dropna().astype(str).unique())
    return build_model(
        gex.n_vars,
        atac.n_vars,
        config=config,
        gex_features=gex.var_names,
        atac_features=atac.var_names,
        batch_categories=categories,
        n_cells=gex.n_obs,
    )


# ---------------------------------------------------------------------------- train
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
    batch_key: str | None = "batch",
    jit_compile: bool = False,
    steps_per_execution: int = 8,
    deterministic: bool = True,
    tune_memory: bool = True,
    verbose: int | str = "auto",
    callbacks: Sequence | None = None,
    strategy=None,
) -> pd.DataFrame:
    """Train the autoencoder on paired GEX + ATAC, streaming sparse batches.

    A model whose inputs are transformed (``gex_input`` / ``atac_input`` other than
    ``"log"`` / ``"binary"``, e.g. the default ``"jae_harmony"`` preset's SVD components) gets
    its transforms fitted on all the cells of its first ``train`` call (unsupervised, as
    the PCA baselines are); with ``latent_scaling="block"`` the embedding's two scaling
    factors are set from these cells' codes after training. What is minimised is
    ``gex_loss_weight * GEX loss + atac_loss_weight * ATAC loss`` (+ ``adversarial_batch *``
    the batch classifier's cross-entropy, whose gradient the encoders receive reversed),
    each loss the model's likelihood of its targets: the inputs as the network sees them
    under ``"mse"``, the selected genes' raw counts under ``gex_likelihood="nb"``, the
    binarised peaks under the Bernoulli likelihood.

    Parameters
    ----------
    model
        A model from :func:`mmae_utils.model.build_model`; trained in place.
    gex, atac
        The same cells in the same order: CSR (or any SciPy sparse) matrices, dense
        arrays, or AnnData (inputs derived from ``layers[layer]``). Cells x selected
        features, matching ``model.gex_dim`` / ``model.atac_dim``. Backed AnnData
        (``load_multiome(..., backed=True)``) are streamed from their file: the input
        transforms are fitted on at most :data:`~mmae_utils.streaming.FIT_CELLS` of
        their cells, and the cells are visited in windows of chunks
        (:func:`~mmae_utils.streaming.window_order`) rather than in one permutation.
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
        Layer of raw counts when AnnData are passed (also the counts that
        ``gex_likelihood="nb"`` models).
    batch_key
        Column of ``gex.obs`` (or ``atac.obs``) holding each cell's batch, read only when
        the model reads batches (``batch_conditioning``, ``adversarial_batch``); every
        batch must be one of ``model.batch_categories`` (``None``: the data have no
        batches, which only a model that reads none can train on).
    jit_compile
        Compile the training step with XLA, which fuses the optimizer update and the
        element-wise loss ops. Without XLA (the default) the update runs, on CPU, as
        TensorFlow's fused Adam kernel (:func:`fused_adam`; Keras' Adam where a GPU
        trains) and the matmuls use oneDNN. On the 2-core
        benchmark machine both take about the same time per epoch; XLA holds ~0.15 GB more
        memory and compiles for a few seconds at the start of every call (see
        ``benchmarks/README.md``, section Training).
    steps_per_execution
        Training steps run per call into TensorFlow (fewer Python round trips; the
        progress bar and batch-level callbacks update every this many steps). 1 under a
        ``strategy``.
    deterministic
        Enable TensorFlow op determinism (see :func:`mmae_utils._utils.set_seed`).
    tune_memory
        Apply :func:`tune_malloc` (glibc only; process-wide) when training on CPU: about
        1.4x less CPU time per epoch there.
    verbose
        Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch, "auto";
        or ``"summary"``: a short line every tenth of ``epochs`` and when training stops
        (notebook 04: readable in a saved notebook, where 100 epoch lines are not).
    callbacks
        Extra Keras callbacks.
    strategy
        A ``tf.distribute.Strategy`` to train with (``docs/distributed.md``):
        ``tf.distribute.MirroredStrategy`` for several GPUs or logical CPU devices of one
        machine, ``tf.distribute.MultiWorkerMirroredStrategy`` for several machines (each
        running the same script with its own ``TF_CONFIG``). The model must have been built
        under it (``with strategy.scope(): model = build_model(...)``), else a
        ``ValueError``; it is compiled under it here. ``batch_size`` stays the global batch,
        split evenly between the replicas (a last, smaller batch as evenly as it goes), and
        the loss of each step is that of the global batch (its batch normalisation too,
        see :func:`~mmae_utils.layers.dense_stack`): the histories and weights are those of
        one device up to float round-off. With several workers ``seed`` must be an
        integer, the same on all of them (``ValueError`` for ``None``): each worker runs the
        whole input pipeline and keeps its share of every batch. Under a strategy
        ``steps_per_execution`` is 1 (keras-team/keras#19246). ``None`` (default): no
        strategy, one device.

    Returns
    -------
    A ``pandas.DataFrame`` indexed by epoch (from 1) with the columns of
    :data:`HISTORY_COLUMNS`: ``loss`` (weighted total), ``gex_loss`` and ``atac_loss``
    (the unweighted losses of the modalities, named by ``model.config.loss_label``: GEX
    MSE or NB negative log-likelihood, ATAC BCE or MSE), ``batch_loss`` (the batch
    classifier's cross-entropy, with ``adversarial_batch``), the same with ``val_`` on the
    validation cells, and ``seconds`` per epoch. ``attrs`` hold ``best_epoch`` (whose weights the model now
    has, when early stopping is on), ``monitor``, ``n_train``, ``n_val``,
    ``validation_rows`` (the rows held out, sorted; a tuple of ints, not an array, so that
    pandas can still compare the attrs of histories it concatenates) and ``options`` (the
    training options above, to train again alike). When AnnData
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
    check_strategy(model, strategy, seed=seed)
    # under a strategy: its variables (optimizer, transforms' statistics) and its steps
    with contextlib.nullcontext() if strategy is None else strategy.scope():
        data = _train_data(
            model, gex, atac, layer=layer, batch_key=batch_key, tune_memory=tune_memory
        )
        plan = _split(
            data.n_obs,
            validation_fraction=validation_fraction,
            seed=seed,
            deterministic=deterministic,
        )
        plan.adversarial = model.adversarial_batch > 0
        _build_datasets(plan, model, data, batch_size=batch_size)
        _compile(
            model,
            learning_rate=learning_rate,
            jit_compile=jit_compile,
            # Keras 3 fails to run several steps per call on distributed iterators
            # (keras-team/keras#19246, "You must feed a value for placeholder tensor")
            steps_per_execution=steps_per_execution if strategy is None else 1,
        )
        _callbacks(
            plan,
            patience=patience,
            min_delta=min_delta,
            lr_schedule=lr_schedule,
            learning_rate=learning_rate,
            extra=callbacks,
        )
        if verbose == "summary":  # a short line every few epochs (pipeline.epoch_printer)
            plan.callbacks.append(epoch_printer(int(epochs), monitor=plan.monitor))
            verbose = 0
        history = _fit(model, plan, epochs=epochs, verbose=verbose)
    options = {  # what notebook 04 records for report.replicate
        "epochs": int(epochs),
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "validation_fraction": float(validation_fraction),
        "patience": None if patience is None else int(patience),
        "min_delta": float(min_delta),
        "lr_schedule": lr_schedule,
        "batch_key": batch_key,
    }
    return _finish(model, history, plan, options, data)


# ---------------------------------------------------------------------------- train's steps
@dataclass
class _TrainData:
    """The arrays :func:`train` feeds, as :func:`_train_data` makes them."""

    gex: object  # model inputs: CSR float32 or dense
    atac: object
    n_obs: int
    batch: np.ndarray | None = None  # int32 codes into model.batch_categories
    counts: object = None  # raw GEX counts (gex_likelihood="nb")
    library: np.ndarray | None = None  # their row sums, float32


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
    adversarial: bool = False  # the loss includes a batch classifier the encoders fight
    fed: dict = field(default_factory=dict)  # the model's inputs as fed (SVD: components)

    @property
    def n_val(self) -> int:
        return len(self.val_rows)

    @property
    def monitor(self) -> str:
        """The loss that early stopping and the plateau schedule watch: the total, or with
        an adversarial batch classifier the reconstruction alone (``recon_loss``: the
        encoders push the classifier's term up, so the total is no measure of progress)."""
        name = "recon_loss" if self.adversarial else "loss"
        return f"val_{name}" if self.n_val else name


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
    batch_size = check_batch_size(batch_size)
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


def _train_data(model, gex, atac, *, layer, batch_key, tune_memory) -> _TrainData:
    """Model inputs from the data (recording AnnData feature names), the batch codes and
    counts the model needs, the allocator tuned, the input transforms fitted on all cells
    if not yet."""
    data = _TrainData(*prepare_inputs(model, gex, atac, layer=layer, record_features=True))
    if model.needs_batch:
        hint = "Build the model with every batch it is trained on."
        data.batch = batch_codes(model, gex, atac, data.n_obs, batch_key=batch_key, hint=hint)
    if model.gex_likelihood == "nb":  # library sizes once, as sparse row sums
        data.counts = gex_counts(gex, layer)
        data.library = np.asarray(data.counts.sum(axis=1), dtype=np.float32).ravel()
    if tune_memory and on_cpu():
        tune_malloc()
    if not model.transforms_fitted:
        logger.info(
            "fitting the input transforms (GEX %s, ATAC %s) on %d cells",
            model.gex_input,
            model.atac_input,
            min(data.n_obs, FIT_CELLS) if is_streamed(data.gex) else data.n_obs,
        )
        model.gex_transform.fit(fit_sample(data.gex))
        model.atac_transform.fit(fit_sample(data.atac))
    return data


def _split(n_obs, *, validation_fraction, seed, deterministic) -> _TrainPlan:
    """Seed everything, choose the validation cells and derive the batch-order seed."""
    if seed is not None:
        set_seed(seed, deterministic=deterministic)
    train_rows, val_rows = validation_split(
        n_obs, validation_fraction=validation_fraction, seed=seed
    )
    data_seed = None if seed is None else int(np.random.default_rng([seed, 1]).integers(2**31 - 1))
    return _TrainPlan(train_rows, val_rows, data_seed)


def _build_datasets(plan: _TrainPlan, model, data: _TrainData, *, batch_size: int) -> None:
    """The shuffled training and the ordered validation pipelines, into ``plan``."""
    # SVD inputs are a fixed projection: project every cell once (cells x components,
    # small and dense) and train on that, instead of densifying and projecting thousands
    # of features for every batch of every epoch.
    fed = {"gex": data.gex, "atac": data.atac}
    transforms = {"gex": model.gex_transform, "atac": model.atac_transform}
    plan.pretransformed = tuple(m for m in fed if transforms[m].mode == "svd")
    for name in plan.pretransformed:
        fed[name] = projected(transforms[name], fed[name], progress=is_streamed(fed[name]))
    plan.fed = fed
    # what the options need besides the inputs (each None when not needed)
    extra = {"batch": data.batch, "gex_target": data.counts, "library": data.library}
    if model.likelihoods["atac"] == "bernoulli" and "atac" in plan.pretransformed:
        extra["atac_target"] = data.atac  # the binarised peaks, not their projection
    streamed = any(is_streamed(x) for x in (*fed.values(), *extra.values()))
    plan.train_ds = make_dataset(
        fed["gex"],
        fed["atac"],
        plan.train_rows,
        batch_size=batch_size,
        shuffle=True,
        seed=plan.data_seed,
        order=window_order(plan.train_rows) if streamed else None,
        **extra,
    )
    plan.val_ds = (
        make_dataset(
            fed["gex"],
            fed["atac"],
            plan.val_rows,
            batch_size=max(batch_size, 1024),
            shuffle=False,
            **extra,
        )
        if plan.n_val
        else None
    )


def _compile(model, *, learning_rate: float, jit_compile, steps_per_execution) -> None:
    """Recompile the model with a fresh optimizer."""
    import keras

    # Under XLA the optimizer update is fused by the compiler; without it, on CPU,
    # TensorFlow's fused Adam kernel replaces Keras' ten element-wise ops per variable.
    optimizer = (
        fused_adam(learning_rate=learning_rate)
        if on_cpu() and not jit_compile
        else keras.optimizers.Adam(learning_rate=learning_rate)
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
            mode="min",  # every monitored value is a loss (Keras cannot tell for recon_loss)
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
                mode="min",
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


def _finish(model, history, plan: _TrainPlan, options: dict, data: _TrainData) -> pd.DataFrame:
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
    df.attrs["validation_rows"] = tuple(int(i) for i in plan.val_rows)
    df.attrs["options"] = options
    if model.block_scale is not None:  # fixed factors from the trained codes of these cells
        model.block_scale.fit(_codes(model, plan, data))
    return df


def _codes(model, plan: _TrainPlan, data: _TrainData) -> np.ndarray:
    """The joint code of every training cell, encoded from what training was fed (SVD
    inputs as the components already computed: no second projection, nor, for data read
    from disk, a second pass over the file)."""
    gex, atac = (plan.fed[m] for m in MODALITIES)
    return run_batches(
        model,
        "code",
        gex,
        atac,
        data.n_obs,
        "both",
        4096,
        model.latent_dim,
        fed=plan.pretransformed,
    )


# ---------------------------------------------------------------------------- inference
def embed(
    model: MultiModalAutoencoder,
    gex,
    atac,
    *,
    batch_size: int = 1024,
    from_: str = "both",
    layer: str | None = "counts",
    batch_key: str | None = "batch",
    integrate: bool = True,
    seed: int | None = None,
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
    batch_key
        ``obs`` column of the batches (of ``gex`` or ``atac``, whichever is an AnnData),
        read only by a model with ``integration="harmony"``.
    integrate
        ``False``: the code itself, whatever the model's ``integration``.
    seed
        Harmony's random state (``None``: the model's seed).
    adata
        If given (an AnnData with the same cells in the same order), the embedding is
        written to ``adata.obsm[key_added]``.
    key_added
        ``obsm`` key to write.

    Returns
    -------
    ``np.ndarray`` of float32, cells x ``model.latent_dim`` (GEX part first with
    ``fusion="concat"``): the code, or, for a model with ``integration="harmony"``, the
    code corrected for ``obs[batch_key]`` by Harmony. With ``adata``, also sets
    ``adata.obsm[key_added]`` (default ``adata.obsm["X_mmae"]``), and, when corrected,
    the code itself in ``adata.obsm[f"{key_added}_code"]``. The encoders never read the
    batch, so cells of any batch, seen in training or not, are embedded.
    """
    batch_size = check_batch_size(batch_size)
    inputs = (gex, atac)
    gex, atac, n_obs = prepare_inputs(model, gex, atac, layer=layer, from_=from_)
    if adata is not None and adata.n_obs != n_obs:
        raise ValueError(f"adata has {adata.n_obs} cells but the inputs have {n_obs}.")
    streamed = is_streamed(gex) or is_streamed(atac)
    z = run_batches(
        model, "encode", gex, atac, n_obs, from_, batch_size, model.latent_dim, progress=streamed
    )
    code, z = z, _integrated(model, z, inputs, batch_key, integrate, seed)
    if adata is not None:
        adata.obsm[key_added] = z
        if z is not code:
            adata.obsm[f"{key_added}_code"] = code
    return z


def _integrated(model, code, inputs, batch_key, integrate: bool, seed) -> np.ndarray:
    """``code``, corrected for the batch by Harmony when the model's configuration says so."""
    if not integrate or model.config.integration == "none":
        return code
    if batch_key is None:
        raise ValueError(
            "This model's embedding is its code corrected for the batch (integration="
            '"harmony"), but batch_key is None: pass batch_key= the obs column of the '
            "batches, or integrate=False for the code itself."
        )
    labels = batch_labels(*inputs, batch_key)
    seed = model.config.seed if seed is None else seed
    return integration.harmony(code, labels, seed=0 if seed is None else int(seed))


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
    batch_key: str | None = "batch",
    batch=None,
) -> np.ndarray:
    """Reconstruct one modality from the joint code, in batches.

    Parameters
    ----------
    model
        A trained :class:`~mmae_utils.model.MultiModalAutoencoder` (run frozen).
    gex, atac
        As in :func:`embed`; one may be ``None`` when ``from_`` names the other.
    modality
        ``"gex"``: log-normalised values (under ``gex_likelihood="nb"``,
        ``log1p(profile * 1e4)`` of the decoder's softmax profile, see
        :func:`~mmae_utils.likelihoods.log_normalized_mean`; under ``"mse"`` with
        ``gex_input="standardize"`` / ``"svd"``, mapped back by
        :meth:`~mmae_utils.model.InputTransform.inverse`). ``"atac"``: accessibility
        probabilities under the Bernoulli likelihood (``atac_input="binary"`` or
        ``atac_likelihood="bernoulli"``), else TF-IDF values (see
        :meth:`~mmae_utils.model.InputTransform.inverse`).
    from_
        ``"both"``, or ``"gex"`` / ``"atac"`` to predict from one modality alone (the
        other zeroed), e.g. ATAC from GEX.
    logits
        Under a count likelihood, return the decoder's raw output instead: ATAC logits,
        or the logits of the GEX softmax profile.
    batch_size
        Cells processed at once.
    layer
        Layer of raw counts when AnnData are passed.
    batch_key, batch
        For a model with ``batch_conditioning``, the batch each cell is decoded as:
        ``batch`` (one label for all cells, or one per cell) if given, else
        ``obs[batch_key]`` of ``gex`` (or ``atac``). Each must be one of
        ``model.batch_categories``: decode cells of an unseen batch as a known one.
        Not read for other models.

    Returns
    -------
    Dense ``np.ndarray`` of float32, cells x features of ``modality``. (This is dense by
    nature: at full scale, 69k cells x 5,000 peaks is 1.4 GB; pass a subset of cells.)
    """
    if modality not in ("gex", "atac"):
        raise ValueError(f'modality must be "gex" or "atac", got {modality!r}.')
    batch_size = check_batch_size(batch_size)
    x_gex, x_atac, n_obs = prepare_inputs(model, gex, atac, layer=layer, from_=from_)
    codes = None
    if model.batch_conditioning:
        hint = "Embedding needs no batch; to decode, pass batch= one of the known batches."
        codes = batch_codes(model, gex, atac, n_obs, batch_key=batch_key, batch=batch, hint=hint)
    dim = model.output_dim(modality)
    out = run_batches(model, modality, x_gex, x_atac, n_obs, from_, batch_size, dim, codes)
    likelihood = model.likelihoods[modality]
    if likelihood == "nb":
        return out if logits else log_normalized_mean(out)
    if likelihood == "bernoulli" and model.output_activation == "relu":  # probabilities
        p = np.clip(out, PROBABILITY_CLIP, 1.0 - PROBABILITY_CLIP)
        return np.log(p / (1.0 - p)).astype(np.float32) if logits else p
    if likelihood == "bernoulli":
        return out if logits else _sigmoid(out)
    transform = model.gex_transform if modality == "gex" else model.atac_transform
    if not transform.identity:
        return transform.inverse(out).astype(np.float32, copy=False)
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float32."""
    e = np.exp(-np.abs(x))
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e)).astype(np.float32)
