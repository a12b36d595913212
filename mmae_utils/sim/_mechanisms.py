"""The simulator's mechanisms, each with its own parameter: :class:`Mechanisms`."""

from __future__ import annotations

import dataclasses
import numbers


@dataclasses.dataclass(frozen=True, kw_only=True)
class Mechanisms:
    """Strengths of the simulator's mechanisms (:func:`~mmae_utils.sim.synthetic_bmmc`).

    The defaults are calibrated so that the competition's PCA baseline and a random
    embedding score on a simulated draw close to what they score on the real GSE194122
    file (``benchmarks/bench_calibration.py``; chosen on the development draws only, see
    :data:`~mmae_utils.sim.DEVELOPMENT_DRAWS`). :meth:`linear` switches every mechanism
    below off: the simulator's earlier, linear model. Every value is a number >= 0.

    Parameters
    ----------
    type_separation
        Scale of the type-specific latent programmes (what sets cell types apart below
        their lineage); 1 is the linear model's clean separation, smaller values make
        types as subtle as the real BMMC types.
    marker_strength
        Scale of the effects of the named marker genes (:data:`~mmae_utils.sim.MARKERS`,
        and of their linked peaks) shared within a lineage: strong, as real markers (LYZ,
        HBB, CD3E, ...) are among the most variable genes of real data. Markers that tell
        a type from its lineage siblings are scaled by ``type_separation`` as well.
    marker_background
        In (0, 1]: a marker's level outside its cell types, relative to the linear model
        (its level in its types stays), and the scale of its response to the latent
        programmes (which would raise it in other types): real markers are nearly silent
        elsewhere.
    abundant_markers
        Extra log-fold of the most abundant markers (:data:`~mmae_utils.sim.ABUNDANT_MARKERS`)
        in their cell types, in GEX only: haemoglobins make up a large share of an
        erythroblast's RNA, LYZ and S100A8/9 of a monocyte's (and through ambient RNA
        they reach every cell).
    t_cell_overlap
        In [0, 1]: how far the T/NK states (naive and activated CD4, naive and effector
        CD8, NK, ILC) are pulled toward their common centre: overlapping states.
    progenitor_continuum
        In [0, 1]: how far the progenitors (HSC, lymphoid, G/M and MK/E progenitors) move
        toward one another along the stem-cell axis, a continuum instead of islands.
    nonlinearity
        In [0, 1]: share of each feature's response to the latent state that goes through
        a saturating function (``tanh``) instead of a linear one, and the strength of the
        combinatorial (product of two programmes) terms.
    regulation
        Strength of the regulation of a gene by the accessibility of its linked peaks, a
        saturating (Hill, n = 2) function of their open probability: expression follows
        chromatin.
    atac_lead
        How far ahead (a share of a trajectory segment) chromatin is of expression along
        the differentiation trajectories: ATAC sees each cell further along its path.
    atac_pseudotime_noise
        Standard deviation of the noise of the ATAC pseudotime, measured on its own (the
        GEX pseudotime's noise is a third of it).
    cell_cycle
        Scale of the effect of the cell cycle on the S and G2/M genes (log-fold).
    cycle_breadth
        In [0, 1]: share of the other (unnamed) genes that follow the cycle weakly
        (log-fold up to ``0.5 cell_cycle``), as hundreds of genes do in real cells; the
        cycle is then a broad axis of variation, not one carried by a few genes.
    cycling
        Scale of the share of cycling cells of each type (:data:`~mmae_utils.sim.CYCLING`,
        others 0.05; capped at 0.9).
    atac_cell_cycle
        Effect of the cell cycle on the peaks linked to cell-cycle genes, relative to the
        genes' (weak: chromatin changes little through the cycle).
    donor_type
        Standard deviation of the donor x cell-lineage interaction: a batch shifts the
        features of one lineage differently from another's (log-fold / logit).
    capture
        Standard deviation of the site-level capture differences: GEX library size (log)
        and ATAC signal-to-noise (the share of fragments that fall in peaks at random).
    ambient
        Mean share of ambient (cell-free) RNA in a cell's GEX counts; it varies by batch.
    """

    type_separation: float = 0.35
    marker_strength: float = 0.45
    marker_background: float = 0.2
    abundant_markers: float = 4.0
    t_cell_overlap: float = 0.6
    progenitor_continuum: float = 0.5
    nonlinearity: float = 0.6
    regulation: float = 1.5
    atac_lead: float = 0.15
    atac_pseudotime_noise: float = 0.12
    cell_cycle: float = 0.5
    cycle_breadth: float = 0.3
    cycling: float = 2.5
    atac_cell_cycle: float = 0.15
    donor_type: float = 0.4
    capture: float = 0.3
    ambient: float = 0.04

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, numbers.Real) or value < 0:
                raise ValueError(f"Mechanisms.{field.name} must be a number >= 0, got {value!r}.")
            object.__setattr__(self, field.name, float(value))
        for name in ("t_cell_overlap", "progenitor_continuum", "nonlinearity", "cycle_breadth"):
            if getattr(self, name) > 1:
                raise ValueError(f"Mechanisms.{name} must be in [0, 1], got {getattr(self, name)}.")
        if not 0 < self.marker_background <= 1:
            raise ValueError(
                f"Mechanisms.marker_background must be in (0, 1], got {self.marker_background}."
            )

    @classmethod
    def linear(cls) -> Mechanisms:
        """Every mechanism off: the earlier linear model (clean types, linear responses,
        ATAC pseudotime = GEX's plus a little noise, weak cell cycle, additive batches)."""
        return cls(
            type_separation=1.0,
            marker_strength=1.0,
            marker_background=1.0,
            abundant_markers=0.0,
            t_cell_overlap=0.0,
            progenitor_continuum=0.0,
            nonlinearity=0.0,
            regulation=0.0,
            atac_lead=0.0,
            atac_pseudotime_noise=0.02,
            cell_cycle=1.0,
            cycle_breadth=0.0,
            cycling=1.0,
            atac_cell_cycle=0.0,
            donor_type=0.0,
            capture=0.0,
            ambient=0.0,
        )

    def replace(self, **changes) -> Mechanisms:
        """A copy with ``changes`` (validated)."""
        return dataclasses.replace(self, **changes)
