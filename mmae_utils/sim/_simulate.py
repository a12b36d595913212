"""The public entry point of the simulator: :func:`synthetic_bmmc`."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import anndata as ad
import numpy as np

from .._utils import progress_bar
from ._counts import cell_chunks, obsm_standins, simulate_in_memory, uns_entries
from ._design import design
from ._facts import BATCH_COUNTS, CELL_TYPE_COUNTS
from ._mechanisms import Mechanisms
from ._stream import stream_to_h5ad


def _check_sizes(n_cells: int, n_genes: int, n_peaks: int, cell_types) -> None:
    """Sizes must be integers large enough for the simulator's fixed gene and peak roles."""
    for name, value, low in (
        ("n_cells", n_cells, 100),
        ("n_genes", n_genes, 300),
        ("n_peaks", n_peaks, 500),
    ):
        if not isinstance(value, int | np.integer) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer, got {value!r}.")
        if value < low:
            raise ValueError(f"{name}={value} is too small: the simulator needs at least {low}.")
    if len(cell_types) < 2:
        raise ValueError("cell_types must name at least two cell types.")


def _check_arguments(
    n_cells, n_genes, n_peaks, cell_types, batches, batch_effect, modality_bias, atac_density, noise
) -> None:
    """Raise a ``ValueError`` (or ``TypeError``) that names the first bad argument."""
    unknown = sorted(set(cell_types) - set(CELL_TYPE_COUNTS)) + sorted(
        set(batches) - set(BATCH_COUNTS)
    )
    if unknown:
        raise ValueError(
            f"Unknown cell types or batches: {unknown}. Choose from {list(CELL_TYPE_COUNTS)} "
            f"and {list(BATCH_COUNTS)}."
        )
    _check_sizes(n_cells, n_genes, n_peaks, cell_types)
    if not 0 <= modality_bias <= 1:
        raise ValueError(f"modality_bias must be in [0, 1], got {modality_bias}.")
    if atac_density <= 0 or batch_effect < 0 or noise < 0:
        raise ValueError("atac_density must be > 0; batch_effect and noise must be >= 0.")


def synthetic_bmmc(
    n_cells: int = 5000,
    n_genes: int = 4000,
    n_peaks: int = 12000,
    *,
    seed: int = 0,
    path: str | os.PathLike | None = None,
    cell_types: list[str] | None = None,
    batches: list[str] | None = None,
    batch_effect: float = 1.0,
    modality_bias: float = 0.8,
    atac_density: float = 1.0,
    noise: float = 1.0,
    mechanisms: Mechanisms | None = None,
    chunk_size: int = 2048,
    progress: bool | None = None,
) -> ad.AnnData:
    """Simulate paired GEX + ATAC bone-marrow cells in the schema of GEO GSE194122.

    A generative model, not a resampling of real data:

    - **Cell states.** The 22 cell types of the real file in their real proportions (varying
      from donor to donor), organised by lineage (progenitors, erythroid, myeloid, dendritic,
      B, T/NK) and sub-group (CD4, CD8, innate, mature B, monocyte). Cells on the erythroid,
      B-cell and monocyte trajectories move continuously from one stage to the next and get
      ``GEX_pseudotime_order`` and ``ATAC_pseudotime_order`` (NaN elsewhere).
    - **Modalities see different things.** Latent programmes are shared (lineage, sub-group,
      part of the type identity), GEX-only or ATAC-only; for the cell types in
      :data:`MODALITY_BIAS` (B-cell subtypes and naive vs effector CD8 T cells in ATAC,
      CD4 T activation, monocyte subsets and NK vs ILC in GEX) the distinction sits mainly
      in one modality (their own programmes and their distinguishing markers), so joint
      integration has something to gain.
    - **GEX** counts are negative binomial around a softmax expression profile times a
      log-normal library size (about 8-12 % non-zero at 13,431 genes), with real marker
      genes (CD3E, MS4A1, HBB, LYZ, ...), housekeeping and mitochondrial genes, and a cell
      cycle on the S and G2/M genes of ``scanpy.tl.score_genes_cell_cycle``
      (:func:`cell_cycle_genes`). Filler genes are named ``SYN00001``, ... .
    - **ATAC** peaks (``chrN-start-end``, sorted) are promoter/enhancer peaks linked to genes,
      which follow their gene's shared programmes, or background peaks; accessibility is
      Bernoulli with cell-level depth, fragment counts are mostly 1 and 2 (about 3-8 %
      non-zero at 116,490 peaks).
    - **Batch effects**: site effects plus donor-within-site effects, per feature and on
      library size / sequencing depth, in both modalities.

    Results depend only on the arguments (not on ``chunk_size``): counts are drawn in blocks
    of 256 cells, each with its own random stream derived from ``seed``.

    Parameters
    ----------
    n_cells, n_genes, n_peaks
        Size. The real file is 69,249 x (13,431 + 116,490).
    seed
        Random seed.
    path
        If given, stream the result to this ``.h5ad`` file chunk by chunk (bounded memory,
        written atomically: a temporary file renamed on success) and return it as
        ``load_multiome(path, backed=True)`` does: metadata in memory, counts on disk. Use
        this for the full size.
    cell_types
        Subset of :data:`CELL_TYPE_COUNTS` to simulate (default all 22).
    batches
        Subset of :data:`BATCH_COUNTS` (default all 13); cells are split in proportion.
    batch_effect
        Scale of all batch effects (0 removes them).
    modality_bias
        0..1: how strongly the types in :data:`MODALITY_BIAS` differ mainly in one modality.
    atac_density
        Multiplies the odds of accessibility (0.5 gives sparser ATAC).
    noise
        Scale of the within-type variation of the latent state.
    mechanisms
        Strengths of the mechanisms that make the data as hard as the real file (subtle
        types, nonlinear regulation, chromatin ahead of expression, the cell cycle, batch
        effects by lineage, capture and ambient RNA); default :class:`Mechanisms` (the
        calibrated values); ``Mechanisms.linear()`` is the earlier linear model.
    chunk_size
        Cells simulated at a time (memory: about ``chunk_size x n_features x 8`` bytes).
    progress
        Show a progress bar (default: when more than 20,000 cells).

    Returns
    -------
    An :class:`~anndata.AnnData` (in memory; with ``path``, the metadata only, see above) with

    - ``X``: log1p of counts per 10,000 per modality (float32 CSR);
    - ``layers["counts"]``: raw counts (float32 CSR, integers);
    - ``var["feature_types"]`` (``"GEX"``/``"ATAC"``), ``var["gene_id"]``;
    - ``obs``: ``cell_type``, ``batch`` (``s1d1``...), ``Site``, ``DonorNumber``,
      ``GEX_pseudotime_order``, ``ATAC_pseudotime_order``, the QC columns (``GEX_n_counts``,
      ``GEX_n_genes``, ``GEX_pct_counts_mt``, ``ATAC_nCount_peaks``, ...), donor metadata,
      ``GEX_phase`` (the simulated phase) and ``is_train``;
    - ``obsm``: ``GEX_X_pca``, ``GEX_X_umap``, ``ATAC_lsi_full``, ``ATAC_lsi_red`` (a few
      NaN rows, as in the real file), ``ATAC_umap`` (stand-ins derived from the simulated
      latent state, not from the counts) and ``ATAC_gene_activity`` (counts of the peaks
      linked to each gene, sparse);
    - ``uns``: ``dataset_id``, ``genome``, ``organism``, ``ATAC_gene_activity_var_names`` and
      ``GEX_synthetic`` (the simulator's parameters).
    """
    cell_types = list(CELL_TYPE_COUNTS) if cell_types is None else list(cell_types)
    batches = list(BATCH_COUNTS) if batches is None else list(batches)
    _check_arguments(
        n_cells,
        n_genes,
        n_peaks,
        cell_types,
        batches,
        batch_effect,
        modality_bias,
        atac_density,
        noise,
    )
    if mechanisms is None:
        mechanisms = Mechanisms()
    if not isinstance(mechanisms, Mechanisms):
        raise TypeError(f"mechanisms must be a Mechanisms, got {type(mechanisms).__name__}.")
    params = dict(
        n_cells=int(n_cells), n_genes=int(n_genes), n_peaks=int(n_peaks), seed=int(seed),
        batch_effect=float(batch_effect), modality_bias=float(modality_bias),
        atac_density=float(atac_density), noise=float(noise),
        mechanisms=dataclasses.asdict(mechanisms),
    )  # fmt: skip
    d = design(
        n_cells, n_genes, n_peaks, seed=seed, cell_types=cell_types, batches=batches,
        batch_effect=batch_effect, modality_bias=modality_bias, atac_density=atac_density, noise=noise,
        mechanisms=mechanisms,
    )  # fmt: skip
    obsm = obsm_standins(d, np.random.default_rng(np.random.SeedSequence([seed, 3])))
    uns = uns_entries(d, params)
    if progress is None:
        progress = n_cells > 20_000
    chunks = cell_chunks(n_cells, chunk_size)
    bar = progress_bar(total=n_cells, desc="simulating cells", unit="cell", disable=not progress)
    if path is None:
        return simulate_in_memory(d, chunks, seed, obsm, uns, bar)
    return stream_to_h5ad(d, Path(path), chunks, seed, obsm, uns, bar)
