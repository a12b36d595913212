"""The latent programme layout of the simulator and the cell-type centroids in it."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._facts import LINEAGE, MODALITY_BIAS, PROGENITORS, SUBGROUP, T_STATES
from ._mechanisms import Mechanisms

# Latent program layout: lineage (shared), sub-group (shared), type-specific blocks.
LINEAGES = ("progenitor", "erythroid", "myeloid", "dendritic", "B", "T/NK")
N_TYPE_SHARED, N_GEX_ONLY, N_ATAC_ONLY = 8, 8, 8


@dataclass
class Layout:
    """Where each kind of latent programme sits: ``[lineage | subgroup | type | GEX | ATAC]``.

    The lineage, sub-group and type-shared columns (up to ``s_type.stop``) are seen by both
    modalities, ``s_gex`` only by GEX and ``s_atac`` only by ATAC.
    """

    k: int  # number of latent programmes
    s_type: slice  # type-specific programmes seen by both modalities
    s_gex: slice  # type-specific, GEX only
    s_atac: slice  # type-specific, ATAC only
    centroids: np.ndarray  # types x k
    type_index: dict[str, int]  # cell type -> row of centroids


def latent_layout(rng: np.random.Generator, cell_types, modality_bias: float) -> Layout:
    """Lay out the latent programmes and draw one centroid per cell type.

    A cell type gets a fixed loading on its lineage and sub-group programmes and random
    loadings on the type-specific ones. For the types in :data:`MODALITY_BIAS` the
    type-specific loadings are weak except in the favoured modality, more so the larger
    ``modality_bias`` (0..1).
    """
    lineages = [LINEAGE[t] for t in cell_types]
    subgroups = sorted({SUBGROUP[t] for t in cell_types if t in SUBGROUP})
    n_lin, n_sub = len(LINEAGES), len(subgroups)
    k = n_lin + n_sub + N_TYPE_SHARED + N_GEX_ONLY + N_ATAC_ONLY
    s_type = slice(n_lin + n_sub, n_lin + n_sub + N_TYPE_SHARED)
    s_gex = slice(s_type.stop, s_type.stop + N_GEX_ONLY)
    s_atac = slice(s_gex.stop, k)
    centroids = np.zeros((len(cell_types), k))
    for i, t in enumerate(cell_types):
        centroids[i, LINEAGES.index(lineages[i])] = 2.0
        if t in SUBGROUP:
            centroids[i, n_lin + subgroups.index(SUBGROUP[t])] = 1.5
        amp = {"shared": 1.0, "GEX": 1.0, "ATAC": 1.0}
        bias = MODALITY_BIAS.get(t)
        if bias is not None:
            # the distinction of this type shows mainly in one modality
            weak = max(0.0, 1.0 - modality_bias)
            amp = {"shared": weak * 0.25, "GEX": weak * 0.25, "ATAC": weak * 0.25}
            amp[bias] = 1.0 + 0.5 * modality_bias
        centroids[i, s_type] = rng.normal(0, 0.55 * amp["shared"], N_TYPE_SHARED)
        centroids[i, s_gex] = rng.normal(0, 0.75 * amp["GEX"], N_GEX_ONLY)
        centroids[i, s_atac] = rng.normal(0, 0.75 * amp["ATAC"], N_ATAC_ONLY)
    type_index = {t: i for i, t in enumerate(cell_types)}
    return Layout(k, s_type, s_gex, s_atac, centroids, type_index)


def modality_views(latent: np.ndarray, layout: Layout) -> tuple[np.ndarray, np.ndarray]:
    """The latent state as GEX sees it (ATAC-only programmes zeroed) and as ATAC sees it."""
    z_gex = latent.copy()
    z_gex[:, layout.s_atac] = 0.0
    z_atac = latent.copy()
    z_atac[:, layout.s_gex] = 0.0
    return z_gex, z_atac


def shape_types(layout: Layout, mech: Mechanisms) -> Layout:
    """Make the cell types as subtle as the real ones (in place; returns ``layout``).

    The type-specific programmes (not the lineage ones) are scaled by
    ``mech.type_separation``; the T/NK states and the progenitors are pulled toward their
    group's centre below the lineage level (``t_cell_overlap``, ``progenitor_continuum``).
    """
    c = layout.centroids
    n_lin = len(LINEAGES)
    c[:, layout.s_type.start :] *= mech.type_separation
    for group, pull in ((T_STATES, mech.t_cell_overlap), (PROGENITORS, mech.progenitor_continuum)):
        rows = [layout.type_index[t] for t in group if t in layout.type_index]
        if pull > 0 and len(rows) > 1:
            centre = c[rows, n_lin:].mean(axis=0)
            c[rows, n_lin:] += pull * (centre - c[rows, n_lin:])
    return layout
