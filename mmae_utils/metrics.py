"""The NeurIPS 2021 joint-embedding metrics, one function each, on prepared inputs.

:func:`mmae_utils.evaluation.evaluate` calls these through its registry of metrics; they
take arrays and small AnnData objects holding a kNN graph (see
:mod:`mmae_utils.neighbors`), never the user's AnnData.

Where this module computes a metric differently from a plain call of the ``scib``
function, it is either exact (same number up to floating-point rounding, tested against
``scib`` on small data) or a documented, tested approximation:

- **Silhouettes** (cell type ASW, batch ASW): exact, chunked re-implementation of
  :func:`sklearn.metrics.silhouette_samples` (what ``scib.me.silhouette`` and
  ``scib.me.silhouette_batch`` call), so that 69k cells need neither an n x n matrix nor
  sklearn's per-row Python loop. Equal to ``scib`` within 1e-6.
- **Cell cycle conservation**: the per-batch cell-cycle scores and the "before" principal
  component regression do not depend on the embedding, so they are computed once per call
  and reused for every embedding; the arithmetic is ``scib.me.cell_cycle``'s (equal to it
  within 1e-9).
- **kNN graph**: computed once per embedding (``sc.pp.neighbors``, as the competition did,
  with exact neighbours also above the 8,192 cells where scanpy would approximate them)
  and reused for clustering, graph connectivity and trajectory conservation.
- **NMI / ARI** (approximation, switchable off): the competition clustered at 20
  resolutions (0.1, 0.2, ..., 2.0) and kept the clustering with the highest NMI. By default
  this module runs Leiden with igraph's implementation (``flavor="igraph"``,
  ``n_iterations=2``, scanpy's announced future default, about 10x faster at 69k cells
  than ``leidenalg`` run to convergence) and searches the same 20-resolution grid coarse to
  fine: every 4th resolution (0.2, 0.6, ..., 1.8), then all grid points within 0.3 of the
  best one (at most 11 of 20 clusterings). ``leiden_flavor="leidenalg",
  resolution_search="full"`` reproduces ``scib.me.cluster_optimal_resolution`` on that grid
  exactly. Measured on synthetic data (800 and 3,000 cells, 5 embeddings each): the
  coarse-to-fine search found the full sweep's optimum in 19 of 20 cases (otherwise 0.013
  lower) and igraph's NMI differed from ``leidenalg``'s by at most 0.024; the tests bound
  these differences at 0.02 and 0.05. (The competition itself used Louvain, ``scib``'s
  deprecated ``opt_louvain``, on the same 20 resolutions; ``benchmarks/bench_clustering.py``,
  one embedding at 5,000 and 20,000 cells: the default's NMI was within 0.009 of
  ``leidenalg``'s full sweep and within 0.016 of Louvain's, higher than Louvain's at both.)
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Mapping, Sequence

import anndata as ad
import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import pp
from ._utils import ContentCache, content_hash, logger, quiet

__all__ = [
    "CLUSTERING_ERROR",
    "COMPETITION_RESOLUTIONS",
    "CellCycle",
    "ari",
    "batch_asw",
    "cell_type_asw",
    "graph_connectivity",
    "import_scib",
    "leiden",
    "optimal_clustering",
    "silhouette_samples",
    "trajectory_conservation",
    "usable_pseudotime",
]

#: The competition's clustering resolutions (``scib`` ``opt_louvain``: 0.1, 0.2, ..., 2.0).
COMPETITION_RESOLUTIONS = tuple(round(0.1 * i, 1) for i in range(1, 21))

#: The measured error of the default clustering's best NMI and ARI against the reference
#: algorithms, the largest seen: NMI 0.024 (igraph against ``leidenalg``, 800 and 3,000
#: cells, above), ARI 0.017 (against Louvain at all 20 resolutions,
#: ``benchmarks/bench_clustering.py``, 5,000 cells). A difference in NMI or ARI smaller
#: than this may come from the clustering, not the embedding; the verdict prints it.
CLUSTERING_ERROR: dict[str, float] = {"NMI": 0.024, "ARI": 0.017}

_COARSE_STEP = 4  # coarse-to-fine search: every 4th grid point, then +-3 around the best


def import_scib():
    """Import ``scib`` without its side effects on matplotlib and on the warning filters.

    Importing ``scib`` sets seaborn's "talk" plotting context globally (font size 18 and
    thicker lines for every later figure) and calls ``warnings.simplefilter("default")``,
    which overrides every earlier filter (Keras' DeprecationWarnings reappeared in
    notebook 05); the rcParams and the filters are restored around the import.
    """
    import warnings

    import matplotlib as mpl

    with mpl.rc_context(), warnings.catch_warnings():
        import scib
        import scib.metrics.pcr
        import scib.preprocessing
    return scib


# --------------------------------------------------------------------------------------
# Silhouettes: exact and chunked
# --------------------------------------------------------------------------------------


_BLOCK = 512  # columns (cells) per tile of the distance kernel
_ROWS = 64  # rows (cells) per tile


@numba.njit(parallel=True, fastmath=True, cache=True)
def _segment_distance_sums(xt, starts, stops):  # pragma: no cover - compiled
    """For every cell: the sum of its Euclidean distances to the cells of each label.

    ``xt`` is dims x cells (C-contiguous, cells sorted by label); label ``c`` holds the
    cells ``starts[c]:stops[c]``. Distances come from coordinate differences (no
    ``|x|^2 + |y|^2 - 2xy`` cancellation) in one fused pass over tiles of ``_ROWS`` x
    ``_BLOCK`` cells, without an n x n matrix; a tile's coordinates are copied to a
    contiguous buffer so that the innermost loop vectorises and stays in cache. Sums are
    accumulated in float64. Returns cells x labels.
    """
    d, n = xt.shape
    k = starts.shape[0]
    out = np.zeros((n, k))
    n_tiles = (n + _ROWS - 1) // _ROWS
    for b in numba.prange(n_tiles):
        r0 = b * _ROWS
        r1 = min(n, r0 + _ROWS)
        buf = np.empty(_BLOCK, dtype=xt.dtype)
        xi = np.empty(d, dtype=xt.dtype)
        tile = np.empty((d, _BLOCK), dtype=xt.dtype)
        for c in range(k):
            j0 = starts[c]
            while j0 < stops[c]:
                m = min(_BLOCK, stops[c] - j0)
                for t in range(d):
                    for jj in range(m):
                        tile[t, jj] = xt[t, j0 + jj]
                for i in range(r0, r1):
                    for t in range(d):
                        xi[t] = xt[t, i]
                    for jj in range(m):
                        buf[jj] = 0.0
                    for t in range(d):
                        xit = xi[t]
                        for jj in range(m):
                            diff = xit - tile[t, jj]
                            buf[jj] += diff * diff
                    acc = 0.0
                    for jj in range(m):
                        acc += np.sqrt(buf[jj])
                    out[i, c] += acc
                j0 += m
    return out


def silhouette_samples(x, labels) -> np.ndarray:
    """Silhouette width of every cell: :func:`sklearn.metrics.silhouette_samples`, exactly.

    Same definition and edge cases as sklearn's Euclidean silhouette (the mean distance to
    the own label excludes the cell itself; cells alone in their label get 0;
    ``nan_to_num``), computed with a compiled kernel that sums distances per label without
    materialising distance matrices (memory O(cells x labels)). Each distance is computed
    in float32 from coordinate differences (relative error about 1e-7, no cancellation)
    and summed in float64; the result agrees with sklearn within 1e-6.

    Kept because no library computing the same definition comes within 2x of it
    (``benchmarks/bench_metric_kernels.py``, 69,249 cells, 20 dims, 22 labels, 2 CPUs):
    3.2 s against 33 s for sklearn and 33 s for ``scib_metrics`` (JAX, compiled); the
    cell type ASW 4.9 s against 48 s (``scib.me.silhouette``, ``scib_metrics``); the
    batch ASW 0.78 s against 4.0 s (``scib.me.silhouette_batch``) and 3.4 s
    (``scib_metrics``, compiled; 31 s with its compilation).

    Parameters
    ----------
    x
        Cells x dims.
    labels
        One label per cell; at least 2 and at most ``n - 1`` distinct labels.

    Returns
    -------
    ``np.ndarray`` of float64 silhouette widths in [-1, 1], one per cell, in input order.
    """
    x = np.asarray(x)
    codes, uniques = pd.factorize(np.asarray(labels), sort=True)
    n, k = len(codes), len(uniques)
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(f"x must be cells x dims with one row per label, got {x.shape} for {n}.")
    if (codes < 0).any():
        raise ValueError("labels must not contain NaN.")
    if not 2 <= k <= n - 1:
        raise ValueError(
            f"Number of labels is {k}. Valid values are 2 to n_samples - 1 (inclusive)"
        )
    order = np.argsort(codes, kind="stable")
    cs = codes[order]
    xt = np.ascontiguousarray(x[order].T, dtype=np.float32)
    freqs = np.bincount(cs, minlength=k)
    stops = np.cumsum(freqs)
    starts = stops - freqs
    sums = _segment_distance_sums(xt, starts, stops)
    r = np.arange(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        intra = sums[r, cs] / (freqs[cs] - 1)
        means = sums / freqs
        means[r, cs] = np.inf
        inter = means.min(axis=1)
        sil = np.nan_to_num((inter - intra) / np.maximum(intra, inter))
    out = np.empty(n, dtype=np.float64)
    out[order] = sil
    return out


def cell_type_asw(x, labels) -> float:
    """``scib.me.silhouette(..., scale=True)``: (mean silhouette of labels + 1) / 2."""
    return float((silhouette_samples(x, labels).mean() + 1) / 2)


def batch_asw(x, labels, batches) -> float:
    """``scib.me.silhouette_batch(..., scale=True)``: per label, mean of 1 - |silhouette of batch|."""
    labels = pd.Series(np.asarray(labels))
    batches = np.asarray(batches)
    means = []
    for group in labels.unique():
        mask = (labels == group).to_numpy()
        n_batches = pd.unique(batches[mask]).size
        if n_batches == 1 or n_batches == mask.sum():
            continue
        sil = silhouette_samples(x[mask], batches[mask])
        means.append(float(np.mean(1 - np.abs(sil))))
    return float(np.mean(means)) if means else np.nan


# --------------------------------------------------------------------------------------
# Clustering
# --------------------------------------------------------------------------------------


def leiden(g: ad.AnnData, resolution: float, *, flavor: str = "igraph", seed: int = 0) -> pd.Series:
    """Leiden clusters of ``g``'s kNN graph at ``resolution`` (``sc.tl.leiden``, quietly).

    ``flavor="igraph"`` runs igraph's implementation with ``n_iterations=2`` (fast),
    ``"leidenalg"`` scanpy's default, to convergence; ``seed`` is Leiden's
    ``random_state``. Returns the categorical cluster labels, indexed like ``g.obs``
    (``g`` is left as it was).
    """
    import scanpy as sc

    kwargs = {"resolution": resolution, "key_added": "_mmae_leiden", "random_state": seed}
    if flavor == "igraph":
        kwargs.update(flavor="igraph", n_iterations=2, directed=False)
    with quiet():
        sc.tl.leiden(g, **kwargs)
    return g.obs.pop("_mmae_leiden")


def optimal_clustering(
    g: ad.AnnData,
    label_key: str,
    *,
    resolutions: Sequence[float] = COMPETITION_RESOLUTIONS,
    search: str = "coarse_to_fine",
    flavor: str = "igraph",
    seed: int = 0,
) -> tuple[float, float, pd.Series, dict[float, float]]:
    """Leiden clustering at the resolution that maximises NMI with ``label_key``.

    The selection rule is ``scib.me.cluster_optimal_resolution``'s (scan resolutions in
    increasing order, keep the first strictly best NMI), with NMI from ``scib.me.nmi``.

    Parameters
    ----------
    g
        AnnData with a kNN graph (``sc.pp.neighbors``) and ``obs[label_key]``.
    label_key
        Labels to maximise NMI against.
    resolutions
        The grid (default: the competition's 0.1, ..., 2.0).
    search
        ``"full"``: cluster at every resolution (as ``scib``). ``"coarse_to_fine"``: every
        4th resolution first, then every resolution within 3 grid steps of the best of those
        (11 of 20 clusterings at most; finds the full search's optimum whenever NMI is
        unimodal at that scale).
    flavor
        ``"igraph"`` (``n_iterations=2``, fast) or ``"leidenalg"`` (scanpy's current default,
        run to convergence: what ``scib`` calls).
    seed
        Leiden ``random_state``.

    Returns
    -------
    ``(resolution, nmi, clusters, scores)``: the chosen resolution, its NMI, its cluster
    labels (a categorical Series indexed like ``g.obs``) and the NMI of every resolution
    tried (``{resolution: nmi}``).
    """
    scib = import_scib()

    if search not in ("full", "coarse_to_fine"):
        raise ValueError(f"search must be 'full' or 'coarse_to_fine', got {search!r}.")
    if flavor not in ("igraph", "leidenalg"):
        raise ValueError(f"flavor must be 'igraph' or 'leidenalg', got {flavor!r}.")
    grid = sorted(float(r) for r in resolutions)
    if not grid:
        raise ValueError("resolutions must not be empty.")
    clusterings: dict[int, pd.Series] = {}
    scores: dict[int, float] = {}

    def run(i: int) -> None:
        if i in scores:
            return
        clusters = leiden(g, grid[i], flavor=flavor, seed=seed)
        g.obs["_mmae_cluster"] = clusters
        with quiet():
            scores[i] = float(scib.me.nmi(g, "_mmae_cluster", label_key))
        del g.obs["_mmae_cluster"]
        clusterings[i] = clusters

    if search == "full" or len(grid) <= _COARSE_STEP:
        tried = range(len(grid))
        for i in tried:
            run(i)
    else:
        coarse = list(range(1, len(grid), _COARSE_STEP))
        for i in coarse:
            run(i)
        best = _scib_argmax(coarse, scores)
        lo, hi = max(0, best - (_COARSE_STEP - 1)), min(len(grid) - 1, best + _COARSE_STEP - 1)
        for i in range(lo, hi + 1):
            run(i)
    order = sorted(scores)
    best = _scib_argmax(order, scores)
    return (
        grid[best],
        scores[best],
        clusterings[best],
        {grid[i]: scores[i] for i in order},
    )


def _scib_argmax(indices: Sequence[int], scores: Mapping[int, float]) -> int:
    """scib's rule: start at 0, keep the first strictly larger score (first index if none)."""
    best, best_score = indices[0], 0.0
    for i in indices:
        if best_score < scores[i]:
            best, best_score = i, scores[i]
    return best


def ari(g: ad.AnnData, clusters: pd.Series, label_key: str) -> float:
    """``scib.me.ari`` between ``g.obs[label_key]`` and ``clusters``."""
    scib = import_scib()
    g.obs["_mmae_cluster"] = clusters
    with quiet():
        value = float(scib.me.ari(g, "_mmae_cluster", label_key))
    del g.obs["_mmae_cluster"]
    return value


def graph_connectivity(g: ad.AnnData, label_key: str) -> float:
    """``scib.me.graph_connectivity`` of ``g``'s kNN graph for the labels ``g.obs[label_key]``."""
    scib = import_scib()
    with quiet():
        return float(scib.me.graph_connectivity(g, label_key))


# --------------------------------------------------------------------------------------
# Cell cycle conservation (scib.me.cell_cycle with the "before" part computed once)
# --------------------------------------------------------------------------------------


def _gex_part(adata: ad.AnnData, gex: ad.AnnData | None) -> tuple[ad.AnnData | None, str]:
    """The GEX features to score the cell cycle on (or None and the reason)."""
    if gex is not None:
        if not gex.obs_names.equals(adata.obs_names):
            raise ValueError("gex must hold the same cells as adata, in the same order.")
        part = gex
        if "feature_types" in gex.var:
            part = gex[:, gex.var["feature_types"].astype(str).to_numpy() == "GEX"]
    elif "feature_types" in adata.var:
        part = adata[:, adata.var["feature_types"].astype(str).to_numpy() == "GEX"]
    else:
        part = adata
        logger.info("adata.var has no 'feature_types': scoring the cell cycle on all features.")
    if part.n_vars == 0:
        return None, "adata has no GEX features (var['feature_types'] == 'GEX')"
    return part, ""


def _log_normalised(part: ad.AnnData, layer: str) -> sp.csr_matrix:
    """``log1p(normalize_total(counts))`` of ``part`` (works on backed data too)."""
    from .data import is_backed, read_counts

    if is_backed(part):
        counts = read_counts(part, layer=layer)
        part = ad.AnnData(X=counts, obs=pd.DataFrame(index=part.obs_names), var=part.var)
        layer = None
    elif layer not in part.layers:
        layer = None if part.X is not None else layer
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # X fallback: reported by our own log
        return sp.csr_matrix(pp.log_normalized(part, layer=layer))


#: What :class:`CellCycle` computed, by the content it was computed from (the 4 last used): the
#: scores and the "before" regressions depend on the data alone, not on the embedding or the
#: seed, so a report's seeds (one :func:`~mmae_utils.evaluation.evaluate` call each) reuse
#: them.
_CELL_CYCLE = ContentCache(4)


def _content_key(x, *frames, **options) -> tuple:
    """Hashable key of a matrix, pandas objects (values and index) and options."""
    hashed = [pd.util.hash_pandas_object(f, index=True).to_numpy() for f in frames]
    return (content_hash(x), *(content_hash(h) for h in hashed), *options.items())


class CellCycle:
    """Cell-cycle conservation (``scib.me.cell_cycle``) with its embedding-free part done once.

    On construction: the GEX features of ``adata`` (or of ``gex``), log-normalised from
    ``layer``, scored per batch of ``obs[batch_key]`` for S and G2/M (or the stored
    ``obs["S_score"]`` / ``obs["G2M_score"]``), and the "before" PC regression of each batch.
    With ``batch_key=None`` all cells are one batch (``scib``'s definition for data of one
    batch). :meth:`score` then needs only the embedding. ``reason`` is non-empty (and :meth:`score`
    must not be called) when the data cannot support the metric. The per-batch part is
    computed once per content (the log-normalised GEX, the batches, the stored scores) in a
    process, and reused by later constructions on the same data.
    """

    def __init__(self, adata, obs, batch_key, *, gex, layer, organism, n_comps):
        self.reason = ""
        self.batch_key = batch_key
        self.n_comps = n_comps
        part, self.reason = _gex_part(adata, gex)
        if part is None:
            return
        get_cell_cycle_genes = import_scib().preprocessing.get_cell_cycle_genes

        table = get_cell_cycle_genes(organism)
        names = set(part.var_names.astype(str))
        for phase in ("S", "G2/M"):
            genes = table.loc[table["phase"] == phase]
            hits = max(sum(g in names for g in genes[c]) for c in ("gene_name", "gene_id"))
            if hits == 0:
                self.reason = (
                    f"none of the {len(genes)} {phase}-phase genes of the {organism} cell-cycle "
                    f"list is among the {part.n_vars} GEX features"
                )
                return
        if (layer is None or layer not in part.layers) and "mmae_backed" not in part.uns:
            logger.info("Cell cycle: layers[%r] absent, using the GEX part of X as counts.", layer)
        x = _log_normalised(part, layer)
        var = pd.DataFrame(index=part.var_names.astype(str))
        batches = obs[batch_key] if batch_key is not None else pd.Series(0, index=obs.index)
        pre = ad.AnnData(X=x, obs=pd.DataFrame(index=obs.index), var=var)
        recompute = not {"S_score", "G2M_score"} <= set(adata.obs.columns)
        if not recompute:  # as the competition's script: use the stored scores
            pre.obs["S_score"] = adata.obs["S_score"].to_numpy()
            pre.obs["G2M_score"] = adata.obs["G2M_score"].to_numpy()
        key = _content_key(
            x,
            pre.obs,
            batches.astype(str),
            var.index.to_series(),
            organism=organism,
            n_comps=n_comps,
        )
        self.batches = _CELL_CYCLE.get(
            key, lambda: self._per_batch(pre, batches, recompute, organism)
        )

    def _per_batch(self, pre, batches, recompute: bool, organism: str) -> list:
        """Score each batch's cells for S and G2/M and regress the data on the scores."""
        score_cell_cycle = import_scib().preprocessing.score_cell_cycle
        per_batch = []
        for batch in batches.unique():
            rows = np.flatnonzero((batches == batch).to_numpy())
            sub = pre[rows].copy()
            with quiet():
                if recompute:
                    score_cell_cycle(sub, organism=organism)
                before = self._pcr(sub.X, sub.obs[["S_score", "G2M_score"]])
            per_batch.append((batch, rows, sub.obs[["S_score", "G2M_score"]].copy(), before))
        return per_batch

    def _pcr(self, data, covariate) -> float:
        import_scib()  # the module name "scib.metrics.pcr" is shadowed by the function pcr
        pc_regression = importlib.import_module("scib.metrics.pcr").pc_regression
        return pc_regression(
            data,
            covariate,
            pca_var=None,
            n_comps=self.n_comps,
            verbose=False,
            n_threads=1,
            linreg_method="numpy",
        )

    def score(self, x: np.ndarray) -> float:
        """``scib.me.cell_cycle(pre, post, batch_key, embed=...)`` for embedding ``x``."""
        scores = []
        for _batch, rows, covariate, before in self.batches:
            with quiet():
                after = self._pcr(np.array(x[rows]), covariate)
                score = 1 - abs(after - before) / before
            if score < 0:
                score = 0
            scores.append(score)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return float(np.nanmean(scores))


# --------------------------------------------------------------------------------------
# Trajectory conservation
# --------------------------------------------------------------------------------------


def trajectory_conservation(g, label_key, batch_key, keys) -> tuple[float, dict[str, float], str]:
    """``scib.me.trajectory_conservation`` on ``g``'s kNN graph, averaged over ``keys``.

    Returns ``(mean over the finite scores, {pseudotime key: score}, reason)``; the mean is
    NaN, with the reason, when no key gives a finite score.
    """
    scib = import_scib()
    per_key = {}
    for key in keys:
        with quiet() as out:
            try:
                value = scib.me.trajectory_conservation(
                    g, g, label_key=label_key, pseudotime_key=key, batch_key=batch_key
                )
            except ValueError as err:  # e.g. too few connected trajectory cells for diffmap
                logger.warning("trajectory conservation (%s) failed: %s", key, err)
                value = np.nan
        if "No root cell found" in out.getvalue():
            logger.info("trajectory conservation (%s): no root cell found, score 0 (scib)", key)
        per_key[key] = float(value)
    values = [v for v in per_key.values() if np.isfinite(v)]
    if not values:
        return np.nan, per_key, "scib's trajectory conservation was NaN for every pseudotime"
    return float(np.mean(values)), per_key, ""


def usable_pseudotime(obs, keys) -> tuple[list[str], str]:
    """The pseudotime columns of ``obs`` known for at least 3 cells, and why others are not."""
    usable, reasons = [], []
    for key in keys:
        if key not in obs:
            reasons.append(f"adata.obs has no {key!r} column")
            continue
        known = obs[key].notna()
        if known.sum() < 3:
            reasons.append(f"{key!r} is known for only {int(known.sum())} cells")
            continue
        usable.append(key)
    return usable, "; ".join(reasons)
