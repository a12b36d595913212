"""What a report saves by doing its seed-free work once: the input transforms and the
cell-cycle metric's data part, first computation against reuse, in one run.

A report trains one model per seed on the same cells (``report.replicate``) and scores
each seed in its own :func:`mmae_utils.evaluation.evaluate` call. Two parts of that work
depend on the data alone: the input transforms' exact SVD (100 PCA components of the
selected genes, 100 LSI components of the selected peaks, :class:`~mmae_utils.layers.InputTransform`)
and the cell-cycle scores with the "before" PC regression of each batch
(:class:`~mmae_utils.metrics.CellCycle`). Both are memoised by the content they are
computed from; this script times a first computation and a repeat on the same cells and
prints their ratio (the repeat still hashes the data, which is what it costs).

Usage::

    python benchmarks/bench_reuse.py [--n-cells 20000] [--seeds 5]
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from mmae_utils import data, datasets, features, pp  # noqa: E402
from mmae_utils.layers import InputTransform  # noqa: E402
from mmae_utils.metrics import CellCycle  # noqa: E402


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=20000)
    parser.add_argument("--seeds", type=int, default=5, help="seeds of a report (default 5)")
    args = parser.parse_args(argv)
    adata = datasets.synthetic_bmmc(n_cells=args.n_cells, n_genes=4000, n_peaks=12000, seed=7)
    gex, atac = data.split_modalities(adata)
    features.select_gex(gex, n_top=2500)
    features.select_atac(atac, n_top=5000)
    gex_sel = gex[:, gex.var["highly_variable"].to_numpy()].copy()
    atac_sel = atac[:, atac.var["highly_variable"].to_numpy()].copy()
    x_gex, x_atac = pp.log_normalized(gex_sel), pp.binarized(atac_sel)

    def transforms():
        InputTransform("gex", "svd", x_gex.shape[1], 100).fit(x_gex)
        InputTransform("atac", "svd", x_atac.shape[1], 100).fit(x_atac)

    def cell_cycle():
        options = {"gex": gex, "layer": "counts", "organism": "human", "n_comps": 50}
        CellCycle(adata, adata.obs, "batch", **options)

    print(f"{args.n_cells:,} cells; 2,500 + 5,000 selected features; {args.seeds} seeds")
    print(f"{'part':<38}{'first':>9}{'repeat':>9}{'ratio':>8}{'report, before/after':>24}")
    for name, fn in (
        ("input transforms (exact SVD x 2)", transforms),
        ("cell-cycle data part", cell_cycle),
    ):
        first, repeat = timed(fn), timed(fn)
        before, after = args.seeds * first, first + (args.seeds - 1) * repeat
        print(
            f"{name:<38}{first:>8.2f}s{repeat:>8.2f}s{first / repeat:>7.0f}x"
            f"{before:>12.1f}s -> {after:.1f}s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
