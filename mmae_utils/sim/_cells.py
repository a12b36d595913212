"""Per-cell parts of the simulator's design: who the cells are and where they sit.

Cell types and batches, movement along the differentiation trajectories, the cell cycle,
library size and sequencing depth, and the ``obs`` table in the schema of the GEO file.
Every function draws from the generator it is given, in a fixed order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._facts import BATCH_COUNTS, CELL_TYPE_COUNTS, CYCLING, DONORS, LINEAGE, TRAJECTORIES
from ._layout import Layout


def assign_cells(rng, n_cells, cell_types, batches):
    """Cell types in real proportions, with donor-to-donor composition differences.

    Returns
    -------
    ``(types, batch_codes)``: per cell, the index into ``cell_types`` and into ``batches``.
    """
    props = np.array([CELL_TYPE_COUNTS[t] for t in cell_types], dtype=float)
    props /= props.sum()
    bprops = np.array([BATCH_COUNTS[b] for b in batches], dtype=float)
    bprops /= bprops.sum()
    n_per_batch = np.floor(bprops * n_cells).astype(int)
    n_per_batch[: n_cells - n_per_batch.sum()] += 1
    types, batch_idx = [], []
    for b, nb in enumerate(n_per_batch):
        p = rng.dirichlet(props * 300 + 0.5)  # donor composition varies around the real one
        counts = rng.multinomial(nb, p)
        types.append(np.repeat(np.arange(len(cell_types)), counts))
        batch_idx.append(np.full(nb, b))
    types, batch_idx = np.concatenate(types), np.concatenate(batch_idx)
    # keep every cell type present (the rarest can be missed by chance in small datasets)
    for t in range(len(cell_types)):
        if not np.any(types == t):
            donor = np.flatnonzero(np.bincount(types, minlength=len(cell_types))[types] > 2)
            types[rng.choice(donor)] = t
    return types, batch_idx


def trajectories(rng, layout: Layout, types: np.ndarray, *, lead: float = 0.0, pt_noise=0.02):
    """Place cells on the :data:`TRAJECTORIES` and move them toward their next stage.

    Each cell of a trajectory stage gets a position within its segment; it moves that far
    (up to 80 %) toward the next stage's centroid and shares its type membership with it,
    so the trajectory is continuous. The root (HSC) is shared: only a share of it starts
    each path. Cells off the trajectories keep their type's centroid and NaN pseudotime.
    Chromatin runs ahead of expression: ATAC sees each cell ``lead`` (a share of a
    segment) further along; the ATAC pseudotime is measured on its own, with noise of
    standard deviation ``pt_noise``.

    Returns
    -------
    ``(latent, latent_atac, membership, pt_gex, pt_atac)``: cells x k latent state (before
    noise) as GEX sees it and as ATAC sees it (the same array without a lead), cells x
    types soft membership, and the GEX and ATAC pseudotimes.
    """
    n_cells, n_types = types.size, layout.centroids.shape[0]
    centroids, type_index = layout.centroids, layout.type_index
    membership = np.zeros((n_cells, n_types))
    membership[np.arange(n_cells), types] = 1.0
    latent = centroids[types].copy()
    latent_atac = latent.copy() if lead > 0 else latent
    pt_gex = np.full(n_cells, np.nan)
    pt_atac = np.full(n_cells, np.nan)
    for path in TRAJECTORIES.values():
        path = [t for t in path if t in type_index]
        if len(path) < 2:
            continue
        m = len(path)
        for j, t in enumerate(path):
            cells = np.flatnonzero(types == type_index[t])
            if t == path[0]:  # the root (HSC) is shared: only a share of it starts each path
                cells = cells[rng.random(cells.size) < 1.0 / len(TRAJECTORIES)]
                cells = cells[np.isnan(pt_gex[cells])]
            f = rng.random(cells.size)  # position within this segment
            t_cells = (j + f) / m
            pt_gex[cells] = t_cells
            f_atac = np.minimum(f + lead, 1.0)
            if j + 1 < m:  # move toward the next stage: a continuous trajectory
                nxt = type_index[path[j + 1]]
                w = (f * 0.8)[:, None]
                latent[cells] = (1 - w) * latent[cells] + w * centroids[nxt]
                membership[cells, types[cells]] = 1 - w[:, 0]
                membership[cells, nxt] += w[:, 0]
                if lead > 0:
                    w = (f_atac * 0.8)[:, None]
                    latent_atac[cells] = (1 - w) * latent_atac[cells] + w * centroids[nxt]
            shift = (f_atac - f) / m if lead > 0 else 0.0
            pt_atac[cells] = np.clip(t_cells + shift + rng.normal(0, pt_noise, cells.size), 0, 1)
    return latent, latent_atac, membership, pt_gex, pt_atac


def cell_cycle(rng, cell_types, types: np.ndarray, *, share: float = 1.0):
    """A phase and a smooth intensity for S and G2/M.

    A cell cycles with its type's :data:`CYCLING` fraction (others 0.05) times ``share``
    (at most 0.9); a cycling cell's position on the cycle sets its S and G2/M
    intensities, which overlap a little.

    Returns
    -------
    ``(cc, phase)``: cells x 2 (S, G2/M) intensities and the phase (``G1``, ``S``, ``G2M``).
    """
    n_cells = types.size
    p_cyc = np.array([CYCLING.get(t, 0.05) for t in cell_types])[types]
    if share != 1.0:
        p_cyc = np.minimum(p_cyc * share, 0.9)
    cycling = rng.random(n_cells) < p_cyc
    angle = rng.random(n_cells)
    s_int = np.where(cycling, np.clip(np.sin(np.pi * np.clip(angle * 1.6, 0, 1)), 0, 1), 0.0)
    g2m_int = np.where(
        cycling, np.clip(np.sin(np.pi * np.clip(angle * 1.6 - 0.6, 0, 1)), 0, 1), 0.0
    )
    cc = np.column_stack([s_int, g2m_int]) * rng.uniform(0.7, 1.3, (n_cells, 1))
    phase = np.where(
        ~cycling | (np.maximum(s_int, g2m_int) < 0.3), "G1", np.where(s_int >= g2m_int, "S", "G2M")
    )
    return cc, phase


def library_sizes(rng, cell_types, types, batch_codes, n_batches, batch_effect, atac_density):
    """GEX library sizes and ATAC depth: per cell type, per batch and per cell.

    Returns
    -------
    ``(log_lib, atac_depth)``: per cell, the log GEX library size and the ATAC logit
    offset (``log(atac_density)`` included). The batch terms scale with ``batch_effect``.
    """
    n_cells = types.size
    lib_type = rng.normal(0, 0.25, len(cell_types))
    for i, t in enumerate(cell_types):
        if t in ("Plasma cell", "Proerythroblast", "G/M prog"):
            lib_type[i] += 0.4
        elif t in ("Normoblast",) or LINEAGE[t] == "T/NK":
            lib_type[i] -= 0.25
    lib_batch = rng.normal(0, 0.25 * batch_effect, n_batches)
    log_lib = np.log(2800) + lib_type[types] + lib_batch[batch_codes] + rng.normal(0, 0.45, n_cells)
    depth_batch = rng.normal(0, 0.3 * batch_effect, n_batches)
    atac_depth = depth_batch[batch_codes] + rng.normal(0, 0.5, n_cells) + np.log(atac_density)
    return log_lib, atac_depth


def _barcodes(rng, n: int) -> np.ndarray:
    """``n`` distinct random 16-letter ACGT barcodes, like 10x cell barcodes."""
    letters = np.frombuffer(b"ACGT", dtype=np.uint8)
    seen: set[bytes] = set()
    out = []
    while len(out) < n:
        codes = letters[rng.integers(0, 4, size=(n - len(out), 16))]
        for row in codes:
            b = row.tobytes()
            if b not in seen:
                seen.add(b)
                out.append(b.decode())
    return np.array(out, dtype=object)


def obs_table(rng, cell_types, batches, types, batch_codes, pt_gex, pt_atac, phase):
    """The ``obs`` table in the schema of the GEO file (before the QC columns).

    Cell names ``<barcode>-1-<batch>``, cell type, batch, site and donor (with the donor
    metadata of :data:`DONORS`), pseudotimes, simulated phase and the ``is_train`` split
    (site 4 is ``test``; 5 % of the rest ``iid_holdout``).
    """
    n_cells = types.size
    batch_names = np.array(batches, dtype=object)[batch_codes]
    barcodes = _barcodes(rng, n_cells)
    obs_names = [f"{bc}-1-{b}" for bc, b in zip(barcodes, batch_names, strict=True)]
    site_num = np.array([int(b[1 : b.index("d")]) for b in batch_names])
    donor_num = np.array([int(b[b.index("d") + 1 :]) for b in batch_names])
    donors = pd.DataFrame([DONORS[d] for d in donor_num])
    obs = pd.DataFrame(index=pd.Index(obs_names))
    obs["cell_type"] = pd.Categorical(
        np.array(cell_types, dtype=object)[types], categories=sorted(cell_types)
    )
    obs["batch"] = pd.Categorical(batch_names, categories=list(batches))
    obs["ATAC_pseudotime_order"] = pt_atac
    obs["GEX_pseudotime_order"] = pt_gex
    obs["Samplename"] = pd.Categorical(
        [f"site{s}_donor{d}_multiome" for s, d in zip(site_num, donor_num, strict=True)]
    )
    obs["Site"] = pd.Categorical([f"site{s}" for s in site_num])
    obs["DonorNumber"] = pd.Categorical([f"donor{d}" for d in donor_num])
    obs["Modality"] = pd.Categorical(["multiome"] * n_cells)
    obs["VendorLot"] = pd.Categorical([f"{3054455 + s}" for s in site_num])
    for col in ("DonorID", "DonorAge", "DonorBMI"):
        obs[col] = donors[col].to_numpy()
    for col in ("DonorBloodType", "DonorRace", "Ethnicity", "DonorGender", "DonorSmoker"):
        obs[col] = pd.Categorical(donors[col].to_numpy())
    obs["QCMeds"] = donors["QCMeds"].to_numpy().astype(bool)
    obs["GEX_phase"] = pd.Categorical(phase, categories=["G1", "G2M", "S"])
    split = np.where(np.isin(batch_names, ["s4d1", "s4d8", "s4d9"]), "test", "train")
    split[(split == "train") & (rng.random(n_cells) < 0.05)] = "iid_holdout"
    obs["is_train"] = pd.Categorical(split, categories=["iid_holdout", "test", "train"])
    return obs
