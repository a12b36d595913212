"""The training run that ``tests/test_distribute.py`` repeats under ``tf.distribute``.

``python tests/distributed_worker.py MODE OUT`` trains the small models of :func:`run`
(without and with batch normalisation) and writes their histories, weights and embeddings
to the ``.npz`` file ``OUT`` (those of the second with the prefix ``bn_``). MODE ``multi``:
under a ``MultiWorkerMirroredStrategy`` read from ``TF_CONFIG`` (start one process per
worker); ``mirror``: under a ``MirroredStrategy`` over two logical CPU devices. The
strategy is made first thing, before TensorFlow initialises its context (as on a cluster);
``mmae_utils`` is imported after. The test imports :func:`run` to train the same model
without a strategy.
"""

from __future__ import annotations

import contextlib
import sys

import numpy as np

N_CELLS, N_GENES, N_PEAKS, N_TYPES = 512, 30, 50, 4
#: No dropout (the ``"seed"`` preset): nothing random in a step, so the runs can agree to
#: float round-off; :func:`run` adds batch normalisation on request.
MODEL = {"preset": "seed", "latent_dim": 6, "hidden": (32,), "seed": 0}
#: 448 training cells: 7 batches of 64, split 32 + 32 between two replicas.
OPTIONS = {
    "epochs": 3,
    "batch_size": 64,
    "learning_rate": 3e-3,
    "validation_fraction": 0.125,
    "patience": None,
    "seed": 0,
    "verbose": 0,
}


def make_strategy(mode: str):
    """The strategy of ``mode``; call before anything else touches TensorFlow."""
    import tensorflow as tf

    if mode == "multi":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if mode == "mirror":
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
        return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    raise ValueError(f"unknown mode {mode!r}")


def make_data(seed: int = 0):
    """Learnable paired data: a few cell types -> log1p Poisson GEX and Bernoulli ATAC."""
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(N_CELLS) % N_TYPES)
    programs = rng.gamma(2.0, 1.5, (N_TYPES, N_GENES)) * (rng.random((N_TYPES, N_GENES)) < 0.4)
    gex = np.log1p(rng.poisson(programs[labels] + 0.05)).astype(np.float32)
    open_prob = np.where(rng.random((N_TYPES, N_PEAKS)) < 0.3, 0.85, 0.03)
    atac = (rng.random((N_CELLS, N_PEAKS)) < open_prob[labels]).astype(np.float32)
    return sp.csr_matrix(gex), sp.csr_matrix(atac)


def run(strategy=None, *, batch_norm: bool = False) -> dict[str, np.ndarray]:
    """Build the model (under ``strategy``'s scope), train it, embed the cells.

    Returns
    -------
    The history's loss columns, ``weights`` (all of the model's, moving statistics
    included, concatenated) and ``embedding``.
    """
    from mmae_utils.model import build_model
    from mmae_utils.training import embed, train

    gex, atac = make_data()
    with contextlib.nullcontext() if strategy is None else strategy.scope():
        model = build_model(N_GENES, N_PEAKS, **MODEL, batch_norm=batch_norm)
    history = train(model, gex, atac, strategy=strategy, **OPTIONS)
    out = {c: history[c].to_numpy() for c in history if c != "seconds"}
    out["weights"] = np.concatenate([np.ravel(w) for w in model.get_weights()])
    out["embedding"] = embed(model, gex, atac)
    return out


def refused_unseeded(strategy) -> str:
    """The error of training with ``seed=None`` under ``strategy`` ("" if none)."""
    from mmae_utils.model import build_model
    from mmae_utils.training import train

    gex, atac = make_data()
    with strategy.scope():
        model = build_model(N_GENES, N_PEAKS, **MODEL)
    try:
        train(model, gex, atac, strategy=strategy, **{**OPTIONS, "seed": None})
    except ValueError as e:
        return str(e)
    return ""


def main(argv: list[str]) -> None:
    mode, out = argv
    strategy = make_strategy(mode)
    from mmae_utils.distribute import is_chief, num_workers

    result = run(strategy)
    result |= {f"bn_{k}": v for k, v in run(strategy, batch_norm=True).items()}
    result["num_workers"] = np.array(num_workers(strategy))
    result["is_chief"] = np.array(is_chief(strategy))
    if mode == "multi":
        result["unseeded_error"] = np.array(refused_unseeded(strategy))
    np.savez(out, **result)


if __name__ == "__main__":
    main(sys.argv[1:])
