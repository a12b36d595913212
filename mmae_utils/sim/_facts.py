"""Facts about the real GSE194122 multiome file that the simulator reproduces.

Cell-type and batch counts, the lineage and sub-group structure, trajectories, cycling
fractions, marker/housekeeping/mitochondrial genes, chromosome sizes and donor metadata:
the numbers and names that make a simulated dataset look like the GEO file.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

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

#: The T/NK states that overlap in the real data (``Mechanisms.t_cell_overlap``).
T_STATES: tuple[str, ...] = (
    "CD4+ T naive",
    "CD4+ T activated",
    "CD8+ T naive",
    "CD8+ T",
    "NK",
    "ILC",
)

#: The progenitors that form a continuum in the real data (``Mechanisms.progenitor_continuum``).
PROGENITORS: tuple[str, ...] = ("HSC", "Lymph prog", "G/M prog", "MK/E prog")

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

#: Markers that make up a large share of their cells' RNA in real data: haemoglobins in
#: erythroblasts, LYZ and S100A8/9 in monocytes (``Mechanisms.abundant_markers``).
ABUNDANT_MARKERS: tuple[str, ...] = ("HBB", "HBA1", "HBA2", "LYZ", "S100A8", "S100A9")

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
DONORS: dict[int, dict] = {
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


def cell_cycle_table() -> pd.DataFrame:
    """The shipped cell-cycle gene table (columns ``gene_name``, ``gene_id``, ``phase``)."""
    path = resources.files("mmae_utils") / "resources" / "cell_cycle_genes_homo_sapiens.tsv"
    with path.open() as fh:
        return pd.read_csv(fh, sep="\t")


def cell_cycle_genes() -> tuple[list[str], list[str]]:
    """The S-phase and G2/M gene symbols used by ``scanpy.tl.score_genes_cell_cycle``.

    These are the Tirosh et al. (2016) / Regev lab lists (43 S, 54 G2/M genes), as shipped by
    ``scib`` for *Homo sapiens*; the simulator drives its cell cycle with them, so scoring
    the simulated data with the same lists recovers the simulated phase.

    Returns
    -------
    ``(s_genes, g2m_genes)``: two lists of gene symbols.
    """
    table = cell_cycle_table()
    s = table.loc[table["phase"] == "S", "gene_name"].tolist()
    g2m = table.loc[table["phase"] == "G2/M", "gene_name"].tolist()
    return s, g2m
