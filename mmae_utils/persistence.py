"""Saving and loading trained models with their feature names, and checking data against them.

:func:`save_model` writes one Keras 3 ``.keras`` file holding the weights, the
configuration (``model.config``) and the names of the features the model was trained on;
:func:`load_model` reads it back; :func:`check_features` raises a clear error when data
do not have those features in that order. :mod:`mmae_utils.training` re-exports all three.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

from ._cpu import fused_adam
from ._utils import atomic_path
from .model import MultiModalAutoencoder

__all__ = ["check_features", "load_model", "save_model"]


def _first_difference(expected: Sequence[str], got: Sequence[str]) -> str:
    for i, (a, b) in enumerate(zip(expected, got, strict=False)):
        if a != b:
            return f"first difference at position {i}: model {a!r}, data {b!r}"
    return f"the first {min(len(expected), len(got))} names agree"


def check_features(
    model: MultiModalAutoencoder,
    *,
    gex_features: Sequence[str] | None = None,
    atac_features: Sequence[str] | None = None,
) -> None:
    """Raise a ``ValueError`` if data features differ from those the model was trained on.

    Parameters
    ----------
    model
        A model with ``gex_features`` / ``atac_features`` (set by :func:`~mmae_utils.training.train` on AnnData,
        by :func:`save_model`, or at :func:`~mmae_utils.model.build_model`).
    gex_features, atac_features
        Feature names of the data (``var_names``), in column order. ``None`` skips the
        check for that modality, as does a model that does not know its feature names.

    Returns
    -------
    None; raises ``ValueError`` naming the modality, both counts and the first differing
    names (or that the same features are in another order).
    """
    for label, expected, got in (
        ("GEX", model.gex_features, gex_features),
        ("ATAC", model.atac_features, atac_features),
    ):
        if expected is None or got is None:
            continue
        got = [str(n) for n in got]
        if list(expected) == got:
            continue
        if len(expected) == len(got) and set(expected) == set(got):
            detail = (
                "the same features in a different order; reorder the data, e.g. "
                f"adata[:, model.{label.lower()}_features]"
            )
        else:
            missing = [n for n in expected if n not in set(got)]
            detail = (
                f"model has {len(expected)}, data has {len(got)}; "
                f"{_first_difference(expected, got)}"
            )
            if missing:
                detail += (
                    f"; {len(missing)} model features absent from the data, e.g. {missing[:3]}"
                )
        raise ValueError(f"{label} features differ from those the model was trained on: {detail}.")


def save_model(
    model: MultiModalAutoencoder,
    path: str | Path,
    *,
    gex_features: Sequence[str] | None = None,
    atac_features: Sequence[str] | None = None,
) -> Path:
    """Save the model, its configuration and its feature names to one ``.keras`` file.

    Parameters
    ----------
    model
        The model to save.
    path
        Destination, ending in ``.keras``. Written atomically (a temporary file renamed
        into place), so an interrupted save never leaves a broken file.
    gex_features, atac_features
        Names of the features the model was trained on, in column order (e.g.
        ``gex.var_names``). Default: those the model already knows (set by :func:`~mmae_utils.training.train`
        on AnnData). Stored in the model config inside the file.

    Returns
    -------
    The ``Path`` written.
    """
    if not isinstance(model, MultiModalAutoencoder):
        raise TypeError(f"model must be a MultiModalAutoencoder, got {type(model).__name__}.")
    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(
            f"save_model writes Keras 3 '.keras' files; {str(path)!r} has suffix "
            f"{path.suffix!r}. Use e.g. {str(path.with_suffix('.keras'))!r}."
        )
    if gex_features is not None:
        model.gex_features = gex_features
    if atac_features is not None:
        model.atac_features = atac_features
    if model.gex_features is None or model.atac_features is None:
        warnings.warn(
            "Saving a model without feature names: applying it to other data can only check "
            "feature counts. Pass gex_features= and atac_features= (e.g. var_names).",
            UserWarning,
            stacklevel=2,
        )
    with atomic_path(path) as tmp, warnings.catch_warnings():
        # TensorFlow variables' __array__ predates NumPy 2's copy= keyword; harmless here.
        warnings.filterwarnings(
            "ignore", message="__array__ implementation doesn't accept a copy keyword"
        )
        model.save(tmp)
    return path


def load_model(path: str | Path, *, compile: bool = True) -> MultiModalAutoencoder:
    """Load a model written by :func:`save_model`.

    Parameters
    ----------
    path
        A ``.keras`` file.
    compile
        Restore the compiled losses and optimizer as saved.

    Returns
    -------
    The :class:`~mmae_utils.model.MultiModalAutoencoder`, with its configuration
    (``model.config``) and ``model.gex_features`` / ``model.atac_features``.
    """
    import keras

    path = Path(path)
    if path.suffix != ".keras":
        raise ValueError(f"load_model reads '.keras' files; got {str(path)!r}.")
    if not path.exists():
        raise FileNotFoundError(f"No model file at {str(path)!r}.")
    fused_adam()  # registers mmae>FusedAdam, the optimizer train() may have compiled with
    model = keras.saving.load_model(path, compile=compile)
    if not isinstance(model, MultiModalAutoencoder):
        raise TypeError(f"{str(path)!r} holds a {type(model).__name__}, not an mmae model.")
    return model
