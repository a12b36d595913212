"""Figures of the data and feature-selection stages (re-exported by :mod:`mmae_utils.plotting`)."""

from __future__ import annotations

import os

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._utils import atomic_path


def save_figure(fig, save: str | os.PathLike | None):
    if save is not None:
        from pathlib import Path

        path = Path(save)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return fig


def _cells_per(adata: ad.AnnData, key: str):
    """One panel: the number of cells of each value of ``obs[key]``, largest on top."""
    counts = adata.obs[key].value_counts()
    fig, ax = plt.subplots(figsize=(7, max(2.5, 0.25 * len(counts) + 1)))
    ax.barh(counts.index.astype(str)[::-1], counts.to_numpy()[::-1], color="grey")
    ax.set_xlabel("cells")
    ax.set_title(f"cells per {key} (n = {adata.n_obs:,})")
    fig.tight_layout()
    return fig


def composition(
    adata: ad.AnnData,
    *,
    label_key: str | None = "cell_type",
    batch_key: str | None = "batch",
    save: str | os.PathLike | None = None,
):
    """Cell-type composition of each batch (stacked bars) and cells per cell type.

    Without cell-type labels (``label_key=None``) it shows the cells per batch, without
    batches (``batch_key=None``) the cells per cell type.

    Parameters
    ----------
    adata
        Any AnnData with ``obs[label_key]`` and ``obs[batch_key]``.
    label_key, batch_key
        ``obs`` columns, or ``None`` (not both).
    save
        Write the figure there (atomically) as well.

    Returns
    -------
    The matplotlib figure: two axes (composition, cells per cell type) with both keys, one
    (cells per value) with one of them.
    """
    keys = [key for key in (label_key, batch_key) if key is not None]
    if not keys:
        raise ValueError("label_key and batch_key are both None: there is nothing to count.")
    for key in keys:
        if key not in adata.obs:
            raise KeyError(f"obs[{key!r}] is missing (pass None if the data have no such column).")
    if len(keys) == 1:
        return save_figure(_cells_per(adata, keys[0]), save)
    table = pd.crosstab(adata.obs[batch_key], adata.obs[label_key], normalize="index")
    counts = adata.obs[label_key].value_counts()
    table = table[counts.index]
    cmap = plt.get_cmap("tab20", max(20, table.shape[1]))
    fig, axes = plt.subplots(1, 2, figsize=(14, 5), gridspec_kw={"width_ratios": [1.4, 1]})
    bottom = np.zeros(len(table))
    for i, col in enumerate(table.columns):
        axes[0].bar(table.index.astype(str), table[col], bottom=bottom, color=cmap(i), label=col)
        bottom += table[col].to_numpy()
    axes[0].set_ylabel("fraction of cells")
    axes[0].set_title(f"{label_key} composition per {batch_key}")
    axes[0].tick_params(axis="x", rotation=90)
    axes[0].legend(ncol=1, fontsize=7, bbox_to_anchor=(1.0, 1.0), loc="upper left")
    axes[1].barh(counts.index.astype(str)[::-1], counts.to_numpy()[::-1], color="grey")
    axes[1].set_xlabel("cells")
    axes[1].set_title(f"cells per {label_key} (n = {adata.n_obs:,})")
    fig.tight_layout()
    return save_figure(fig, save)


def qc(
    adata: ad.AnnData,
    *,
    keys: tuple[str, ...] = (
        "GEX_n_counts",
        "GEX_n_genes",
        "GEX_pct_counts_mt",
        "ATAC_nCount_peaks",
    ),
    group_key: str = "Site",
    save: str | os.PathLike | None = None,
):
    """Distributions of QC columns of ``obs``, one panel per column, split by ``group_key``.

    Returns
    -------
    The matplotlib figure (panels for the columns present; missing ones are skipped).
    """
    keys = [k for k in keys if k in adata.obs]
    if not keys:
        raise KeyError("None of the QC columns is in obs.")
    groups = (
        adata.obs[group_key].astype(str)
        if group_key in adata.obs
        else pd.Series("all", index=adata.obs_names)
    )
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.4), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        values = adata.obs[key].astype(float)
        log = key.endswith(("n_counts", "nCount_peaks"))
        for name in sorted(groups.unique()):
            v = values[groups == name].dropna()
            v = np.log10(v[v > 0]) if log else v
            ax.hist(v, bins=50, histtype="step", label=name, density=True)
        ax.set_xlabel(f"log10 {key}" if log else key)
        ax.set_title(key)
    axes[0, -1].legend(fontsize=8, title=group_key if group_key in adata.obs else None)
    fig.tight_layout()
    return save_figure(fig, save)


def _hvg_columns(var) -> tuple[str, str, str]:
    """``(spread column, its label, ranking score column)`` of the flavor that ran:
    variances for the seurat_v3 flavors, dispersions for seurat / cell_ranger."""
    if "variances_norm" in var and "variances" in var:
        return "variances", "variance of the counts", "variances_norm"
    if "dispersions_norm" in var and "dispersions" in var:
        return "dispersions", "dispersion (log-normalised)", "dispersions_norm"
    raise KeyError(
        "gex.var has neither 'variances'/'variances_norm' (seurat_v3 flavors) nor "
        "'dispersions'/'dispersions_norm' (seurat, cell_ranger): run "
        "mmae_utils.features.select_gex first."
    )


def highly_variable_genes(gex: ad.AnnData, *, save: str | os.PathLike | None = None):
    """Mean-variance plot of :func:`~mmae_utils.features.select_gex`'s result.

    Adapted to the flavor that ran. seurat_v3 flavors: left, variance against mean count
    (log-log); right, the standardized variance (their ranking score) against mean.
    ``"seurat"`` / ``"cell_ranger"``: left, dispersion against mean of the log-normalised
    values; right, the normalised dispersion (their ranking score). Selected genes are
    highlighted.

    Returns
    -------
    The matplotlib figure.
    """
    for col in ("highly_variable", "means"):
        if col not in gex.var:
            raise KeyError(
                f"gex.var[{col!r}] is missing: run mmae_utils.features.select_gex first."
            )
    var = gex.var
    spread, spread_label, score_col = _hvg_columns(var)
    counts = spread == "variances"
    hv = var["highly_variable"].to_numpy(bool)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, y, label in ((axes[0], spread, spread_label), (axes[1], score_col, score_col)):
        ax.scatter(
            var["means"][~hv], var[y][~hv], s=3, c="lightgrey", label="other", rasterized=True
        )
        ax.scatter(
            var["means"][hv],
            var[y][hv],
            s=3,
            c="crimson",
            label=f"selected ({hv.sum():,})",
            rasterized=True,
        )
        if (var["means"] > 0).any():
            ax.set_xscale("log")
        if y == spread and (var[y] > 0).any():
            ax.set_yscale("log")
        ax.set_xlabel("mean count" if counts else "mean (normalised)")
        ax.set_ylabel(label)
    axes[0].legend(markerscale=4)
    axes[0].set_title(f"highly variable genes: {hv.sum():,} of {len(hv):,}")
    axes[1].set_title("ranking score")
    fig.tight_layout()
    return save_figure(fig, save)


def peak_variability(atac: ad.AnnData, *, save: str | os.PathLike | None = None):
    """Share of cells in which each peak is open, and episcanpy's variability score.

    Returns
    -------
    The matplotlib figure: the histogram of ``prop_shared_cells`` and the score against it,
    with the selected peaks highlighted and the cut-off drawn.
    """
    for col in ("prop_shared_cells", "variability_score", "highly_variable"):
        if col not in atac.var:
            raise KeyError(
                f"atac.var[{col!r}] is missing: run mmae_utils.features.select_atac first."
            )
    var = atac.var
    hv = var["highly_variable"].to_numpy(bool)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    bins = np.linspace(0, max(float(var["prop_shared_cells"].max()), 1e-3), 61)
    axes[0].hist(var["prop_shared_cells"], bins=bins, color="grey", label="all peaks")
    axes[0].hist(
        var["prop_shared_cells"][hv], bins=bins, color="tab:blue", label=f"selected ({hv.sum():,})"
    )
    axes[0].set_xlabel("fraction of cells with the peak open")
    axes[0].set_ylabel("peaks")
    axes[0].set_yscale("log")
    axes[0].legend()
    axes[1].scatter(
        var["prop_shared_cells"][~hv],
        var["variability_score"][~hv],
        s=2,
        c="lightgrey",
        rasterized=True,
    )
    axes[1].scatter(
        var["prop_shared_cells"][hv],
        var["variability_score"][hv],
        s=2,
        c="tab:blue",
        rasterized=True,
    )
    if hv.any() and (~hv).any():
        axes[1].axhline(
            var["variability_score"][hv].min(), color="k", lw=0.8, ls="--", label="cut-off"
        )
        axes[1].legend()
    axes[1].set_xlabel("fraction of cells with the peak open")
    axes[1].set_ylabel("variability score 1 - |p - 0.5|")
    axes[0].set_title(f"variable peaks: {hv.sum():,} of {len(hv):,}")
    fig.tight_layout()
    return save_figure(fig, save)


def _box(ax, x, y, w, h, text, color):
    """A rounded box with centred text: one block of the architecture figure."""
    from matplotlib.patches import FancyBboxPatch

    ax.add_patch(FancyBboxPatch((x, y), w, h, boxstyle="round,pad=0.05", fc=color, ec="k", lw=0.8))
    ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=9)


def _arrow(ax, x0, y0, x1, y1, color="k"):
    """An arrow from ``(x0, y0)`` to ``(x1, y1)``: data flowing between two blocks."""
    from matplotlib.patches import FancyArrowPatch

    ax.add_patch(
        FancyArrowPatch(
            (x0, y0), (x1, y1), arrowstyle="-|>", mutation_scale=12, color=color, lw=1.2
        )
    )


def _draw_encoders(ax, model, cfg: dict, hidden: list) -> None:
    """The left column of boxes: both inputs (sizes, and their SVD or scaling) and encoders."""
    hid = " > ".join(str(h) for h in hidden) or "none"
    k = cfg.get("n_components", 100)
    gex_how = {"svd": f"\n-> {k} PCs", "standardize": "\nz-scored"}.get(cfg.get("gex_input"), "")
    atac_how = {"svd": f"\n-> {k} LSI comps", "tfidf": "\nTF-IDF"}.get(cfg.get("atac_input"), "")
    _box(ax, 0.1, 3.6, 1.6, 1.0, f"GEX input\n{model.gex_dim:,} genes{gex_how}", "#cde")
    _box(ax, 0.1, 1.2, 1.6, 1.0, f"ATAC input\n{model.atac_dim:,} peaks{atac_how}", "#edc")
    _box(ax, 2.2, 3.6, 1.8, 1.0, f"GEX encoder\nDense {hid}", "#cde")
    _box(ax, 2.2, 1.2, 1.8, 1.0, f"ATAC encoder\nDense {hid}", "#edc")


def _draw_joint_code(ax, g_lat: int | None, a_lat: int | None, latent_dim: int) -> None:
    """The two halves of the code (or, for a shared code, one block reading both encoders),
    framed in purple as the joint code z."""
    from matplotlib.patches import FancyBboxPatch

    if g_lat is None:  # fusion="shared"
        _box(ax, 4.6, 1.9, 1.4, 2.1, "shared Dense\nof both\nencoders", "#dcd")
        g_lat, a_lat = latent_dim, 0
    else:
        _box(ax, 4.6, 3.1, 1.4, 0.9, f"z_gex ({g_lat})", "#cde")
        _box(ax, 4.6, 1.9, 1.4, 0.9, f"z_atac ({a_lat})", "#edc")
    ax.add_patch(
        FancyBboxPatch(
            (4.45, 1.7),
            1.7,
            2.5,
            boxstyle="round,pad=0.05",
            fc="none",
            ec="purple",
            lw=1.5,
            ls="--",
        )
    )
    ax.text(5.3, 4.45, f"joint code z ({g_lat + a_lat})", ha="center", color="purple", fontsize=10)


def _output_labels(config) -> tuple[str, str]:
    """The text of the two output boxes: what each decoder outputs, under which loss."""
    gex_space = {"log": "log-norm.", "standardize": "z-scores", "svd": "PCs"}[config.gex_input]
    gex = (
        "GEX counts\nNB (softmax x lib.)"
        if config.likelihoods["gex"] == "nb"
        else f"GEX output\nMSE ({gex_space})"
    )
    atac_space = {"tfidf": "TF-IDF", "svd": "LSI comps"}.get(config.atac_input, "")
    atac = (
        "ATAC logits\nBCE (binary)"
        if config.likelihoods["atac"] == "bernoulli"
        else f"ATAC output\nMSE ({atac_space})"
    )
    if config.output_activation == "relu":  # the seed notebook's outputs
        gex = gex.replace("GEX output", "GEX ReLU")
        atac = "ATAC ReLU as p\nBCE (clipped)" if "BCE" in atac else atac.replace("output", "ReLU")
    return gex, atac


def _draw_decoders(ax, hidden: list, config) -> None:
    """The right column of boxes: decoders (the encoders' layers reversed) and outputs."""
    hid = " > ".join(str(h) for h in hidden[::-1]) or "none"
    batch = "\n+ batch one-hot" if config.batch_conditioning else ""
    _box(ax, 7.0, 3.6, 1.8, 1.0, f"GEX decoder\nDense {hid}{batch}", "#cde")
    _box(ax, 7.0, 1.2, 1.8, 1.0, f"ATAC decoder\nDense {hid}{batch}", "#edc")
    gex, atac = _output_labels(config)
    _box(ax, 9.3, 3.6, 1.6, 1.0, gex, "#cde")
    _box(ax, 9.3, 1.2, 1.6, 1.0, atac, "#edc")


def _draw_arrows(ax, joint: bool) -> None:
    """The data flow between the blocks; from the code, purple arrows from both halves to both
    decoders when they read the joint code, else one black arrow per modality."""
    _arrow(ax, 1.75, 4.1, 2.15, 4.1)
    _arrow(ax, 1.75, 1.7, 2.15, 1.7)
    _arrow(ax, 4.05, 4.1, 4.55, 3.55)
    _arrow(ax, 4.05, 1.7, 4.55, 2.35)
    if joint:
        for y_src in (3.55, 2.35):
            _arrow(ax, 6.05, y_src, 6.95, 4.1, "purple")
            _arrow(ax, 6.05, y_src, 6.95, 1.7, "purple")
    else:
        _arrow(ax, 6.05, 3.55, 6.95, 4.1)
        _arrow(ax, 6.05, 2.35, 6.95, 1.7)
    _arrow(ax, 8.85, 4.1, 9.25, 4.1)
    _arrow(ax, 8.85, 1.7, 9.25, 1.7)


def _draw_integration(ax, config) -> None:
    """Below the code, for ``integration="harmony"``: the step after training that makes
    the embedding, the code of all cells corrected for their batch by Harmony."""
    if config.integration != "harmony":
        return
    _box(ax, 4.5, 0.15, 1.6, 0.95, "Harmony (batch)\nafter training\n= embedding", "#eee")
    _arrow(ax, 5.3, 1.65, 5.3, 1.15, "purple")


def architecture(model, *, save: str | os.PathLike | None = None):
    """Figure 4 of the survey drawn for ``model``: encoders, the joint code, the decoders.

    Arrows show which part of the code each decoder reads: with ``decoders="joint"`` both
    decoders read the whole joint code; with ``"own"`` each reads only its modality's part.
    A shared code (``fusion="shared"``) is one block; the outputs name their losses; with
    ``integration="harmony"`` a box under the code says that Harmony corrects it.

    Returns
    -------
    The matplotlib figure.
    """
    cfg = model.get_config()  # the options as a plain dict
    hidden = list(cfg.get("hidden", ()))
    g_lat, a_lat = model.gex_latent_dim, model.atac_latent_dim
    joint = cfg.get("decoders", "joint") == "joint"
    fig, ax = plt.subplots(figsize=(11, 4.6))
    ax.set_xlim(0, 11)
    ax.set_ylim(0, 6)
    ax.axis("off")
    _draw_encoders(ax, model, cfg, hidden)
    _draw_joint_code(ax, g_lat, a_lat, model.latent_dim)
    _draw_decoders(ax, hidden, model.config)
    _draw_arrows(ax, joint)
    _draw_integration(ax, model.config)
    title = (
        "both decoders read the whole joint code (Figure 4)"
        if joint
        else "each decoder reads only its own half (original notebook)"
    )
    fusion = "fusion='shared', " if g_lat is None else ""
    ax.set_title(f"{fusion}decoders={cfg.get('decoders')!r}: {title}", fontsize=11)
    return save_figure(fig, save)
