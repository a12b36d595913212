"""Batch correction of an embedding after it is made: Harmony.

Harmony (Korsunsky et al. 2019; ``harmonypy``) moves each cell's coordinates so that soft
clusters hold every batch in proportion. The ``harmony`` baseline applies it to
``pca_concat``; a model with ``integration="harmony"`` (the default preset) applies it to
its code, so that the autoencoder, not PCA, is what Harmony corrects. Both call
:func:`harmony`, so the two differ only in what they correct.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._utils import logger

__all__ = ["harmony"]


def harmony(x, batches, *, seed: int = 0) -> np.ndarray:
    """``x`` (cells x dimensions) corrected for ``batches`` by Harmony, with its defaults.

    Parameters
    ----------
    x
        The embedding, one row per cell.
    batches
        One batch label per cell (any values; compared as strings, missing ones form a
        batch of their own).
    seed
        Harmony's random state (its k-means start).

    Returns
    -------
    ``np.ndarray`` of float32, the shape of ``x``. With a single batch there is nothing to
    correct: ``x`` itself, as float32 (logged).
    """
    import harmonypy

    x = np.asarray(x, dtype=np.float64)
    labels = pd.Series(np.asarray(batches, dtype=object)).astype(str).to_numpy()
    if labels.shape != (x.shape[0],):
        raise ValueError(
            f"harmony needs one batch label per cell: {x.shape[0]} cells, {labels.size} labels."
        )
    if len(set(labels)) < 2:
        logger.info("harmony: one batch only, nothing to correct; the embedding is unchanged")
        return x.astype(np.float32)
    meta = pd.DataFrame({"batch": labels})
    z = np.asarray(harmonypy.run_harmony(x, meta, "batch", random_state=seed, verbose=False).Z_corr)
    return (z if z.shape == x.shape else z.T).astype(np.float32)
