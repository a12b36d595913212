"""Count draws of the simulator: cells in blocks, each block with its own random stream.

Counts are drawn in blocks of 256 cells whose generator is keyed by ``[seed, 1, block]``,
so the result does not depend on how many cells are simulated at a time (``chunk_size``)
nor on whether it is kept in memory or streamed to disk.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from .._utils import row_ranges
from ..pp import log_normalize
from ._design import Design

_BLOCK = 256  # cells per random-number block: results do not depend on the chunk size


def cell_chunks(n_cells: int, chunk_size: int) -> list[tuple[int, int]]:
    """Row ranges of ``chunk_size`` cells rounded down to whole blocks (at least one block)."""
    return list(row_ranges(n_cells, max(_BLOCK, (chunk_size // _BLOCK) * _BLOCK)))


def _saturate(u: np.ndarray, share: float) -> np.ndarray:
    """``(1 - share) u + share tanh(u)``: a response that saturates (``share`` 0: linear)."""
    if share <= 0:
        return u
    return (1 - share) * u + share * np.tanh(u)


def atac_logits(d: Design, rows: slice) -> np.ndarray:
    """Logits of accessibility for the block's cells (before the background fragments)."""
    e = d.effects
    la = d.atac_base + _saturate(d.z_atac[rows] @ d.atac_w.T, e.nonlinearity)
    la += d.membership[rows] @ d.atac_markers
    la += d.atac_batch[d.batch_codes[rows]]
    la += d.atac_depth[rows, None].astype(np.float32)
    if e.atac_cc is not None:
        la += d.cc[rows] @ e.atac_cc
    if e.atac_donor_type is not None:
        la += e.atac_donor_type[d.batch_codes[rows] * e.n_lineages + e.lineage_codes[rows]]
    return la


def gex_logits(d: Design, rows: slice, la: np.ndarray) -> np.ndarray:
    """Log expression profile (up to a constant) of the block's cells."""
    e = d.effects
    z = d.z_gex[rows]
    logit = d.gex_base + _saturate(z @ d.gex_w.T, e.nonlinearity)
    if e.comb_w is not None:  # AND-like: two programmes together
        pos = np.maximum(z, 0)
        logit += e.comb_w * pos[:, e.comb_dims[:, 0]] * pos[:, e.comb_dims[:, 1]]
    logit += d.membership[rows] @ d.gex_markers
    logit += d.cc[rows] @ d.gex_cc
    logit += d.gex_batch[d.batch_codes[rows]]
    if e.gex_donor_type is not None:
        logit += e.gex_donor_type[d.batch_codes[rows] * e.n_lineages + e.lineage_codes[rows]]
    if e.reg_w is not None:  # expression follows the openness of the gene's linked peaks
        openness = np.asarray(e.reg_links.T @ (1 / (1 + np.exp(-la))).T).T
        hill = openness**2 / (e.reg_k**2 + openness**2)
        logit += e.reg_w * (hill - 0.5)
    return logit


def _gex_means(d: Design, rows: slice, logit: np.ndarray) -> np.ndarray:
    """Expected counts: the softmax profile (with ambient RNA) times the library size."""
    e = d.effects
    logit -= logit.max(axis=1, keepdims=True)
    prob = np.exp(logit)
    prob /= prob.sum(axis=1, keepdims=True)
    if e.ambient_share is not None:
        share = e.ambient_share[rows, None]
        prob = (1 - share) * prob + share * e.ambient_profile
    return prob * np.exp(d.log_lib[rows])[:, None].astype(np.float32)


def _simulate_block(d: Design, rows: slice, rng: np.random.Generator):
    """Counts for one block of cells: (gex_counts, atac_counts) as CSR float32.

    GEX is negative binomial around a softmax profile times the library size; ATAC is
    Bernoulli accessibility, then fragment counts of mostly 1 and 2.
    """
    la = atac_logits(d, rows)
    mean = _gex_means(d, rows, gex_logits(d, rows, la))
    theta = d.gex_theta
    lam = rng.gamma(theta, 1.0, size=mean.shape).astype(np.float32) * (mean / theta)
    gex = sp.csr_matrix(rng.poisson(lam).astype(np.float32))
    del mean, lam
    bg = d.effects.atac_background
    if bg is not None:  # fragments that fall in peaks at random lower the signal-to-noise
        b = bg[rows, None]
        p = (1 - b) / (1 + np.exp(-la)) + b * d.effects.background_open
        la = (np.log(p) - np.log1p(-p)).astype(np.float32)
    u = rng.random(la.shape, dtype=np.float32)
    # u < sigmoid(la)  <=>  la > log(u / (1 - u)), computed without materialising sigmoid
    with np.errstate(divide="ignore"):
        np.divide(u, 1 - u, out=u)
        np.log(u, out=u)
    acc = sp.csr_matrix(la > u)
    del la, u
    atac = acc.astype(np.float32)
    atac.data = 1 + rng.binomial(3, 0.15, atac.nnz).astype(np.float32)
    return gex, atac


def _qc(d: Design, rows: slice, gex: sp.csr_matrix, atac: sp.csr_matrix, rng) -> dict:
    """The real file's per-cell QC columns: from the counts, or drawn where they need reads."""
    n_counts = np.asarray(gex.sum(axis=1)).ravel()
    mt_mask = d.var.index[: d.n_genes].str.startswith("MT-")
    mt = np.asarray(gex[:, np.flatnonzero(mt_mask)].sum(axis=1)).ravel()
    n_peak_counts = np.asarray(atac.sum(axis=1)).ravel()
    bg = d.effects.atac_background
    centre = 0.55 if bg is None else 0.55 * (1 - bg[rows])
    frip = np.clip(rng.normal(centre, 0.08, n_counts.size), 0.2, 0.9)
    return {
        "GEX_n_counts": n_counts.astype(np.float32),
        "GEX_n_genes": np.diff(gex.indptr).astype(np.int32),
        "GEX_pct_counts_mt": np.divide(
            100 * mt, n_counts, out=np.zeros_like(mt), where=n_counts > 0
        ).astype(np.float32),
        "ATAC_nCount_peaks": n_peak_counts.astype(np.float32),
        "ATAC_atac_fragments": np.round(n_peak_counts / frip).astype(np.int32),
        "ATAC_reads_in_peaks_frac": frip.astype(np.float32),
        "ATAC_blacklist_fraction": np.clip(rng.normal(0.002, 0.001, n_counts.size), 0, None).astype(
            np.float32
        ),
        "ATAC_nucleosome_signal": np.clip(rng.normal(0.7, 0.15, n_counts.size), 0.1, None).astype(
            np.float32
        ),
    }


def obsm_standins(d: Design, rng) -> dict[str, np.ndarray]:
    """Precomputed embeddings with the shapes of the real file's ``obsm``.

    They are projections of the simulator's latent state plus noise, standing in for the
    data provider's PCA/LSI/UMAP: they are not computed from the counts.
    """
    n = d.obs.shape[0]
    z_g = np.column_stack([d.z_gex, d.cc])
    z_a = d.z_atac

    def project(z, dim, noise):
        size = max(dim, z.shape[1])
        q, _ = np.linalg.qr(rng.normal(size=(size, size)))
        out = z @ q[: z.shape[1], :dim]
        return (out + rng.normal(0, noise, (n, dim))).astype(np.float32)

    lsi_full = project(z_a, 50, 0.3)
    lsi_red = lsi_full[:, 1:].copy()
    lsi_red[rng.random(n) < 0.003] = np.nan  # the real file has a few NaN rows here
    return {
        "GEX_X_pca": project(z_g, 50, 0.3),
        "GEX_X_umap": project(z_g, 2, 0.2),
        "ATAC_lsi_full": lsi_full,
        "ATAC_lsi_red": lsi_red,
        "ATAC_umap": project(z_a, 2, 0.2),
    }


def uns_entries(d: Design, params: dict) -> dict:
    """The real file's ``uns`` entries, plus the simulator's parameters in ``GEX_synthetic``."""
    ga_names = np.asarray(d.var.index[: d.n_genes][np.asarray(d.peak_gene.sum(axis=0)).ravel() > 0])
    return {
        "dataset_id": "mmae_synthetic_bmmc_multiome",
        "genome": "GRCh38",
        "organism": "human",
        "ATAC_gene_activity_var_names": ga_names.astype(str),
        "GEX_synthetic": {"simulator": "mmae_utils.datasets.synthetic_bmmc", **params},
    }


def simulate_chunk(d: Design, start: int, stop: int, seed: int):
    """Simulate cells ``start:stop`` in blocks of ``_BLOCK`` cells with block-keyed RNGs.

    Returns
    -------
    ``(counts, x, gene_activity, qc)``: raw counts and log-normalized ``X`` (GEX then ATAC,
    float32 CSR), the gene-activity matrix and the QC columns of these cells.
    """
    gex_parts, atac_parts, qc_parts = [], [], []
    for b0 in range(start, stop, _BLOCK):
        b1 = min(b0 + _BLOCK, stop)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1, b0 // _BLOCK]))
        g, a = _simulate_block(d, slice(b0, b1), rng)
        gex_parts.append(g)
        atac_parts.append(a)
        qc_parts.append(_qc(d, slice(b0, b1), g, a, rng))
    gex = sp.vstack(gex_parts, format="csr")
    atac = sp.vstack(atac_parts, format="csr")
    qc = {k: np.concatenate([q[k] for q in qc_parts]) for k in qc_parts[0]}
    counts = sp.hstack([gex, atac], format="csr").astype(np.float32)
    x = sp.hstack([log_normalize(gex), log_normalize(atac)], format="csr").astype(np.float32)
    gene_activity = sp.csr_matrix(atac @ d.peak_gene[:, _ga_columns(d)]).astype(np.float32)
    return counts, x, gene_activity, qc


def _ga_columns(d: Design) -> np.ndarray:
    """Genes with at least one linked peak: the columns of ``ATAC_gene_activity``."""
    return np.flatnonzero(np.asarray(d.peak_gene.sum(axis=0)).ravel() > 0)


def obs_with_qc(d: Design, qc_parts: list[dict]) -> pd.DataFrame:
    """``d.obs`` with the QC columns of all chunks and ``GEX_size_factors`` added."""
    qc = {k: np.concatenate([q[k] for q in qc_parts]) for k in qc_parts[0]}
    obs = d.obs.assign(**qc)
    obs["GEX_size_factors"] = (obs["GEX_n_counts"] / np.median(obs["GEX_n_counts"])).astype(
        np.float32
    )
    return obs


def simulate_in_memory(d: Design, chunks, seed: int, obsm: dict, uns: dict, bar) -> ad.AnnData:
    """Simulate all ``chunks`` and assemble the in-memory AnnData (``obsm`` gets gene activity)."""
    parts = []
    for start, stop in chunks:
        parts.append(simulate_chunk(d, start, stop, seed))
        bar.update(stop - start)
    bar.close()
    counts = sp.vstack([p[0] for p in parts], format="csr")
    x = sp.vstack([p[1] for p in parts], format="csr")
    obsm["ATAC_gene_activity"] = sp.vstack([p[2] for p in parts], format="csr")
    obs = obs_with_qc(d, [p[3] for p in parts])
    return ad.AnnData(X=x, obs=obs, var=d.var, obsm=obsm, uns=uns, layers={"counts": counts})
