"""Training under tf.distribute (mmae_utils.distribute, ``train(strategy=...)``): two worker
processes on localhost and two logical CPU devices train the model that one process does.

The runs are those of ``tests/distributed_worker.py``: 512 cells, the ``"seed"`` network
(no dropout), 3 epochs of 7 batches of 64, without and with batch normalisation. Measured
on the 2-core machine (TensorFlow 2.21, Keras 3.15), against one process:

- without batch normalisation, the 2-worker and the 2-device runs' losses differ by at
  most 1.2e-7 relative, the weights by 6e-8 and the embedding (values up to about 5) by
  5e-7 absolute: round-off (two half batches' gradients are not summed in the order of
  one whole batch). ``RTOL`` and ``ATOL`` (1e-5) leave a margin of 20x or more, and are
  far below what a wrong setup gives: without the loss's division by the replicas the
  ``loss`` column doubles and the weights move by 5e-3; with Keras' extra pass over the
  data before the first epoch every epoch's batch order shifts by one, and the first
  epoch's loss by 4e-3 relative;
- with batch normalisation, the losses differ by at most 1e-5 relative (the global
  batch's variance is computed as E[x^2] - E[x]^2 from all-reduced sums, not in two
  passes; and the dense biases before a normalisation, whose gradient is 0 but for
  round-off, drift under Adam by up to 4e-4): ``BN_RTOL`` is 1e-4. Normalising each
  replica's share with its own statistics instead changes the losses by 2e-2.

The two workers' results are identical in both cases.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from distributed_worker import MODEL, N_GENES, N_PEAKS, OPTIONS, make_data, run

from mmae_utils.model import build_model
from mmae_utils.training import train

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("distributed_worker.py")
RTOL = 1e-5  # losses: relative
ATOL = 1e-5  # weights and embedding: absolute
BN_RTOL = 1e-4  # losses with batch normalisation: relative
LOSSES = ("loss", "gex_loss", "atac_loss", "val_loss", "val_gex_loss", "val_atac_loss")
TIMEOUT = 240  # seconds for the processes (together about 45 s on 2 cores)


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("localhost", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _launch(mode: str, out: Path, tf_config: dict | None = None) -> subprocess.Popen:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env.pop("TF_CONFIG", None)
    if tf_config is not None:
        env["TF_CONFIG"] = json.dumps(tf_config)
    return subprocess.Popen(
        [sys.executable, str(WORKER), mode, str(out)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _results(runs: list[tuple[subprocess.Popen, Path]]) -> list[dict]:
    """Wait for the processes (all killed if one fails or times out); their results."""
    try:
        for proc, _ in runs:
            output, _ = proc.communicate(timeout=TIMEOUT)
            assert proc.returncode == 0, f"worker failed:\n{output[-4000:]}"
    finally:
        for proc, _ in runs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return [dict(np.load(out)) for _, out in runs]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The run as two worker processes of a MultiWorkerMirroredStrategy on localhost
    (``"workers"``), as one process on two logical CPU devices (``"mirror"``), all started
    at once, and in this process without a strategy meanwhile (``"reference"``)."""
    tmp = tmp_path_factory.mktemp("runs")
    cluster = {"worker": [f"localhost:{p}" for p in _free_ports(2)]}
    started = []
    try:
        for i in range(2):
            config = {"cluster": cluster, "task": {"type": "worker", "index": i}}
            started.append(
                (_launch("multi", tmp / f"worker{i}.npz", config), tmp / f"worker{i}.npz")
            )
        started.append((_launch("mirror", tmp / "mirror.npz"), tmp / "mirror.npz"))
        reference = run()
        reference |= {f"bn_{k}": v for k, v in run(batch_norm=True).items()}
    finally:
        results = _results(started)
    return {"workers": results[:2], "mirror": results[2], "reference": reference}


@pytest.fixture(scope="module")
def reference(runs):
    return runs["reference"]


@pytest.fixture(scope="module")
def workers(runs):
    return runs["workers"]


def _assert_same_training(got: dict, want: dict) -> None:
    for col in LOSSES:
        np.testing.assert_allclose(got[col], want[col], rtol=RTOL, atol=0, err_msg=col)
    np.testing.assert_allclose(got["weights"], want["weights"], rtol=0, atol=ATOL)
    np.testing.assert_allclose(got["embedding"], want["embedding"], rtol=0, atol=ATOL)


@pytest.mark.slow
def test_two_workers_train_the_model_of_one_process(workers, reference):
    assert len(reference["loss"]) == OPTIONS["epochs"]
    assert reference["loss"][-1] < 0.8 * reference["loss"][0]  # it learns something
    for result in workers:
        _assert_same_training(result, reference)


@pytest.mark.slow
def test_the_workers_agree_exactly(workers):
    # the all-reduce gives every worker the same sums, so the same updates (and the same
    # moving averages of the batch normalisation: those of the global batches)
    first, second = workers
    for key in (*LOSSES, "weights", "embedding"):
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)
        np.testing.assert_array_equal(first[f"bn_{key}"], second[f"bn_{key}"], err_msg=key)


@pytest.mark.slow
def test_batch_normalisation_uses_the_global_batch(runs, reference):
    for result in (*runs["workers"], runs["mirror"]):
        for col in LOSSES:
            np.testing.assert_allclose(
                result[f"bn_{col}"], reference[f"bn_{col}"], rtol=BN_RTOL, atol=0, err_msg=col
            )


@pytest.mark.slow
def test_workers_know_their_role_and_refuse_an_unseeded_batch_order(workers):
    assert [int(r["num_workers"]) for r in workers] == [2, 2]
    assert [bool(r["is_chief"]) for r in workers] == [True, False]  # worker 0 saves
    for result in workers:
        message = str(result["unseeded_error"])
        assert "seed=None with 2 workers" in message and "same integer seed" in message


@pytest.mark.slow
def test_two_devices_train_the_model_of_one(runs, reference):
    result = runs["mirror"]
    assert int(result["num_workers"]) == 1 and bool(result["is_chief"])
    _assert_same_training(result, reference)


def test_a_model_built_outside_the_scope_is_refused():
    import tensorflow as tf

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    gex, atac = make_data()
    model = build_model(N_GENES, N_PEAKS, **MODEL)
    for scope in (False, True):  # called inside the scope, the model is still outside
        with strategy.scope() if scope else tf.distribute.get_strategy().scope():
            with pytest.raises(ValueError, match=r"under `with strategy.scope\(\):`"):
                train(model, gex, atac, strategy=strategy, **OPTIONS)
    with pytest.raises(TypeError, match="tf.distribute.Strategy"):
        train(model, gex, atac, strategy="mirrored", **OPTIONS)
    with strategy.scope():
        mirrored = build_model(N_GENES, N_PEAKS, **MODEL)
        with pytest.raises(ValueError, match=r"strategy=None: pass that strategy"):
            train(model, gex, atac, **OPTIONS)  # called under a strategy
    with pytest.raises(ValueError, match=r"strategy=None: pass that strategy"):
        train(mirrored, gex, atac, **OPTIONS)  # the model built under one
