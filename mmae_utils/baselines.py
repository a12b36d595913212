"""Baseline embeddings of the same dimensionality as the autoencoder's latent space.

Each is computed from the raw counts of the selected features through :mod:`mmae_utils.pp`,
the same preprocessing the model's input transforms use.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import anndata as ad
import numpy as np
import scipy.sparse as sp

from . import integration, pp
from ._utils import to_csr
from .data import feature_types, is_backed, read_counts

__all__ = [
    "ALL_BASELINES",
    "BASELINES",
    "GUANLAB_GEX_FRACTION",
    "MAX_DIMS",
    "SEEDED_BASELINES",
    "baselines",
    "fitted_sizes",
    "guanlab_split",
]

#: The baselines :func:`baselines` computes by default, in their default order.
BASELINES = ("pca_concat", "pca_competition", "gex_pca", "atac_lsi", "random")

#: Every baseline :func:`baselines` can compute: the defaults, ``harmony`` (``pca_concat``
#: corrected for batch with Harmony, which needs the batch of each cell) and ``guanlab``
#: (the NeurIPS 2021 joint-embedding recipe of team Guanlab: per-modality truncated SVD,
#: each cell's vector z-scored).
ALL_BASELINES = (*BASELINES, "harmony", "guanlab")

#: The baselines whose embedding depends on the seed; the others are exact SVDs.
SEEDED_BASELINES = ("harmony", "random")

#: ``guanlab``'s share of GEX components (their submission: 38 GEX + 62 ATAC of 100).
GUANLAB_GEX_FRACTION = 0.38

#: Embeddings may have at most this many dimensions (the competition's limit).
MAX_DIMS = 100

# Which modalities each method reads, and an order that lets each modality's copy go as
# soon as no remaining method needs it (pca_competition last: it frees them mid-way).
_NEEDS = {
    "pca_concat": {"gex", "atac"},
    "pca_competition": {"gex", "atac"},
    "gex_pca": {"gex"},
    "atac_lsi": {"atac"},
    "random": set(),
    "harmony": {"gex", "atac"},
    "guanlab": {"gex", "atac"},
}
_RUN_ORDER = (
    "random",
    "gex_pca",
    "pca_concat",
    "harmony",
    "guanlab",
    "atac_lsi",
    "pca_competition",
)


def _owned_counts(adata: ad.AnnData, name: str, layer: str) -> sp.csr_matrix:
    """A fresh CSR copy of the ``name`` features' counts, safe to transform in place.

    One copy only: the columns are cut from the whole matrix (or read from the backed
    file) directly, without an AnnData view materialising its own copy first.
    """
    cols = np.flatnonzero(feature_types(adata) == name)
    if cols.size == 0:
        raise ValueError(f"adata has no {name} features (var['feature_types'] == {name!r}).")
    if is_backed(adata):
        return to_csr(read_counts(adata[:, cols], layer=layer))
    counts = pp.counts_matrix(adata, layer, "baselines")
    if cols[-1] - cols[0] + 1 == cols.size:  # one contiguous block
        cols = slice(int(cols[0]), int(cols[-1]) + 1)
    if sp.issparse(counts):
        return to_csr(to_csr(counts)[:, cols])
    return sp.csr_matrix(np.asarray(counts)[:, cols])


class _Inputs:
    """Each modality's preprocessed counts, one owned copy each, made on first use.

    At full scale these copies, not the SVDs, set the peak memory, so :meth:`release`
    drops a copy as soon as no remaining method needs it.
    """

    def __init__(self, adata: ad.AnnData, layer: str, order: Sequence[str]):
        self.adata, self.layer, self.order = adata, layer, list(order)
        self.cache: dict[str, sp.csr_matrix] = {}

    def gex(self) -> sp.csr_matrix:
        if "gex" not in self.cache:
            counts = _owned_counts(self.adata, "GEX", self.layer)
            self.cache["gex"] = pp.log_normalize(counts, copy=False)
        return self.cache["gex"]

    def atac(self) -> sp.csr_matrix:
        if "atac" not in self.cache:
            counts = _owned_counts(self.adata, "ATAC", self.layer)
            self.cache["atac"] = pp.binarize(counts, copy=False)
        return self.cache["atac"]

    def release(self, done: int) -> None:
        """Drop the copies no method after ``order[done]`` needs."""
        still = set().union(*(_NEEDS[m] for m in self.order[done + 1 :]))
        for name in set(self.cache) - still:
            del self.cache[name]


def _pca_scores(x, n_comps: int, what: str) -> np.ndarray:
    return pp.pca(x, n_comps, what=what)[0].astype(np.float32)


def _lsi_scores(x_bin, n_comps: int) -> np.ndarray:
    """LSI scores centred per component, at their singular-value scale, float32."""
    scores = pp.lsi(x_bin, n_comps)[0]
    return (scores - scores.mean(axis=0)).astype(np.float32)


def _pca_concat(inputs: _Inputs, n_gex: int, n_atac: int) -> np.ndarray:
    g = pp.block_scaled(_pca_scores(inputs.gex(), n_gex, "pca_concat (GEX part)"))
    a = pp.block_scaled(_lsi_scores(inputs.atac(), n_atac))
    return np.hstack([g, a])


def _harmony(inputs: _Inputs, sizes: tuple[int, int], batch_key: str, seed: int) -> np.ndarray:
    """``pca_concat`` corrected for ``obs[batch_key]`` by Harmony (``harmonypy``, its defaults)."""
    if batch_key not in inputs.adata.obs:
        raise KeyError(
            f"harmony needs the batch of each cell: adata.obs[{batch_key!r}] is missing "
            f"(columns: {list(inputs.adata.obs.columns)}). Pass batch_key=, or leave out harmony."
        )
    x = _pca_concat(inputs, *sizes)
    return integration.harmony(x, inputs.adata.obs[batch_key].to_numpy(), seed=seed)


def guanlab_split(n_comps: int) -> tuple[int, int]:
    """``guanlab``'s ``(GEX, ATAC)`` components for an ``n_comps``-dimensional embedding:
    ``round(0.38 n_comps)`` GEX (half up; at least 2 each, so that z-scoring a cell's block
    has a spread to divide by) and the rest ATAC: ``(38, 62)`` for 100, ``(8, 12)`` for 20.
    """
    n_comps = int(n_comps)
    if n_comps < 4:
        raise ValueError(
            f"guanlab needs n_comps >= 4 (at least 2 components per modality to z-score "
            f"per cell), got {n_comps}."
        )
    n_gex = int(np.floor(GUANLAB_GEX_FRACTION * n_comps + 0.5))
    n_gex = min(max(n_gex, 2), n_comps - 2)
    return n_gex, n_comps - n_gex


def _guanlab(inputs: _Inputs, n_gex: int, n_atac: int) -> np.ndarray:
    """Truncated SVD of each modality's input, each cell's block z-scored, concatenated."""
    if min(n_gex, n_atac) < 2:
        raise ValueError(
            f"guanlab: the data give {n_gex} GEX and {n_atac} ATAC components; z-scoring a "
            "cell's block needs at least 2 of each. Select more features, or leave out guanlab."
        )
    g = pp.truncated_svd(inputs.gex(), n_gex, what="guanlab (GEX part)")[0]
    a = pp.truncated_svd(inputs.atac(), n_atac, what="guanlab (ATAC part)")[0]
    return np.hstack([pp.zscore_rows(g), pp.zscore_rows(a)]).astype(np.float32)


def fitted_sizes(
    adata: ad.AnnData, methods: Sequence[str], n_comps: int, n_top_competition: int = 1000
) -> dict[str, int | tuple[int, int]]:
    """The components each baseline gets: ``n_comps``, or fewer where the data allow fewer.

    A PCA has at most ``min(cells - 1, features)`` components, an LSI one fewer (its first
    component is dropped); ``pca_concat`` gets ``(GEX part, ATAC part)``, each capped so.
    When a method gets fewer than ``n_comps``, a ``UserWarning`` says which, how many and why.
    """
    types = feature_types(adata)
    n_cells = adata.n_obs
    n_gex, n_atac = int((types == "GEX").sum()), int((types == "ATAC").sum())

    def pca(f: int) -> int:
        return max(pp.max_components(n_cells, f), 1)

    half = (n_comps + 1) // 2
    n_top = min(n_top_competition, n_gex) + min(n_top_competition, n_atac)
    limits = {
        "pca_concat": (min(half, pca(n_gex)), min(n_comps - half, max(pca(n_atac) - 1, 1))),
        "pca_competition": min(n_comps, pca(n_top)),
        "gex_pca": min(n_comps, pca(n_gex)),
        "atac_lsi": min(n_comps, max(pca(n_atac) - 1, 1)),
        "random": n_comps,
    }
    limits["harmony"] = limits["pca_concat"]  # pca_concat, corrected for batch
    if "guanlab" in methods:  # an uncentred SVD: capped as a PCA, to be safe
        g_split, a_split = guanlab_split(n_comps)
        limits["guanlab"] = (min(g_split, pca(n_gex)), min(a_split, pca(n_atac)))
    sizes = {m: limits[m] for m in methods}
    short = {m: sum(k) if isinstance(k, tuple) else k for m, k in sizes.items()}
    short = {m: k for m, k in short.items() if k < n_comps}
    if short:
        warnings.warn(
            f"n_comps={n_comps} asked, but the data ({n_cells:,} cells, {n_gex:,} GEX and "
            f"{n_atac:,} ATAC features) give fewer components (a PCA at most cells - 1 and "
            "features, an LSI one fewer): "
            + ", ".join(f"{m} has {k}" for m, k in short.items())
            + " dimensions. Select more features, or lower LATENT_DIM, to compare "
            "embeddings of the same size.",
            UserWarning,
            stacklevel=3,
        )
    return sizes


def _pca_competition(inputs: _Inputs, n_comps: int, n_top: int, step: int) -> np.ndarray:
    top_gex = pp.top_sd(inputs.gex(), n_top)
    inputs.release(step)  # drops the GEX copy unless a later method needs it
    top_atac = pp.top_sd(inputs.atac(), n_top)
    inputs.release(step)
    x = sp.hstack([top_gex, top_atac], format="csr")
    del top_gex, top_atac
    return _pca_scores(x, n_comps, "pca_competition")


def _methods(methods: Sequence[str], n_comps) -> tuple[list[str], int]:
    """The methods asked for (checked, de-duplicated) and ``n_comps`` as a checked int."""
    methods = list(dict.fromkeys(methods))
    unknown = sorted(set(methods) - set(ALL_BASELINES))
    if unknown:
        raise ValueError(f"Unknown baselines {unknown}; choose from {list(ALL_BASELINES)}.")
    n_comps = int(n_comps)
    if not 2 <= n_comps <= MAX_DIMS:
        raise ValueError(f"n_comps must be between 2 and {MAX_DIMS}, got {n_comps}.")
    return methods, n_comps


def baselines(
    adata: ad.AnnData,
    *,
    n_comps: int = 20,
    methods: Sequence[str] = BASELINES,
    n_top_competition: int = 1000,
    layer: str = "counts",
    batch_key: str = "batch",
    seed: int = 0,
    inplace: bool = True,
) -> dict[str, str] | dict[str, np.ndarray]:
    """Baseline embeddings with ``n_comps`` dimensions each (the autoencoder's latent size).

    All are computed from the raw counts in ``layers[layer]`` of the features ``adata``
    holds (pass the selected features: the autoencoder's inputs), GEX and ATAC told apart
    by ``var["feature_types"]``; GEX is log-normalised (:func:`mmae_utils.pp.log_normalize`)
    and ATAC binarised (:func:`mmae_utils.pp.binarize`). PCA and LSI use the exact SVD of
    :func:`mmae_utils.pp.svd`, as the model's input transforms do.

    - ``pca_concat``: the original notebook's question, concatenated per-modality PCA:
      GEX PCA (``ceil(n_comps / 2)`` components, centred, genes not scaled) next to ATAC LSI
      (``floor(n_comps / 2)``; Signac's TF-IDF, truncated SVD with one extra component, the
      first dropped because it tracks sequencing depth). Each block is divided by its total
      standard deviation, so both modalities weigh the same in Euclidean distances (as the
      autoencoder's 0.5 / 0.5 loss weights) while each block keeps the relative variance
      of its components (as PCA scores do).
    - ``pca_competition``: the NeurIPS 2021 starter kit's PCA baseline
      (``baseline_pca``): per modality the ``n_top_competition`` features with the highest
      standard deviation, concatenated, one centred PCA. The competition used each
      modality's normalised ``X``; here the log-normalised GEX and binarised ATAC above.
    - ``gex_pca``: GEX PCA alone; ``atac_lsi``: ATAC LSI alone (components centred, kept
      at their singular-value scale).
    - ``random``: standard normal noise, the floor (the competition's ``dummy_random``).
    - ``harmony`` (on request, see :data:`ALL_BASELINES`): ``pca_concat`` corrected for
      ``obs[batch_key]`` with Harmony (``harmonypy`` with its defaults), what a user would
      pick to remove batch effects; seeded by ``seed``.
    - ``guanlab`` (on request): the joint-embedding recipe of team Guanlab in the NeurIPS
      2021 competition (38 GEX + 62 ATAC truncated-SVD components of their 100,
      :data:`GUANLAB_GEX_FRACTION`): an uncentred truncated SVD of each modality's input
      above (log-normalised GEX; binarised ATAC, no TF-IDF), ``round(0.38 n_comps)`` GEX
      components and the rest ATAC (:func:`guanlab_split`), each cell's vector of each
      modality z-scored across its components, the two concatenated. The SVD is exact,
      so ``seed`` does not change it.

    Parameters
    ----------
    adata
        Multiome AnnData with the features to use and their counts (in memory or backed).
    n_comps
        Dimensions of every baseline (at least 2, at most :data:`MAX_DIMS`). Where the
        data give fewer components (a PCA has at most ``min(cells - 1, features)``), a
        baseline gets as many as they give, with a ``UserWarning`` (see
        :func:`fitted_sizes`).
    methods
        Which of :data:`ALL_BASELINES` to compute (default :data:`BASELINES`).
    n_top_competition
        Features per modality for ``pca_competition`` (1000 in the starter kit).
    layer
        Layer with raw counts (falls back to ``X`` with a warning).
    batch_key
        ``obs`` column with the batch of each cell (read by ``harmony`` only).
    seed
        Random state of the random embedding and of Harmony (the SVDs are exact and need
        none).
    inplace
        Write the embeddings to ``adata.obsm``.

    Returns
    -------
    With ``inplace=True``: ``{method: obsm key}`` (ready to pass to
    :func:`mmae_utils.evaluation.evaluate`), having written ``adata.obsm["X_pca_concat"]``,
    ``["X_pca_competition"]``, ``["X_gex_pca"]``, ``["X_atac_lsi"]``, ``["X_random"]``,
    ``["X_harmony"]``, ``["X_guanlab"]``
    (float32, cells x ``n_comps``) for the methods asked. With ``inplace=False``:
    ``{method: array}``, and ``adata`` is not modified.
    """
    methods, n_comps = _methods(methods, n_comps)
    k = fitted_sizes(adata, methods, n_comps, n_top_competition)
    order = sorted(methods, key=_RUN_ORDER.index)
    inputs = _Inputs(adata, layer, order)
    compute: dict[str, Callable[[int], np.ndarray]] = {
        "pca_concat": lambda i: _pca_concat(inputs, *k["pca_concat"]),
        "pca_competition": lambda i: _pca_competition(
            inputs, k["pca_competition"], n_top_competition, i
        ),
        "gex_pca": lambda i: _pca_scores(inputs.gex(), k["gex_pca"], "gex_pca"),
        "atac_lsi": lambda i: _lsi_scores(inputs.atac(), k["atac_lsi"]),
        "harmony": lambda i: _harmony(inputs, k["harmony"], batch_key, seed),
        "guanlab": lambda i: _guanlab(inputs, *k["guanlab"]),
        "random": lambda i: (
            np.random.default_rng(seed).standard_normal((adata.n_obs, n_comps)).astype(np.float32)
        ),
    }
    out: dict[str, np.ndarray] = {}
    for i, method in enumerate(order):
        out[method] = compute[method](i)
        inputs.release(i)
    out = {method: out[method] for method in methods}  # the order asked for
    if not inplace:
        return out
    for method, x in out.items():
        adata.obsm[f"X_{method}"] = x
    return {method: f"X_{method}" for method in out}
