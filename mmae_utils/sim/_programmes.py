"""Per-feature parts of the simulator's design: gene and peak programmes, batch effects.

Every function draws from the generator it is given, in a fixed order; the nested batch
effects of each modality are drawn inside its programme function, at the point of the
random stream where they have always been drawn (results stay the same for a seed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._facts import (
    ABUNDANT_MARKERS,
    HOUSEKEEPING,
    LINEAGE,
    MARKERS,
    MT_GENES,
    SUBGROUP,
    SUBGROUP_BIAS,
    cell_cycle_genes,
)
from ._genome import make_genes, make_peaks
from ._layout import Layout
from ._mechanisms import Mechanisms


@dataclass
class GeneProgrammes:
    """How each gene responds to the latent state (float64; see :class:`Design`)."""

    var: pd.DataFrame  # gene table (gene_id, chrom, tss), indexed by symbol
    base: np.ndarray  # genes (log-mean profile)
    w: np.ndarray  # genes x k
    markers: sp.csr_matrix  # types x genes (log-fold effects)
    atac_source: sp.csr_matrix  # types x genes (marker effects passed on to linked peaks)
    cc: np.ndarray  # 2 x genes
    batch: np.ndarray  # batches x genes
    theta: np.ndarray  # genes (NB inverse dispersion)


@dataclass
class PeakProgrammes:
    """How each peak responds to the latent state (float64; see :class:`Design`)."""

    names: list[str]  # chrN-start-end, sorted
    base: np.ndarray  # peaks (logit)
    w: np.ndarray  # peaks x k
    markers: sp.csr_matrix  # types x peaks (logit effects, through gene links)
    batch: np.ndarray  # batches x peaks
    peak_gene: sp.csr_matrix  # peaks x genes (gene-activity links)


def batch_effects(rng, batches, n_features: int, site_sd: float, donor_sd: float) -> np.ndarray:
    """Nested batch effects: one per site, plus one per donor within the site.

    Batches are named ``s<site>d<donor>``; the result is batches x features.
    """
    sites = sorted({b.split("d")[0] for b in batches})
    site_eff = {s: rng.normal(0, site_sd, n_features) for s in sites}
    return np.stack(
        [site_eff[b.split("d")[0]] + rng.normal(0, donor_sd, n_features) for b in batches]
    )


def _gene_markers(rng, names: pd.Index, gex_base, layout: Layout, modality_bias: float):
    """Marker effects of :data:`MARKERS` (sets their base level in ``gex_base`` in place).

    Within a biased sub-group, markers that tell its types apart (not shared by the whole
    sub-group) are weak in the modality that is not favoured: for ATAC-biased sub-groups in
    GEX, for GEX-biased ones in ATAC (through the linked peaks).

    Returns
    -------
    ``(gex_markers, atac_source)``: types x genes effects for GEX, and those passed on to
    the peaks linked to each gene.
    """
    type_index, n_types, n_genes = layout.type_index, layout.centroids.shape[0], names.size
    marker_rows, marker_cols, marker_vals = [], [], []
    for gene, where in MARKERS.items():
        g = names.get_loc(gene)
        gex_base[g] = rng.normal(-8.0, 0.6)
        for t in where:
            if t in type_index:
                marker_rows.append(type_index[t])
                marker_cols.append(g)
                marker_vals.append(rng.uniform(2.0, 3.5))
    gex_markers = sp.csr_matrix((marker_vals, (marker_rows, marker_cols)), shape=(n_types, n_genes))
    weak = max(0.0, 1.0 - modality_bias)
    gex_scale = np.ones((n_types, n_genes))
    atac_scale = np.ones((n_types, n_genes))
    dense_markers = gex_markers.toarray() > 0
    for group, bias in SUBGROUP_BIAS.items():
        members = [type_index[t] for t, g in SUBGROUP.items() if g == group and t in type_index]
        if len(members) < 2:
            continue
        distinguishing = dense_markers[members].any(0) & ~dense_markers[members].all(0)
        target = gex_scale if bias == "ATAC" else atac_scale
        target[np.ix_(members, np.flatnonzero(distinguishing))] = weak
    atac_source = sp.csr_matrix(gex_markers.multiply(atac_scale))
    gex_markers = sp.csr_matrix(gex_markers.multiply(gex_scale))
    return gex_markers, atac_source


def gene_programmes(
    rng, n_genes: int, layout: Layout, modality_bias: float, batches, batch_effect: float
) -> GeneProgrammes:
    """Genes and their programmes: base levels, latent loadings, markers, cell cycle, batch.

    Housekeeping and mitochondrial genes are high, markers and cell-cycle genes moderate,
    fillers low; about 45 % of the other genes load on one or two latent programmes that
    are not ATAC-only. The S and G2/M genes of :func:`cell_cycle_genes` follow the cycle.
    """
    var_gex = make_genes(rng, n_genes)
    names = var_gex.index
    gex_base = rng.normal(-10.2, 1.7, n_genes)
    hk = names.isin(HOUSEKEEPING)
    gex_base[hk] = rng.normal(-4.3, 0.5, hk.sum())
    mt = names.isin(MT_GENES)
    gex_base[mt] = rng.normal(-5.0, 0.4, mt.sum())
    gex_w = np.zeros((n_genes, layout.k))
    programme_genes = rng.random(n_genes) < 0.45
    n_active = rng.integers(1, 3, n_genes)
    for g in np.flatnonzero(programme_genes & ~mt & ~hk):
        dims = rng.choice(layout.s_atac.start, size=n_active[g], replace=False)  # not ATAC-only
        gex_w[g, dims] = rng.normal(0, 0.9, n_active[g])
    gex_markers, atac_source = _gene_markers(rng, names, gex_base, layout, modality_bias)
    s_genes, g2m_genes = cell_cycle_genes()
    gex_cc = np.zeros((2, n_genes))
    gex_cc[0, names.get_indexer(s_genes)] = rng.uniform(1.0, 2.0, len(s_genes))
    gex_cc[1, names.get_indexer(g2m_genes)] = rng.uniform(1.0, 2.2, len(g2m_genes))
    gex_base[names.get_indexer(s_genes + g2m_genes)] = rng.normal(
        -8.8, 0.5, len(s_genes + g2m_genes)
    )
    gex_batch = batch_effects(rng, batches, n_genes, 0.22 * batch_effect, 0.1 * batch_effect)
    gex_theta = np.exp(rng.normal(np.log(2.5), 0.5, n_genes))
    return GeneProgrammes(
        var_gex, gex_base, gex_w, gex_markers, atac_source, gex_cc, gex_batch, gex_theta
    )


def _lineage_wide(up: np.ndarray, layout: Layout) -> sp.csr_matrix:
    """1 where a type's marker (``up``: types x genes, bool) is up in at least one other
    type of the same lineage."""
    lineage = {i: LINEAGE[t] for t, i in layout.type_index.items()}
    wide = np.zeros_like(up)
    for i, lin in lineage.items():
        same = [j for j, other in lineage.items() if other == lin and j != i]
        if same:
            wide[i] = up[i] & up[same].any(axis=0)
    return sp.csr_matrix(wide.astype(np.float64))


def scale_markers(genes: GeneProgrammes, layout: Layout, mech: Mechanisms) -> None:
    """Apply ``marker_strength``, ``type_separation`` and ``marker_background`` in place.

    Markers shared within a lineage (LYZ, HBB, CD3E, MS4A1) take the full
    ``marker_strength``. Outside its types a marker's level falls to
    ``marker_background`` of what it was (its level in its types stays), and so does its
    response to the latent programmes: real markers are nearly silent elsewhere. The
    contrast of markers that tell a type from its lineage siblings (CD14 against CD16+
    monocytes) is then scaled by ``type_separation``, as the latent type programmes are.
    The :data:`ABUNDANT_MARKERS` gain ``abundant_markers`` in their types (GEX only).
    """
    is_up = genes.markers.toarray() > 0
    wide = _lineage_wide(is_up, layout)
    up = sp.csr_matrix(is_up.astype(np.float64))
    contrast = wide + (up - wide) * mech.type_separation
    markers = genes.markers * mech.marker_strength
    if mech.marker_background < 1:
        shift = -np.log(mech.marker_background)
        marker_genes = np.flatnonzero(np.asarray(up.sum(axis=0)).ravel() > 0)
        genes.base[marker_genes] -= shift
        genes.w[marker_genes] *= mech.marker_background  # or the programmes raise it elsewhere
        markers = markers + up * shift
    genes.markers = sp.csr_matrix(markers.multiply(contrast))
    genes.atac_source = sp.csr_matrix(genes.atac_source.multiply(contrast * mech.marker_strength))
    if mech.abundant_markers > 0:
        abundant = np.isin(genes.var.index, ABUNDANT_MARKERS).astype(np.float64)
        boost = up @ sp.diags(abundant * mech.abundant_markers)
        genes.markers = sp.csr_matrix(genes.markers + boost)


def peak_programmes(
    rng, n_peaks: int, genes: GeneProgrammes, layout: Layout, batches, batch_effect: float
) -> PeakProgrammes:
    """Peaks and their programmes: base accessibility, latent loadings, markers, batch.

    Linked peaks follow their gene's shared programmes (not the GEX-only ones), noisily,
    and carry half its marker effect; about 35 % of the peaks load on an ATAC-only
    programme. ``peak_gene`` records the links (for ``obsm["ATAC_gene_activity"]``).
    """
    n_genes, k, s_type, s_atac = genes.var.shape[0], layout.k, layout.s_type, layout.s_atac
    peak_names, gene_of_peak = make_peaks(rng, genes.var, n_peaks)
    linked = gene_of_peak >= 0
    atac_base = rng.normal(-3.7, 0.9, n_peaks)
    atac_base[linked] += 0.3
    atac_w = np.zeros((n_peaks, k))
    shared = np.r_[0 : s_type.stop]
    lw = genes.w[gene_of_peak[linked]][:, shared] * rng.uniform(0.5, 1.1, (linked.sum(), 1))
    atac_w[np.ix_(np.flatnonzero(linked), shared)] = lw + rng.normal(0, 0.1, lw.shape) * (lw != 0)
    atac_only = rng.random(n_peaks) < 0.35
    for p in np.flatnonzero(atac_only):
        d = rng.integers(s_atac.start, k)
        atac_w[p, d] = rng.normal(0, 1.0)
    # lineage-specific accessibility at peaks linked to marker genes
    peak_marker = genes.atac_source[:, np.where(linked, gene_of_peak, 0)] @ sp.diags(linked * 0.5)
    atac_markers = sp.csr_matrix(peak_marker)
    atac_markers.eliminate_zeros()
    atac_batch = batch_effects(rng, batches, n_peaks, 0.3 * batch_effect, 0.12 * batch_effect)
    pg_rows = np.flatnonzero(linked)
    peak_gene = sp.csr_matrix(
        (np.ones(pg_rows.size, dtype=np.float32), (pg_rows, gene_of_peak[linked])),
        shape=(n_peaks, n_genes),
    )
    return PeakProgrammes(peak_names, atac_base, atac_w, atac_markers, atac_batch, peak_gene)


def var_table(genes: GeneProgrammes, peaks: PeakProgrammes) -> pd.DataFrame:
    """The ``var`` table of the GEO file: genes first, then peaks, with ``feature_types``."""
    n_genes, n_peaks = genes.var.shape[0], len(peaks.names)
    return pd.DataFrame(
        {
            "feature_types": pd.Categorical(
                ["GEX"] * n_genes + ["ATAC"] * n_peaks, categories=["ATAC", "GEX"]
            ),
            "gene_id": list(genes.var["gene_id"]) + peaks.names,
        },
        index=pd.Index(list(genes.var.index) + peaks.names),
    )
