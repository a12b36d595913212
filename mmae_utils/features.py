"""Feature selection: highly variable genes (GEX) and variable peaks (ATAC)."""

from __future__ import annotations

import warnings

import anndata as ad
import numba
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._compat import import_episcanpy
from ._utils import logger, to_csr
from .data import CHUNK_SIZE
from .pp import binarized, counts_matrix, is_integer_valued, log_normalize

__all__ = [
    "CHUNKED_FLAVORS",
    "LOG_FLAVORS",
    "peak_cell_counts",
    "select_atac",
    "select_gex",
    "seurat_v3_chunked",
]

#: scanpy flavors that model count noise: given raw counts (and computable over chunks).
CHUNKED_FLAVORS = ("seurat_v3", "seurat_v3_paper")

#: scanpy flavors that expect log-normalised values: counts are log-normalised for them.
LOG_FLAVORS = ("seurat", "cell_ranger")


def _check_n_top(n_top: int, n_available: int, what: str) -> int:
    if isinstance(n_top, bool) or not isinstance(n_top, int | np.integer):
        raise TypeError(f"n_top must be an integer, got {n_top!r}.")
    if n_top < 1:
        raise ValueError(f"n_top must be at least 1, got {n_top}.")
    if n_top > n_available:
        warnings.warn(
            f"Asked for {n_top} {what} but only {n_available} exist; keeping all {n_available}.",
            UserWarning,
            stacklevel=3,
        )
        return n_available
    return int(n_top)


def _check_gex_only(gex: ad.AnnData) -> None:
    """Raise if ``gex`` still holds other features: HVG selection is for genes only."""
    if "feature_types" in gex.var and set(gex.var["feature_types"].astype(str)) - {"GEX"}:
        raise ValueError(
            "select_gex got non-GEX features (var['feature_types'] has "
            f"{sorted(set(gex.var['feature_types'].astype(str)))}). Split the modalities first: "
            "gex, atac = mmae_utils.data.split_modalities(adata)."
        )


def _check_batch_key(gex: ad.AnnData, batch_key: str | None) -> None:
    """Raise if ``batch_key`` is given but not a column of ``gex.obs``."""
    if batch_key is not None and batch_key not in gex.obs:
        raise KeyError(
            f"batch_key {batch_key!r} is not a column of obs ({list(gex.obs.columns)[:8]}...)."
        )


def _check_raw_counts(gex: ad.AnnData, x, flavor: str, layer: str | None) -> None:
    """Raise if a seurat_v3 flavor is given non-integer data: its loess model is fit on counts."""
    if flavor.startswith("seurat_v3") and not is_integer_valued(x):
        raise ValueError(
            f"flavor={flavor!r} expects raw counts, but the data in "
            f"{'layers[' + repr(layer) + ']' if layer is not None and layer in gex.layers else 'X'} are not integers. "
            "Pass the raw counts (layer='counts'), or use flavor='seurat' on log-normalized data."
        )


def _flavor_input(gex: ad.AnnData, flavor: str, layer: str | None, backed: bool):
    """The matrix scanpy's ``flavor`` expects: raw counts for seurat_v3, log-normalised
    values for seurat / cell_ranger (counts are log-normalised, as the model's inputs are;
    values that are not counts, e.g. a log-normalised ``X``, are used as they are)."""
    from .data import read_counts

    if backed:  # only the seurat_v3 flavors have a chunked path; the genes fit in memory
        logger.info("select_gex: flavor=%s reads the counts of %d genes", flavor, gex.n_vars)
        x = read_counts(gex, layer=layer if layer is not None else "counts")
    else:
        x = counts_matrix(gex, layer, "select_gex")
    _check_raw_counts(gex, x, flavor, layer)
    if flavor in LOG_FLAVORS and is_integer_valued(x):
        x = log_normalize(x)  # normalize_total + log1p: what these flavors are meant for
    return x


def _add_rank(result: pd.DataFrame) -> None:
    """Give flavors without one (seurat, cell_ranger) a ``highly_variable_rank`` (in place):
    selected genes first, then (with a batch key) genes selected in more batches, then the
    normalised dispersion, then position; 0 is the most variable gene."""
    if "highly_variable_rank" in result:
        return
    score = np.nan_to_num(result["dispersions_norm"].to_numpy(dtype=float), nan=-np.inf)
    keys = [np.arange(len(result)), -score]
    if "highly_variable_nbatches" in result:
        keys.append(-result["highly_variable_nbatches"].to_numpy(dtype=float))
    keys.append(~result["highly_variable"].to_numpy(bool))
    rank = np.empty(len(result), dtype=np.float64)
    rank[np.lexsort(keys)] = np.arange(len(result))
    result["highly_variable_rank"] = rank


def _hvg_input(gex: ad.AnnData, x, batch_key: str | None) -> ad.AnnData:
    """A bare AnnData of ``x`` (and the batch column) for scanpy, so ``gex`` is left untouched."""
    # scanpy wants a scipy sparse *matrix* or an ndarray; copy nothing but the wrapper
    return ad.AnnData(
        X=to_csr(x) if sp.issparse(x) else np.asarray(x, dtype=np.float64),
        obs=gex.obs[[batch_key]] if batch_key else pd.DataFrame(index=gex.obs_names),
        var=pd.DataFrame(index=gex.var_names),
    )


def _hvg_retrying_span(
    tmp: ad.AnnData, *, n_top: int, flavor: str, batch_key: str | None, span: float
) -> pd.DataFrame:
    """``scanpy.pp.highly_variable_genes`` on ``tmp``; a singular seurat_v3 loess fit (small
    batches) is retried with spans 0.5 and 0.8, with a warning, before the error is explained."""
    import scanpy as sc

    kwargs = {"span": span} if flavor.startswith("seurat_v3") else {}
    spans = [span, *[s for s in (0.5, 0.8) if s > span]] if kwargs else [None]
    for attempt, this_span in enumerate(spans):
        if kwargs:
            kwargs["span"] = this_span
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*n_top_genes > number of normalized.*")
                result = sc.pp.highly_variable_genes(
                    tmp,
                    n_top_genes=n_top,
                    flavor=flavor,
                    batch_key=batch_key,
                    inplace=False,
                    **kwargs,
                )
            break
        except ValueError as err:
            if "singularit" not in str(err) or attempt == len(spans) - 1:
                raise ValueError(
                    f"highly_variable_genes(flavor={flavor!r}) failed: {err}. With batch_key, "
                    "every batch needs enough cells (a few hundred); try batch_key=None, a "
                    "larger span, or merging small batches."
                ) from err
            warnings.warn(
                f"seurat_v3's loess fit was singular with span={this_span} "
                f"({'per batch' if batch_key else 'on all cells'}); retrying with "
                f"span={spans[attempt + 1]}.",
                UserWarning,
                stacklevel=3,  # the caller of select_gex
            )
    return result


def _keep_exactly_n_top(result: pd.DataFrame, n_top: int) -> None:
    """Make ``result["highly_variable"]`` hold exactly ``n_top`` genes, the best by score, then
    by position (in place)."""
    if result["highly_variable"].sum() != n_top:
        # flavors that threshold dispersions can tie; keep exactly n_top by rank
        col = "dispersions_norm" if "dispersions_norm" in result else "variances_norm"
        score = np.nan_to_num(result[col].to_numpy(dtype=float), nan=-np.inf)
        order = np.lexsort((np.arange(len(result)), -score))
        keep = np.zeros(len(result), bool)
        keep[order[:n_top]] = True
        result["highly_variable"] = keep


def select_gex(
    gex: ad.AnnData,
    *,
    n_top: int = 2500,
    flavor: str = "seurat_v3",
    layer: str | None = "counts",
    batch_key: str | None = None,
    span: float = 0.3,
    chunked: bool | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress: bool | None = None,
    inplace: bool = True,
) -> pd.DataFrame | None:
    """Select highly variable genes with ``scanpy.pp.highly_variable_genes``.

    ``flavor="seurat_v3"`` (the default, as in the original notebook) fits a loess curve of
    variance against mean on **raw counts** and ranks genes by their standardized, clipped
    variance; it must not be given log-normalized data (the original notebook did; its
    ranking was therefore not the seurat_v3 one). Exactly ``n_top`` genes are kept.

    Parameters
    ----------
    gex
        Cells x genes (GEX only; see :func:`mmae_utils.data.split_modalities`).
    n_top
        Number of genes to keep. More than exist warns and keeps all.
    flavor
        Any scanpy flavor. ``"seurat_v3"`` / ``"seurat_v3_paper"`` (:data:`CHUNKED_FLAVORS`)
        are given the raw counts; ``"seurat"`` and ``"cell_ranger"`` (:data:`LOG_FLAVORS`)
        rank genes by normalised dispersion of log-normalised values: counts in ``layer``
        are log-normalised for them (``normalize_total`` + ``log1p``, as the model's
        inputs), values that are not counts (a log-normalised ``X`` of data without
        counts) are used as they are.
    layer
        Layer with raw counts (falls back to ``X`` with a warning when absent).
    batch_key
        ``obs`` column: select genes variable within batches (scanpy's batch-aware ranking).
    span
        Loess span of seurat_v3. Small batches can make the loess fit singular; then the
        fit is retried with spans 0.5 and 0.8 (with a warning) before giving up.
    chunked
        Compute the statistics over row chunks (:func:`seurat_v3_chunked`), reading a
        backed file one chunk at a time (seurat_v3 flavors only). Default: when ``gex`` is
        backed (``load_multiome(..., backed=True)``) and the flavor is a seurat_v3 one;
        other flavors read the genes' counts into memory. Same result as the in-memory path.
    chunk_size
        Cells per chunk in the chunked path.
    progress
        Progress bar in the chunked path (default: for more than 20,000 cells).
    inplace
        Write the result to ``gex.var`` (else return it).

    Returns
    -------
    With ``inplace=True`` ``None``, and these columns written:
    ``gex.var["highly_variable"]`` (bool, exactly ``n_top`` True),
    ``gex.var["highly_variable_rank"]`` (0 = most variable), ``gex.var["means"]`` and, for
    the seurat_v3 flavors, ``gex.var["variances"]`` and ``gex.var["variances_norm"]``; for
    ``"seurat"`` / ``"cell_ranger"``, ``gex.var["dispersions"]`` and
    ``gex.var["dispersions_norm"]`` (means and dispersions of the log-normalised values).
    With ``batch_key``, also ``gex.var["highly_variable_nbatches"]``. With
    ``inplace=False`` the same columns as a DataFrame indexed like ``gex.var``.
    """
    import scanpy  # noqa: F401 - imported on both paths, the chunked one too, as it always was

    _check_gex_only(gex)
    n_top = _check_n_top(n_top, gex.n_vars, "genes")
    _check_batch_key(gex, batch_key)
    from .data import is_backed

    if chunked and flavor not in CHUNKED_FLAVORS:
        raise ValueError(
            f"chunked=True supports flavor {CHUNKED_FLAVORS}, not {flavor!r}; pass "
            "chunked=None to read the genes' counts into memory for this flavor."
        )
    backed = is_backed(gex)
    if flavor in CHUNKED_FLAVORS and (chunked or (chunked is None and backed)):
        if progress is None:
            progress = gex.n_obs > 20_000
        result = seurat_v3_chunked(
            gex, n_top=n_top, flavor=flavor, batch_key=batch_key, span=span,
            chunk_size=chunk_size, progress=progress,
        )  # fmt: skip
        return _finish_gex(gex, result, n_top, flavor, inplace)
    x = _flavor_input(gex, flavor, layer, backed)
    result = _hvg_retrying_span(
        _hvg_input(gex, x, batch_key), n_top=n_top, flavor=flavor, batch_key=batch_key, span=span
    )
    result.index = gex.var_names
    _keep_exactly_n_top(result, n_top)
    _add_rank(result)
    return _finish_gex(gex, result, n_top, flavor, inplace)


def _finish_gex(gex, result: pd.DataFrame, n_top: int, flavor: str, inplace: bool):
    logger.info("select_gex: %d of %d genes kept (flavor=%s)", n_top, gex.n_vars, flavor)
    if not inplace:
        return result
    for col in result.columns:
        gex.var[col] = result[col].to_numpy()
    return None


def select_atac(
    atac: ad.AnnData,
    *,
    n_top: int = 5000,
    layer: str | None = "counts",
    chunked: bool | None = None,
    chunk_size: int = CHUNK_SIZE,
    progress: bool | None = None,
    inplace: bool = True,
) -> pd.DataFrame | None:
    """Select the ``n_top`` most variable peaks by episcanpy's variability score.

    The score of a peak is ``1 - |p - 0.5|`` where ``p`` is the fraction of cells in which it
    is accessible (episcanpy's ``cal_var``): peaks open in about half of the cells score
    highest. It is computed on **binarized** counts, since episcanpy reads ``X.sum(axis=0)``
    as a number of cells (on fragment counts it would count fragments).

    Exactly ``n_top`` peaks are kept, ties broken by position in ``atac.var`` (the first
    wins), so the result is deterministic. ``episcanpy.pp.select_var_feature(adata,
    nb_features=5000)``, used by the original notebook, keeps every feature whose score is
    at least that of the feature at 0-based position 5,000 of the sorted list: the cut-off
    feature itself is included, plus all its ties, hence 5,001 (or more) peaks. It also
    goes silently wrong on ``scipy.sparse.csr_array`` (``X.sum(axis=0).tolist()[0]`` is then a
    single number); here any sparse or dense input is converted first.

    Parameters
    ----------
    atac
        Cells x peaks (ATAC only).
    n_top
        Number of peaks to keep. More than exist warns and keeps all.
    layer
        Layer with raw counts (falls back to ``X`` with a warning when absent; only which
        entries are non-zero matters).
    chunked
        Count cells per peak over row chunks (:func:`peak_cell_counts`) instead of calling
        episcanpy on the whole matrix. Default: when ``atac`` is backed. Same result.
    chunk_size
        Cells per chunk in the chunked path.
    progress
        Progress bar in the chunked path (default: for more than 20,000 cells).
    inplace
        Write the result to ``atac.var`` (else return it).

    Returns
    -------
    With ``inplace=True`` ``None``, and written: ``atac.var["n_cells"]`` (cells with the
    peak accessible), ``atac.var["prop_shared_cells"]``, ``atac.var["variability_score"]``,
    ``atac.var["variability_rank"]`` (0 = most variable) and ``atac.var["highly_variable"]``
    (exactly ``n_top`` True). With ``inplace=False`` these columns as a DataFrame.
    """
    if "feature_types" in atac.var and set(atac.var["feature_types"].astype(str)) - {"ATAC"}:
        raise ValueError(
            "select_atac got non-ATAC features. Split the modalities first: "
            "gex, atac = mmae_utils.data.split_modalities(adata)."
        )
    n_top = _check_n_top(n_top, atac.n_vars, "peaks")
    from .data import is_backed

    if chunked or (chunked is None and is_backed(atac)):
        if progress is None:
            progress = atac.n_obs > 20_000
        n_cells = peak_cell_counts(atac, chunk_size=chunk_size, progress=progress)
        result = pd.DataFrame({"n_cells": n_cells.astype(np.float64)}, index=atac.var_names)
        result["prop_shared_cells"] = result["n_cells"] / atac.n_obs
        result["variability_score"] = 1 - np.abs(result["prop_shared_cells"] - 0.5)  # as episcanpy
    else:
        binary = binarized(atac, layer=layer)  # cells, not fragments, for episcanpy
        epi = import_episcanpy()
        tmp = ad.AnnData(X=binary, var=pd.DataFrame(index=atac.var_names))
        epi.pp.cal_var(tmp, show=False)
        result = tmp.var[["n_cells", "prop_shared_cells", "variability_score"]].copy()
    score = result["variability_score"].to_numpy()
    order = np.lexsort((np.arange(score.size), -score))  # score descending, then position
    rank = np.empty(score.size, dtype=np.int64)
    rank[order] = np.arange(score.size)
    result["variability_rank"] = rank
    result["highly_variable"] = rank < n_top
    logger.info("select_atac: %d of %d peaks kept", n_top, atac.n_vars)
    if not inplace:
        return result
    for col in result.columns:
        atac.var[col] = result[col].to_numpy()
    return None


# --------------------------------------------------------------------------------------
# Out-of-core selection: the same statistics, accumulated over row chunks
# --------------------------------------------------------------------------------------


def _batch_codes(adata: ad.AnnData, batch_key: str | None) -> tuple[np.ndarray, int]:
    if batch_key is None:
        return np.zeros(adata.n_obs, dtype=np.int64), 1
    # same batch order as scanpy's np.unique(batch_info)
    values = adata.obs[batch_key].to_numpy()
    uniques, codes = np.unique(values, return_inverse=True)
    return codes.astype(np.int64), len(uniques)


def _grouped_column_sums(
    block: sp.csr_matrix, codes: np.ndarray, n_groups: int, values: np.ndarray
):
    """Per group of rows, per column: sum of ``values`` (aligned with ``block.data``), in row order."""
    n_cols = block.shape[1]
    row_group = np.repeat(codes, np.diff(block.indptr))
    flat = row_group * n_cols + block.indices
    return np.bincount(flat, weights=values, minlength=n_groups * n_cols).reshape(n_groups, n_cols)


@numba.njit(cache=True)
def _welford_rows(indptr, indices, data, codes, n_nz, mean, m2) -> None:  # pragma: no cover
    """Welford's update over the nonzeros of CSR rows, in row order, per (batch, gene).

    The same arithmetic, in the same order, as scanpy's ``sc.get.aggregate`` kernel
    (``scanpy.get._kernels.mean_var_csr``) that scanpy >= 1.12 uses for seurat_v3's per-batch
    means and variances; carried over chunks, it gives that kernel's numbers bit for bit.
    """
    for row in range(indptr.shape[0] - 1):
        b = codes[row]
        for j in range(indptr[row], indptr[row + 1]):
            col = indices[j]
            value = np.float64(data[j])
            n = n_nz[b, col] + 1
            n_nz[b, col] = n
            m = mean[b, col]
            delta = value - m
            m += delta / n
            mean[b, col] = m
            m2[b, col] += delta * (value - m)


@numba.njit(cache=True)
def _welford_with_zeros(n_nz, mean, m2, n_obs) -> None:  # pragma: no cover
    """Merge each (batch, gene) accumulator with its implicit zeros and divide by n (in place):
    scanpy's ``mean_var_csr`` epilogue."""
    for b in range(mean.shape[0]):
        n_b = n_obs[b]
        for col in range(mean.shape[1]):
            nz = n_nz[b, col]
            k = n_b - nz
            if k > 0 and nz > 0:
                mean_a = mean[b, col]
                mean[b, col] = mean_a * nz / n_b
                m2[b, col] += mean_a * mean_a * nz * k / n_b
            m2[b, col] /= n_b


class _PassOne:
    """Pass 1 over the counts (one chunk at a time): per batch and gene the sum and sum of
    squares (scanpy's all-cells means and variances) and Welford accumulators (its per-batch
    ones)."""

    def __init__(self, n_b: int, n_genes: int, codes: np.ndarray, *, welford: bool):
        self.codes = codes
        self.welford = welford
        self.sums = np.zeros((n_b, n_genes))
        self.sq = np.zeros((n_b, n_genes))
        self.n_nz = np.zeros((n_b, n_genes), dtype=np.int64)
        self.mean = np.zeros((n_b, n_genes))
        self.m2 = np.zeros((n_b, n_genes))

    def add(self, start: int, stop: int, block: sp.csr_matrix) -> None:
        codes = self.codes[start:stop]
        n_b = self.sums.shape[0]
        # squares in the data's own dtype, as scanpy's numba kernel does (float32 rounding
        # of large squares included), summed in float64: exact for integer counts
        self.sums += _grouped_column_sums(block, codes, n_b, block.data.astype(np.float64))
        squares = (block.data * block.data).astype(np.float64)
        self.sq += _grouped_column_sums(block, codes, n_b, squares)
        if self.welford:
            _welford_rows(
                block.indptr, block.indices, block.data, codes, self.n_nz, self.mean, self.m2
            )

    def batch_mean_var(self, n_per: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per batch and gene the mean and unbiased variance, as ``sc.get.aggregate``."""
        n_obs = n_per.astype(np.int64)
        mean, m2 = self.mean.copy(), self.m2.copy()
        _welford_with_zeros(self.n_nz, mean, m2, n_obs)
        denom = np.where(n_obs > 1, n_obs - 1, np.nan)
        return mean, m2 * (n_obs / denom)[:, np.newaxis]


def _chunked_sums(
    gex: ad.AnnData,
    codes: np.ndarray,
    n_b: int,
    *,
    chunk_size: int,
    progress: bool,
    welford: bool,
) -> _PassOne:
    """Pass 1 over the counts: per batch and gene, what the means and variances need."""
    from .data import iter_counts

    acc = _PassOne(n_b, gex.n_vars, codes, welford=welford)
    for start, stop, block in iter_counts(
        gex, chunk_size=chunk_size, progress=progress, desc="HVG pass 1/2"
    ):
        acc.add(start, stop, block)
    return acc


def _mean_var(s, q, n):
    """Mean and unbiased variance from the sum ``s``, sum of squares ``q`` and count ``n``."""
    mean = s / n
    var = q / n - mean**2
    if n != 1:
        var = var * (n / (n - 1))
    return mean, var


def _loess_clip(batch_means: np.ndarray, batch_vars: np.ndarray, n_per: np.ndarray, span: float):
    """Per batch as scanpy: gene means, the sd of the loess trend of log variance on log mean,
    and the clip value ``mean + sqrt(n) * sd`` (batches x genes)."""
    from skmisc.loess import loess

    n_b, n_genes = batch_means.shape
    means, reg_stds, clips = [], [], []
    for b in range(n_b):
        mean, var = batch_means[b], batch_vars[b]
        estimat_var = np.zeros(n_genes, dtype=np.float64)
        if (not_const := var > 0).any():
            model = loess(np.log10(mean[not_const]), np.log10(var[not_const]), span=span, degree=2)
            model.fit()
            estimat_var[not_const] = model.outputs.fitted_values
        reg_std = np.sqrt(10**estimat_var)
        means.append(mean)
        reg_stds.append(reg_std)
        clips.append(reg_std * np.sqrt(n_per[b]) + mean)
    return means, reg_stds, np.stack(clips)


def _chunked_clipped_sums(
    gex: ad.AnnData,
    codes: np.ndarray,
    n_b: int,
    clip: np.ndarray,
    *,
    chunk_size: int,
    progress: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Pass 2: per batch and gene, the sum and sum of squares of the counts clipped at ``clip``."""
    from .data import iter_counts

    csum = np.zeros((n_b, gex.n_vars))
    csq = np.zeros((n_b, gex.n_vars))
    for start, stop, block in iter_counts(
        gex, chunk_size=chunk_size, progress=progress, desc="HVG pass 2/2"
    ):
        row_codes = np.repeat(codes[start:stop], np.diff(block.indptr))
        element = np.minimum(block.data.astype(np.float64), clip[row_codes, block.indices])
        csum += _grouped_column_sums(block, codes[start:stop], n_b, element)
        csq += _grouped_column_sums(block, codes[start:stop], n_b, element**2)
    return csum, csq


def _normalized_variances(n_per, means, reg_stds, csum, csq) -> np.ndarray:
    """Per batch and gene, the variance of the clipped standardized counts (seurat_v3's score)."""
    return np.stack(
        [
            (1 / ((n_per[b] - 1) * np.square(reg_stds[b])))
            * ((n_per[b] * np.square(means[b])) + csq[b] - 2 * csum[b] * means[b])
            for b in range(len(n_per))
        ]
    )


def _seurat_v3_ranking(
    var_names: pd.Index,
    all_mean: np.ndarray,
    all_var: np.ndarray,
    norm_gene_vars: np.ndarray,
    *,
    n_top: int,
    flavor: str,
    batch_key: str | None,
) -> pd.DataFrame:
    """scanpy's final step: rank genes per batch, combine the batches as ``flavor`` says and
    return scanpy's columns (``highly_variable_nbatches`` only with ``batch_key``)."""
    # from here on exactly scanpy's ranking (Seurat v3's SelectIntegrationFeatures)
    ranked = np.argsort(np.argsort(-norm_gene_vars, axis=1), axis=1).astype(np.float32)
    nbatches = np.sum((ranked < n_top).astype(int), axis=0)
    ranked[ranked >= n_top] = np.nan
    median_ranked = np.ma.median(np.ma.masked_invalid(ranked), axis=0).filled(np.nan)
    df = pd.DataFrame(index=var_names)
    df["means"], df["variances"] = all_mean, all_var
    df["highly_variable_nbatches"] = nbatches
    df["highly_variable_rank"] = median_ranked
    df["variances_norm"] = np.mean(norm_gene_vars, axis=0)
    if flavor == "seurat_v3":
        cols, asc = ["highly_variable_rank", "highly_variable_nbatches"], [True, False]
    elif flavor == "seurat_v3_paper":
        cols, asc = ["highly_variable_nbatches", "highly_variable_rank"], [False, True]
    else:
        raise ValueError(
            f"The chunked path supports flavor 'seurat_v3' and 'seurat_v3_paper', not {flavor!r}."
        )
    order = df[cols].sort_values(cols, ascending=asc, na_position="last").index
    df["highly_variable"] = False
    df.loc[order[: int(n_top)], "highly_variable"] = True
    out = df[
        ["highly_variable", "highly_variable_rank", "means", "variances", "variances_norm"]
    ].copy()
    if batch_key is not None:
        out["highly_variable_nbatches"] = df["highly_variable_nbatches"]
    return out


def seurat_v3_chunked(
    gex: ad.AnnData,
    *,
    n_top: int = 2500,
    flavor: str = "seurat_v3",
    batch_key: str | None = None,
    span: float = 0.3,
    chunk_size: int = CHUNK_SIZE,
    progress: bool = False,
) -> pd.DataFrame:
    """scanpy's ``seurat_v3`` highly-variable-gene ranking, computed over row chunks.

    Two passes over the counts (:func:`mmae_utils.data.iter_counts`), each holding one chunk
    in memory: per gene and batch the mean and variance (over all cells from the sum and sum
    of squares, per batch with Welford's update, each as scanpy computes it), then, after
    scanpy's loess fit, the sums of the counts clipped at ``mean + sqrt(n) * fitted sd``.
    Counts are integers, so the sums are exact, the Welford steps follow scanpy's in the same
    row order, and the result equals ``scanpy.pp.highly_variable_genes(flavor="seurat_v3")``
    (scanpy 1.12) on the same data.

    Returns
    -------
    DataFrame indexed like ``gex.var`` with scanpy's columns ``highly_variable``,
    ``highly_variable_rank``, ``means``, ``variances``, ``variances_norm`` and
    ``highly_variable_nbatches``.
    """
    from skmisc.loess import loess  # noqa: F401 - without scikit-misc, fail before pass 1

    codes, n_b = _batch_codes(gex, batch_key)
    acc = _chunked_sums(
        gex, codes, n_b, chunk_size=chunk_size, progress=progress, welford=batch_key is not None
    )
    n_per = np.bincount(codes, minlength=n_b).astype(np.float64)
    all_mean, all_var = _mean_var(acc.sums.sum(0), acc.sq.sum(0), float(gex.n_obs))
    if batch_key is None:
        # scanpy's single batch: the all-cells means and variances (fast-array-utils' mean_var)
        batch_means, batch_vars = all_mean[np.newaxis], all_var[np.newaxis]
    else:
        # per batch, scanpy (>= 1.12) takes sc.get.aggregate's Welford means and variances;
        # they differ from the sums' in the last bits, which loess and the ranks can amplify
        batch_means, batch_vars = acc.batch_mean_var(n_per)
    means, reg_stds, clip = _loess_clip(batch_means, batch_vars, n_per, span)
    csum, csq = _chunked_clipped_sums(
        gex, codes, n_b, clip, chunk_size=chunk_size, progress=progress
    )
    norm_gene_vars = _normalized_variances(n_per, means, reg_stds, csum, csq)
    return _seurat_v3_ranking(
        gex.var_names, all_mean, all_var, norm_gene_vars,
        n_top=n_top, flavor=flavor, batch_key=batch_key,
    )  # fmt: skip


def peak_cell_counts(
    atac: ad.AnnData, *, chunk_size: int = CHUNK_SIZE, progress: bool = False
) -> np.ndarray:
    """Number of cells in which each peak has at least one count, over row chunks.

    Returns
    -------
    Integer array of length ``atac.n_vars``.
    """
    from .data import iter_counts

    n_cells = np.zeros(atac.n_vars, dtype=np.int64)
    for _, _, block in iter_counts(
        atac, chunk_size=chunk_size, progress=progress, desc="peak counts"
    ):
        block.eliminate_zeros()
        n_cells += np.bincount(block.indices, minlength=atac.n_vars)
    return n_cells
