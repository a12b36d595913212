"""Time and peak memory of ``synthetic_bmmc`` at the real size, streamed to disk.

Usage::

    python benchmarks/bench_simulator.py [--out benchmarks/_data/bmmc_full.h5ad] [--cells N]

Prints one table: wall time, peak RSS of this process, file size, density per modality,
and, for scale, the size the same data would take as one in-memory CSR matrix.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import h5py
import numpy as np

from mmae_utils._utils import peak_rss_bytes
from mmae_utils.datasets import REAL_N_CELLS, REAL_N_GENES, REAL_N_PEAKS, synthetic_bmmc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/_data/bmmc_full.h5ad"))
    parser.add_argument("--cells", type=int, default=REAL_N_CELLS)
    parser.add_argument("--genes", type=int, default=REAL_N_GENES)
    parser.add_argument("--peaks", type=int, default=REAL_N_PEAKS)
    parser.add_argument("--chunk-size", type=int, default=2048)
    args = parser.parse_args()

    rss0 = peak_rss_bytes()
    t0 = time.perf_counter()
    adata = synthetic_bmmc(
        args.cells,
        args.genes,
        args.peaks,
        seed=0,
        path=args.out,
        chunk_size=args.chunk_size,
        progress=True,
    )
    wall = time.perf_counter() - t0
    del adata
    with h5py.File(args.out, "r") as f:
        indptr = f["layers/counts/indptr"]
        nnz = int(indptr[-1])
        # densities per modality from the column indices, in row chunks
        n_gex_nnz = 0
        indices = f["layers/counts/indices"]
        step = 50_000_000
        for start in range(0, nnz, step):
            n_gex_nnz += int(np.count_nonzero(indices[start : start + step] < args.genes))
    n_atac_nnz = nnz - n_gex_nnz
    csr_bytes = nnz * 8 + (args.cells + 1) * 8
    rows = [
        ("cells x features", f"{args.cells:,} x {args.genes + args.peaks:,}"),
        ("wall time", f"{wall:,.0f} s"),
        (
            "peak RSS (whole process)",
            f"{peak_rss_bytes() / 2**30:.2f} GiB (before: {rss0 / 2**30:.2f})",
        ),
        ("file size", f"{args.out.stat().st_size / 2**30:.2f} GiB"),
        ("GEX non-zero", f"{n_gex_nnz / (args.cells * args.genes):.1%}"),
        ("ATAC non-zero", f"{n_atac_nnz / (args.cells * args.peaks):.1%}"),
        ("one counts matrix as in-memory CSR", f"{csr_bytes / 2**30:.2f} GiB"),
        ("peak RSS / one in-memory CSR", f"{peak_rss_bytes() / csr_bytes:.2f}"),
    ]
    width = max(len(r[0]) for r in rows)
    print("\nsynthetic_bmmc streamed to", args.out)
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")


if __name__ == "__main__":
    main()
