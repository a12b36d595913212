"""Preprocessing shared by the model and the baselines: one place per transform.

Raw counts become model inputs here (GEX: ``normalize_total`` + ``log1p``; ATAC: binarised),
and so do the fixed transforms both the autoencoder's input layers and the baselines use:
Signac's TF-IDF, PCA and LSI through one SVD routine (:func:`svd`), and the scaling of a
block of components to a common size (:func:`block_scale_factor`). Everything works on
sparse CSR matrices in row blocks, so no dense copy of a whole matrix is made.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Literal

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ._utils import column_sums, row_blocks, scale_rows_inplace, to_csr

__all__ = [
    "counts_matrix",
    "is_integer_valued",
    "log_normalize",
    "binarize",
    "log_normalized",
    "binarized",
    "idf",
    "tfidf",
    "svd",
    "randomized_svd",
    "RANDOMIZED_FROM",
    "max_components",
    "pca",
    "truncated_svd",
    "lsi",
    "block_scale_factor",
    "block_scaled",
    "top_sd",
    "zscore_rows",
]


# --------------------------------------------------------------------------------------
# Counts -> model inputs
# --------------------------------------------------------------------------------------


def counts_matrix(adata: ad.AnnData, layer: str | None, what: str = "model input"):
    """``adata.layers[layer]``, or ``X`` with a warning naming ``what`` when the layer is absent."""
    if layer is not None and layer in adata.layers:
        return adata.layers[layer]
    if layer is not None:
        warnings.warn(
            f"{what}: layers[{layer!r}] is absent, using adata.X instead. This step is meant to "
            "start from raw counts: store them in adata.layers['counts'] if you have them.",
            UserWarning,
            stacklevel=3,
        )
    return adata.X


def is_integer_valued(x) -> bool:
    """Whether every stored value of ``x`` (sparse or dense) is a whole number, as raw
    counts are (NaN is not)."""
    data = x.data if sp.issparse(x) else np.asarray(x)
    return bool(np.all(np.equal(np.mod(data, 1), 0)))


def log_normalize(counts, *, target_sum: float = 1e4, copy: bool = True) -> sp.csr_matrix:
    """``log1p`` of counts scaled to ``target_sum`` per cell (scanpy's normalize_total + log1p).

    Works on one float32 copy of ``counts`` (or, with ``copy=False`` and a float32 CSR
    input, on ``counts`` itself), transformed in place in row blocks, so the peak memory
    is the input plus at most one copy.

    Returns
    -------
    A ``csr_matrix`` of dtype float32 (new unless ``copy=False`` allowed reuse); cells
    without counts stay zero.
    """
    x = to_csr(counts).astype(np.float32, copy=copy)
    totals = np.asarray(x.sum(axis=1)).ravel()
    scale = np.divide(target_sum, totals, out=np.zeros_like(totals), where=totals > 0)
    scale_rows_inplace(x, scale.astype(np.float32))
    np.log1p(x.data, out=x.data)
    x.eliminate_zeros()
    return x


def binarize(counts, *, copy: bool = True) -> sp.csr_matrix:
    """Accessible or not: stored non-zero counts become 1.0, explicit zeros are dropped.

    With ``copy=False`` a float32 CSR ``counts`` is overwritten and returned (no copy).

    Returns
    -------
    ``scipy.sparse.csr_matrix`` of dtype float32 with values in {0, 1}.
    """
    counts = to_csr(counts)
    if counts.dtype != np.float32:
        counts, copy = counts.astype(np.float32), False  # astype made a copy already
    if copy:
        x = sp.csr_matrix(
            (np.ones(counts.nnz, dtype=np.float32), counts.indices.copy(), counts.indptr.copy()),
            shape=counts.shape,
        )
        if counts.nnz and not counts.data.all():  # explicit zeros
            x.data[counts.data == 0] = 0
            x.eliminate_zeros()
        return x
    counts.data[counts.data != 0] = 1.0
    counts.eliminate_zeros()
    return counts


def log_normalized(gex: ad.AnnData, *, layer: str | None = "counts", target_sum: float = 1e4):
    """Log-normalised GEX: ``log1p(normalize_total(counts))`` of ``gex``, CSR float32.

    Parameters
    ----------
    gex
        Cells x genes (already restricted to the genes to use).
    layer
        Layer holding raw counts; falls back to ``X`` with a warning when absent.
    target_sum
        Counts per cell after normalisation.

    Returns
    -------
    ``scipy.sparse.csr_matrix`` of dtype float32, cells x genes. ``gex`` is not modified.
    """
    return log_normalize(counts_matrix(gex, layer, "log_normalized"), target_sum=target_sum)


def binarized(atac: ad.AnnData, *, layer: str | None = "counts"):
    """Binarised ATAC (accessible = 1) of ``atac``, CSR float32.

    Parameters
    ----------
    atac
        Cells x peaks (already restricted to the peaks to use).
    layer
        Layer holding raw counts; falls back to ``X`` with a warning when absent.

    Returns
    -------
    ``scipy.sparse.csr_matrix`` of dtype float32 with values in {0, 1}. ``atac`` is not modified.
    """
    return binarize(counts_matrix(atac, layer, "binarized"))


# --------------------------------------------------------------------------------------
# TF-IDF
# --------------------------------------------------------------------------------------


def idf(x) -> np.ndarray:
    """Inverse document frequencies ``n_cells / peak total`` (float64; 0 for empty peaks)."""
    peak_tot = column_sums(to_csr(x))
    return np.divide(x.shape[0], peak_tot, out=np.zeros_like(peak_tot), where=peak_tot > 0)


def tfidf(x, *, share_indices: bool = False) -> sp.csr_matrix:
    """Signac's TF-IDF (``method=1``): ``log1p(count / cell total * n_cells / peak total * 1e4)``.

    Parameters
    ----------
    x
        Cells x peaks (binarised or raw counts).
    share_indices
        Copy only the data array and share ``x``'s index arrays (never modified: explicit
        zeros stay stored). Saves a third of a matrix copy where ``x`` is kept anyway.

    Returns
    -------
    ``scipy.sparse.csr_matrix`` float32 of the same shape; cells or peaks without counts
    give zeros.
    """
    x = to_csr(x)
    if not share_indices:
        return _tfidf_inplace(x.astype(np.float32, copy=True))
    values = x.data.astype(np.float32, copy=True)
    shared = sp.csr_matrix((values, x.indices, x.indptr), shape=x.shape)
    return _tfidf_inplace(shared, drop_zeros=False)


def _tfidf_inplace(x: sp.csr_matrix, *, drop_zeros: bool = True) -> sp.csr_matrix:
    """:func:`tfidf` overwriting ``x.data`` (float32 CSR), float64 arithmetic per row block."""
    cell_tot = np.asarray(x.sum(axis=1, dtype=np.float64)).ravel()
    inv_cell = np.divide(1.0, cell_tot, out=np.zeros_like(cell_tot), where=cell_tot > 0)
    weights = idf(x)
    for start, stop in row_blocks(x):
        lo, hi = x.indptr[start], x.indptr[stop]
        value = x.data[lo:hi].astype(np.float64)
        value *= np.repeat(inv_cell[start:stop], np.diff(x.indptr[start : stop + 1]))
        value *= weights[x.indices[lo:hi]]
        value *= 1e4
        x.data[lo:hi] = np.log1p(value)
    if drop_zeros:
        x.eliminate_zeros()
    return x


# --------------------------------------------------------------------------------------
# One SVD routine, and PCA / LSI on top of it
# --------------------------------------------------------------------------------------


def _column_means(x, center: bool) -> np.ndarray:
    """Float64 column means of ``x`` (CSR or dense) for centring, zeros without."""
    if not center:
        return np.zeros(x.shape[1])
    sums = column_sums(x) if sp.issparse(x) else x.sum(axis=0, dtype=np.float64)
    return sums / x.shape[0]


def _component_signs(vt: np.ndarray) -> np.ndarray:
    """+-1 per component (row of ``vt``) making its largest absolute loading positive."""
    signs = np.sign(vt[np.arange(vt.shape[0]), np.argmax(np.abs(vt), axis=1)])
    return np.where(signs == 0, 1, signs)


#: ``solver="auto"`` of :func:`svd` is randomized from this many cells and features on.
#: There the exact route's features^2 Gram matrix and its ``eigh`` cost more than a few
#: passes over the data (at 69k cells: 2.4x faster for 5,000 peaks, 0.9x for 2,500 genes;
#: ``benchmarks/README.md``, Training); below, every draw and the demo stay exact.
RANDOMIZED_FROM = {"cells": 20_000, "features": 4_000}

SvdSolver = Literal["exact", "randomized", "auto"]


def svd(
    x,
    n_comps: int,
    *,
    center: bool = False,
    block: int = 4096,
    solver: SvdSolver = "exact",
):
    """Top ``n_comps`` singular triplets of ``x`` (optionally column-centred, implicitly).

    ``solver="exact"``: from the features x features Gram matrix, summed over dense row
    blocks with BLAS (memory: one block plus features^2 float64), then ``eigh`` keeps the
    top eigenpairs; far faster than ARPACK for many components of a tall matrix, and needs
    no seed. ``"randomized"``: :func:`randomized_svd` (seeded, so also deterministic).
    ``"auto"``: randomized from :data:`RANDOMIZED_FROM` cells and features on, else exact.
    Components come in decreasing order, each signed so that its largest absolute loading
    is positive.

    Returns
    -------
    ``(scores, components, mean)``: ``U * S`` (cells x n_comps, float64), ``V^T``
    (n_comps x features) and the column means used for centring (zeros without).
    """
    import scipy.linalg

    x = to_csr(x) if sp.issparse(x) else np.asarray(x, dtype=np.float32)
    n, f = x.shape
    if solver not in ("exact", "randomized", "auto"):
        raise ValueError(f'solver must be "exact", "randomized" or "auto", got {solver!r}.')
    big = n >= RANDOMIZED_FROM["cells"] and f >= RANDOMIZED_FROM["features"]
    if solver == "randomized" or (solver == "auto" and big):
        return randomized_svd(x, n_comps, center=center, block=block)
    mean = _column_means(x, center)
    gram = np.zeros((f, f))
    for b in _dense_blocks(x, block):
        gram += b.T @ b
    if center:
        gram -= n * np.outer(mean, mean)
    _, v = scipy.linalg.eigh(gram, subset_by_index=[f - n_comps, f - 1])
    return _scores(x, v[:, ::-1].T, mean, center)


def _dense_blocks(x, block: int) -> Iterator[np.ndarray]:
    """``x`` (CSR or dense) as dense blocks of ``block`` rows, one at a time."""
    for start in range(0, x.shape[0], block):
        b = x[start : start + block]
        yield b.toarray() if sp.issparse(b) else np.asarray(b)


def _scores(x, vt: np.ndarray, mean: np.ndarray, center: bool):
    """``(scores, signed components, mean)`` of :func:`svd` from unsigned components."""
    vt = vt * _component_signs(vt)[:, None]
    scores = np.asarray(x @ vt.T) - (mean @ vt.T if center else 0.0)
    return scores, vt, mean


def randomized_svd(
    x,
    n_comps: int,
    *,
    center: bool = False,
    block: int = 4096,
    n_iter: int = 4,
    n_oversamples: int = 20,
    seed: int = 0,
):
    """Top ``n_comps`` singular triplets by subspace iteration (Halko et al. 2011).

    ``n_iter`` passes of ``x^T x`` (centred implicitly) over a seeded Gaussian start of
    ``n_comps + n_oversamples`` columns, re-orthonormalised after each, then the
    Rayleigh-Ritz step keeps the top ``n_comps``. Dense only one row block at a time.
    Approximate: the leading components are accurate, the last ones less so where the
    spectrum is flat. Returns what :func:`svd` returns.
    """
    x = to_csr(x) if sp.issparse(x) else np.asarray(x, dtype=np.float32)
    f = x.shape[1]
    mean = _column_means(x, center)
    width = min(f, n_comps + n_oversamples)
    q = np.random.default_rng(seed).standard_normal((f, width)).astype(np.float32)
    for _ in range(n_iter):
        q = np.linalg.qr(_gram_times(x, q, mean, center, block))[0].astype(np.float32)
    h = q.T.astype(np.float64) @ _gram_times(x, q, mean, center, block)
    _, w = np.linalg.eigh((h + h.T) / 2)
    vt = (q.astype(np.float64) @ w[:, ::-1][:, :n_comps]).T
    return _scores(x, vt, mean, center)


def _gram_times(x, q: np.ndarray, mean: np.ndarray, center: bool, block: int) -> np.ndarray:
    """``A^T A q`` (float64) for ``A = x`` minus its column ``mean`` when ``center``."""
    out = np.zeros((x.shape[1], q.shape[1]))
    sums = np.zeros(q.shape[1])
    shift = (mean.astype(np.float32) @ q) if center else None
    for b in _dense_blocks(x, block):
        t = b @ q
        if center:
            t -= shift
            sums += t.sum(axis=0)
        out += b.T @ t
    if center:
        out -= np.outer(mean, sums)
    return out


def max_components(n_cells: int, n_features: int) -> int:
    """The most components :func:`svd` (hence :func:`pca`) gives for a cells x features
    matrix: every feature's, but fewer than the cells (an LSI gives one fewer still)."""
    return min(int(n_cells) - 1, int(n_features))


def _check_components(n_comps: int, shape: tuple[int, int], what: str, extra: int = 0) -> None:
    """Clear error when ``n_comps`` (+ ``extra`` dropped) exceed :func:`max_components`."""
    limit = max_components(*shape)
    if n_comps + extra > limit:
        dropped = f" (+{extra} dropped)" if extra else ""
        raise ValueError(
            f"{what}: {n_comps} components{dropped} requested but the data ({shape[0]} cells x "
            f"{shape[1]} features) allow at most {limit - extra}."
        )


def pca(x, n_comps: int, *, what: str = "PCA", solver: SvdSolver = "exact"):
    """Centred PCA of ``x`` (implicitly centred when sparse) through :func:`svd` (``solver``
    as there).

    Returns
    -------
    ``(scores, components, mean)`` as :func:`svd`: scores float64, cells x ``n_comps``.
    """
    _check_components(n_comps, x.shape, what)
    return svd(x, n_comps, center=True, solver=solver)


def truncated_svd(x, n_comps: int, *, what: str = "truncated SVD"):
    """Uncentred truncated SVD of ``x`` (what ``sklearn.decomposition.TruncatedSVD`` fits,
    here exact) through :func:`svd`.

    Returns
    -------
    ``(scores, components)``: ``U * S`` (float64, cells x ``n_comps``) and ``V^T``
    (``n_comps`` x features), each component signed as :func:`svd` signs it.
    """
    _check_components(n_comps, x.shape, what)
    scores, comps, _ = svd(x, n_comps)
    return scores, comps


def lsi(x_bin, n_comps: int, *, what: str = "ATAC LSI", solver: SvdSolver = "exact"):
    """LSI: TF-IDF, :func:`svd` with ``n_comps + 1`` components, the first (depth) dropped
    (``solver`` as there).

    Returns
    -------
    ``(scores, components)``: uncentred LSI scores (float64, cells x ``n_comps``) and their
    loadings on the TF-IDF values (``n_comps`` x peaks).
    """
    _check_components(n_comps, x_bin.shape, what, extra=1)
    t = tfidf(x_bin, share_indices=True)
    scores, comps, _ = svd(t, n_comps + 1, solver=solver)
    return scores[:, 1:], comps[1:]


# --------------------------------------------------------------------------------------
# Block scaling, per-cell z-scores
# --------------------------------------------------------------------------------------


def block_scale_factor(
    x: np.ndarray, *, size: Literal["total", "rms"] = "total", ddof: int = 0
) -> float:
    """The factor that brings a block of components (cells x components) to unit size.

    ``size="total"``: ``1 / sqrt(sum of the components' variances)`` (total variance 1, so
    two blocks weigh the same in Euclidean distances while each keeps the relative
    variance of its components). ``size="rms"``: ``1 / sqrt(mean variance)`` (unit
    variance on average). ``ddof`` as in ``np.var``. A block without variance gives 1.
    """
    var = np.var(np.asarray(x, dtype=np.float64), axis=0, ddof=ddof)
    total = float(np.sqrt(var.sum() if size == "total" else var.mean()))
    return 1.0 / total if total > 0 else 1.0


def block_scaled(x: np.ndarray) -> np.ndarray:
    """``x`` times its :func:`block_scale_factor` (total variance 1), float32."""
    return (x * block_scale_factor(x)).astype(np.float32)


def zscore_rows(x: np.ndarray) -> np.ndarray:
    """Each row (cell) centred and divided by its standard deviation across its columns
    (``ddof=0``), float64; a row without spread becomes zeros."""
    x = np.asarray(x, dtype=np.float64)
    centred = x - x.mean(axis=1, keepdims=True)
    sd = np.sqrt((centred**2).mean(axis=1, keepdims=True))
    return np.divide(centred, sd, out=np.zeros_like(centred), where=sd > 0)


def top_sd(x: sp.csr_matrix, n_top: int) -> sp.csr_matrix:
    """Columns with the largest standard deviation (the competition's ``colSds`` selection)."""
    x = to_csr(x)
    if x.shape[1] <= n_top:
        return x
    mean = column_sums(x) / x.shape[0]
    mean_sq = column_sums(x, squares=True) / x.shape[0]
    sd = np.sqrt(np.maximum(mean_sq - mean**2, 0))
    top = np.sort(np.argsort(-sd, kind="stable")[:n_top])
    return x[:, top]
