"""Figures: data and feature selection, embeddings (UMAPs), metrics, training history.

Every function returns the matplotlib figure (drawn with ``pyplot``, so notebooks show it)
and, given ``save=PATH``, also writes it there atomically (temporary file + rename; the
format follows the suffix).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._plotting_data import (
    architecture,
    composition,
    highly_variable_genes,
    peak_variability,
    qc,
    save_figure,
)
from .neighbors import resolve_embeddings, umap_coords, umap_key

__all__ = [
    "DISTINCT_COLORS",
    "architecture",
    "composition",
    "crossmodal",
    "highly_variable_genes",
    "loss_curves",
    "marker_dotplot",
    "metrics_heatmap",
    "peak_variability",
    "qc",
    "seed_scores",
    "umap_key",
    "umaps",
]

#: Display names of :func:`~mmae_utils.evaluation.evaluate`'s columns.
METRIC_LABELS = {
    "NMI": "NMI",
    "ARI": "ARI\n(not in overall)",
    "cell_type_ASW": "cell type\nASW",
    "cell_cycle_conservation": "cell cycle\nconservation",
    "trajectory_conservation": "trajectory\nconservation",
    "batch_ASW": "batch\nASW",
    "graph_connectivity": "graph\nconnectivity",
    "overall": "overall",
}


# --------------------------------------------------------------------------------------
# UMAPs
# --------------------------------------------------------------------------------------


#: Up to 30 categories get colours chosen to be told apart: Kelly's 22 colours of maximum
#: contrast (white left out, it vanishes on the page), then 9 distinct others. Scanpy's
#: 28-colour palette has near-duplicates at 22 cell types.
DISTINCT_COLORS = (
    "#222222", "#f3c300", "#875692", "#f38400", "#a1caf1", "#be0032", "#c2b280",
    "#848482", "#008856", "#e68fac", "#0067a5", "#f99379", "#604e97", "#f6a600",
    "#b3446c", "#dcd300", "#882d17", "#8db600", "#654522", "#e25822", "#2b3d26",
    "#17becf", "#ff00ff", "#00ffcc", "#7f7fff", "#99004c", "#4c9900", "#ffb3d9",
    "#003333", "#cc99ff",
)  # fmt: skip


def _palette(adata: ad.AnnData, key: str, categories: Sequence) -> list:
    stored = adata.uns.get(f"{key}_colors")
    if stored is not None and len(stored) == len(categories):
        return list(stored)
    n = len(categories)
    if n <= len(DISTINCT_COLORS):
        return list(DISTINCT_COLORS[:n])
    from scanpy.plotting import palettes

    return [palettes.default_102[i % 102] for i in range(n)]


def _label_on_data(ax, coords, cat: pd.Categorical) -> None:
    """Each category's name at the median of its cells, outlined in white to stay legible."""
    import matplotlib.patheffects as pe

    for code, name in enumerate(cat.categories):
        where = cat.codes == code
        if where.sum() == 0:
            continue
        x, y = np.median(coords[where], axis=0)
        ax.text(
            x, y, str(name), fontsize=6.5, ha="center", va="center",
            path_effects=[pe.withStroke(linewidth=2, foreground="white")],
        )  # fmt: skip


def _scatter(ax, coords, values: pd.Series, adata, key, *, order, size, legend, on_data=False):
    if isinstance(values.dtype, pd.CategoricalDtype) or not pd.api.types.is_numeric_dtype(values):
        cat = pd.Categorical(values)
        cat = cat.remove_unused_categories()
        colors = np.array(_palette(adata, key, cat.categories), dtype=object)
        codes = cat.codes[order]
        c = np.where(codes >= 0, colors[np.maximum(codes, 0)], "lightgrey")
        xy = coords[order]
        ax.scatter(xy[:, 0], xy[:, 1], c=list(c), s=size, linewidths=0, rasterized=True)
        if on_data:
            _label_on_data(ax, coords, cat)
        if legend:
            handles = [
                plt.Line2D([], [], marker="o", ls="", color=colors[i], label=str(name))
                for i, name in enumerate(cat.categories)
            ]
            ax.legend(
                handles=handles,
                loc="center left",
                bbox_to_anchor=(1.0, 0.5),
                frameon=False,
                fontsize=7,
                ncol=1 if len(handles) <= 14 else 2,
                handletextpad=0.1,
                columnspacing=0.6,
            )
    else:
        coords = coords[order]
        v = values.to_numpy(dtype=float)[order]
        known = np.isfinite(v)
        ax.scatter(*coords[~known].T, c="lightgrey", s=size, linewidths=0, rasterized=True)
        sc_ = ax.scatter(
            *coords[known].T, c=v[known], cmap="viridis", s=size, linewidths=0, rasterized=True
        )
        if legend:
            ax.figure.colorbar(sc_, ax=ax, shrink=0.7, label=key)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("UMAP1", fontsize=8)
    ax.set_ylabel("UMAP2", fontsize=8)


def umaps(
    adata: ad.AnnData,
    embeddings: Mapping[str, str | np.ndarray] | Sequence[str] | str,
    *,
    color: Sequence[str] | str = ("cell_type", "batch"),
    n_neighbors: int = 15,
    seed: int = 0,
    recompute: bool = False,
    store: bool = True,
    point_size: float | None = None,
    on_data: Sequence[str] | None = None,
    save: str | os.PathLike | None = None,
):
    """UMAP of every embedding: one row per method, one column per ``obs`` colouring.

    The UMAP of an embedding is computed on its kNN graph, reusing the graph
    :func:`~mmae_utils.evaluation.evaluate` stored (same embedding content, ``n_neighbors``
    and ``seed``) and otherwise computing it (``sc.pp.neighbors``); the coordinates are
    stored and reused on the next call unless the embedding changed.

    Parameters
    ----------
    adata
        AnnData with the embeddings in ``obsm`` and the ``color`` columns in ``obs``.
    embeddings
        ``{display name: obsm key or array}`` or a list of obsm keys (rows, in order).
    color
        ``obs`` columns to colour by (columns of the figure). Categorical columns get a
        legend beside every panel (up to 30 categories in :data:`DISTINCT_COLORS`),
        numeric ones a colour bar; NaN is light grey. A name with ``{method}`` is each
        row's own column, e.g. ``"leiden_{method}"`` for the clusters of
        :func:`mmae_utils.evaluation.cluster`.
    n_neighbors, seed
        kNN graph size and random state (of the graph and of UMAP).
    recompute
        Ignore stored UMAP coordinates.
    store
        Store the coordinates (only for embeddings given as obsm keys, ``adata`` not a view).
    point_size
        Marker size (default ``120000 / n_cells``, scanpy's, at most 20).
    on_data
        Categorical columns whose category names are also written on the data, at the
        median of their cells (default: the first column of ``color``; ``()`` for none).
    save
        Also write the figure there (atomically).

    Returns
    -------
    The figure (``len(embeddings)`` x ``len(color)`` axes, titled ``"{method}: {column}"``,
    the column as given, without ``_{method}``).
    With ``store=True``, for each embedding given as obsm key ``k``:
    ``adata.obsm[umap_key(k)]`` (cells x 2) and ``adata.uns["mmae_umap"][k]`` (embedding
    fingerprint, ``n_neighbors``, ``seed``).
    """

    color = [color] if isinstance(color, str) else list(color)
    if not color:
        raise ValueError("color must name at least one obs column.")
    embs = resolve_embeddings(adata, embeddings)
    for key in dict.fromkeys(c.format(method=name) for name in embs for c in color):
        if key not in adata.obs:
            raise KeyError(f"obs[{key!r}] is missing (columns: {list(adata.obs.columns)}).")
    size = point_size if point_size is not None else min(20.0, 120000 / max(adata.n_obs, 1))
    order = np.random.default_rng(seed).permutation(adata.n_obs)  # no batch drawn last on top
    on_data = color[:1] if on_data is None else list(on_data)
    n_rows, n_cols = len(embs), len(color)
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(5.2 * n_cols, 3.8 * n_rows), squeeze=False, layout="constrained"
    )
    for i, (name, (obsm_key, x)) in enumerate(embs.items()):
        coords = umap_coords(
            adata, obsm_key, x, n_neighbors=n_neighbors, seed=seed, recompute=recompute, store=store
        )
        for j, column in enumerate(color):
            ax = axes[i, j]
            key = column.format(method=name)
            options = {"order": order, "size": size, "legend": True, "on_data": column in on_data}
            _scatter(ax, coords, adata.obs[key], adata, key, **options)
            ax.set_title(f"{name}: {column.replace('_{method}', '')}", fontsize=10)
    return save_figure(fig, save)


def _crossmodal_pair(axes, coords, rows, observed, predicted, titles, size) -> None:
    """Observed and predicted values of one feature, each on its own colour scale: every
    cell grey, the held-out ``rows`` coloured on top (highest values last)."""
    for ax, values, title in zip(axes, (observed, predicted), titles, strict=True):
        ax.scatter(*coords.T, c="0.88", s=size / 3, linewidths=0, rasterized=True)
        top = np.argsort(values, kind="stable")  # the highest values drawn last, on top
        xy = coords[rows][top]
        ax.scatter(*xy.T, c=values[top], cmap="viridis", s=size, linewidths=0, rasterized=True)
        ax.set_title(title, fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])


def crossmodal(
    adata: ad.AnnData,
    scores,
    *,
    features: Mapping[str, Sequence[str]] | None = None,
    basis: str = "X_mmae",
    n_neighbors: int = 15,
    seed: int = 0,
    name: str = "mmae",
    save: str | os.PathLike | None = None,
):
    """Observed against predicted values of a few genes and peaks, on the UMAP of an embedding.

    One row per direction (GEX from ATAC, ATAC from GEX), two panels per feature side by
    side: its observed values (log-normalised counts; open / closed) and the model's
    prediction from the other modality alone, each on its own colour scale (viridis, low to
    high). Only the held-out cells that were scored are coloured; the others are grey.

    Parameters
    ----------
    adata
        The cells scored, with ``obsm[basis]``; the UMAP is cached there as
        :func:`umaps` caches it (:func:`~mmae_utils.neighbors.umap_coords`).
    scores
        :func:`mmae_utils.crossmodal.score`'s result.
    features
        ``{"gex": genes, "atac": peaks}`` (default
        :func:`mmae_utils.crossmodal.shown_features`: 3 marker genes, the 3 best peaks).
    basis, n_neighbors, seed
        The embedding and its UMAP's kNN graph size and seed.
    name
        The model's name in ``scores``.
    save
        Also write the figure there (atomically).

    Returns
    -------
    The figure (2 rows of ``2 x`` features panels, titled by feature and score).
    """
    from .crossmodal import DIRECTIONS, shown_features

    features = shown_features(scores, name=name) if features is None else features
    ((key, x),) = resolve_embeddings(adata, basis).values()
    coords = umap_coords(
        adata, key, x, n_neighbors=n_neighbors, seed=seed, recompute=False, store=True
    )
    n_cols = 2 * max(len(features["gex"]), len(features["atac"]))
    fig, axes = plt.subplots(
        2, n_cols, figsize=(2.3 * n_cols, 5.0), squeeze=False, layout="constrained"
    )
    size = min(20.0, 40000 / max(len(scores.rows), 1))
    for i, modality in enumerate(("gex", "atac")):
        per_feature = scores.per_feature[modality]
        for ax in axes[i, 2 * len(features[modality]) :]:
            ax.set_visible(False)
        for j, feature in enumerate(features[modality]):
            col = per_feature.index.get_loc(feature)
            value = per_feature[name].iloc[col]
            metric = "r" if modality == "gex" else "AUROC"
            titles = (f"{feature}\nobserved", f"predicted\n{metric} {value:.2f}")
            observed, predicted = scores.observed[modality], scores.predicted[modality]
            pair = axes[i, 2 * j : 2 * j + 2]
            _crossmodal_pair(
                pair, coords, scores.rows, observed[:, col], predicted[:, col], titles, size
            )
        axes[i, 0].set_ylabel(f"{DIRECTIONS[modality]}\n(UMAP of {basis})", fontsize=9)
    fig.suptitle(f"{name}: held-out cells, observed and predicted from the other modality alone")
    return save_figure(fig, save)


# --------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------


def _heatmap_cells(ax, values: np.ndarray, x_pos: np.ndarray, cmap: str):
    """Draw each column as its own image at ``x_pos`` (so ``overall`` can stand apart), NaN
    grey, on the fixed scale [0, 1]; return the last image, for the colour bar."""
    n_rows, n_cols = values.shape
    cm = plt.get_cmap(cmap).with_extremes(bad="lightgrey")
    mesh = None
    for j in range(n_cols):
        col = np.ma.masked_invalid(values[:, j : j + 1])
        mesh = ax.imshow(
            col,
            cmap=cm,
            vmin=0,
            vmax=1,
            aspect="auto",
            extent=(x_pos[j] - 0.5, x_pos[j] + 0.5, n_rows - 0.5, -0.5),
        )
    return mesh


def _heatmap_labels(ax, values: np.ndarray, x_pos: np.ndarray, n_metrics, has_overall: bool):
    """Write every value in its cell ("n/a" for NaN); ``overall`` in bold, with "(k/6)" when
    it averaged fewer than six metrics."""
    n_rows, n_cols = values.shape
    for i in range(n_rows):
        for j in range(n_cols):
            v = values[i, j]
            text = "n/a" if not np.isfinite(v) else f"{v:.2f}"
            bold = has_overall and j == n_cols - 1
            if bold and n_metrics is not None and np.isfinite(v) and int(n_metrics.iloc[i]) < 6:
                text += f" ({int(n_metrics.iloc[i])}/6)"
            dark = np.isfinite(v) and v < 0.55
            ax.text(
                x_pos[j],
                i,
                text,
                ha="center",
                va="center",
                fontsize=9,
                color="white" if dark else "black",
                fontweight="bold" if bold else "normal",
            )


def _heatmap_axes(ax, x_pos: np.ndarray, columns: list[str], index: pd.Index, has_overall: bool):
    """Limits, ticks and frame of the heatmap: metric labels below (``overall`` bold), methods
    on the left, no spines or tick marks."""
    n_rows = len(index)
    ax.set_xlim(x_pos[0] - 0.5, x_pos[-1] + 0.5)
    ax.set_ylim(n_rows - 0.5, -0.5)
    ax.set_xticks(x_pos, [METRIC_LABELS.get(c, c) for c in columns], fontsize=8)
    ax.set_yticks(np.arange(n_rows), [str(m) for m in index])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)
    if has_overall:
        ax.get_xticklabels()[-1].set_fontweight("bold")


def metrics_heatmap(
    df: pd.DataFrame,
    *,
    columns: Sequence[str] | None = None,
    sort: bool = True,
    cmap: str = "viridis",
    title: str | None = "NeurIPS 2021 joint-embedding metrics",
    save: str | os.PathLike | None = None,
):
    """Methods x metrics heatmap of :func:`~mmae_utils.evaluation.evaluate`'s table.

    Every cell is annotated with its value (``"n/a"`` for NaN, drawn grey); the ``overall``
    column is set apart by a gap and bold labels, and says how many metrics it averaged
    when fewer than six (``"0.62 (5/6)"``). The colour scale is fixed to [0, 1].

    Parameters
    ----------
    df
        :func:`~mmae_utils.evaluation.evaluate`'s result (or any methods x metrics table
        with values in [0, 1]; an ``n_metrics`` column is used for the overall label).
    columns
        Columns to show (default: those of ``evaluation.COLUMNS`` present, without
        ``n_metrics``, ``overall`` last).
    sort
        Order methods by ``overall``, best first.
    cmap
        Matplotlib colour map.
    title
        Figure title.
    save
        Also write the figure there (atomically).

    Returns
    -------
    The figure; its first axes holds the heatmap (rows = methods, columns = metrics).
    """
    from .evaluation import COLUMNS

    if columns is None:
        columns = [c for c in COLUMNS if c in df.columns and c not in ("n_metrics", "overall")]
        if "overall" in df.columns:
            columns.append("overall")
    else:
        columns = list(columns)
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise KeyError(f"Columns {missing} are not in the table.")
    if not columns or df.empty:
        raise ValueError("Nothing to draw: the table has no rows or no metric columns.")
    table = df.copy()
    if sort and "overall" in table.columns:
        table = table.sort_values("overall", ascending=False, na_position="last", kind="stable")
    values = table[columns].to_numpy(dtype=float)
    n_rows, n_cols = values.shape
    has_overall = columns[-1] == "overall"
    # a one-column gap before "overall"
    x_pos = np.arange(n_cols, dtype=float)
    if has_overall and n_cols > 1:
        x_pos[-1] += 0.35
    fig, ax = plt.subplots(figsize=(1.15 * n_cols + 3.2, 0.55 * n_rows + 1.9), layout="constrained")
    mesh = _heatmap_cells(ax, values, x_pos, cmap)
    n_metrics = table["n_metrics"] if "n_metrics" in table.columns else None
    _heatmap_labels(ax, values, x_pos, n_metrics, has_overall)
    _heatmap_axes(ax, x_pos, columns, table.index, has_overall)
    fig.colorbar(mesh, ax=ax, shrink=0.8, label="score (higher is better)")
    if title:
        ax.set_title(title)
    return save_figure(fig, save)


# --------------------------------------------------------------------------------------
# Training history
# --------------------------------------------------------------------------------------

_LOSS_PANELS = (
    ("loss", "total (weighted sum)"),
    ("gex_loss", "GEX (mean squared error)"),
    ("atac_loss", "ATAC (binary cross-entropy)"),
    ("batch_loss", "batch classifier (cross-entropy)"),
)


def _history_frame(history) -> pd.DataFrame:
    if hasattr(history, "history") and not isinstance(history, pd.DataFrame):
        history = history.history  # keras.callbacks.History
    if isinstance(history, Mapping):
        history = pd.DataFrame({k: list(v) for k, v in history.items()})
    if not isinstance(history, pd.DataFrame):
        raise TypeError(
            "history must be a DataFrame, a dict of lists or a keras History, "
            f"got {type(history).__name__}."
        )
    return history


def loss_curves(
    history,
    *,
    model=None,
    log_scale: bool = False,
    save: str | os.PathLike | None = None,
):
    """Training curves per modality: train vs. validation loss per epoch.

    One panel per loss present among ``loss`` (total), ``gex_loss``, ``atac_loss`` and
    ``batch_loss`` (the adversarial batch classifier's, when the model has one), each
    with the training curve and, when the ``val_`` column exists, the validation curve.
    With ``val_loss``, a dotted line marks the epoch of the lowest validation loss on every
    panel.

    Parameters
    ----------
    history
        :func:`~mmae_utils.training.train`'s history (a DataFrame with columns ``loss,
        gex_loss, atac_loss, val_loss, val_gex_loss, val_atac_loss``, one row per epoch),
        a dict of lists or a ``keras.callbacks.History``.
    model
        The model trained, to name each loss in the titles as its config does
        (:meth:`~mmae_utils.config.ModelConfig.loss_label`: e.g. ATAC under mean squared
        error for SVD or TF-IDF inputs, GEX under the negative binomial); without it, the
        ``"seed"`` preset's losses are named.
    log_scale
        Logarithmic loss axis.
    save
        Also write the figure there (atomically).

    Returns
    -------
    The figure, one axes per panel (titled as the loss), epochs from 1 on the x axis.
    """
    h = _history_frame(history)
    titles = dict(_LOSS_PANELS)
    if model is not None:
        titles["gex_loss"] = f"GEX ({model.config.loss_label('gex', long=True)})"
        titles["atac_loss"] = f"ATAC ({model.config.loss_label('atac', long=True)})"
    panels = [(col, titles[col]) for col, _ in _LOSS_PANELS if col in h.columns]
    if not panels or len(h) == 0:
        raise ValueError(
            "history has no epochs or none of the columns 'loss', 'gex_loss', 'atac_loss' "
            f"(columns: {list(h.columns)})."
        )
    epochs = np.arange(1, len(h) + 1)
    best = None
    if "val_loss" in h.columns and h["val_loss"].notna().any():
        best = int(np.nanargmin(h["val_loss"].to_numpy(dtype=float))) + 1
    fig, axes = plt.subplots(
        1, len(panels), figsize=(4.4 * len(panels), 3.4), squeeze=False, layout="constrained"
    )
    for ax, (col, title) in zip(axes[0], panels, strict=True):
        ax.plot(epochs, h[col].to_numpy(dtype=float), marker=".", label="train")
        if f"val_{col}" in h.columns:
            ax.plot(epochs, h[f"val_{col}"].to_numpy(dtype=float), marker=".", label="validation")
        if best is not None:
            ax.axvline(best, color="grey", ls=":", lw=1, label=f"best epoch ({best})")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("loss")
        if log_scale:
            ax.set_yscale("log")
        ax.legend(fontsize=8)
    return save_figure(fig, save)


def _dots_and_mean(ax, y: float, values, mean: float, sd: float, color, rng) -> None:
    """One method's row of a seed panel: a jittered dot per seed at height ``y`` and, just
    above, the mean with ± sd (no bar when the sd is not finite)."""
    ax.scatter(values, y + rng.uniform(-0.12, 0.12, len(values)), s=16, color=color)
    ax.errorbar(
        mean,
        y + 0.32,
        xerr=sd if np.isfinite(sd) else None,
        fmt="D",
        ms=4,
        color="black",
        capsize=3,
        lw=1,
    )


def _score_panel(ax, table, summary, score: str, order: list, colors: dict, rng) -> None:
    """The panel of one score: every method's seeds and mean ± sd, methods on the y axis."""
    for y, method in enumerate(order):
        values = table.xs(method, level="method")[score].to_numpy(dtype=float)
        color = colors.get(method, "0.55")
        mean, sd = summary.loc[method, (score, "mean")], summary.loc[method, (score, "sd")]
        _dots_and_mean(ax, y, values, mean, sd, color, rng)
    ax.set_yticks(range(len(order)), order)
    ax.set_title(score)
    ax.grid(axis="x", alpha=0.3)


def _difference_panel_axes(ax, score: str, reference: str) -> None:
    """Zero line, ticks and title of the panel of differences to ``reference``."""
    ax.axvline(0, color="black", lw=0.8)
    ax.xaxis.set_major_locator(plt.MaxNLocator(4))
    ax.set_title(f"{score} minus {reference} (95 % CI)")
    ax.grid(axis="x", alpha=0.3)


def seed_scores(
    table: pd.DataFrame,
    *,
    scores: Sequence[str] = ("overall", "NMI", "ARI"),
    highlight: Sequence[str] = ("mmae", "pca_concat"),
    reference: str | None = "pca_concat",
    save: str | os.PathLike | None = None,
):
    """Scores of every method over seeds: one dot per seed, the mean ± sd beside them.

    With a ``reference`` method in the table, a last panel zooms in on what matters: each
    method's ``scores[0]`` minus the reference's, seed by seed (0 marked), with the mean
    and the 95 % t interval that :func:`~mmae_utils.comparison.verdict` judges by.

    Parameters
    ----------
    table
        Scores indexed by ``(seed, method)`` (:func:`mmae_utils.report.replicate`).
    scores
        Columns to draw, one panel each.
    highlight
        Methods drawn in colour (the others grey).
    reference
        Method the last panel subtracts (``None``: no such panel).
    save
        Also write the figure there (atomically).

    Returns
    -------
    The figure, one axes per score (titled as the score; a score NaN everywhere, e.g. NMI
    without labels, gets none); methods on the y axis, ordered
    by their mean of the first score, best on top.
    """
    from .evaluation import aggregate_seeds

    summary = aggregate_seeds(table)
    missing = [s for s in scores if s not in table.columns]
    if missing:
        raise KeyError(f"Scores {missing} are not in the table.")
    scores = [s for s in scores if table[s].notna().any()] or list(scores[:1])  # drop NaN-only
    order = summary[(scores[0], "mean")].sort_values(ascending=True).index.tolist()
    n_seeds = int(summary[("n_seeds", "")].max())
    colors = dict(zip(highlight, plt.get_cmap("tab10").colors, strict=False))
    methods = set(table.index.get_level_values("method"))
    diff_panel = reference is not None and reference in methods
    fig, axes = plt.subplots(
        1,
        len(scores) + diff_panel,
        figsize=(3.6 * (len(scores) + diff_panel), 0.45 * len(order) + 1.6),
        squeeze=False,
        sharey=True,
        layout="constrained",
    )
    rng = np.random.default_rng(0)
    for ax, score in zip(axes[0], scores, strict=False):
        _score_panel(ax, table, summary, score, order, colors, rng)
    if diff_panel:
        from .evaluation import paired_differences, seed_difference

        ax = axes[0][-1]
        for y, method in enumerate(order):
            if method == reference or method == "random":
                continue
            d = seed_difference(table, method=method, reference=reference).loc[scores[0]]
            per_seed = paired_differences(table, method=method, reference=reference)
            per_seed = per_seed[scores[0]].dropna()
            color = colors.get(method, "0.55")
            half = d["ci_high"] - d["mean"]  # the verdict's 95 % t interval (NaN: one seed)
            _dots_and_mean(ax, y, per_seed, d["mean"], half, color, rng)
        _difference_panel_axes(ax, scores[0], reference)
    title = f"Scores over {n_seeds} seed{'s' if n_seeds != 1 else ''} (dots), mean ± sd"
    if diff_panel:
        title += "; differences: mean and 95 % CI, paired by seed"
    fig.suptitle(title)
    return save_figure(fig, save)


# --------------------------------------------------------------------------------------
# Downstream: marker genes
# --------------------------------------------------------------------------------------


def marker_dotplot(
    gex: ad.AnnData,
    markers: pd.DataFrame,
    *,
    groupby: pd.Series,
    layer: str | None = "counts",
    save: str | os.PathLike | None = None,
):
    """Dotplot of the marker genes of each group (:func:`mmae_utils.downstream.marker_genes`):
    one row per group, its markers in columns; dot size is the share of the group's cells
    with a count, colour the mean log-normalised expression, scaled per gene.

    Returns
    -------
    The figure.
    """
    import scanpy as sc

    from .downstream import log_normalized_view

    lognorm = log_normalized_view(gex, groupby, layer=layer)
    genes = list(dict.fromkeys(markers.sort_values(["group", "rank"])["gene"]))
    dot = sc.pl.dotplot(
        lognorm, genes, groupby="group", standard_scale="var", show=False, return_fig=True
    )
    dot.make_figure()
    dot.get_axes()["mainplot_ax"].set_title(
        "Top marker genes of each cluster (rank_genes_groups)", fontsize=10
    )
    return save_figure(dot.fig, save)
