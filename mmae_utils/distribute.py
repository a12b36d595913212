"""Training on several devices or machines with ``tf.distribute`` (``docs/distributed.md``).

:func:`mmae_utils.training.train` takes a ``strategy=``: a ``tf.distribute.MirroredStrategy``
(several GPUs, or several logical CPU devices, of one machine) or a
``tf.distribute.MultiWorkerMirroredStrategy`` (several machines, each running the same
script with its own ``TF_CONFIG``). Keras then runs every training step on all replicas,
each on its share of the (global) batch, and sums their gradients. This module holds what
the package adds to make that train the same model as one device:

- :func:`check_strategy`: the model must have been built under the strategy's scope, and
  several workers need a seeded batch order (each worker runs the whole ``tf.data``
  pipeline and keeps its share of every batch, so all must draw the same batches);
- :func:`replica_share`: the loss each replica minimises, its batch mean divided by the
  number of replicas, so that the summed gradients are those of the global batch's mean
  (what Keras' own compiled losses do; the model computes its own loss);
- :func:`replicas_in_scope`: a model built under a strategy with several replicas
  normalises its batches with the global batch's statistics (Keras'
  ``BatchNormalization(synchronized=True)``), else every replica would use those of its
  share and keep moving averages of its own, which differ between workers;
- :class:`DistributedSteps`: what the model changes in Keras' training loop so that
  Keras 3 can run it under ``tf.distribute`` at all (two Keras bugs, see the class);
- :func:`num_workers`, :func:`is_chief`: how many machines train, and whether this one
  is the one that should write the outputs.

TensorFlow backend only (``tf.distribute``); with any other backend :func:`replica_share`
is the identity and ``strategy=`` is refused.
"""

from __future__ import annotations

__all__ = [
    "DistributedSteps",
    "check_strategy",
    "is_chief",
    "num_workers",
    "replica_share",
    "replicas_in_scope",
]


class DistributedSteps:
    """Mixin of :class:`~mmae_utils.model.MultiModalAutoencoder` (before ``keras.Model``)
    working around two Keras 3 bugs under ``tf.distribute`` (both seen with Keras 3.15).
    Without a strategy neither changes anything.

    - Keras' ``fit`` and ``evaluate`` first read one batch from a pass of their own to
      build the model symbolically, and all-reduce it: under
      ``MultiWorkerMirroredStrategy`` that fails for dict inputs (keras-team/keras#20329),
      and under any strategy the extra pass draws one batch order of
      :func:`~mmae_utils.pipeline.make_dataset` more, shifting every epoch's order by one.
      The model is built in ``__init__`` and compiles no Keras loss, so the build needs no
      batch (the optimizer's variables are all that is left), unless ``metrics=`` were
      compiled: then Keras reads one as before.
    - Each step's logs (scalars) are averaged over the workers with
      ``strategy.reduce("MEAN", value, axis=0)``, which fails for scalars
      (tensorflow/tensorflow#72388); with several workers the logs are returned with
      shape (1,) instead, which that reduction turns back into scalars.
    """

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        if getattr(self, "_compile_metrics", None) is None:
            iterator = None
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def train_step(self, *args):  # noqa: D102 - Keras' step, logs shaped for the reduction
        return _reducible(super().train_step(*args))

    def test_step(self, *args):  # noqa: D102 - Keras' step, logs shaped for the reduction
        return _reducible(super().test_step(*args))


def _reducible(logs):
    """Step logs (a dict of scalars) as 1-element vectors when several workers train."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return logs
    import tensorflow as tf

    if num_workers(tf.distribute.get_strategy()) == 1:
        return logs
    return {k: tf.reshape(v, (1,)) for k, v in logs.items()}


def num_workers(strategy) -> int:
    """Worker processes (machines) that ``strategy`` trains on.

    Parameters
    ----------
    strategy
        A ``tf.distribute.Strategy``.

    Returns
    -------
    1 for a one-machine strategy (``MirroredStrategy``, the default strategy); the number of
    workers of a ``MultiWorkerMirroredStrategy`` (its replicas over this worker's devices).
    """
    if strategy.num_replicas_in_sync == 1:  # (the default strategy has no worker_devices)
        return 1
    return max(1, strategy.num_replicas_in_sync // len(strategy.extended.worker_devices))


def is_chief(strategy=None) -> bool:
    """Whether this process should write the outputs (model, history, figures).

    Every worker of a ``MultiWorkerMirroredStrategy`` trains the same model; only one (the
    chief: task ``"chief"`` if the cluster has one, else worker 0) should save it, so that
    several machines do not write the same files.

    Parameters
    ----------
    strategy
        A ``tf.distribute.Strategy``, or ``None`` (one process: the chief).

    Returns
    -------
    ``True`` without a strategy, with a one-machine strategy, and on the chief.
    """
    resolver = None if strategy is None else getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return True
    if resolver.task_type in (None, "chief"):
        return True
    has_chief = "chief" in resolver.cluster_spec().as_dict()
    return resolver.task_type == "worker" and resolver.task_id == 0 and not has_chief


def check_strategy(model, strategy, *, seed) -> None:
    """Refuse what :func:`~mmae_utils.training.train` cannot train alike under ``strategy``.

    Parameters
    ----------
    model
        The :class:`~mmae_utils.model.MultiModalAutoencoder` to train.
    strategy
        A ``tf.distribute.Strategy``, or ``None`` (then neither the model nor the caller
        may be under one).
    seed
        ``train``'s seed: with several workers it must not be ``None``.

    Raises
    ------
    TypeError
        ``strategy`` is not a ``tf.distribute.Strategy`` (or the backend is not TensorFlow).
    ValueError
        The model's variables were not created under ``strategy.scope()``; or several
        workers train with ``seed=None``; or ``strategy`` is ``None`` but the model was
        built, or ``train`` is called, under a strategy.
    """
    import keras

    if strategy is None and keras.backend.backend() != "tensorflow":
        return
    import tensorflow as tf

    if strategy is None:
        if (
            tf.distribute.has_strategy()
            or model.distribute_strategy is not tf.distribute.get_strategy()
        ):
            raise ValueError(
                "The model was built under a tf.distribute strategy, or train() is called "
                "under one, but strategy=None: pass that strategy as train(strategy=...)."
            )
        return
    if keras.backend.backend() != "tensorflow" or not isinstance(strategy, tf.distribute.Strategy):
        raise TypeError(
            "strategy must be a tf.distribute.Strategy (MirroredStrategy, "
            f"MultiWorkerMirroredStrategy) on Keras' TensorFlow backend, got {strategy!r}."
        )
    outside = [v.path for v in model.variables if not _created_in(strategy, v)]
    if model.distribute_strategy is not strategy or outside:
        where = f" (e.g. {outside[0]!r})" if outside else ""
        raise ValueError(
            "The model was not built under this strategy: its variables" + where + " were "
            "created outside strategy.scope(), so Keras cannot mirror them. Build it "
            "(build_model / build_for) under `with strategy.scope():` and pass that same "
            "strategy to train()."
        )
    if seed is None and num_workers(strategy) > 1:
        raise ValueError(
            f"seed=None with {num_workers(strategy)} workers: every worker runs the whole "
            "input pipeline and keeps its share of each batch, so all must split the cells "
            "and order the batches alike. Pass the same integer seed on every worker."
        )


def _created_in(strategy, variable) -> bool:
    """Whether a Keras variable's TensorFlow variable belongs to ``strategy``."""
    return strategy.extended.variable_created_in_scope(getattr(variable, "value", variable))


def replicas_in_scope() -> int:
    """Replicas of the ``tf.distribute`` strategy whose scope the caller is in (1 without
    one, or on another backend than TensorFlow)."""
    import keras

    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return tf.distribute.get_strategy().num_replicas_in_sync if tf.distribute.has_strategy() else 1


def replica_share(loss):
    """``loss`` (a replica's batch mean) divided by the replicas training in sync.

    Under a ``tf.distribute`` strategy every replica computes the mean loss of its share of
    the global batch and the optimizer sums the replicas' gradients; dividing each by the
    number of replicas makes that sum the gradient of the global batch's mean, as on one
    device (Keras' compiled losses do the same, and its ``loss`` metric multiplies it
    back). With one replica (no strategy) ``loss`` is returned unchanged.

    Parameters
    ----------
    loss
        A scalar tensor.

    Returns
    -------
    The scalar to minimise on this replica.
    """
    import keras

    if keras.backend.backend() != "tensorflow":
        return loss
    import tensorflow as tf

    n = tf.distribute.get_strategy().num_replicas_in_sync
    if n == 1:
        return loss
    return loss * keras.ops.cast(1.0 / n, loss.dtype)
