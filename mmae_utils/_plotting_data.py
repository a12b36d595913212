"""Figures of the data and feature-selection stages (re-exported by :mod:`mmae_utils.plotting`)."""

from __future__ import annotations

import os

import anndata as ad
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from ._utils import atomic_path


def _save(fig, save: str | os.PathLike | None):
    if save is not None:
        from pathlib import Path

        path = Path(save)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=120, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return fig


def composition(
    adata: ad.AnnData,
    *,
    label_key: str = "cell_type",
    batch_key: str = "batch",
    save: str | os.PathLike | None = None,
):
    """Cell-type composition of each batch (stacked bars) and cells per cell type.

    Parameters
    ----------
    adata
        Any AnnData with ``obs[label_key]`` and ``obs[batch_key]``.
    label_key, batch_key
        ``obs`` columns.
    save
        Write the figure there (atomically) as well.

    Returns
    -------
    The matplotlib figure.
    """
    for key in (label_key, batch_key):
        if key not in adata.obs:
            raise KeyError(f"obs[{key!r}] is missing.")
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
    return _save(fig, save)


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
    return _save(fig, save)


def highly_variable_genes(gex: ad.AnnData, *, save: str | os.PathLike | None = None):
    """Mean-variance plot of :func:`~mmae_utils.features.select_gex`'s result.

    Left: variance against mean (log-log), selected genes highlighted. Right: standardized
    variance (seurat_v3's ranking score) against mean.

    Returns
    -------
    The matplotlib figure.
    """
    for col in ("highly_variable", "means", "variances"):
        if col not in gex.var:
            raise KeyError(
                f"gex.var[{col!r}] is missing: run mmae_utils.features.select_gex first."
            )
    var = gex.var
    hv = var["highly_variable"].to_numpy(bool)
    score_col = "variances_norm" if "variances_norm" in var else "dispersions_norm"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, y, label in ((axes[0], "variances", "variance"), (axes[1], score_col, f"{score_col}")):
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
        ax.set_xscale("log")
        if y == "variances":
            ax.set_yscale("log")
        ax.set_xlabel("mean count")
        ax.set_ylabel(label)
    axes[0].legend(markerscale=4)
    axes[0].set_title(f"highly variable genes: {hv.sum():,} of {len(hv):,}")
    axes[1].set_title("ranking score")
    fig.tight_layout()
    return _save(fig, save)


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
    return _save(fig, save)
