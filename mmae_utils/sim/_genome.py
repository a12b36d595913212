"""Where the simulated genes and peaks sit on the genome (GRCh38 chromosome sizes)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from ._facts import CHROM_SIZES, HOUSEKEEPING, MARKERS, MT_GENES, cell_cycle_table


def make_genes(rng: np.random.Generator, n_genes: int) -> pd.DataFrame:
    """Gene table: the named genes first, then ``SYN00001``... fillers, placed on chromosomes.

    The named genes are the housekeeping, mitochondrial, marker and cell-cycle genes the
    simulator gives a role; each gene gets a chromosome (mitochondrial ones ``chrM``) and a
    TSS, which :func:`make_peaks` uses to put linked peaks nearby.

    Returns
    -------
    A DataFrame indexed by gene symbol with ``gene_id``, ``chrom`` and ``tss``.
    """
    table = cell_cycle_table()
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


def make_peaks(rng: np.random.Generator, genes: pd.DataFrame, n_peaks: int):
    """Peaks linked to genes (promoters and nearby enhancers) plus background peaks.

    About 55 % of the peaks are linked to a nuclear gene of ``genes`` (a third of those at
    its TSS, the rest enhancers up to tens of kb away); the others are spread over the
    genome. Peaks are sorted by position and named ``chrN-start-end`` like the real file.

    Returns
    -------
    ``(names, gene_of_peak)``: the peak names and, per peak, the row of its linked gene in
    ``genes`` (-1 for background peaks).
    """
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
