"""Datasets: the built-in synthetic BMMC multiome data and the real GEO file.

The NeurIPS 2021 multiome bone-marrow file (GEO GSE194122) is 7.8 GB and cannot be
assumed to be present, so the tutorial runs by default on :func:`demo`, a dataset drawn
from :func:`synthetic_bmmc`: a generative simulator that follows the schema of the GEO file
exactly (names, dtypes, categories, layers, ``obsm`` and ``uns`` entries) and reaches its
full size (69,249 cells x 129,921 features) in bounded memory by streaming to disk.
:func:`fetch_bmmc` downloads and verifies the real file.
"""

from __future__ import annotations

import gzip
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp
from tqdm.auto import tqdm

from ._utils import atomic_path, logger
from .pp import log_normalize

# --------------------------------------------------------------------------------------
# Facts about the real file (GSE194122, multiome part)
# --------------------------------------------------------------------------------------

#: Cell-type counts in the real file (69,249 cells).
CELL_TYPE_COUNTS: dict[str, int] = {
    "CD8+ T": 11589,
    "CD14+ Mono": 10843,
    "NK": 6929,
    "CD4+ T activated": 5526,
    "Naive CD20+ B": 5052,
    "Erythroblast": 4916,
    "CD4+ T naive": 4398,
    "Transitional B": 2810,
    "Proerythroblast": 2300,
    "CD16+ Mono": 1894,
    "B1 B": 1890,
    "Normoblast": 1780,
    "Lymph prog": 1779,
    "G/M prog": 1203,
    "pDC": 1191,
    "HSC": 1072,
    "CD8+ T naive": 1012,
    "MK/E prog": 884,
    "cDC2": 859,
    "ILC": 835,
    "Plasma cell": 379,
    "ID2-hi myeloid prog": 108,
}

#: Cells per batch (site x donor) in the real file; they add up to 69,249.
BATCH_COUNTS: dict[str, int] = {
    "s1d1": 6224,
    "s1d2": 6740,
    "s1d3": 4279,
    "s2d1": 4220,
    "s2d4": 6111,
    "s2d5": 4895,
    "s3d3": 4325,
    "s3d6": 1679,
    "s3d7": 1771,
    "s3d10": 6781,
    "s4d1": 8023,
    "s4d8": 9876,
    "s4d9": 4325,
}

#: Full size of the real multiome file.
REAL_N_CELLS, REAL_N_GENES, REAL_N_PEAKS = 69249, 13431, 116490

#: Lineage of each cell type (drives the shared part of the simulated programs).
LINEAGE: dict[str, str] = {
    "HSC": "progenitor",
    "Lymph prog": "progenitor",
    "G/M prog": "progenitor",
    "MK/E prog": "progenitor",
    "Proerythroblast": "erythroid",
    "Erythroblast": "erythroid",
    "Normoblast": "erythroid",
    "CD14+ Mono": "myeloid",
    "CD16+ Mono": "myeloid",
    "ID2-hi myeloid prog": "myeloid",
    "cDC2": "dendritic",
    "pDC": "dendritic",
    "Transitional B": "B",
    "Naive CD20+ B": "B",
    "B1 B": "B",
    "Plasma cell": "B",
    "CD4+ T naive": "T/NK",
    "CD4+ T activated": "T/NK",
    "CD8+ T naive": "T/NK",
    "CD8+ T": "T/NK",
    "NK": "T/NK",
    "ILC": "T/NK",
}

#: Sub-groups: cell types that share a program below the lineage level.
SUBGROUP: dict[str, str] = {
    "CD4+ T naive": "CD4",
    "CD4+ T activated": "CD4",
    "CD8+ T naive": "CD8",
    "CD8+ T": "CD8",
    "NK": "innate",
    "ILC": "innate",
    "Transitional B": "mature B",
    "Naive CD20+ B": "mature B",
    "B1 B": "mature B",
    "CD14+ Mono": "monocyte",
    "CD16+ Mono": "monocyte",
}

#: Sub-groups whose cell types differ from one another mainly in one modality, so that
#: integrating both modalities has something to gain over either alone: e.g. the B-cell
#: subtypes and naive vs effector CD8 T cells are told apart mainly by chromatin, CD4 T
#: activation, the monocyte subsets and NK vs ILC mainly by expression.
SUBGROUP_BIAS: dict[str, str] = {
    "CD4": "GEX",
    "monocyte": "GEX",
    "innate": "GEX",
    "mature B": "ATAC",
    "CD8": "ATAC",
}

#: Cell types whose distinction from their sub-group siblings shows mainly in one modality.
MODALITY_BIAS: dict[str, str] = {
    t: SUBGROUP_BIAS[g] for t, g in SUBGROUP.items() if g in SUBGROUP_BIAS
}

#: Differentiation trajectories (as in the real file: erythroid, B cell, monocyte).
TRAJECTORIES: dict[str, tuple[str, ...]] = {
    "erythroid": ("HSC", "MK/E prog", "Proerythroblast", "Erythroblast", "Normoblast"),
    "B cell": ("HSC", "Lymph prog", "Transitional B", "Naive CD20+ B"),
    "monocyte": ("HSC", "G/M prog", "CD14+ Mono"),
}

#: Fraction of cycling cells per cell type (others 0.05).
CYCLING: dict[str, float] = {
    "HSC": 0.3,
    "Lymph prog": 0.45,
    "G/M prog": 0.5,
    "MK/E prog": 0.5,
    "Proerythroblast": 0.65,
    "Erythroblast": 0.5,
    "Normoblast": 0.15,
    "Plasma cell": 0.3,
    "ID2-hi myeloid prog": 0.3,
}

#: Marker genes (real symbols) and the cell types or lineages in which they are up.
MARKERS: dict[str, tuple[str, ...]] = {
    # progenitors
    "CD34": ("HSC", "Lymph prog", "G/M prog", "MK/E prog"),
    "PROM1": ("HSC",),
    "SPINK2": ("HSC", "Lymph prog"),
    "CRHBP": ("HSC",),
    "HLF": ("HSC",),
    "AVP": ("HSC",),
    "MEIS1": ("HSC", "MK/E prog"),
    "KIT": ("HSC", "MK/E prog", "ILC"),
    "FLT3": ("Lymph prog", "G/M prog"),
    "DNTT": ("Lymph prog",),
    "VPREB1": ("Lymph prog",),
    "IGLL1": ("Lymph prog",),
    "MPO": ("G/M prog",),
    "ELANE": ("G/M prog",),
    "AZU1": ("G/M prog",),
    "CTSG": ("G/M prog",),
    # erythroid / megakaryocyte
    "GATA1": ("MK/E prog", "Proerythroblast", "Erythroblast"),
    "KLF1": ("MK/E prog", "Proerythroblast", "Erythroblast"),
    "TFRC": ("Proerythroblast", "Erythroblast"),
    "EPOR": ("Proerythroblast",),
    "CA1": ("Erythroblast", "Normoblast"),
    "AHSP": ("Erythroblast", "Normoblast"),
    "ALAS2": ("Erythroblast", "Normoblast"),
    "GYPA": ("Erythroblast", "Normoblast"),
    "SLC4A1": ("Normoblast",),
    "HBB": ("Erythroblast", "Normoblast"),
    "HBA1": ("Erythroblast", "Normoblast"),
    "HBA2": ("Erythroblast", "Normoblast"),
    "HBD": ("Normoblast",),
    "PF4": ("MK/E prog",),
    "PPBP": ("MK/E prog",),
    "ITGA2B": ("MK/E prog",),
    "GP9": ("MK/E prog",),
    # myeloid
    "LYZ": ("CD14+ Mono", "CD16+ Mono", "ID2-hi myeloid prog", "cDC2", "G/M prog"),
    "CD14": ("CD14+ Mono",),
    "S100A8": ("CD14+ Mono",),
    "S100A9": ("CD14+ Mono", "ID2-hi myeloid prog"),
    "FCN1": ("CD14+ Mono", "CD16+ Mono"),
    "VCAN": ("CD14+ Mono",),
    "CSF1R": ("CD14+ Mono", "CD16+ Mono"),
    "FCGR3A": ("CD16+ Mono", "NK"),
    "MS4A7": ("CD16+ Mono",),
    "CX3CR1": ("CD16+ Mono", "NK"),
    "LST1": ("CD16+ Mono",),
    "CD68": ("CD14+ Mono", "CD16+ Mono"),
    "CEBPA": ("G/M prog", "ID2-hi myeloid prog"),
    "CEBPB": ("CD14+ Mono", "ID2-hi myeloid prog"),
    "ID2": ("ID2-hi myeloid prog", "NK", "ILC"),
    # dendritic cells
    "FCER1A": ("cDC2",),
    "CD1C": ("cDC2",),
    "CLEC10A": ("cDC2",),
    "CLEC4C": ("pDC",),
    "LILRA4": ("pDC",),
    "IL3RA": ("pDC",),
    "IRF7": ("pDC",),
    "IRF8": ("pDC", "cDC2"),
    "TCF4": ("pDC",),
    # B cells
    "MS4A1": ("Transitional B", "Naive CD20+ B", "B1 B"),
    "CD19": ("Transitional B", "Naive CD20+ B", "B1 B"),
    "CD79A": ("Transitional B", "Naive CD20+ B", "B1 B", "Plasma cell"),
    "CD79B": ("Transitional B", "Naive CD20+ B", "B1 B"),
    "PAX5": ("Lymph prog", "Transitional B", "Naive CD20+ B", "B1 B"),
    "EBF1": ("Lymph prog", "Transitional B", "Naive CD20+ B", "B1 B"),
    "CD22": ("Naive CD20+ B",),
    "IGHM": ("Transitional B", "Naive CD20+ B", "B1 B"),
    "IGHD": ("Naive CD20+ B",),
    "TCL1A": ("Transitional B", "Naive CD20+ B"),
    "FCER2": ("Naive CD20+ B",),
    "CD27": ("B1 B", "Plasma cell", "CD8+ T"),
    "CD5": ("B1 B", "CD4+ T naive", "CD8+ T naive"),
    "JCHAIN": ("Plasma cell",),
    "MZB1": ("Plasma cell",),
    "XBP1": ("Plasma cell",),
    "SDC1": ("Plasma cell",),
    "PRDM1": ("Plasma cell",),
    "IGKC": ("Plasma cell", "B1 B"),
    "IGHG1": ("Plasma cell",),
    # T and NK cells
    "CD3E": ("CD4+ T naive", "CD4+ T activated", "CD8+ T naive", "CD8+ T"),
    "CD3D": ("CD4+ T naive", "CD4+ T activated", "CD8+ T naive", "CD8+ T"),
    "CD3G": ("CD4+ T naive", "CD4+ T activated", "CD8+ T naive", "CD8+ T"),
    "CD2": ("CD4+ T naive", "CD4+ T activated", "CD8+ T naive", "CD8+ T", "NK"),
    "CD4": ("CD4+ T naive", "CD4+ T activated"),
    "CD8A": ("CD8+ T naive", "CD8+ T"),
    "CD8B": ("CD8+ T naive", "CD8+ T"),
    "CCR7": ("CD4+ T naive", "CD8+ T naive"),
    "SELL": ("CD4+ T naive", "CD8+ T naive"),
    "LEF1": ("CD4+ T naive", "CD8+ T naive"),
    "TCF7": ("CD4+ T naive", "CD8+ T naive"),
    "IL7R": ("CD4+ T activated", "ILC"),
    "CD69": ("CD4+ T activated",),
    "IL2RA": ("CD4+ T activated",),
    "ICOS": ("CD4+ T activated",),
    "CTLA4": ("CD4+ T activated",),
    "GZMK": ("CD8+ T",),
    "GZMH": ("CD8+ T",),
    "GZMB": ("CD8+ T", "NK", "pDC"),
    "NKG7": ("CD8+ T", "NK"),
    "GNLY": ("NK",),
    "PRF1": ("NK", "CD8+ T"),
    "KLRD1": ("NK", "ILC"),
    "KLRF1": ("NK",),
    "NCAM1": ("NK",),
    "KLRB1": ("ILC", "CD4+ T activated"),
    "RORC": ("ILC",),
    "GATA3": ("ILC", "CD4+ T naive"),
    "IL1R1": ("ILC",),
}

#: Highly expressed housekeeping genes (real symbols).
HOUSEKEEPING: tuple[str, ...] = (
    "MALAT1",
    "ACTB",
    "GAPDH",
    "B2M",
    "TMSB4X",
    "EEF1A1",
    "FTL",
    "FTH1",
    "TPT1",
    "RPL13",
    "RPS27",
    "RPLP1",
    "RPS12",
    "RPL41",
    "MYL6",
    "PTMA",
    "HLA-B",
    "HLA-DRA",
    "UBC",
    "NEAT1",
)

#: The 13 protein-coding mitochondrial genes (drive ``GEX_pct_counts_mt``).
MT_GENES: tuple[str, ...] = (
    "MT-ND1",
    "MT-ND2",
    "MT-CO1",
    "MT-CO2",
    "MT-ATP8",
    "MT-ATP6",
    "MT-CO3",
    "MT-ND3",
    "MT-ND4L",
    "MT-ND4",
    "MT-ND5",
    "MT-ND6",
    "MT-CYB",
)

#: Human chromosome lengths (GRCh38, bp), used to place genes and peaks.
CHROM_SIZES: dict[str, int] = {
    "chr1": 248956422,
    "chr2": 242193529,
    "chr3": 198295559,
    "chr4": 190214555,
    "chr5": 181538259,
    "chr6": 170805979,
    "chr7": 159345973,
    "chr8": 145138636,
    "chr9": 138394717,
    "chr10": 133797422,
    "chr11": 135086622,
    "chr12": 133275309,
    "chr13": 114364328,
    "chr14": 107043718,
    "chr15": 101991189,
    "chr16": 90338345,
    "chr17": 83257441,
    "chr18": 80373285,
    "chr19": 58617616,
    "chr20": 64444167,
    "chr21": 46709983,
    "chr22": 50818468,
    "chrX": 156040895,
}

#: Donor metadata in the style of the real ``obs`` (values invented for the simulator).
_DONORS: dict[int, dict] = {
    1: dict(DonorID=15078, DonorAge=34, DonorBMI=24.8, DonorBloodType="B+", DonorRace="White", Ethnicity="HISPANIC OR LATINO", DonorGender="Male", QCMeds=False, DonorSmoker="Nonsmoker"),
    2: dict(DonorID=10886, DonorAge=35, DonorBMI=28.6, DonorBloodType="A+", DonorRace="Asian", Ethnicity="NOT HISPANIC OR LATINO", DonorGender="Male", QCMeds=False, DonorSmoker="Nonsmoker"),
    3: dict(DonorID=18303, DonorAge=41, DonorBMI=31.0, DonorBloodType="O+", DonorRace="Black or African American", Ethnicity="NOT HISPANIC OR LATINO", DonorGender="Female", QCMeds=False, DonorSmoker="Nonsmoker"),
    4: dict(DonorID=13272, DonorAge=28, DonorBMI=22.3, DonorBloodType="O-", DonorRace="White", Ethnicity="NOT HISPANIC OR LATINO", DonorGender="Female", QCMeds=False, DonorSmoker="Smoker"),
    5: dict(DonorID=19593, DonorAge=31, DonorBMI=26.1, DonorBloodType="A+", DonorRace="White", Ethnicity="NOT HISPANIC OR LATINO", DonorGender="Male", QCMeds=True, DonorSmoker="Nonsmoker"),
    6: dict(DonorID=11466, DonorAge=40, DonorBMI=29.4, DonorBloodType="B+", DonorRace="White", Ethnicity="HISPANIC OR LATINO", DonorGender="Female", QCMeds=False, DonorSmoker="Nonsmoker"),
    7: dict(DonorID=17716, DonorAge=22, DonorBMI=21.7, DonorBloodType="AB+", DonorRace="Asian", Ethnicity="NOT HISPANIC OR LATINO", DonorGender="Male", QCMeds=False, DonorSmoker="Nonsmoker"),
    8: dict(DonorID=12887, DonorAge=36, DonorBMI=27.5, DonorBloodType="O+", DonorRace="White", Ethnicity="NOT HISPANIC OR LATINO", DonorGender="Female", QCMeds=False, DonorSmoker="Nonsmoker"),
    9: dict(DonorID=16710, DonorAge=29, DonorBMI=23.9, DonorBloodType="A-", DonorRace="Black or African American", Ethnicity="NOT HISPANIC OR LATINO", DonorGender="Male", QCMeds=False, DonorSmoker="Smoker"),
    10: dict(DonorID=14433, DonorAge=45, DonorBMI=30.2, DonorBloodType="O+", DonorRace="White", Ethnicity="NOT HISPANIC OR LATINO", DonorGender="Female", QCMeds=True, DonorSmoker="Nonsmoker"),
}  # fmt: skip

# Latent program layout: lineage (shared), sub-group (shared), type-specific blocks.
_LINEAGES = ("progenitor", "erythroid", "myeloid", "dendritic", "B", "T/NK")
_N_TYPE_SHARED, _N_GEX_ONLY, _N_ATAC_ONLY = 8, 8, 8
_BLOCK = 256  # cells per random-number block: results do not depend on the chunk size


def _cell_cycle_table() -> pd.DataFrame:
    path = resources.files("mmae_utils") / "resources" / "cell_cycle_genes_homo_sapiens.tsv"
    with path.open() as fh:
        return pd.read_csv(fh, sep="\t")


def cell_cycle_genes() -> tuple[list[str], list[str]]:
    """The S-phase and G2/M gene symbols used by ``scanpy.tl.score_genes_cell_cycle``.

    These are the Tirosh et al. (2016) / Regev lab lists (43 S, 54 G2/M genes), as shipped by
    ``scib`` for *Homo sapiens*.

    Returns
    -------
    ``(s_genes, g2m_genes)``: two lists of gene symbols.
    """
    table = _cell_cycle_table()
    s = table.loc[table["phase"] == "S", "gene_name"].tolist()
    g2m = table.loc[table["phase"] == "G2/M", "gene_name"].tolist()
    return s, g2m


# --------------------------------------------------------------------------------------
# The simulator
# --------------------------------------------------------------------------------------


@dataclass
class _Design:
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


def _check_sizes(n_cells: int, n_genes: int, n_peaks: int, cell_types) -> None:
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


def _make_genes(rng: np.random.Generator, n_genes: int) -> pd.DataFrame:
    table = _cell_cycle_table()
    named = list(dict.fromkeys([*HOUSEKEEPING, *MT_GENES, *MARKERS, *table["gene_name"]]))
    if n_genes < len(named):
        raise ValueError(
            f"n_genes={n_genes} is too small: the simulator places {len(named)} named marker, "
            "housekeeping, mitochondrial and cell-cycle genes; ask for at least that many."
        )
    ids = dict(zip(table["gene_name"], table["gene_id"], strict=True))
    fillers = [f"SYN{i:05d}" for i in range(1, n_genes - len(named) + 1)]
    names = named + fillers
    gene_ids = [ids.get(n, f"ENSGSYN{i:08d}") for i, n in enumerate(names)]
    # place genes on chromosomes (mitochondrial genes on chrM), sorted like a real annotation
    chroms = list(CHROM_SIZES)
    sizes = np.array([CHROM_SIZES[c] for c in chroms], dtype=float)
    chrom = rng.choice(len(chroms), size=n_genes, p=sizes / sizes.sum())
    tss = (rng.random(n_genes) * (sizes[chrom] - 2e6) + 1e6).astype(np.int64)
    var = pd.DataFrame(
        {"gene_id": gene_ids, "chrom": [chroms[c] for c in chrom], "tss": tss},
        index=pd.Index(names),
    )
    var.loc[list(MT_GENES), "chrom"] = "chrM"
    return var


def _make_peaks(rng: np.random.Generator, genes: pd.DataFrame, n_peaks: int):
    """Peaks linked to genes (promoters and nearby enhancers) plus background peaks."""
    nuclear = np.flatnonzero(genes["chrom"].to_numpy() != "chrM")
    n_linked = int(round(0.55 * n_peaks))
    linked_gene = rng.choice(nuclear, size=n_linked, replace=True)
    # about one in three linked peaks is a promoter peak at the TSS, the rest enhancers
    offset = np.where(
        rng.random(n_linked) < 0.35,
        rng.normal(0, 300, n_linked),
        rng.choice([-1, 1], n_linked) * rng.exponential(25_000, n_linked),
    )
    chrom_linked = genes["chrom"].to_numpy()[linked_gene]
    centre_linked = genes["tss"].to_numpy()[linked_gene] + offset
    n_bg = n_peaks - n_linked
    chroms = list(CHROM_SIZES)
    sizes = np.array([CHROM_SIZES[c] for c in chroms], dtype=float)
    bg_chrom_idx = rng.choice(len(chroms), size=n_bg, p=sizes / sizes.sum())
    chrom_bg = np.array(chroms, dtype=object)[bg_chrom_idx]
    centre_bg = rng.random(n_bg) * (sizes[bg_chrom_idx] - 2e6) + 1e6
    chrom = np.concatenate([chrom_linked.astype(object), chrom_bg])
    centre = np.concatenate([centre_linked, centre_bg]).astype(np.int64)
    width = rng.integers(250, 1500, n_peaks)
    start = np.maximum(centre - width // 2, 1)
    gene_of_peak = np.concatenate([linked_gene, np.full(n_bg, -1)])
    # sort like a real peak set and make names unique (nudge exact collisions)
    order_chrom = np.array([chroms.index(c) for c in chrom])
    order = np.lexsort((start, order_chrom))
    chrom, start, width, gene_of_peak = (
        chrom[order],
        start[order],
        width[order],
        gene_of_peak[order],
    )
    for i in range(1, n_peaks):
        if chrom[i] == chrom[i - 1] and start[i] <= start[i - 1]:
            start[i] = start[i - 1] + 1
    names = [f"{c}-{s}-{s + w}" for c, s, w in zip(chrom, start, width, strict=True)]
    return names, gene_of_peak


def _assign_cells(rng, n_cells, cell_types, batches):
    """Cell types in real proportions, with donor-to-donor composition differences."""
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


def _barcodes(rng, n: int) -> np.ndarray:
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


def _design(
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
) -> _Design:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0]))
    n_types, n_batches = len(cell_types), len(batches)
    lineages = [LINEAGE[t] for t in cell_types]
    subgroups = sorted({SUBGROUP[t] for t in cell_types if t in SUBGROUP})

    # ---- latent layout: [lineage | subgroup | type-shared | GEX-only | ATAC-only]
    n_lin, n_sub = len(_LINEAGES), len(subgroups)
    k = n_lin + n_sub + _N_TYPE_SHARED + _N_GEX_ONLY + _N_ATAC_ONLY
    s_type = slice(n_lin + n_sub, n_lin + n_sub + _N_TYPE_SHARED)
    s_gex = slice(s_type.stop, s_type.stop + _N_GEX_ONLY)
    s_atac = slice(s_gex.stop, k)
    centroids = np.zeros((n_types, k))
    for i, t in enumerate(cell_types):
        centroids[i, _LINEAGES.index(lineages[i])] = 2.0
        if t in SUBGROUP:
            centroids[i, n_lin + subgroups.index(SUBGROUP[t])] = 1.5
        amp = {"shared": 1.0, "GEX": 1.0, "ATAC": 1.0}
        bias = MODALITY_BIAS.get(t)
        if bias is not None:
            # the distinction of this type shows mainly in one modality
            weak = max(0.0, 1.0 - modality_bias)
            amp = {"shared": weak * 0.25, "GEX": weak * 0.25, "ATAC": weak * 0.25}
            amp[bias] = 1.0 + 0.5 * modality_bias
        centroids[i, s_type] = rng.normal(0, 0.55 * amp["shared"], _N_TYPE_SHARED)
        centroids[i, s_gex] = rng.normal(0, 0.75 * amp["GEX"], _N_GEX_ONLY)
        centroids[i, s_atac] = rng.normal(0, 0.75 * amp["ATAC"], _N_ATAC_ONLY)

    # ---- cells
    types, batch_codes = _assign_cells(rng, n_cells, cell_types, batches)
    membership = np.zeros((n_cells, n_types))
    membership[np.arange(n_cells), types] = 1.0
    latent = centroids[types].copy()
    pt_gex = np.full(n_cells, np.nan)
    pt_atac = np.full(n_cells, np.nan)
    type_index = {t: i for i, t in enumerate(cell_types)}
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
            if j + 1 < m:  # move toward the next stage: a continuous trajectory
                nxt = type_index[path[j + 1]]
                w = (f * 0.8)[:, None]
                latent[cells] = (1 - w) * latent[cells] + w * centroids[nxt]
                membership[cells, types[cells]] = 1 - w[:, 0]
                membership[cells, nxt] += w[:, 0]
            pt_atac[cells] = np.clip(t_cells + rng.normal(0, 0.02, cells.size), 0, 1)
    latent += rng.normal(0, 0.35 * noise, latent.shape)
    z_gex = latent.copy()
    z_gex[:, s_atac] = 0.0
    z_atac = latent.copy()
    z_atac[:, s_gex] = 0.0

    # cell cycle: a phase and a smooth intensity for S and G2/M
    p_cyc = np.array([CYCLING.get(t, 0.05) for t in cell_types])[types]
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

    # library sizes and ATAC depth: per cell type, per batch and per cell
    lib_type = rng.normal(0, 0.25, n_types)
    for i, t in enumerate(cell_types):
        if t in ("Plasma cell", "Proerythroblast", "G/M prog"):
            lib_type[i] += 0.4
        elif t in ("Normoblast",) or LINEAGE[t] == "T/NK":
            lib_type[i] -= 0.25
    lib_batch = rng.normal(0, 0.25 * batch_effect, n_batches)
    log_lib = np.log(2800) + lib_type[types] + lib_batch[batch_codes] + rng.normal(0, 0.45, n_cells)
    depth_batch = rng.normal(0, 0.3 * batch_effect, n_batches)
    atac_depth = depth_batch[batch_codes] + rng.normal(0, 0.5, n_cells) + np.log(atac_density)

    # ---- genes
    var_gex = _make_genes(rng, n_genes)
    names = var_gex.index
    gex_base = rng.normal(-10.2, 1.7, n_genes)
    hk = names.isin(HOUSEKEEPING)
    gex_base[hk] = rng.normal(-4.3, 0.5, hk.sum())
    mt = names.isin(MT_GENES)
    gex_base[mt] = rng.normal(-5.0, 0.4, mt.sum())
    gex_w = np.zeros((n_genes, k))
    programme_genes = rng.random(n_genes) < 0.45
    n_active = rng.integers(1, 3, n_genes)
    for g in np.flatnonzero(programme_genes & ~mt & ~hk):
        dims = rng.choice(s_atac.start, size=n_active[g], replace=False)  # not ATAC-only dims
        gex_w[g, dims] = rng.normal(0, 0.9, n_active[g])
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
    # Within a biased sub-group, markers that tell its types apart (not shared by the whole
    # sub-group) are weak in the modality that is not favoured: for ATAC-biased sub-groups
    # in GEX here, for GEX-biased ones in ATAC below.
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
    atac_source = sp.csr_matrix(gex_markers.multiply(atac_scale))  # drives linked peaks below
    gex_markers = sp.csr_matrix(gex_markers.multiply(gex_scale))
    s_genes, g2m_genes = cell_cycle_genes()
    gex_cc = np.zeros((2, n_genes))
    gex_cc[0, names.get_indexer(s_genes)] = rng.uniform(1.0, 2.0, len(s_genes))
    gex_cc[1, names.get_indexer(g2m_genes)] = rng.uniform(1.0, 2.2, len(g2m_genes))
    gex_base[names.get_indexer(s_genes + g2m_genes)] = rng.normal(
        -8.8, 0.5, len(s_genes + g2m_genes)
    )
    # nested batch effects: site, then donor within site
    sites = sorted({b.split("d")[0] for b in batches})
    site_eff = {s: rng.normal(0, 0.22 * batch_effect, n_genes) for s in sites}
    gex_batch = np.stack(
        [site_eff[b.split("d")[0]] + rng.normal(0, 0.1 * batch_effect, n_genes) for b in batches]
    )
    gex_theta = np.exp(rng.normal(np.log(2.5), 0.5, n_genes))

    # ---- peaks
    peak_names, gene_of_peak = _make_peaks(rng, var_gex, n_peaks)
    linked = gene_of_peak >= 0
    atac_base = rng.normal(-3.7, 0.9, n_peaks)
    atac_base[linked] += 0.3
    atac_w = np.zeros((n_peaks, k))
    # linked peaks follow their gene's shared programmes (not the GEX-only ones), noisily
    shared = np.r_[0 : s_type.stop]
    lw = gex_w[gene_of_peak[linked]][:, shared] * rng.uniform(0.5, 1.1, (linked.sum(), 1))
    atac_w[np.ix_(np.flatnonzero(linked), shared)] = lw + rng.normal(0, 0.1, lw.shape) * (lw != 0)
    atac_only = rng.random(n_peaks) < 0.35
    for p in np.flatnonzero(atac_only):
        d = rng.integers(s_atac.start, k)
        atac_w[p, d] = rng.normal(0, 1.0)
    # lineage-specific accessibility at peaks linked to marker genes
    peak_marker = atac_source[:, np.where(linked, gene_of_peak, 0)] @ sp.diags(linked * 0.5)
    atac_markers = sp.csr_matrix(peak_marker)
    atac_markers.eliminate_zeros()
    site_eff_a = {s: rng.normal(0, 0.3 * batch_effect, n_peaks) for s in sites}
    atac_batch = np.stack(
        [site_eff_a[b.split("d")[0]] + rng.normal(0, 0.12 * batch_effect, n_peaks) for b in batches]
    )
    pg_rows = np.flatnonzero(linked)
    peak_gene = sp.csr_matrix(
        (np.ones(pg_rows.size, dtype=np.float32), (pg_rows, gene_of_peak[linked])),
        shape=(n_peaks, n_genes),
    )

    # ---- obs and var tables (schema of the GEO file)
    batch_names = np.array(batches, dtype=object)[batch_codes]
    barcodes = _barcodes(rng, n_cells)
    obs_names = [f"{bc}-1-{b}" for bc, b in zip(barcodes, batch_names, strict=True)]
    site_num = np.array([int(b[1 : b.index("d")]) for b in batch_names])
    donor_num = np.array([int(b[b.index("d") + 1 :]) for b in batch_names])
    donors = pd.DataFrame([_DONORS[d] for d in donor_num])
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

    var = pd.DataFrame(
        {
            "feature_types": pd.Categorical(
                ["GEX"] * n_genes + ["ATAC"] * n_peaks, categories=["ATAC", "GEX"]
            ),
            "gene_id": list(var_gex["gene_id"]) + peak_names,
        },
        index=pd.Index(list(names) + peak_names),
    )
    return _Design(
        obs=obs,
        var=var,
        n_genes=n_genes,
        n_peaks=n_peaks,
        z_gex=z_gex.astype(np.float32),
        z_atac=z_atac.astype(np.float32),
        membership=membership.astype(np.float32),
        cc=cc.astype(np.float32),
        log_lib=log_lib,
        atac_depth=atac_depth,
        batch_codes=batch_codes,
        gex_base=gex_base.astype(np.float32),
        gex_w=gex_w.astype(np.float32),
        gex_markers=gex_markers.astype(np.float32),
        gex_cc=gex_cc.astype(np.float32),
        gex_batch=gex_batch.astype(np.float32),
        gex_theta=gex_theta.astype(np.float32),
        atac_base=atac_base.astype(np.float32),
        atac_w=atac_w.astype(np.float32),
        atac_markers=atac_markers.astype(np.float32),
        atac_batch=atac_batch.astype(np.float32),
        peak_gene=peak_gene,
        latent_for_obsm=latent.astype(np.float32),
    )


def _simulate_block(d: _Design, rows: slice, rng: np.random.Generator):
    """Counts for one block of cells: (gex_counts, atac_counts) as CSR float32."""
    # GEX: negative binomial (gamma-Poisson) around a softmax profile times the library size
    logit = d.gex_base + d.z_gex[rows] @ d.gex_w.T
    logit += d.membership[rows] @ d.gex_markers
    logit += d.cc[rows] @ d.gex_cc
    logit += d.gex_batch[d.batch_codes[rows]]
    logit -= logit.max(axis=1, keepdims=True)
    prob = np.exp(logit)
    prob /= prob.sum(axis=1, keepdims=True)
    mean = prob * np.exp(d.log_lib[rows])[:, None].astype(np.float32)
    theta = d.gex_theta
    lam = rng.gamma(theta, 1.0, size=mean.shape).astype(np.float32) * (mean / theta)
    gex = sp.csr_matrix(rng.poisson(lam).astype(np.float32))
    del logit, prob, mean, lam
    # ATAC: Bernoulli accessibility, then fragment counts (mostly 1 and 2)
    la = d.atac_base + d.z_atac[rows] @ d.atac_w.T
    la += d.membership[rows] @ d.atac_markers
    la += d.atac_batch[d.batch_codes[rows]]
    la += d.atac_depth[rows, None].astype(np.float32)
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


def _qc(d: _Design, gex: sp.csr_matrix, atac: sp.csr_matrix, rng) -> dict:
    n_counts = np.asarray(gex.sum(axis=1)).ravel()
    mt_mask = d.var.index[: d.n_genes].str.startswith("MT-")
    mt = np.asarray(gex[:, np.flatnonzero(mt_mask)].sum(axis=1)).ravel()
    n_peak_counts = np.asarray(atac.sum(axis=1)).ravel()
    frip = np.clip(rng.normal(0.55, 0.08, n_counts.size), 0.2, 0.9)
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


def _obsm_standins(d: _Design, rng) -> dict[str, np.ndarray]:
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


def _uns(d: _Design, params: dict) -> dict:
    ga_names = np.asarray(d.var.index[: d.n_genes][np.asarray(d.peak_gene.sum(axis=0)).ravel() > 0])
    return {
        "dataset_id": "mmae_synthetic_bmmc_multiome",
        "genome": "GRCh38",
        "organism": "human",
        "ATAC_gene_activity_var_names": ga_names.astype(str),
        "GEX_synthetic": {"simulator": "mmae_utils.datasets.synthetic_bmmc", **params},
    }


def _blocks(n_cells: int, chunk_size: int):
    chunk_size = max(_BLOCK, (chunk_size // _BLOCK) * _BLOCK)
    for start in range(0, n_cells, chunk_size):
        yield start, min(start + chunk_size, n_cells)


def _simulate_chunk(d: _Design, start: int, stop: int, seed: int):
    """Simulate cells ``start:stop`` in blocks of ``_BLOCK`` cells with block-keyed RNGs."""
    gex_parts, atac_parts, qc_parts = [], [], []
    for b0 in range(start, stop, _BLOCK):
        b1 = min(b0 + _BLOCK, stop)
        rng = np.random.default_rng(np.random.SeedSequence([seed, 1, b0 // _BLOCK]))
        g, a = _simulate_block(d, slice(b0, b1), rng)
        gex_parts.append(g)
        atac_parts.append(a)
        qc_parts.append(_qc(d, g, a, rng))
    gex = sp.vstack(gex_parts, format="csr")
    atac = sp.vstack(atac_parts, format="csr")
    qc = {k: np.concatenate([q[k] for q in qc_parts]) for k in qc_parts[0]}
    counts = sp.hstack([gex, atac], format="csr").astype(np.float32)
    x = sp.hstack([log_normalize(gex), log_normalize(atac)], format="csr").astype(np.float32)
    gene_activity = sp.csr_matrix(atac @ d.peak_gene[:, _ga_columns(d)]).astype(np.float32)
    return counts, x, gene_activity, qc


def _ga_columns(d: _Design) -> np.ndarray:
    return np.flatnonzero(np.asarray(d.peak_gene.sum(axis=0)).ravel() > 0)


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
    params = dict(
        n_cells=int(n_cells), n_genes=int(n_genes), n_peaks=int(n_peaks), seed=int(seed),
        batch_effect=float(batch_effect), modality_bias=float(modality_bias),
        atac_density=float(atac_density), noise=float(noise),
    )  # fmt: skip
    d = _design(
        n_cells, n_genes, n_peaks, seed=seed, cell_types=cell_types, batches=batches,
        batch_effect=batch_effect, modality_bias=modality_bias, atac_density=atac_density, noise=noise,
    )  # fmt: skip
    obsm = _obsm_standins(d, np.random.default_rng(np.random.SeedSequence([seed, 3])))
    uns = _uns(d, params)
    if progress is None:
        progress = n_cells > 20_000
    chunks = list(_blocks(n_cells, chunk_size))
    bar = tqdm(total=n_cells, desc="simulating cells", unit="cell", disable=not progress)
    if path is None:
        parts = []
        for start, stop in chunks:
            parts.append(_simulate_chunk(d, start, stop, seed))
            bar.update(stop - start)
        bar.close()
        counts = sp.vstack([p[0] for p in parts], format="csr")
        x = sp.vstack([p[1] for p in parts], format="csr")
        obsm["ATAC_gene_activity"] = sp.vstack([p[2] for p in parts], format="csr")
        qc = {k: np.concatenate([p[3][k] for p in parts]) for k in parts[0][3]}
        obs = d.obs.assign(**qc)
        obs["GEX_size_factors"] = (obs["GEX_n_counts"] / np.median(obs["GEX_n_counts"])).astype(
            np.float32
        )
        return ad.AnnData(X=x, obs=obs, var=d.var, obsm=obsm, uns=uns, layers={"counts": counts})
    return _stream_to_h5ad(d, Path(path), chunks, seed, obsm, uns, bar)


def _stream_to_h5ad(
    d: _Design, path: Path, chunks, seed: int, obsm: dict, uns: dict, bar
) -> ad.AnnData:
    import h5py
    from anndata.io import sparse_dataset, write_elem

    if path.suffix != ".h5ad":
        raise ValueError(f"path must end in .h5ad, got {path}.")
    qcs = []
    kw: dict = {}  # anndata makes the arrays resizable (maxshape=None) by itself
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["encoding-type"] = "anndata"
            f.attrs["encoding-version"] = "0.1.0"
            f.create_group("layers").attrs.update(
                {"encoding-type": "dict", "encoding-version": "0.1.0"}
            )
            targets = {}
            for start, stop in chunks:
                counts, x, ga, qc = _simulate_chunk(d, start, stop, seed)
                qcs.append(qc)
                for key, mat in (("X", x), ("layers/counts", counts), ("ga", ga)):
                    if key not in targets:
                        group = "obsm_tmp/ATAC_gene_activity" if key == "ga" else key
                        write_elem(f, group, mat, dataset_kwargs=kw)
                        targets[key] = sparse_dataset(f[group])
                    else:
                        targets[key].append(mat)
                bar.update(stop - start)
            bar.close()
            qc = {k: np.concatenate([q[k] for q in qcs]) for k in qcs[0]}
            obs = d.obs.assign(**qc)
            obs["GEX_size_factors"] = (obs["GEX_n_counts"] / np.median(obs["GEX_n_counts"])).astype(
                np.float32
            )
            write_elem(f, "obs", obs)
            write_elem(f, "var", d.var)
            write_elem(f, "obsm", obsm)
            f.move("obsm_tmp/ATAC_gene_activity", "obsm/ATAC_gene_activity")
            del f["obsm_tmp"]
            for key in ("obsp", "varm", "varp"):
                write_elem(f, key, {})
            write_elem(f, "uns", uns)
    from .data import load_multiome

    # anndata's backed="r" would load layers["counts"] into memory; this keeps it on disk
    return load_multiome(path, backed=True, validate=False)


def demo(*, seed: int = 0) -> ad.AnnData:
    """The built-in demo dataset: 5,000 cells x (4,000 genes + 12,000 peaks).

    A :func:`synthetic_bmmc` draw small enough that the whole tutorial runs in minutes on a
    laptop, with more genes and peaks than the 2,500 + 5,000 that feature selection keeps.

    Parameters
    ----------
    seed
        Random seed (0 is what the tutorial and the tests use).

    Returns
    -------
    An in-memory :class:`~anndata.AnnData` following the GSE194122 schema (see
    :func:`synthetic_bmmc`).
    """
    return synthetic_bmmc(5000, 4000, 12000, seed=seed)


# --------------------------------------------------------------------------------------
# The real file
# --------------------------------------------------------------------------------------

#: Where GEO serves the processed multiome file.
BMMC_URL = (
    "https://ftp.ncbi.nlm.nih.gov/geo/series/GSE194nnn/GSE194122/suppl/"
    "GSE194122_openproblems_neurips2021_multiome_BMMC_processed.h5ad.gz"
)
BMMC_FILENAME = "GSE194122_openproblems_neurips2021_multiome_BMMC_processed.h5ad.gz"
#: SHA-256 of the ``.h5ad.gz`` as served by GEO. ``None`` means "not pinned yet": the first
#: download is accepted and its hash is logged so that you can pin it (pass it as
#: ``sha256=`` or set the environment variable ``MMAE_BMMC_SHA256``).
BMMC_SHA256: str | None = None


def default_cache_dir() -> Path:
    """``$MMAE_CACHE`` if set, else pooch's OS cache folder for ``mmae``."""
    import pooch

    env = os.environ.get("MMAE_CACHE")
    return Path(env) if env else Path(pooch.os_cache("mmae"))


def fetch_bmmc(
    cache_dir: str | os.PathLike | None = None,
    *,
    url: str = BMMC_URL,
    sha256: str | None = None,
    progress: bool = True,
) -> Path:
    """Download the real GEO file, verify it and decompress it (once; then cached).

    The download goes to a temporary name in ``cache_dir`` and only becomes
    ``GSE194122_...h5ad.gz`` when it is complete and its SHA-256 matches; decompression
    likewise writes a temporary file renamed on success. A failed or corrupted download
    leaves no half-written file behind.

    How the hash is pinned: pass ``sha256=...``, or set ``MMAE_BMMC_SHA256``, or set
    :data:`BMMC_SHA256`. With none of them the file is accepted and its SHA-256 is logged
    (and written next to it as ``.sha256``) so that you can pin it for the next runs; a later
    run with a pinned hash that does not match fails.

    Parameters
    ----------
    cache_dir
        Folder for the download (default :func:`default_cache_dir`).
    url
        Source; the GEO address by default (tests point this at a local server).
    sha256
        Expected SHA-256 of the ``.gz`` file.
    progress
        Show a download progress bar.

    Returns
    -------
    Path of the decompressed ``.h5ad`` file.
    """
    import pooch

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    expected = sha256 or os.environ.get("MMAE_BMMC_SHA256") or BMMC_SHA256
    fname = Path(url.split("?")[0]).name or BMMC_FILENAME
    if not fname.endswith(".gz"):
        raise ValueError(f"Expected a .h5ad.gz address, got {url!r}.")
    gz_path = cache / fname
    h5ad_path = cache / fname[: -len(".gz")]
    if h5ad_path.exists() and (expected is None or _sha_note_matches(gz_path, expected)):
        logger.info("Using cached %s", h5ad_path)
        return h5ad_path
    known_hash = f"sha256:{expected.lower()}" if expected else None
    try:
        downloaded = pooch.retrieve(
            url,
            known_hash=known_hash,
            fname=fname,
            path=cache,
            progressbar=progress,
        )
    except ValueError as err:  # pooch's hash mismatch
        if gz_path.exists():
            gz_path.unlink()
        raise OSError(
            f"The download of {url} is corrupted or is not the expected file: {err} "
            "Nothing was kept. Retry; if it keeps failing, check the pinned SHA-256 "
            "(argument sha256, env MMAE_BMMC_SHA256)."
        ) from err
    downloaded = Path(downloaded)
    digest = pooch.file_hash(str(downloaded), alg="sha256")
    if expected is None:
        logger.warning(
            "No SHA-256 pinned for %s; the downloaded file has sha256=%s. Pin it with "
            "fetch_bmmc(sha256=...) or MMAE_BMMC_SHA256 to verify future downloads.",
            downloaded.name,
            digest,
        )
    downloaded.with_suffix(downloaded.suffix + ".sha256").write_text(digest + "\n")
    try:
        with atomic_path(h5ad_path) as tmp:
            with gzip.open(downloaded, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, length=1 << 22)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        downloaded.unlink(missing_ok=True)
        raise OSError(
            f"{downloaded.name} is not a valid gzip file ({err}); it was removed. Download again."
        ) from err
    return h5ad_path


def _sha_note_matches(gz_path: Path, expected: str) -> bool:
    note = gz_path.with_suffix(gz_path.suffix + ".sha256")
    return note.exists() and note.read_text().strip().lower() == expected.lower()


def _auto_backed(path: Path) -> bool:
    """Backed reading pays off when the file would take a large share of the memory."""
    import psutil

    size = path.stat().st_size * (3 if path.suffix == ".gz" else 1)  # .h5ad.gz: about 1/3
    return size > 0.2 * psutil.virtual_memory().total


def load_dataset(
    data: str | os.PathLike = "demo",
    *,
    seed: int = 0,
    backed: bool | str = "auto",
    cache_dir: str | os.PathLike | None = None,
) -> ad.AnnData:
    """The dataset a notebook parameter ``DATA`` names, read and validated.

    Parameters
    ----------
    data
        ``"demo"`` (:func:`demo`), ``"bmmc"`` (:func:`fetch_bmmc`, then read) or the path of
        a multiome ``.h5ad``/``.h5ad.gz`` in the GSE194122 schema.
    seed
        Seed of the demo data.
    backed
        ``True``: keep the counts on disk (see :func:`mmae_utils.data.load_multiome`);
        ``False``: read into memory; ``"auto"``: backed when the file is larger than a
        fifth of this machine's memory (the real file, 7.8 GB, on a laptop or a 24 GB
        server; never the demo, which exists only in memory).
    cache_dir
        Download folder for ``"bmmc"``.

    Returns
    -------
    The AnnData.
    """
    from .data import load_multiome

    if backed not in (True, False, "auto"):
        raise ValueError(f"backed must be True, False or 'auto', got {backed!r}.")
    if str(data) == "demo":
        return demo(seed=seed)
    path = fetch_bmmc(cache_dir) if str(data) == "bmmc" else Path(data).expanduser()
    if backed == "auto":
        backed = path.exists() and _auto_backed(path)
        if backed:
            logger.info("%s is large for this machine's memory: reading it backed", path.name)
    return load_multiome(path, backed=bool(backed))
