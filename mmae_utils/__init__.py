"""mmae_utils: helpers for the mmae tutorial (multi-modal autoencoder on paired GEX + ATAC).

One module per pipeline stage:

- :mod:`mmae_utils.datasets`: the built-in synthetic BMMC dataset and the real GEO file;
- :mod:`mmae_utils.data`: reading, validating and splitting multiome AnnData;
- :mod:`mmae_utils.features`: highly variable genes and variable peaks;
- :mod:`mmae_utils.model`: the Keras multi-modal autoencoder;
- :mod:`mmae_utils.training`: streaming sparse training, embedding, persistence;
- :mod:`mmae_utils.evaluation`: NeurIPS 2021 joint-embedding metrics and baselines;
- :mod:`mmae_utils.plotting`: figures;
- :mod:`mmae_utils.report`: the papermill report runner and the ``mmae-report`` CLI.

Submodules are imported on first access so that ``import mmae_utils`` stays fast and
does not pull in TensorFlow unless a model is used.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = (
    "datasets",
    "data",
    "features",
    "model",
    "training",
    "evaluation",
    "plotting",
    "report",
)

__all__ = [*_SUBMODULES, "__version__"]


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
