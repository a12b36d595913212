"""The simulator's design: everything about a dataset except the per-entry count draws.

:func:`design` runs the parts in a fixed order on one generator (seeded with
``[seed, 0]``), so a seed always gives the same design: latent layout, cells and
trajectories, cell cycle, library sizes, gene and peak programmes (with their batch
effects) and the ``obs``/``var`` tables. Reordering the calls changes every draw after.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from ._cells import assign_cells, cell_cycle, library_sizes, obs_table, trajectories
from ._effects import Effects, broad_cycle, effects, stream
from ._facts import LINEAGE
from ._layout import LINEAGES, latent_layout, modality_views, shape_types
from ._mechanisms import Mechanisms
from ._programmes import gene_programmes, peak_programmes, scale_markers, var_table


@dataclass
class Design:
    """Everything about the simulated dataset except the per-entry count draws."""

    obs: pd.DataFrame
    var: pd.DataFrame
    n_genes: int
    n_peaks: int
    # per cell
    z_gex: np.ndarray  # cells x k (latent programs seen by GEX)
    z_atac: np.ndarray  # cells x k (latent programs seen by ATAC)
    membership: np.ndarray  # cells x types (soft, interpolated along trajectories)
    cc: np.ndarray  # cells x 2 (S and G2/M intensity)
    log_lib: np.ndarray  # cells (GEX library size, log)
    atac_depth: np.ndarray  # cells (logit offset)
    batch_codes: np.ndarray  # cells
    # per feature
    gex_base: np.ndarray  # genes (log-mean profile)
    gex_w: np.ndarray  # genes x k
    gex_markers: sp.csr_matrix  # types x genes (log-fold effects)
    gex_cc: np.ndarray  # 2 x genes
    gex_batch: np.ndarray  # batches x genes
    gex_theta: np.ndarray  # genes (NB inverse dispersion)
    atac_base: np.ndarray  # peaks (logit)
    atac_w: np.ndarray  # peaks x k
    atac_markers: sp.csr_matrix  # types x peaks (logit effects, through gene links)
    atac_batch: np.ndarray  # batches x peaks
    peak_gene: sp.csr_matrix  # peaks x genes (gene-activity links)
    latent_for_obsm: np.ndarray  # cells x k (true joint state, for the precomputed obsm stand-ins)
    effects: Effects  # the mechanisms' parameters (Mechanisms)


def _mechanism_effects(
    seed, mech, genes, peaks, layout, types, batch_codes, batches, cell_types, log_lib
):
    """The mechanisms' parameters, each drawn from its own stream, and the library sizes
    with the site-level capture differences; ``genes.cc`` gains the broad cell-cycle
    programme."""
    sites = sorted({b.split("d")[0] for b in batches})
    site_codes = np.array([sites.index(b.split("d")[0]) for b in batches])[batch_codes]
    lineage_codes = np.array([LINEAGES.index(LINEAGE[t]) for t in cell_types])[types]
    genes.cc = broad_cycle(stream(seed, "cycle_breadth"), genes.cc, genes.var.index, mech)
    parts = dict(
        gex_w=genes.w, n_shared=layout.s_type.stop, peak_gene=peaks.peak_gene,
        atac_base=peaks.base, gex_cc=genes.cc, gex_base=genes.base, gex_markers=genes.markers,
        centroids_gex=modality_views(layout.centroids, layout)[0],
        types=types, lineage_codes=lineage_codes, n_lineages=len(LINEAGES),
        batch_codes=batch_codes, n_batches=len(batches), site_codes=site_codes,
        n_sites=len(sites),
    )  # fmt: skip
    eff = effects(seed, mech, parts)
    if mech.capture > 0:  # site-level differences in GEX capture (library size)
        shift = stream(seed, "library").normal(0, mech.capture, len(sites))
        log_lib = log_lib + shift[site_codes]
    return eff, log_lib


def design(
    n_cells: int,
    n_genes: int,
    n_peaks: int,
    *,
    seed: int,
    cell_types,
    batches,
    batch_effect: float,
    modality_bias: float,
    atac_density: float,
    noise: float,
    mechanisms: Mechanisms,
) -> Design:
    """Draw the design of a :func:`~mmae_utils.sim.synthetic_bmmc` dataset (arguments checked).

    Returns
    -------
    The :class:`Design`, per-cell and per-feature arrays in float32 (library sizes and
    depth in float64).
    """
    mech = mechanisms
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    layout = shape_types(latent_layout(rng, cell_types, modality_bias), mech)
    types, batch_codes = assign_cells(rng, n_cells, cell_types, batches)
    latent, latent_atac, membership, pt_gex, pt_atac = trajectories(
        rng, layout, types, lead=mech.atac_lead, pt_noise=mech.atac_pseudotime_noise
    )
    within = rng.normal(0, 0.35 * noise, latent.shape)  # within-type variation
    latent += within
    if latent_atac is not latent:
        latent_atac += within
    z_gex, _ = modality_views(latent, layout)
    _, z_atac = modality_views(latent_atac, layout)
    cc, phase = cell_cycle(rng, cell_types, types, share=mech.cycling)
    log_lib, atac_depth = library_sizes(
        rng, cell_types, types, batch_codes, len(batches), batch_effect, atac_density
    )
    genes = gene_programmes(rng, n_genes, layout, modality_bias, batches, batch_effect)
    scale_markers(genes, layout, mech)
    genes.cc = genes.cc * mech.cell_cycle
    peaks = peak_programmes(rng, n_peaks, genes, layout, batches, batch_effect)
    obs = obs_table(rng, cell_types, batches, types, batch_codes, pt_gex, pt_atac, phase)
    eff, log_lib = _mechanism_effects(
        seed, mech, genes, peaks, layout, types, batch_codes, batches, cell_types, log_lib
    )
    f32 = np.float32
    return Design(
        obs=obs,
        var=var_table(genes, peaks),
        n_genes=n_genes,
        n_peaks=n_peaks,
        z_gex=z_gex.astype(f32),
        z_atac=z_atac.astype(f32),
        membership=membership.astype(f32),
        cc=cc.astype(f32),
        log_lib=log_lib,
        atac_depth=atac_depth,
        batch_codes=batch_codes,
        gex_base=genes.base.astype(f32),
        gex_w=genes.w.astype(f32),
        gex_markers=genes.markers.astype(f32),
        gex_cc=genes.cc.astype(f32),
        gex_batch=genes.batch.astype(f32),
        gex_theta=genes.theta.astype(f32),
        atac_base=peaks.base.astype(f32),
        atac_w=peaks.w.astype(f32),
        atac_markers=peaks.markers.astype(f32),
        atac_batch=peaks.batch.astype(f32),
        peak_gene=peaks.peak_gene,
        latent_for_obsm=latent.astype(f32),
        effects=eff,
    )
