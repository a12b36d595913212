"""mmae_utils: helpers for the mmae tutorial (multi-modal autoencoder on paired GEX + ATAC).

One module per concern (``docs/ARCHITECTURE.md`` maps them and the data between them):

- :mod:`mmae_utils.datasets`: the built-in dataset, the real GEO file, the run folder's input;
- :mod:`mmae_utils.sim`: the generative simulator behind the built-in dataset;
- :mod:`mmae_utils.data`: reading, validating and splitting multiome AnnData;
- :mod:`mmae_utils.readers`: 10x Cell Ranger ARC ``.h5`` and muon ``.h5mu`` into the contract,
  and the ``.h5mu`` writer;
- :mod:`mmae_utils.pp`: preprocessing shared by the model and the baselines;
- :mod:`mmae_utils.features`: highly variable genes and variable peaks;
- :mod:`mmae_utils.config`: the autoencoder's options (:class:`~mmae_utils.config.ModelConfig`)
  and presets;
- :mod:`mmae_utils.layers`: its custom Keras layers (input transforms, modality dropout,
  gradient reversal) and seeded Dense blocks;
- :mod:`mmae_utils.likelihoods`: its count likelihoods (negative binomial) and batch loss;
- :mod:`mmae_utils.model`: the Keras multi-modal autoencoder;
- :mod:`mmae_utils.training`: streaming sparse training and embedding (AnnData in);
- :mod:`mmae_utils.pipeline`: its tf.data batches and batched inference (arrays in);
- :mod:`mmae_utils.streaming`: backed files read a chunk of cells at a time (data beyond
  memory);
- :mod:`mmae_utils.distribute`: training under ``tf.distribute`` (several GPUs or machines);
- :mod:`mmae_utils.persistence`: saving and loading trained models;
- :mod:`mmae_utils.crossmodal`: one modality predicted from the other, scored per feature on
  held-out cells against trivial baselines;
- :mod:`mmae_utils.baselines`: baseline embeddings of the same size;
- :mod:`mmae_utils.evaluation`: NeurIPS 2021 joint-embedding metrics;
- :mod:`mmae_utils.plotting`: figures;
- :mod:`mmae_utils.report`: the papermill report runner and the ``mmae-report`` CLI.

Submodules are imported on first access so that ``import mmae_utils`` stays fast and
does not pull in TensorFlow unless a model is used.
"""

from __future__ import annotations

import importlib
import os
import warnings

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notes) drowns notebook output;
# keep warnings and errors. Set TF_CPP_MIN_LOG_LEVEL yourself to override.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "0.1.0"

_SUBMODULES = (
    "datasets",
    "sim",
    "data",
    "readers",
    "pp",
    "features",
    "config",
    "layers",
    "likelihoods",
    "model",
    "training",
    "pipeline",
    "streaming",
    "distribute",
    "persistence",
    "crossmodal",
    "baselines",
    "neighbors",
    "metrics",
    "evaluation",
    "plotting",
    "report",
)

__all__ = [*_SUBMODULES, "__version__", "setup_session"]


def setup_session(seed: int = 0, *, deterministic: bool = True) -> dict[str, str]:
    """Print the versions that matter and seed everything: the first cell of every notebook.

    TensorFlow is imported here with its C++ start-up lines discarded (they would appear
    in every notebook; see :func:`mmae_utils._utils.import_tensorflow_quietly`), and Keras'
    deprecation warnings, which a reader cannot act on, are hidden.

    Parameters
    ----------
    seed
        Seeds Python, NumPy, Keras and TensorFlow (:func:`mmae_utils._utils.set_seed`).
    deterministic
        Ask TensorFlow for deterministic kernels (op determinism).

    Returns
    -------
    The printed versions, as a mapping of package to version.
    """
    import platform
    from importlib.metadata import PackageNotFoundError, version

    from ._utils import import_tensorflow_quietly, set_seed

    gpus = import_tensorflow_quietly()  # TF's C++ start-up lines discarded
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"keras(\.|$)")
    versions = {"python": platform.python_version(), "mmae_utils": __version__}
    for pkg in (
        "numpy",
        "scipy",
        "pandas",
        "anndata",
        "scanpy",
        "episcanpy",
        "scib",
        "tensorflow",
        "keras",
    ):
        try:
            versions[pkg] = version(pkg)
        except PackageNotFoundError:
            versions[pkg] = "not installed"
    set_seed(seed, deterministic=deterministic)
    device = f"{len(gpus)} GPU" if gpus else "CPU"
    print("  ".join(f"{k} {v}" for k, v in versions.items()))
    print(
        f"TensorFlow on {device}; seed {seed} (Python, NumPy, Keras, TensorFlow; op "
        f"determinism {'on' if deterministic else 'off'})"
    )
    return versions


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
