"""Cross-modal prediction, scored per feature on held-out cells against trivial baselines.

A model that ties the two modalities together can predict one from the other alone
(:func:`mmae_utils.training.reconstruct` with ``from_="gex"`` or ``"atac"``). How well it
does is only meaningful under three rules, which :func:`score` follows:

- **held-out cells only**: the cells :func:`~mmae_utils.training.train` held out
  (:func:`held_out_rows`); a model scored on cells it trained on is scored on memory.
- **one score per feature, across cells**: ATAC from GEX is the AUROC of each peak's
  predicted accessibility against its observed open / closed state over the held-out cells
  (peaks with both states among them); GEX from ATAC is each gene's Pearson r between
  predicted and observed log-normalised values (genes that vary among them). Each is
  summarised by its median and mean over features. A score pooled over all (cell, feature)
  pairs (the ``pooled`` column, for comparison only) mostly ranks *features*: that a common
  peak is open more often than a rare one needs no knowledge of the cell.
- **against baselines computed from the training cells** (:func:`baseline_predictions`):
  the feature mean (constant across cells: AUROC 0.5 and r undefined by construction), the
  depth x mean (the cell's own depth in the target modality times the feature mean: an
  oracle on depth, which no real predictor of the other modality is given) and the
  cell-type mean (the feature's mean over the training cells of the cell's type).

AnnData in (the selected features' counts, both modalities), arrays and tables out.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass, field

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.stats import rankdata

from .data import split_modalities
from .datasets import MARKERS
from .pipeline import validation_split
from .pp import binarized, counts_matrix, log_normalized

__all__ = [
    "DIRECTIONS",
    "METRICS",
    "CrossModalScores",
    "NoHeldOutCellsError",
    "baseline_predictions",
    "held_out_rows",
    "observed_values",
    "per_feature_auroc",
    "per_feature_pearson",
    "pooled_auroc",
    "pooled_pearson",
    "score",
    "score_predictions",
    "shown_features",
]

#: The two directions, by the modality predicted: its display name.
DIRECTIONS: dict[str, str] = {"atac": "ATAC from GEX", "gex": "GEX from ATAC"}
#: The score of each direction, per feature across the held-out cells.
METRICS: dict[str, str] = {"atac": "AUROC per peak", "gex": "Pearson r per gene"}
_SOURCE = {"atac": "gex", "gex": "atac"}

_NOTES = {
    "feature mean": {
        "atac": "constant across cells: AUROC 0.5 by construction (all ties)",
        "gex": "constant across cells: r undefined by construction",
    },
    "depth x mean": "oracle: the held-out cell's own {what} times the feature mean",
    "cell-type mean": "mean over the training cells of the cell's type ({key})",
}
_DEPTH = {"atac": "number of open peaks", "gex": "total counts"}


class NoHeldOutCellsError(ValueError):
    """The model was trained on every cell: there are no held-out cells to score on."""


@dataclass
class CrossModalScores:
    """What :func:`score` returns.

    Attributes
    ----------
    rows
        The held-out rows scored (sorted int64).
    table
        One row per ``(direction, predictor)``: ``metric``, ``median`` and ``mean`` over the
        features with a defined score, ``n_features`` (how many), ``pooled`` (one score over
        all (cell, feature) pairs, which mostly ranks features: for comparison only) and
        ``note``.
    per_feature
        ``{"atac": peaks x predictors, "gex": genes x predictors}`` DataFrames of the
        per-feature scores (NaN where undefined).
    observed, predicted
        ``{"atac": ..., "gex": ...}``: held-out cells x features, the observed values
        (binarised peaks, log-normalised genes) and the model's predictions.
    """

    rows: np.ndarray
    table: pd.DataFrame
    per_feature: dict[str, pd.DataFrame] = field(default_factory=dict)
    observed: dict[str, np.ndarray] = field(default_factory=dict)
    predicted: dict[str, np.ndarray] = field(default_factory=dict)


# ---------------------------------------------------------------------------- held-out cells
def held_out_rows(
    history: pd.DataFrame | None = None,
    *,
    n_obs: int | None = None,
    validation_fraction: float | None = None,
    seed: int | None = None,
) -> np.ndarray:
    """The rows :func:`~mmae_utils.training.train` held out: from its history, or recomputed.

    Parameters
    ----------
    history
        :func:`~mmae_utils.training.train`'s history (``attrs["validation_rows"]``).
    n_obs, validation_fraction, seed
        Without ``history``: the split :func:`~mmae_utils.pipeline.validation_split` makes
        of ``n_obs`` cells with the ``validation_fraction`` and ``seed`` given to ``train``.

    Returns
    -------
    Sorted int64 row indices.

    Raises
    ------
    NoHeldOutCellsError
        When no cell was held out (``validation_fraction=0``): scoring the training cells
        instead would flatter the model.
    """
    if history is not None:
        if "validation_rows" not in history.attrs:
            raise ValueError(
                "history.attrs has no 'validation_rows' (a history from an older train?): pass "
                "n_obs, validation_fraction and seed instead."
            )
        rows = np.asarray(history.attrs["validation_rows"], dtype=np.int64)
    elif n_obs is None or validation_fraction is None:
        raise ValueError("Pass history, or n_obs, validation_fraction and seed.")
    else:
        rows = validation_split(n_obs, validation_fraction=validation_fraction, seed=seed)[1]
    if rows.size == 0:
        raise NoHeldOutCellsError(
            "No held-out cells: the model was trained on every cell (validation_fraction=0), "
            "so its cross-modal predictions could only be scored on cells it trained on. "
            "Train with validation_fraction > 0 (VALIDATION_FRACTION in notebook 04)."
        )
    return np.sort(rows)


def _check_rows(rows, n_obs: int) -> tuple[np.ndarray, np.ndarray]:
    """``(held-out rows, training rows)``: the given rows checked, and the others."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if rows.size == 0:
        raise NoHeldOutCellsError("No held-out cells given (rows is empty).")
    if rows[0] < 0 or rows[-1] >= n_obs:
        raise ValueError(f"rows must be row indices in [0, {n_obs}), got {rows[0]}..{rows[-1]}.")
    train = np.setdiff1d(np.arange(n_obs), rows)
    if train.size == 0:
        raise ValueError("Every cell is held out: no training cells for the baselines.")
    return rows, train


# ---------------------------------------------------------------------------- scores
def per_feature_auroc(observed, predicted, block: int = 512) -> np.ndarray:
    """AUROC of each column of ``predicted`` against the 0/1 column of ``observed``.

    The Mann-Whitney statistic on average ranks, so ties count one half (a prediction
    constant across cells gives exactly 0.5), as :func:`sklearn.metrics.roc_auc_score`.
    Ranked ``block`` columns at a time, to keep the float64 temporaries small.

    Returns
    -------
    float64 array, one per column; NaN where the column holds one class only.
    """
    observed = np.asarray(observed)
    predicted = np.broadcast_to(predicted, observed.shape)
    out = np.empty(observed.shape[1])
    for start in range(0, observed.shape[1], block):
        cols = slice(start, start + block)
        y = observed[:, cols] > 0
        ranks = rankdata(np.asarray(predicted[:, cols], dtype=np.float64), axis=0)
        n_pos = y.sum(axis=0).astype(np.float64)
        n_neg = y.shape[0] - n_pos
        u = (ranks * y).sum(axis=0) - n_pos * (n_pos + 1) / 2
        with np.errstate(invalid="ignore", divide="ignore"):
            out[cols] = np.where((n_pos == 0) | (n_neg == 0), np.nan, u / (n_pos * n_neg))
    return out


def per_feature_pearson(observed, predicted, block: int = 512) -> np.ndarray:
    """Pearson r of each column of ``predicted`` with the column of ``observed``, ``block``
    columns at a time.

    Returns
    -------
    float64 array, one per column; NaN where either column is constant (r undefined).
    """
    observed = np.asarray(observed)
    predicted = np.broadcast_to(predicted, observed.shape)
    out = np.empty(observed.shape[1])
    for start in range(0, observed.shape[1], block):
        cols = slice(start, start + block)
        x = np.asarray(observed[:, cols], dtype=np.float64)
        y = np.asarray(predicted[:, cols], dtype=np.float64)
        constant = (np.ptp(x, axis=0) == 0) | (np.ptp(y, axis=0) == 0)
        x = x - x.mean(axis=0)
        y = y - y.mean(axis=0)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (x * y).sum(axis=0) / np.sqrt((x * x).sum(axis=0) * (y * y).sum(axis=0))
        out[cols] = np.where(constant, np.nan, np.clip(r, -1.0, 1.0))
    return out


def pooled_auroc(observed, predicted) -> float:
    """AUROC over all (cell, feature) pairs at once, ties counting one half, as
    :func:`per_feature_auroc` on the flattened arrays, but from two sorted copies instead
    of ranks of every pair (at 6,925 held-out cells x 5,000 peaks, 2 GB less)."""
    y = np.asarray(observed).ravel() > 0
    p = np.broadcast_to(predicted, np.shape(observed)).ravel()
    pos = np.sort(p[y])
    everything = np.sort(p)
    n_pos, n_neg = pos.size, y.size - pos.size
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    values, pos_count = np.unique(pos, return_counts=True)  # each positive score once
    lower = np.searchsorted(everything, values, "left")  # all scores below each value
    below = lower - np.searchsorted(pos, values, "left")  # negatives below
    neg_tied = np.searchsorted(everything, values, "right") - lower - pos_count
    u = float(np.sum(pos_count * (below + 0.5 * neg_tied), dtype=np.float64))
    return u / (float(n_pos) * float(n_neg))


def pooled_pearson(observed, predicted, chunk: int = 1024) -> float:
    """Pearson r over all (cell, feature) pairs at once, summed in float64 over blocks of
    ``chunk`` cells (no float64 copy of the whole arrays)."""
    observed = np.asarray(observed)
    predicted = np.broadcast_to(predicted, observed.shape)
    sums = np.zeros(5)  # x, y, xx, yy, xy
    for start in range(0, observed.shape[0], chunk):
        x = observed[start : start + chunk].astype(np.float64)
        y = predicted[start : start + chunk].astype(np.float64)
        sums += [x.sum(), y.sum(), (x * x).sum(), (y * y).sum(), (x * y).sum()]
    n = observed.size
    sx, sy, sxx, syy, sxy = sums
    vx, vy = sxx - sx * sx / n, syy - sy * sy / n
    if vx <= 0 or vy <= 0:
        return float("nan")
    return float(np.clip((sxy - sx * sy / n) / np.sqrt(vx * vy), -1.0, 1.0))


_SCORERS = {"atac": per_feature_auroc, "gex": per_feature_pearson}
_POOLED = {"atac": pooled_auroc, "gex": pooled_pearson}


def _check_modality(modality: str) -> None:
    if modality not in DIRECTIONS:
        raise ValueError(f'modality must be "atac" or "gex" (the one predicted), got {modality!r}.')


def score_predictions(
    observed, predictions: dict[str, np.ndarray], *, modality: str, features=None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per-feature scores of each prediction of one modality, and their summary.

    Parameters
    ----------
    observed
        Held-out cells x features: binarised peaks (``modality="atac"``) or log-normalised
        genes (``"gex"``).
    predictions
        ``{predictor name: array of observed's shape}``.
    modality
        The modality predicted: ``"atac"`` (AUROC per peak) or ``"gex"`` (Pearson r per gene).
    features
        Feature names (the per-feature index; default 0, 1, ...).

    Returns
    -------
    ``(summary, per_feature)``: one row per predictor (``metric``, ``median``, ``mean``,
    ``n_features`` with a defined score, ``pooled`` over all pairs), and features x
    predictors.
    """
    _check_modality(modality)
    observed = np.asarray(observed)
    scorer, rows, per_feature = _SCORERS[modality], {}, {}
    for name, predicted in predictions.items():
        s = scorer(observed, predicted)
        per_feature[name] = s
        finite = s[np.isfinite(s)]
        rows[name] = {
            "metric": METRICS[modality],
            "median": float(np.median(finite)) if finite.size else np.nan,
            "mean": float(finite.mean()) if finite.size else np.nan,
            "n_features": int(finite.size),
            "pooled": _POOLED[modality](observed, predicted),
        }
    index = pd.Index(features if features is not None else range(observed.shape[1]))
    return pd.DataFrame.from_dict(rows, orient="index"), pd.DataFrame(per_feature, index=index)


# ---------------------------------------------------------------------------- baselines
def observed_values(adata: ad.AnnData, *, modality: str, layer: str | None = "counts"):
    """What a prediction of ``modality`` is scored against, for every cell (CSR float32):
    the binarised peaks (``"atac"``) or the log-normalised genes (``"gex"``) of ``adata``
    (one modality's AnnData)."""
    _check_modality(modality)
    return (
        binarized(adata, layer=layer) if modality == "atac" else log_normalized(adata, layer=layer)
    )


def _rows_mean(values, rows: np.ndarray) -> np.ndarray:
    """Column means of ``values[rows]`` (float64), without copying those rows."""
    pick = sp.csr_matrix(
        (np.ones(rows.size), (np.zeros(rows.size, int), rows)), (1, values.shape[0])
    )
    return np.asarray((pick @ values).todense(), dtype=np.float64).ravel() / rows.size


def _type_means(
    values, labels: pd.Series, train: np.ndarray, overall: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Each cell's row into a (types + 1) x features table of training means per type (the
    last row: ``overall``, all training cells' mean, for a type with no training cell or
    no label)."""
    cat = pd.Categorical(labels.to_numpy())
    codes = np.asarray(cat.codes, dtype=np.int64)
    n_types = len(cat.categories)
    train_codes = codes[train]
    known = train_codes >= 0
    member = sp.csr_matrix(  # types x all cells: no copy of the training rows
        (np.ones(known.sum()), (train_codes[known], train[known])),
        shape=(n_types, values.shape[0]),
    )
    sizes = np.asarray(member.sum(axis=1)).ravel()
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.asarray((member @ values).todense()) / sizes[:, None]
    table = np.vstack([np.where(sizes[:, None] > 0, means, overall), overall])
    codes = np.where((codes >= 0) & (sizes[np.maximum(codes, 0)] > 0), codes, n_types)
    return codes, table


def baseline_predictions(
    adata: ad.AnnData,
    *,
    rows,
    modality: str,
    label_key: str | None = None,
    layer: str | None = "counts",
) -> dict[str, np.ndarray]:
    """The trivial predictions of ``modality`` for the held-out ``rows``, from the others.

    Parameters
    ----------
    adata
        The cells x features of ``modality`` alone (e.g. ``split_modalities(selected)``'s
        ``atac``), raw counts in ``layers[layer]``.
    rows
        The held-out rows; every other cell is a training cell.
    modality
        ``"atac"`` or ``"gex"``: values as :func:`observed_values`.
    label_key
        ``obs`` column of the cell types, or ``None`` (no cell-type baseline).
    layer
        Layer of raw counts.

    Returns
    -------
    ``{"feature mean": (1, features), "depth x mean": (held-out, features),
    "cell-type mean": (held-out, features)}`` (the last with ``label_key`` only), float64.
    The feature mean is the training cells' mean; depth is the held-out cell's own total
    counts (GEX) or number of open peaks (ATAC) over these features, an oracle.
    """
    values = observed_values(adata, modality=modality, layer=layer)
    rows, train = _check_rows(rows, adata.n_obs)
    mean = _rows_mean(values, train).reshape(1, -1)
    target = values if modality == "atac" else counts_matrix(adata, layer, "depth")
    depth = np.asarray(target[rows].sum(axis=1), dtype=np.float64).reshape(-1, 1)
    out = {"feature mean": mean, "depth x mean": depth * mean}
    if label_key is not None:
        codes, table = _type_means(values, adata.obs[label_key], train, mean.ravel())
        out["cell-type mean"] = table[codes[rows]]
    return out


# ---------------------------------------------------------------------------- the model
def _model_prediction(model, gex, atac, rows, modality, *, layer, batch_key, batch_size):
    """The model's prediction of ``modality`` for ``rows`` from the other modality alone."""
    from .training import reconstruct

    source = _SOURCE[modality]
    inputs = {"gex": None, "atac": None, source: (gex if source == "gex" else atac)[rows]}
    return reconstruct(
        model,
        inputs["gex"],
        inputs["atac"],
        modality=modality,
        from_=source,
        layer=layer,
        batch_key=batch_key,
        batch_size=batch_size,
    )


def _note(predictor: str, modality: str, label_key: str | None, name: str) -> str:
    if predictor == name:
        return f"the model, from {_SOURCE[modality].upper()} alone (the other input zeroed)"
    note = _NOTES[predictor]
    if isinstance(note, dict):
        return note[modality]
    return note.format(what=_DEPTH[modality], key=label_key)


def score(
    adata: ad.AnnData,
    model,
    *,
    rows,
    label_key: str | None = None,
    layer: str | None = "counts",
    batch_key: str | None = "batch",
    batch_size: int = 1024,
    name: str = "mmae",
) -> CrossModalScores:
    """Score ``model``'s ATAC-from-GEX and GEX-from-ATAC predictions on held-out cells.

    Parameters
    ----------
    adata
        Both modalities' selected features (``selected.h5ad``), raw counts in
        ``layers[layer]``; not modified.
    model
        A trained :class:`~mmae_utils.model.MultiModalAutoencoder`, best trained with
        ``modality_dropout`` > 0 so that its code works from one modality alone.
    rows
        The cells it did not train on (:func:`held_out_rows`).
    label_key
        ``obs`` column of the cell types for the cell-type baseline, or ``None``.
    layer, batch_key, batch_size
        As for :func:`~mmae_utils.training.reconstruct`.
    name
        The model's name in the tables.

    Returns
    -------
    A :class:`CrossModalScores`; its ``table`` is indexed by ``(direction, predictor)``.
    """
    rows, _ = _check_rows(rows, adata.n_obs)
    gex, atac = split_modalities(adata, copy=False)
    result = CrossModalScores(rows=rows, table=pd.DataFrame())
    tables = {}
    for modality, part in (("atac", atac), ("gex", gex)):
        observed = observed_values(part[rows], modality=modality, layer=layer).toarray()
        predicted = _model_prediction(
            model,
            gex,
            atac,
            rows,
            modality,
            layer=layer,
            batch_key=batch_key,
            batch_size=batch_size,
        )
        predictions = {name: predicted} | baseline_predictions(
            part, rows=rows, modality=modality, label_key=label_key, layer=layer
        )
        summary, per_feature = score_predictions(
            observed, predictions, modality=modality, features=part.var_names
        )
        summary["note"] = [_note(p, modality, label_key, name) for p in summary.index]
        tables[DIRECTIONS[modality]] = summary
        result.per_feature[modality] = per_feature
        result.observed[modality], result.predicted[modality] = observed, predicted
    result.table = pd.concat(tables, names=["direction", "predictor"])
    return result


def shown_features(
    scores: CrossModalScores, *, n: int = 3, markers=None, name: str = "mmae"
) -> dict[str, list[str]]:
    """A few features worth drawing: ``n`` marker genes and the ``n`` best-predicted peaks.

    Genes: the names of ``markers`` (default :data:`mmae_utils.datasets.MARKERS`, real
    symbols) among the genes, the most variable across the held-out cells first, topped up
    with the most variable other genes. Peaks: the highest AUROC of the model ``name``
    among those open in at least 10 % and closed in at least 10 % of the held-out cells
    (a peak open in one held-out cell has an AUROC near 0 or 1 by chance), else among all.

    Returns
    -------
    ``{"gex": [gene names], "atac": [peak names]}``.
    """
    if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}.")
    markers = set(MARKERS if markers is None else markers)
    genes = scores.per_feature["gex"].index
    variance = pd.Series(scores.observed["gex"].var(axis=0), index=genes)
    is_marker = pd.Series(genes.isin(list(markers)), index=genes)
    order = pd.DataFrame({"marker": is_marker, "variance": variance})
    order = order.sort_values(["marker", "variance"], ascending=False, kind="stable")
    auroc = scores.per_feature["atac"][name]
    open_share = scores.observed["atac"].mean(axis=0)
    balanced = auroc[(open_share >= 0.1) & (open_share <= 0.9)].dropna()
    peaks = (balanced if len(balanced) else auroc.dropna()).sort_values(
        ascending=False, kind="stable"
    )
    return {"gex": [str(g) for g in order.index[:n]], "atac": [str(p) for p in peaks.index[:n]]}
