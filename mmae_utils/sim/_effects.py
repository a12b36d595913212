"""The mechanisms that make the simulator as hard as the real file, drawn once per design.

Each function draws the per-feature or per-batch parameters of one mechanism of
:class:`~mmae_utils.sim.Mechanisms` from that mechanism's own generator (:func:`stream`,
keyed ``[seed, 4, k]``), so that switching one mechanism off leaves every other draw of
the simulator as it was, and :meth:`Mechanisms.linear` gives the earlier simulator.
:func:`effects` collects them in :class:`Effects`, which the count draws of ``_counts``
apply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from ._mechanisms import Mechanisms


@dataclass
class Effects:
    """Per-design parameters of the mechanisms (``None``: the mechanism is off)."""

    nonlinearity: float  # share of the latent response through tanh
    comb_dims: np.ndarray | None  # genes x 2 latent dims of the combinatorial term
    comb_w: np.ndarray | None  # genes (0: no combinatorial term)
    reg_links: sp.csr_matrix | None  # peaks x genes, columns averaging a gene's linked peaks
    reg_w: np.ndarray | None  # genes: regulation strength (0 without linked peaks)
    reg_k: np.ndarray | None  # genes: half-saturation open probability (Hill, n = 2)
    atac_cc: np.ndarray | None  # 2 x peaks: cell-cycle effect on peaks (logit)
    lineage_codes: np.ndarray  # cells: lineage index
    n_lineages: int
    gex_donor_type: np.ndarray | None  # (batches x lineages) x genes
    atac_donor_type: np.ndarray | None  # (batches x lineages) x peaks
    atac_background: np.ndarray | None  # cells: share of fragments falling in peaks at random
    background_open: float  # open probability of a peak for a random fragment
    ambient_share: np.ndarray | None  # cells: share of ambient RNA
    ambient_profile: np.ndarray | None  # genes: the ambient expression profile (sums to 1)


#: The mechanisms that draw random parameters, in the order of their stream keys.
#: ``"capture"`` draws the ATAC signal-to-noise, ``"library"`` the GEX capture of each site.
STREAMS = (
    "cycle_breadth",
    "nonlinearity",
    "regulation",
    "donor_type",
    "capture",
    "ambient",
    "library",
)


def stream(seed: int, mechanism: str) -> np.random.Generator:
    """The generator of ``mechanism``'s parameters (one of :data:`STREAMS`) for ``seed``."""
    return np.random.default_rng(np.random.SeedSequence([seed, 4, STREAMS.index(mechanism)]))


def _combinatorial(rng, gex_w: np.ndarray, n_shared: int, strength: float):
    """A product of two shared programmes for 30 % of the programme genes (AND-like)."""
    genes = np.flatnonzero((gex_w != 0).any(axis=1))
    chosen = genes[rng.random(genes.size) < 0.3]
    dims = np.zeros((gex_w.shape[0], 2), dtype=np.int64)
    w = np.zeros(gex_w.shape[0])
    dims[chosen] = (
        np.stack([rng.choice(n_shared, 2, replace=False) for _ in chosen]) if chosen.size else 0
    )
    w[chosen] = strength * rng.normal(0, 0.8, chosen.size)
    return dims, w.astype(np.float32)


def _regulation(rng, peak_gene: sp.csr_matrix, atac_base: np.ndarray, strength: float):
    """Links averaging each gene's peaks, the strength per gene and its half-saturation."""
    n_links = np.asarray(peak_gene.sum(axis=0)).ravel()
    scale = np.divide(1.0, n_links, out=np.zeros_like(n_links, dtype=float), where=n_links > 0)
    links = sp.csr_matrix(peak_gene @ sp.diags(scale)).astype(np.float32)
    base_open = 1 / (1 + np.exp(-atac_base))
    k = np.asarray(links.T @ base_open).ravel() * 2.0  # twice the gene's resting openness
    w = np.where(n_links > 0, strength * rng.uniform(0.5, 1.5, n_links.size), 0.0)
    return links, w.astype(np.float32), np.maximum(k, 1e-3).astype(np.float32)


def _donor_type(rng, n_batches: int, n_lineages: int, n_features: int, sd: float):
    """A shift per (batch, lineage) and feature: donors differ by cell lineage."""
    return rng.normal(0, sd, (n_batches * n_lineages, n_features)).astype(np.float32)


def _ambient_profile(gex_base, gex_w, centroids, gex_markers, types: np.ndarray) -> np.ndarray:
    """The expression profile of the average cell (each type's profile at its centroid,
    weighted by the type's share): what free-floating RNA looks like."""
    props = np.bincount(types, minlength=gex_markers.shape[0]) / types.size
    logit = gex_base + centroids @ gex_w.T + gex_markers.toarray()
    prob = np.exp(logit - logit.max(axis=1, keepdims=True))
    prob /= prob.sum(axis=1, keepdims=True)
    return (props @ prob).astype(np.float32)


def broad_cycle(rng, gex_cc: np.ndarray, names, mech: Mechanisms) -> np.ndarray:
    """``gex_cc`` with a share ``mech.cycle_breadth`` of the unnamed genes following the
    cycle weakly (one phase each, log-fold up to ``0.5 mech.cell_cycle``)."""
    if mech.cycle_breadth <= 0:
        return gex_cc
    fillers = np.flatnonzero(np.char.startswith(np.asarray(names, dtype=str), "SYN"))
    chosen = fillers[rng.random(fillers.size) < mech.cycle_breadth]
    out = gex_cc.copy()
    out[rng.integers(0, 2, chosen.size), chosen] = mech.cell_cycle * rng.uniform(
        0.1, 0.5, chosen.size
    )
    return out


def effects(seed: int, mech: Mechanisms, parts: dict) -> Effects:
    """Draw the mechanisms' parameters, each from its own :func:`stream` of ``seed``.

    ``parts`` holds what they act on: ``gex_w``, ``n_shared`` (latent programmes seen by
    both modalities), ``peak_gene``, ``atac_base``, ``gex_cc``, ``gex_base``,
    ``gex_markers``, ``centroids_gex`` (the type centroids as GEX sees them), ``types``,
    ``lineage_codes``, ``n_lineages``, ``batch_codes``, ``n_batches``, ``site_codes`` and
    ``n_sites``.
    """
    p = parts
    comb = (None, None)
    if mech.nonlinearity > 0:
        rng = stream(seed, "nonlinearity")
        comb = _combinatorial(rng, p["gex_w"], p["n_shared"], mech.nonlinearity)
    reg = (None, None, None)
    if mech.regulation > 0:
        rng = stream(seed, "regulation")
        reg = _regulation(rng, p["peak_gene"], p["atac_base"], mech.regulation)
    atac_cc = None
    if mech.atac_cell_cycle > 0:
        atac_cc = (mech.atac_cell_cycle * (p["peak_gene"] @ p["gex_cc"].T).T).astype(np.float32)
    shape = (p["n_batches"], p["n_lineages"])
    gex_dt = atac_dt = None
    if mech.donor_type > 0:
        rng = stream(seed, "donor_type")
        gex_dt = _donor_type(rng, *shape, p["gex_w"].shape[0], mech.donor_type)
        atac_dt = _donor_type(rng, *shape, p["atac_base"].size, mech.donor_type)
    background = None
    if mech.capture > 0:  # per site: how noisy its ATAC is
        site_bg = mech.capture * stream(seed, "capture").uniform(0.1, 1.0, p["n_sites"])
        site_bg = np.clip(site_bg, 0, 0.6)
        background = site_bg[p["site_codes"]].astype(np.float32)
    share = profile = None
    if mech.ambient > 0:
        per_batch = mech.ambient * stream(seed, "ambient").uniform(0.4, 1.6, p["n_batches"])
        share = per_batch[p["batch_codes"]].astype(np.float32)
        profile = _ambient_profile(
            p["gex_base"], p["gex_w"], p["centroids_gex"], p["gex_markers"], p["types"]
        )
    open_bg = float(np.mean(1 / (1 + np.exp(-p["atac_base"]))))
    return Effects(
        mech.nonlinearity, *comb, *reg, atac_cc, p["lineage_codes"], p["n_lineages"],
        gex_dt, atac_dt, background, open_bg, share, profile,
    )  # fmt: skip
