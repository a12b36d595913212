"""Model inputs from what users pass: AnnData, sparse matrices or arrays, checked.

:func:`prepare_inputs` turns both modalities into CSR or C-contiguous float32 matrices
(AnnData through :func:`mmae_utils.pp.log_normalized` and :func:`mmae_utils.pp.binarized`),
checks them against the model's features and cell counts; :func:`batch_codes` maps each
cell's batch to the model's categories; :func:`gex_counts` gives the raw counts that the
negative-binomial likelihood models. :mod:`mmae_utils.training` trains and embeds with them.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .data import is_backed
from .model import MultiModalAutoencoder
from .persistence import check_features
from .pp import is_integer_valued
from .streaming import disk_rows

__all__ = [
    "SOURCES",
    "as_matrix",
    "batch_codes",
    "batch_labels",
    "gex_counts",
    "is_anndata",
    "prepare_inputs",
]

#: What a model may encode from: both modalities, or one with the other zeroed.
SOURCES = ("both", "gex", "atac")


def is_anndata(x) -> bool:
    try:
        import anndata
    except ImportError:  # pragma: no cover - anndata is a hard dependency
        return False
    return isinstance(x, anndata.AnnData)


def as_matrix(x, modality: str, *, layer: str | None):
    """Model input for one modality: (CSR float32 or C-contiguous float32 array, names).

    A backed AnnData (``load_multiome(..., backed=True)``) gives a
    :class:`~mmae_utils.streaming.DiskRows` instead, read from its file on demand (its
    counts are those it was read with; ``layer`` is not used)."""
    names = None
    if is_anndata(x):
        from .pp import binarized, log_normalized

        names = tuple(str(n) for n in x.var_names)
        if is_backed(x):
            return disk_rows(x, "log" if modality == "gex" else "binary"), names
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


def prepare_inputs(model, gex, atac, *, layer, from_="both", record_features=False):
    """Validate and convert both modalities; returns (gex, atac, n_obs)."""
    if not isinstance(model, MultiModalAutoencoder):
        raise TypeError(
            "model must be a MultiModalAutoencoder (see mmae_utils.model.build_model), "
            f"got {type(model).__name__}."
        )
    if from_ not in SOURCES:
        raise ValueError(f"from_ must be one of {SOURCES}, got {from_!r}.")
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
        mats[modality], names[modality] = as_matrix(x, modality, layer=layer)
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


def batch_labels(gex, atac, batch_key: str) -> np.ndarray:
    """``obs[batch_key]`` of the first of ``gex``, ``atac`` that is an AnnData."""
    if batch_key is None:
        raise ValueError(
            "This model reads each cell's batch (batch_conditioning / adversarial_batch / "
            "integration), but batch_key is None: pass batch_key= the obs column of the "
            'batches, or use a preset that reads none (e.g. "jae" or "seed").'
        )
    for x in (gex, atac):
        if is_anndata(x):
            if batch_key not in x.obs:
                raise ValueError(
                    f"This model reads each cell's batch, but obs has no column "
                    f"{batch_key!r}: pass batch_key= the column that holds it (obs columns: "
                    f"{list(x.obs.columns)[:12]})."
                )
            return x.obs[batch_key].to_numpy()
    raise ValueError(
        "This model reads each cell's batch (batch_conditioning / adversarial_batch / "
        "integration): pass gex (or atac) as an AnnData with the batches in obs[batch_key]."
    )


def batch_codes(model, gex, atac, n_obs: int, *, batch_key: str, batch=None, hint: str):
    """Each cell's code into ``model.batch_categories`` (int32), from ``batch`` (one label
    for all cells, or one per cell) or else from ``obs[batch_key]``."""
    if batch is None:
        labels = batch_labels(gex, atac, batch_key)
    elif np.ndim(batch) == 0:
        labels = np.full(n_obs, batch, dtype=object)
    else:
        labels = np.asarray(batch, dtype=object)
        if labels.shape != (n_obs,):
            raise ValueError(f"batch has {labels.size} labels for {n_obs} cells.")
    labels = labels.astype(str)
    codes = pd.Index(model.batch_categories).get_indexer(labels)
    if (codes < 0).any():
        unknown = sorted(set(labels[codes < 0]))
        raise ValueError(
            f"{int((codes < 0).sum())} cells are of batches the model does not know "
            f"({unknown[:5]}); it knows {list(model.batch_categories)}, fixed when it was "
            f"built (build_model(batch_categories=...)). {hint}"
        )
    return codes.astype(np.int32)


def gex_counts(gex, layer: str | None):
    """The raw GEX counts that ``gex_likelihood="nb"`` models (CSR or dense float32; read
    from disk, a :class:`~mmae_utils.streaming.DiskRows`, for a backed AnnData)."""
    where = "X" if layer is None else f"layers[{layer!r}]"
    if not is_anndata(gex):
        raise ValueError(
            'gex_likelihood="nb" models the raw counts of the genes: pass gex as an AnnData '
            'with them in layers["counts"] (or in the layer named by layer=).'
        )
    if is_backed(gex):
        return disk_rows(gex, "counts")
    if layer is not None and layer not in gex.layers:
        raise ValueError(
            f'gex_likelihood="nb" models the raw counts of the genes, but gex.{where} is '
            'missing: store them there (gex.layers["counts"] = the raw counts) or pass '
            "layer= the layer that holds them (None: X)."
        )
    counts, _ = as_matrix(gex.X if layer is None else gex.layers[layer], "gex", layer=None)
    values = counts.data if sp.issparse(counts) else counts
    if (values < 0).any() or not is_integer_valued(counts):
        raise ValueError(
            f'gex_likelihood="nb" models raw counts, but gex.{where} holds negative or '
            'non-integer values: put the raw counts in layers["counts"].'
        )
    return counts
