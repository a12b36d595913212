"""Score embeddings on the NeurIPS 2021 joint-embedding metrics, and summarise seeds.

:func:`evaluate` scores embeddings stored in ``adata.obsm`` on the six metrics of the
NeurIPS 2021 Open Problems joint-embedding task (GEX + ATAC) plus ARI. It prepares what
the metrics share once per call (a :class:`Context`: the labels, the usable pseudotime
columns, the cell-cycle scores), builds each embedding's kNN graph once
(:mod:`mmae_utils.neighbors`), then runs the metrics of :data:`REGISTRY` in turn; each is
a function of the context and the embedding (:class:`Embedding`), implemented in
:mod:`mmae_utils.metrics` with ``scib``'s definitions. :func:`aggregate_seeds` and
:func:`seed_difference` summarise scores over seeds. The baselines to compare with are in
:mod:`mmae_utils.baselines` (re-exported here).

Labels and batches are optional (``label_key=None``, ``batch_key=None``): a metric that
needs a column not given is NaN, with the reason in ``df.attrs["skipped"]``
(:func:`skipped_metrics` words it); :func:`cluster` gives unlabelled data Leiden clusters
of each embedding at one fixed resolution instead.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Mapping, Sequence

import anndata as ad
import numpy as np
import pandas as pd

from . import metrics as me
from ._utils import logger, progress_bar
from .baselines import BASELINES, MAX_DIMS, baselines
from .metrics import COMPETITION_RESOLUTIONS, leiden, optimal_clustering, silhouette_samples
from .neighbors import (
    compute_neighbors,
    graph_adata,
    graph_for,
    neighbors_key,
    resolve_embeddings,
    store_graph,
)

__all__ = [
    "BASELINES",
    "CLUSTER_RESOLUTION",
    "COLUMNS",
    "COMPETITION_RESOLUTIONS",
    "COMPETITION_SCORES",
    "MAX_DIMS",
    "METRICS",
    "REGISTRY",
    "Context",
    "Embedding",
    "Metric",
    "aggregate_seeds",
    "baselines",
    "cluster",
    "evaluate",
    "neighbors_key",
    "optimal_clustering",
    "paired_differences",
    "seed_difference",
    "silhouette_samples",
    "skipped_metrics",
]

#: The six competition metrics whose mean is ``overall`` (all in [0, 1], higher is better).
METRICS = (
    "NMI",
    "cell_type_ASW",
    "cell_cycle_conservation",
    "trajectory_conservation",
    "batch_ASW",
    "graph_connectivity",
)


def _with_overall(values: tuple[float, ...]) -> dict[str, float]:
    """NMI, ARI and the five other :data:`METRICS` in that order, plus ``overall``: the
    mean of the six :data:`METRICS` (ARI left out), rounded as the scores are."""
    scores = dict(zip(("NMI", "ARI", *METRICS[1:]), values, strict=True))
    return {**scores, "overall": round(sum(scores[m] for m in METRICS) / len(METRICS), 3)}


#: The competition's in-house scores on the real multiome data (phase 2, 62,501 cells, 13
#: batches, 22 types; openproblems neurips2021 ``inhouse_joint_embedding_scores.tsv``),
#: with ``overall`` the mean of the six :data:`METRICS` (the stored file's mean counts the
#: trajectory score as 0 and reads lower).
COMPETITION_SCORES: dict[str, dict[str, float]] = {
    "PCA": _with_overall((0.512, 0.319, 0.501, 0.877, 0.654, 0.856, 0.952)),
    "MNN + PCA": _with_overall((0.661, 0.447, 0.536, 0.905, 0.897, 0.897, 0.968)),
    "random": _with_overall((0.007, 0.000, 0.498, 0.006, 0.511, 0.989, 0.335)),
}

#: Columns of the DataFrame returned by :func:`evaluate`, in order.
COLUMNS = (
    "NMI",
    "ARI",
    "cell_type_ASW",
    "cell_cycle_conservation",
    "trajectory_conservation",
    "batch_ASW",
    "graph_connectivity",
    "overall",
    "n_metrics",
)


def _eval_obs(adata, label_key, batch_key, pseudotime_keys) -> pd.DataFrame:
    """The obs columns the metrics read (labels and batches categorical, pseudotime float),
    or a clear error when labels or batches named are missing (``None``: not read)."""
    given = [(w, k) for w, k in (("label_key", label_key), ("batch_key", batch_key)) if k]
    for what, key in given:
        if key not in adata.obs:
            raise KeyError(
                f"{what}={key!r} is not a column of adata.obs (columns: "
                f"{list(adata.obs.columns)}); pass {what}=None if the data have none."
            )
        if adata.obs[key].isna().any():
            n = int(adata.obs[key].isna().sum())
            raise ValueError(
                f"adata.obs[{key!r}] is missing for {n} cells; label and batch must be known "
                "for every cell evaluated (subset adata to the annotated cells first)."
            )
    if not adata.obs_names.is_unique:
        raise ValueError("adata.obs_names must be unique (call adata.obs_names_make_unique()).")
    obs = pd.DataFrame(index=adata.obs_names.astype(str))
    for _, key in given:
        col = adata.obs[key]
        col = col.astype(str) if not isinstance(col.dtype, pd.CategoricalDtype) else col
        obs[key] = pd.Categorical(col).remove_unused_categories()
    if label_key and obs[label_key].cat.categories.size < 2:
        raise ValueError(f"adata.obs[{label_key!r}] must have at least 2 distinct labels.")
    for key in pseudotime_keys:
        if key in adata.obs and key not in obs:
            obs[key] = pd.to_numeric(adata.obs[key], errors="coerce").to_numpy(dtype=float)
    return obs


# --------------------------------------------------------------------------------------
# The registry: metric name -> function of the prepared context and one embedding
# --------------------------------------------------------------------------------------


@dataclasses.dataclass
class Context:
    """What every metric of one :func:`evaluate` call shares, prepared once.

    ``obs`` holds the labels, batches and pseudotime columns (categorical / float);
    ``clustering`` the options of :func:`~mmae_utils.metrics.optimal_clustering`;
    ``pseudotime_keys`` the usable pseudotime columns; ``cell_cycle`` the cell-cycle
    scores (``None`` when the metric is not asked for); ``reasons`` why a metric is NaN
    for every embedding (``{metric: reason}``). ``label_key`` / ``batch_key`` are ``None``
    when the data have no labels / batches.
    """

    obs: pd.DataFrame
    label_key: str | None
    batch_key: str | None
    n_neighbors: int
    seed: int
    clustering: dict
    pseudotime_keys: list[str] = dataclasses.field(default_factory=list)
    cell_cycle: me.CellCycle | None = None
    reasons: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def labels(self) -> np.ndarray:
        """The cell-type label of every cell."""
        return self.obs[self.label_key].to_numpy()


@dataclasses.dataclass
class Embedding:
    """One embedding being scored: its values, its kNN graph and what the metrics found.

    ``graph`` is a small AnnData (``obs`` of the context, ``obsm["X_emb"]``, and the kNN
    graph once built); ``details`` collects what :func:`evaluate` returns in
    ``df.attrs["details"][name]``; ``clusters`` caches the NMI-optimal clustering that
    NMI and ARI share.
    """

    name: str
    x: np.ndarray
    graph: ad.AnnData
    details: dict
    clusters: pd.Series | None = None
    nmi: float = np.nan


@dataclasses.dataclass(frozen=True)
class Metric:
    """A metric of :data:`REGISTRY`: ``compute(context, embedding) -> (value, reason)``
    (``reason`` non-empty when the value is NaN for this embedding); ``needs_graph``:
    whether it reads the embedding's kNN graph; ``needs``: the ``obs`` columns it cannot
    do without, ``"labels"`` (``label_key``) and/or ``"batches"`` (``batch_key``)."""

    compute: Callable[[Context, Embedding], tuple[float, str]]
    needs_graph: bool
    needs: tuple[str, ...] = ()


def _clustered(ctx: Context, emb: Embedding) -> Embedding:
    """``emb`` with its NMI-optimal Leiden clustering (computed on first use)."""
    if emb.clusters is None:
        res, emb.nmi, emb.clusters, scores = optimal_clustering(
            emb.graph, ctx.label_key, seed=ctx.seed, **ctx.clustering
        )
        emb.details.update(resolution=res, nmi_by_resolution=scores)
        emb.details["n_clusters"] = int(emb.clusters.nunique())
    return emb


def _nmi(ctx: Context, emb: Embedding) -> tuple[float, str]:
    return _clustered(ctx, emb).nmi, ""


def _ari(ctx: Context, emb: Embedding) -> tuple[float, str]:
    return me.ari(emb.graph, _clustered(ctx, emb).clusters, ctx.label_key), ""


def _cell_type_asw(ctx: Context, emb: Embedding) -> tuple[float, str]:
    return me.cell_type_asw(emb.x, ctx.labels), ""


def _cell_cycle(ctx: Context, emb: Embedding) -> tuple[float, str]:
    if ctx.cell_cycle is None or ctx.cell_cycle.reason:
        return np.nan, ""  # the reason is the context's
    value = ctx.cell_cycle.score(emb.x)
    return value, "PC regression was undefined in every batch" if np.isnan(value) else ""


def _trajectory(ctx: Context, emb: Embedding) -> tuple[float, str]:
    if not ctx.pseudotime_keys:
        return np.nan, ""  # the reason is the context's
    value, per_key, reason = me.trajectory_conservation(
        emb.graph, ctx.label_key, ctx.batch_key, ctx.pseudotime_keys
    )
    emb.details["trajectory_by_pseudotime"] = per_key
    return value, reason


def _batch_asw(ctx: Context, emb: Embedding) -> tuple[float, str]:
    value = me.batch_asw(emb.x, ctx.labels, ctx.obs[ctx.batch_key].to_numpy())
    return value, "no cell type has cells from 2 or more batches" if np.isnan(value) else ""


def _graph_connectivity(ctx: Context, emb: Embedding) -> tuple[float, str]:
    return me.graph_connectivity(emb.graph, ctx.label_key), ""


#: The metrics :func:`evaluate` computes, in the order it computes them (``metrics=``
#: picks a subset): ``{name: Metric}``. Without labels only the cell-cycle conservation
#: is defined (it reads the GEX counts, and the batches when there are any); without
#: batches all but the batch ASW (cell cycle and trajectory then take all cells as one
#: batch; graph connectivity reads the labels only).
REGISTRY: dict[str, Metric] = {
    "NMI": Metric(_nmi, needs_graph=True, needs=("labels",)),
    "ARI": Metric(_ari, needs_graph=True, needs=("labels",)),
    "cell_type_ASW": Metric(_cell_type_asw, needs_graph=False, needs=("labels",)),
    "cell_cycle_conservation": Metric(_cell_cycle, needs_graph=False),
    "trajectory_conservation": Metric(_trajectory, needs_graph=True, needs=("labels",)),
    "batch_ASW": Metric(_batch_asw, needs_graph=False, needs=("labels", "batches")),
    "graph_connectivity": Metric(_graph_connectivity, needs_graph=True, needs=("labels",)),
}

#: What :attr:`Metric.needs` names, in words, and the argument of :func:`evaluate` for it.
_NEEDS = {"labels": ("cell-type labels", "label_key"), "batches": ("batches", "batch_key")}


def _unavailable(metrics: list[str], label_key, batch_key) -> dict[str, str]:
    """``{metric: reason}`` for the metrics whose ``obs`` columns were not given."""
    given = {"labels": label_key is not None, "batches": batch_key is not None}
    out = {}
    for metric in metrics:
        lacking = [n for n in REGISTRY[metric].needs if not given[n]]
        if lacking:
            what = " and ".join(_NEEDS[n][0] for n in lacking)
            keys = " and ".join(_NEEDS[n][1] for n in lacking)
            out[metric] = f"needs {what} ({keys} {'is' if len(lacking) == 1 else 'are'} None)"
    return out


def skipped_metrics(table: pd.DataFrame | Mapping[str, str]) -> str:
    """One sentence naming the metrics that are NaN for every embedding, and why.

    Parameters
    ----------
    table
        :func:`evaluate`'s result (its ``attrs["skipped"]``) or a ``{metric: reason}``
        mapping.

    Returns
    -------
    E.g. ``"Not computed on these data (NaN in the table): NMI, ARI and cell_type_ASW need
    cell-type labels (label_key is None)."``; metrics with the same reason are named
    together. ``""`` when every metric was computed.
    """
    skipped = table.attrs.get("skipped", {}) if isinstance(table, pd.DataFrame) else table
    groups: dict[str, list[str]] = {}
    for metric, reason in skipped.items():
        groups.setdefault(reason, []).append(metric)
    parts = []
    for reason, names in groups.items():
        subject = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        if reason.startswith("needs "):
            verb = "needs" if len(names) == 1 else "need"
            parts.append(f"{subject} {verb} {reason.removeprefix('needs ')}")
        else:
            parts.append(f"{subject}: {reason}")
    return f"Not computed on these data (NaN in the table): {'; '.join(parts)}." if parts else ""


# --------------------------------------------------------------------------------------
# evaluate
# --------------------------------------------------------------------------------------


def _check_metrics(metrics, resolution_search: str, leiden_flavor: str) -> list[str]:
    """The requested metrics in :data:`REGISTRY` order, or a clear error for bad options."""
    requested = list(REGISTRY) if metrics is None else list(dict.fromkeys(metrics))
    unknown = sorted(set(requested) - set(REGISTRY))
    if unknown:
        raise ValueError(f"Unknown metrics {unknown}; choose from {list(REGISTRY)}.")
    if resolution_search not in ("full", "coarse_to_fine"):
        raise ValueError(
            f"resolution_search must be 'full' or 'coarse_to_fine', got {resolution_search!r}."
        )
    if leiden_flavor not in ("igraph", "leidenalg"):
        raise ValueError(f"leiden_flavor must be 'igraph' or 'leidenalg', got {leiden_flavor!r}.")
    return [m for m in REGISTRY if m in requested]


def _prepare(adata, ctx: Context, metrics: list[str], cell_cycle: dict, pseudotime_keys, bar):
    """Fill ``ctx`` with what the metrics share: usable pseudotime, the cell-cycle scores
    (``metrics``: those the given columns allow; ``ctx.reasons`` already says why not the
    others)."""
    if ctx.reasons:
        logger.info(skipped_metrics(ctx.reasons))
    data_reasons = {}
    if "trajectory_conservation" in metrics:
        ctx.pseudotime_keys, reason = me.usable_pseudotime(ctx.obs, pseudotime_keys)
        if not ctx.pseudotime_keys:
            data_reasons["trajectory_conservation"] = reason or "no pseudotime_keys given"
        elif reason:
            logger.info("trajectory conservation: %s (using %s)", reason, ctx.pseudotime_keys)
    timeline = []
    if "cell_cycle_conservation" in metrics:
        bar.set_postfix_str("cell-cycle scores")
        t0 = time.perf_counter()
        ctx.cell_cycle = me.CellCycle(adata, ctx.obs, ctx.batch_key, n_comps=50, **cell_cycle)
        timeline.append(("", "cell-cycle scores (once)", t0, time.perf_counter()))
        if ctx.cell_cycle.reason:
            data_reasons["cell_cycle_conservation"] = ctx.cell_cycle.reason
        bar.update(1)
    for metric, reason in data_reasons.items():
        logger.warning("%s is NaN for every embedding: %s.", metric, reason)
    ctx.reasons.update(data_reasons)
    return timeline


def _score(ctx: Context, emb: Embedding, steps: list[str], bar, timeline, store) -> dict:
    """One row of the table: ``steps`` (the kNN graph, then metrics) run on ``emb``."""
    row = dict.fromkeys(COLUMNS[:-2], np.nan)
    for step in steps:
        bar.set_postfix_str(f"{emb.name}: {step}")
        t0 = time.perf_counter()
        if step == "kNN graph":
            compute_neighbors(emb.graph, ctx.n_neighbors, ctx.seed)
            if store is not None:
                store(emb.graph, emb.x)
        else:
            row[step], reason = REGISTRY[step].compute(ctx, emb)
            if reason:
                emb.details["nan_reasons"][step] = reason
        t1 = time.perf_counter()
        emb.details["seconds"][step] = t1 - t0
        timeline.append((emb.name, step, t0, t1))
        bar.update(1)
    for metric, reason in emb.details["nan_reasons"].items():
        if metric not in ctx.reasons:
            logger.warning("%s: %s is NaN: %s.", emb.name, metric, reason)
    values = np.array([row[m] for m in METRICS], dtype=float)
    finite = np.isfinite(values)
    row["overall"] = float(values[finite].mean()) if finite.any() else np.nan
    row["n_metrics"] = int(finite.sum())
    return row


def _storer(adata, obsm_key, store_neighbors: bool, n_neighbors: int, seed: int):
    """A function storing an embedding's graph in ``adata`` (``None``: do not store)."""
    if not store_neighbors or obsm_key is None:
        return None
    return lambda g, x: store_graph(adata, g, obsm_key, x, n_neighbors, seed)


def _table(rows: dict, details: dict, timeline: list, skipped: dict) -> pd.DataFrame:
    df = pd.DataFrame.from_dict(rows, orient="index")[list(COLUMNS)]
    df["n_metrics"] = df["n_metrics"].astype(int)
    df.index.name = "method"
    df.attrs["details"] = details
    df.attrs["timeline"] = timeline
    df.attrs["skipped"] = {m: skipped[m] for m in REGISTRY if m in skipped}
    return df


def evaluate(
    adata: ad.AnnData,
    embeddings: Mapping[str, str | np.ndarray] | Sequence[str] | str,
    *,
    label_key: str | None = "cell_type",
    batch_key: str | None = "batch",
    pseudotime_keys: Sequence[str] = ("GEX_pseudotime_order", "ATAC_pseudotime_order"),
    metrics: Sequence[str] | None = None,
    n_neighbors: int = 15,
    resolutions: Sequence[float] = COMPETITION_RESOLUTIONS,
    resolution_search: str = "coarse_to_fine",
    leiden_flavor: str = "igraph",
    gex: ad.AnnData | None = None,
    layer: str = "counts",
    organism: str = "human",
    store_neighbors: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> pd.DataFrame:
    """Score embeddings on the NeurIPS 2021 joint-embedding metrics.

    The six competition metrics (each in [0, 1], higher is better), computed with ``scib``
    as the competition's metric scripts did, on the same cells for every embedding:

    - ``NMI``: between ``label_key`` and a Leiden clustering of the embedding's kNN graph at
      the resolution that maximises it (see ``resolution_search``, ``leiden_flavor``);
    - ``cell_type_ASW``: ``scib.me.silhouette`` of ``label_key``, scaled to [0, 1];
    - ``cell_cycle_conservation``: ``scib.me.cell_cycle`` (per batch: variance explained by
      S and G2/M scores before and after); scores from the log-normalised GEX counts with
      scib's human gene lists, computed per batch (or taken from ``obs["S_score"]`` and
      ``obs["G2M_score"]`` when both exist, as the competition's script did);
    - ``trajectory_conservation``: ``scib.me.trajectory_conservation`` per batch, averaged
      over the pseudotime columns available (GEX and ATAC);
    - ``batch_ASW``: ``scib.me.silhouette_batch`` (1 - |silhouette of batch| per cell type);
    - ``graph_connectivity``: ``scib.me.graph_connectivity`` on the kNN graph;

    and ``ARI`` of the same optimal clustering, reported beside them (not in ``overall``).

    Parameters
    ----------
    adata
        Cells x features (multiome, in memory or read with ``load_multiome(backed=True)``),
        with ``obs[label_key]``, ``obs[batch_key]``, the pseudotime columns and the
        embeddings in ``obsm``. The GEX features (``var["feature_types"] == "GEX"``) and
        their raw counts (``layers[layer]``) are used for the cell-cycle scores.
    embeddings
        ``{display name: obsm key}`` (or ``{name: array}``, one row per cell), or a list of
        obsm keys (used as names). At most :data:`MAX_DIMS` dimensions, finite values.
    label_key, batch_key
        Cell-type and batch columns of ``obs``, known for every cell; ``None`` when the
        data have none. Without labels only ``cell_cycle_conservation`` is defined (NMI,
        ARI, the cell type ASW, trajectory conservation and graph connectivity compare the
        embedding with the labels, and scib's batch ASW mixes batches within each cell
        type, so none of them has a label-free version); without batches all but
        ``batch_ASW``, with all cells taken as one batch by the cell cycle and trajectory
        conservation. The others are NaN, and ``df.attrs["skipped"]`` says why.
    pseudotime_keys
        ``obs`` columns with pseudotime (NaN outside trajectories). Missing columns are
        skipped; with none left, ``trajectory_conservation`` is NaN.
    metrics
        Subset of the metric names to compute (names of :data:`REGISTRY`; default all);
        the others are NaN.
    n_neighbors
        kNN graph size (``sc.pp.neighbors``; 15 as in the competition).
    resolutions
        Clustering resolutions to choose from (default the competition's 0.1, ..., 2.0).
    resolution_search
        ``"coarse_to_fine"`` (default, at most 11 of the 20 clusterings) or ``"full"``.
    leiden_flavor
        ``"igraph"`` (default, fast; approximates the reference: NMI within 0.024 of it in
        our measurements, bounded at 0.05 by the tests) or ``"leidenalg"`` (what ``scib``
        runs; 45x slower for the whole search at 69k cells). With ``"leidenalg"`` and
        ``resolution_search="full"`` NMI and ARI are ``scib.me.cluster_optimal_resolution``'s.
    gex
        Optional AnnData (same cells) whose GEX features to score the cell cycle on instead
        of ``adata``'s, e.g. all genes when ``adata`` holds only the selected ones.
    layer
        Layer with raw counts (falls back to ``X``).
    organism
        Organism of the cell-cycle gene lists (``scib``).
    store_neighbors
        Store each obsm embedding's kNN graph in ``adata`` for reuse (e.g. by
        :func:`mmae_utils.plotting.umaps`).
    seed
        Random state of the kNN graph and Leiden: same seed, same result.
    progress
        Show a progress bar over embeddings x metrics.

    Returns
    -------
    ``pd.DataFrame`` indexed by display name (index name ``method``) with the columns
    :data:`COLUMNS`: ``NMI``, ``ARI``, ``cell_type_ASW``, ``cell_cycle_conservation``,
    ``trajectory_conservation``, ``batch_ASW``, ``graph_connectivity``, ``overall`` (mean of
    the non-NaN values among the six competition metrics, ARI excluded) and ``n_metrics``
    (how many it averaged). A metric the data cannot support (no labels, no batches, no
    pseudotime, no cell-cycle genes, ...) is NaN for every method and the reason is logged
    and kept in ``df.attrs["skipped"]`` (``{metric: reason}``, worded by
    :func:`skipped_metrics`). ``df.attrs["details"]`` holds, per method,
    the chosen resolution, the NMI of every resolution tried, the number of clusters, the
    trajectory score per pseudotime column, the seconds per metric and the NaN reasons;
    ``df.attrs["timeline"]`` lists ``(method, step, start, stop)`` (``time.perf_counter``).

    With ``store_neighbors=True`` (and ``adata`` not a view), for each embedding given as
    an obsm key ``k``: ``adata.uns[neighbors_key(k)]`` (parameters, incl. a fingerprint
    of the embedding), ``adata.obsp[neighbors_key(k) + "_connectivities"]`` and
    ``adata.obsp[neighbors_key(k) + "_distances"]``.
    """
    requested = _check_metrics(metrics, resolution_search, leiden_flavor)
    unavailable = _unavailable(requested, label_key, batch_key)
    metrics = [m for m in requested if m not in unavailable]
    pseudotime_keys = [pseudotime_keys] if isinstance(pseudotime_keys, str) else pseudotime_keys
    ctx = Context(
        obs=_eval_obs(adata, label_key, batch_key, pseudotime_keys),
        label_key=label_key,
        batch_key=batch_key,
        n_neighbors=n_neighbors,
        seed=seed,
        clustering={
            "resolutions": resolutions,
            "search": resolution_search,
            "flavor": leiden_flavor,
        },
        reasons=unavailable,
    )
    embs = resolve_embeddings(adata, embeddings)
    if store_neighbors and adata.is_view:
        logger.info("adata is a view: kNN graphs are not stored.")
        store_neighbors = False
    steps = ["kNN graph"] if any(REGISTRY[m].needs_graph for m in metrics) else []
    steps += metrics
    bar = progress_bar(
        total=len(embs) * len(steps) + ("cell_cycle_conservation" in metrics),
        desc="evaluate",
        disable=not progress,
    )
    cell_cycle = {"gex": gex, "layer": layer, "organism": organism}
    timeline = _prepare(adata, ctx, metrics, cell_cycle, pseudotime_keys, bar)
    rows, details = {}, {}
    for name, (obsm_key, x) in embs.items():
        info = {"seconds": {}, "nan_reasons": dict(ctx.reasons)}
        emb = Embedding(name, x, graph_adata(ctx.obs, x), info)
        store = _storer(adata, obsm_key, store_neighbors, n_neighbors, seed)
        rows[name] = _score(ctx, emb, steps, bar, timeline, store)
        details[name] = emb.details
    bar.close()
    return _table(rows, details, timeline, ctx.reasons)


# --------------------------------------------------------------------------------------
# Clusters, for data without labels
# --------------------------------------------------------------------------------------

#: Leiden resolution of :func:`cluster` (scanpy's default). Without labels there is no NMI
#: to choose a resolution by (as :func:`evaluate` does), so every embedding is clustered
#: at this one value; a higher one gives more, smaller clusters.
CLUSTER_RESOLUTION = 1.0


def cluster(
    adata: ad.AnnData,
    embeddings: Mapping[str, str | np.ndarray] | Sequence[str] | str,
    *,
    resolution: float = CLUSTER_RESOLUTION,
    n_neighbors: int = 15,
    flavor: str = "igraph",
    key_added: str = "leiden",
    store_neighbors: bool = True,
    seed: int = 0,
    inplace: bool = True,
) -> dict[str, str] | pd.DataFrame:
    """Leiden clusters of every embedding at one fixed resolution: groups for unlabelled data.

    Each embedding is clustered on its kNN graph, the one :func:`evaluate` stored (same
    content, ``n_neighbors`` and ``seed``) or else a new one (``sc.pp.neighbors``), with
    :func:`mmae_utils.metrics.leiden`. The clusters are what the embedding finds, not
    cell types: they are no score, and clusters of two embeddings are not matched.

    Parameters
    ----------
    adata
        AnnData with the embeddings in ``obsm``.
    embeddings
        ``{display name: obsm key or array}`` or a list of obsm keys (used as names).
    resolution
        Leiden resolution (default :data:`CLUSTER_RESOLUTION`, 1.0).
    n_neighbors, seed
        kNN graph size and random state (of the graph and of Leiden).
    flavor
        ``"igraph"`` (fast, as :func:`evaluate`'s default) or ``"leidenalg"``.
    key_added
        Prefix of the ``obs`` columns.
    store_neighbors
        Store each new kNN graph in ``adata`` for reuse (e.g. by
        :func:`mmae_utils.plotting.umaps`), as :func:`evaluate` does.
    inplace
        Write the clusters to ``adata.obs`` (else return them, ``adata`` unchanged).

    Returns
    -------
    With ``inplace=True``, ``{display name: obs column}``; written: ``adata.obs[f"{key_added}
    _{name}"]`` (categorical cluster labels ``"0"``, ``"1"``, ...) for every
    embedding and, with ``store_neighbors=True``, for each embedding given as an obsm key
    ``k`` whose graph was not stored yet, ``adata.uns[neighbors_key(k)]``,
    ``adata.obsp[neighbors_key(k) + "_connectivities"]`` and ``..._distances``. With
    ``inplace=False``, a DataFrame of the same columns indexed like ``adata.obs``.
    """
    if flavor not in ("igraph", "leidenalg"):
        raise ValueError(f"flavor must be 'igraph' or 'leidenalg', got {flavor!r}.")
    if not resolution > 0:
        raise ValueError(f"resolution must be positive, got {resolution!r}.")
    embs = resolve_embeddings(adata, embeddings)
    store = store_neighbors and inplace and not adata.is_view
    columns = {}
    for name, (obsm_key, x) in embs.items():
        g, reused = graph_for(adata, obsm_key, x, n_neighbors, seed)
        if store and obsm_key is not None and not reused:
            store_graph(adata, g, obsm_key, x, n_neighbors, seed)
        columns[f"{key_added}_{name}"] = leiden(g, resolution, flavor=flavor, seed=seed).array
    table = pd.DataFrame(columns, index=adata.obs_names)
    if not inplace:
        return table
    for column in table:
        adata.obs[column] = table[column]
    return dict(zip(embs, table.columns, strict=True))


# --------------------------------------------------------------------------------------
# Several seeds
# --------------------------------------------------------------------------------------

_SCORE_COLUMNS = tuple(c for c in COLUMNS if c != "n_metrics")


def _per_seed(table: pd.DataFrame) -> pd.DataFrame:
    if not isinstance(table.index, pd.MultiIndex) or list(table.index.names) != [
        "seed",
        "method",
    ]:
        raise ValueError(
            "Expected a table indexed by (seed, method), as returned by "
            "mmae_utils.report.replicate (or pd.concat({seed: evaluate(...)}, "
            "names=['seed', 'method']))."
        )
    return table


def aggregate_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of every score of every method.

    Parameters
    ----------
    table
        Scores indexed by ``(seed, method)`` (see :func:`mmae_utils.report.replicate`).

    Returns
    -------
    ``pandas.DataFrame`` indexed by method (in the order of the first seed) with columns
    ``(score, "mean")``, ``(score, "sd")`` (sample standard deviation, NaN with one seed)
    for the scores of :data:`COLUMNS`, and ``("n_seeds", "")``.
    """
    table = _per_seed(table)
    cols = [c for c in _SCORE_COLUMNS if c in table]
    grouped = table[cols].groupby(level="method", sort=False)
    mean, sd = grouped.mean(), grouped.std(ddof=1)
    out = pd.concat({"mean": mean, "sd": sd}, axis=1).swaplevel(axis=1)
    out = out[[(c, stat) for c in cols for stat in ("mean", "sd")]]
    out[("n_seeds", "")] = grouped.size()
    return out


def seed_difference(
    table: pd.DataFrame,
    *,
    method: str = "mmae",
    reference: str = "pca_concat",
    confidence: float = 0.95,
) -> pd.DataFrame:
    """``method`` minus ``reference``, paired by seed: mean, spread and confidence interval.

    The interval is Student's t interval of the mean paired difference: ``mean +-
    t_{(1 + confidence) / 2, n - 1} * sd / sqrt(n)`` over the ``n`` seeds where both
    methods have the score (``scipy.stats.t``). It treats the seeds as independent draws
    of the whole run; it says how sure the mean difference is, not how much one run varies.

    Parameters
    ----------
    table
        Scores indexed by ``(seed, method)``.
    method, reference
        The two methods to compare (both must be scored for every seed used).
    confidence
        Coverage of the interval, strictly between 0 and 1 (default 95 %).

    Returns
    -------
    ``pandas.DataFrame`` indexed by score (:data:`COLUMNS` without ``n_metrics``) with
    columns ``mean``, ``sd`` (sample standard deviation over seeds), ``ci_low``,
    ``ci_high`` (the interval; NaN, like ``sd``, with fewer than 2 seeds), ``min``,
    ``max`` and ``n_seeds`` (seeds where both methods have the score).
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be strictly between 0 and 1, got {confidence!r}.")
    diff = paired_differences(table, method=method, reference=reference)
    n = diff.count()
    mean, sd = diff.mean(), diff.std(ddof=1)
    half = _t_quantile(confidence, n) * sd / np.sqrt(n.where(n > 0))
    return pd.DataFrame(
        {
            "mean": mean,
            "sd": sd,
            "ci_low": mean - half,
            "ci_high": mean + half,
            "min": diff.min(),
            "max": diff.max(),
            "n_seeds": n.astype(int),
        }
    )


def paired_differences(
    table: pd.DataFrame, *, method: str = "mmae", reference: str = "pca_concat"
) -> pd.DataFrame:
    """Per seed (rows, the seeds both methods were scored on) and score (columns):
    ``method``'s score minus ``reference``'s; what :func:`seed_difference` summarises.
    ``table`` is indexed by ``(seed, method)``."""
    table = _per_seed(table)
    methods = set(table.index.get_level_values("method"))
    for name in (method, reference):
        if name not in methods:
            raise KeyError(f"{name!r} is not in the table (methods: {sorted(methods)}).")
    cols = [c for c in _SCORE_COLUMNS if c in table]
    a = table.xs(method, level="method")[cols]
    b = table.xs(reference, level="method")[cols]
    seeds = a.index.intersection(b.index)
    return a.loc[seeds] - b.loc[seeds]


def _t_quantile(confidence: float, n: pd.Series) -> pd.Series:
    """Student's t quantile ``(1 + confidence) / 2`` with ``n - 1`` degrees of freedom
    (NaN where ``n < 2``)."""
    from scipy import stats

    dof = (n - 1).where(n > 1)
    return pd.Series(stats.t.ppf(0.5 + confidence / 2, dof), index=n.index)
