"""Using an embedding downstream: the marker genes of the clusters an embedding finds.

Notebook 05 closes with what a user does next with ``obsm["X_mmae"]``: a kNN graph and
Leiden clusters on it (:func:`mmae_utils.evaluation.cluster`), then each cluster's marker
genes (:func:`marker_genes`, scanpy's ``rank_genes_groups`` on the log-normalised counts)
and a dotplot of them (:func:`mmae_utils.plotting.marker_dotplot`).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

from . import pp

__all__ = ["log_normalized_view", "marker_genes"]


def log_normalized_view(
    gex: ad.AnnData, groups: pd.Series, *, layer: str | None = "counts"
) -> ad.AnnData:
    """A new AnnData of ``gex``'s log-normalised counts (sparse), with ``obs["group"]``.

    ``groups`` (one label per cell, aligned by cell name) becomes a categorical column;
    ``gex`` is not modified.
    """
    groups = pd.Series(groups)
    if len(groups) != gex.n_obs:
        raise ValueError(f"groups has {len(groups):,} labels for {gex.n_obs:,} cells.")
    if not groups.index.equals(gex.obs_names):
        groups = groups.reindex(gex.obs_names)
    if groups.isna().any():
        raise ValueError("groups must give a label to every cell of gex (by cell name).")
    obs = pd.DataFrame({"group": pd.Categorical(groups.astype(str))}, index=gex.obs_names)
    return ad.AnnData(X=pp.log_normalized(gex, layer=layer), obs=obs, var=gex.var[[]].copy())


def marker_genes(
    gex: ad.AnnData,
    *,
    groupby: pd.Series,
    n_genes: int = 3,
    method: str = "wilcoxon",
    layer: str | None = "counts",
    seed: int = 0,
) -> pd.DataFrame:
    """The top marker genes of each group (cluster): ``sc.tl.rank_genes_groups``, each group
    against all other cells, on the log-normalised counts.

    Parameters
    ----------
    gex
        Genes (e.g. the selected ones), raw counts in ``layers[layer]``; not modified.
    groupby
        The group of every cell, e.g. ``selected.obs["leiden_mmae"]``.
    n_genes
        Markers kept per group (at least 1).
    method
        ``rank_genes_groups``' test (``"wilcoxon"``, ``"t-test"``, ``"logreg"``...).
    layer
        Layer of raw counts.
    seed
        Seeds scanpy's random state (``"logreg"`` only).

    Returns
    -------
    ``pandas.DataFrame`` with one row per (group, rank): ``group``, ``rank`` (1 = best),
    ``gene``, ``score``, ``logfoldchange``, ``pval_adj`` and ``pct_in_group`` (share of the
    group's cells with a count), sorted by group and rank.
    """
    import scanpy as sc

    if isinstance(n_genes, bool) or not isinstance(n_genes, int | np.integer) or n_genes < 1:
        raise ValueError(f"n_genes must be an integer >= 1, got {n_genes!r}.")
    lognorm = log_normalized_view(gex, groupby, layer=layer)
    if lognorm.obs["group"].nunique() < 2:
        raise ValueError("marker_genes needs at least two groups to compare.")
    np.random.seed(seed)  # noqa: NPY002 - scanpy's logreg reads the global state
    sc.tl.rank_genes_groups(lognorm, "group", method=method, pts=True, use_raw=False)
    table = sc.get.rank_genes_groups_df(lognorm, group=None)
    table["rank"] = table.groupby("group", observed=True).cumcount() + 1
    table = table[table["rank"] <= n_genes]
    names = {"names": "gene", "scores": "score", "logfoldchanges": "logfoldchange"}
    names |= {"pvals_adj": "pval_adj", "pct_nz_group": "pct_in_group"}
    table = table.rename(columns=names)
    cols = ["group", "rank", "gene", "score", "logfoldchange", "pval_adj", "pct_in_group"]
    return table[[c for c in cols if c in table]].reset_index(drop=True)
