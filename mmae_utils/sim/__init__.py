"""A generative simulator of paired GEX + ATAC bone-marrow cells in the GSE194122 schema.

:func:`synthetic_bmmc` follows the schema of the NeurIPS 2021 multiome file exactly
(names, dtypes, categories, layers, ``obsm`` and ``uns`` entries) and reaches its full
size (69,249 cells x 129,921 features) in bounded memory by streaming to disk. The
constants below are the facts about the real file it reproduces.

Inside the package: ``_facts`` (those facts), ``_layout``, ``_cells``, ``_genome`` and
``_programmes`` (the parts of the design), ``_mechanisms`` and ``_effects`` (what makes
the data as hard as the real file), ``_design`` (running them in order on one
random stream), ``_counts`` (block-keyed count draws), ``_stream`` (writing to disk) and
``_simulate`` (the entry point).
"""

from __future__ import annotations

from ._facts import (
    ABUNDANT_MARKERS,
    BATCH_COUNTS,
    CELL_TYPE_COUNTS,
    CHROM_SIZES,
    CYCLING,
    HOUSEKEEPING,
    LINEAGE,
    MARKERS,
    MODALITY_BIAS,
    MT_GENES,
    REAL_N_CELLS,
    REAL_N_GENES,
    REAL_N_PEAKS,
    SUBGROUP,
    SUBGROUP_BIAS,
    TRAJECTORIES,
    cell_cycle_genes,
)
from ._mechanisms import Mechanisms
from ._simulate import synthetic_bmmc

__all__ = [
    "ABUNDANT_MARKERS",
    "BATCH_COUNTS",
    "CELL_TYPE_COUNTS",
    "CHROM_SIZES",
    "CYCLING",
    "HOUSEKEEPING",
    "LINEAGE",
    "MARKERS",
    "MODALITY_BIAS",
    "MT_GENES",
    "REAL_N_CELLS",
    "REAL_N_GENES",
    "REAL_N_PEAKS",
    "SUBGROUP",
    "SUBGROUP_BIAS",
    "TRAJECTORIES",
    "Mechanisms",
    "cell_cycle_genes",
    "synthetic_bmmc",
]
