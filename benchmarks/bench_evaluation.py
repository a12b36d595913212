"""Time and peak memory of :func:`mmae_utils.evaluation.evaluate`, per metric, at full size.

Three 20-dimensional embeddings (``pca_concat``, ``gex_pca``, ``random``) of 69,249
synthetic cells (:func:`mmae_utils.datasets.synthetic_bmmc`: 22 cell types, 13 batches,
trajectories with pseudotime, cell-cycle genes; 2,500 genes + 5,000 peaks, which is what
the evaluation reads: the selected features) are scored on all metrics in one
``evaluate`` call. Target: the whole evaluation in at most 120 s on 2 cores.

Memory is sampled every 20 ms in a thread (resident set size, ``psutil``); "peak" is the
largest sample while a step ran, "+peak" how far it rose above the level at the step's
start.

Usage::

    python benchmarks/bench_evaluation.py [--n-cells 69249] [--reference-clustering]
        [--compare-knn]

``--reference-clustering`` also times the clustering the way ``scib`` does it (``leidenalg``
to convergence at all 20 resolutions) for the first embedding, to show what the default
coarse-to-fine igraph search saves and what NMI difference it makes. ``--compare-knn``
builds the first embedding's kNN graph in two fresh processes, as scanpy would above
8,192 cells (pynndescent, approximate) and as the evaluation does (exact), and prints both
times (compilation included) and how many of the exact neighbours pynndescent found.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import warnings
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import psutil  # noqa: E402

GiB = 1024**3
HERE = Path(__file__).resolve().parent


class RssSampler:
    """Background thread recording ``(perf_counter, rss)`` samples."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self._proc = psutil.Process()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.samples.append((time.perf_counter(), self._proc.memory_info().rss))
            time.sleep(self.interval)

    def window(self, t0: float, t1: float) -> tuple[float, float]:
        """(peak RSS in GiB during [t0, t1], rise above the RSS at t0 in GiB)."""
        arr = np.array(self.samples, dtype=float)
        before = arr[arr[:, 0] <= t0]
        start = before[-1, 1] if len(before) else arr[0, 1]
        inside = arr[(arr[:, 0] >= t0) & (arr[:, 0] <= t1), 1]
        peak = max(inside.max() if len(inside) else start, start)
        return peak / GiB, (peak - start) / GiB

    def close(self):
        self._stop.set()
        self._thread.join()


def load_data(n_cells: int):
    import anndata as ad

    from mmae_utils.datasets import synthetic_bmmc

    cache = HERE / "_data" / f"bench_evaluation_{n_cells}.h5ad"
    if cache.exists():
        return ad.read_h5ad(cache), 0.0
    t0 = time.perf_counter()
    adata = synthetic_bmmc(n_cells, 2500, 5000, seed=0, progress=False)
    seconds = time.perf_counter() - t0
    from mmae_utils.data import write_h5ad

    write_h5ad(adata, cache)
    return adata, seconds


KNN_CODE = """
import json, sys, time, warnings
import anndata as ad, numpy as np, scanpy as sc
from mmae_utils.neighbors import compute_neighbors
warnings.filterwarnings("ignore")
g = ad.AnnData(obsm={"X_emb": np.load(sys.argv[1])})
t0 = time.perf_counter()
if sys.argv[2] == "pynndescent":  # scanpy's default above 8,192 cells
    sc.pp.neighbors(g, n_neighbors=15, use_rep="X_emb", random_state=0)
else:
    compute_neighbors(g, 15, 0)
seconds = time.perf_counter() - t0
d = g.obsp["distances"].tocsr()
rows = np.full((d.shape[0], 14), -1)  # each cell's 14 nearest (besides itself), -1 if fewer
for i in range(d.shape[0]):
    idx, dist = d.indices[d.indptr[i]:d.indptr[i + 1]], d.data[d.indptr[i]:d.indptr[i + 1]]
    keep = idx[np.argsort(dist, kind="stable")][:14]
    rows[i, :keep.size] = keep
np.save(sys.argv[3], rows)
print(json.dumps({"seconds": seconds}))
"""


def compare_knn(x, name: str) -> None:
    """scanpy's approximate graph (pynndescent) against the exact one, each in a fresh
    process (as every notebook kernel is one), compilation included."""
    import json
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", np.asarray(x, dtype=np.float32))
        seconds, neighbours = {}, {}
        for mode in ("pynndescent", "exact"):
            out = subprocess.run(
                [sys.executable, "-c", KNN_CODE, f"{tmp}/x.npy", mode, f"{tmp}/{mode}.npy"],
                capture_output=True, text=True, check=True,
            )  # fmt: skip
            seconds[mode] = json.loads(out.stdout.strip().splitlines()[-1])["seconds"]
            neighbours[mode] = np.load(f"{tmp}/{mode}.npy")
    approx, exact = neighbours["pynndescent"], neighbours["exact"]
    shared = np.mean([np.isin(a[a >= 0], b).sum() / 14 for a, b in zip(approx, exact, strict=True)])
    print(
        f"\nkNN graph of {name} in a fresh process: pynndescent {seconds['pynndescent']:.1f} s, "
        f"exact {seconds['exact']:.1f} s ({seconds['pynndescent'] / seconds['exact']:.1f}x); "
        f"pynndescent found {shared:.1%} of the exact neighbours"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=69249)
    parser.add_argument("--reference-clustering", action="store_true")
    parser.add_argument("--compare-knn", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")

    from mmae_utils import evaluation

    sampler = RssSampler()
    t0 = time.perf_counter()
    adata, gen_s = load_data(args.n_cells)
    origin = f"simulated in {gen_s:.0f} s" if gen_s else "cached"
    print(
        f"data: {adata.n_obs} cells x {adata.n_vars} features ({origin}, read in "
        f"{time.perf_counter() - t0:.0f} s)"
    )

    t0 = time.perf_counter()
    keys = evaluation.baselines(adata, n_comps=20, methods=("pca_concat", "gex_pca", "random"))
    t1 = time.perf_counter()
    base_peak, _ = sampler.window(t0, t1)
    print(f"baselines (pca_concat, gex_pca, random): {t1 - t0:.1f} s, peak RSS {base_peak:.2f} GiB")

    t0 = time.perf_counter()
    df = evaluation.evaluate(adata, keys, seed=0, progress=True)
    total = time.perf_counter() - t0
    timeline = df.attrs["timeline"]

    print(f"\nevaluate(): {len(keys)} embeddings x 20 dims, {adata.n_obs} cells, 2 cores\n")
    header = f"{'step':<28}" + "".join(f"{m:>18}" for m in keys) + f"{'peak RSS':>12}"
    print(header)
    print(f"{'':<28}" + "".join(f"{'s (+peak GiB)':>18}" for _ in keys) + f"{'GiB':>12}")
    print("-" * len(header))
    steps = list(dict.fromkeys(step for method, step, *_ in timeline))
    for step in steps:
        cells, peaks = [], []
        for method in keys:
            hit = [(a, b) for m, s, a, b in timeline if s == step and m in (method, "")]
            if not hit or (step.endswith("(once)") and method != next(iter(keys))):
                cells.append(f"{'':>18}")
                continue
            a, b = hit[0]
            peak, rise = sampler.window(a, b)
            peaks.append(peak)
            cells.append(f"{b - a:>9.1f} (+{rise:4.2f})")
        print(f"{step:<28}" + "".join(f"{c:>18}" for c in cells) + f"{max(peaks):>12.2f}")
    per_method = {m: sum(df.attrs["details"][m]["seconds"].values()) for m in keys}
    print("-" * len(header))
    print(
        f"{'per embedding':<28}"
        + "".join(f"{per_method[m]:>18.1f}" for m in keys)
        + f"{sampler.window(t0, t0 + total)[0]:>12.2f}"
    )
    verdict = "met" if total <= 120 else "not met"
    print(f"\nwhole evaluation: {total:.1f} s (target: at most 120 s, {verdict})")

    print("\nscores:")
    print(df.round(3).to_string())
    for m in keys:
        d = df.attrs["details"][m]
        print(f"  {m}: resolution {d['resolution']}, {d['n_clusters']} clusters")

    if args.compare_knn:
        compare_knn(adata.obsm[keys[next(iter(keys))]], next(iter(keys)))
    if args.reference_clustering:
        from mmae_utils.evaluation import optimal_clustering
        from mmae_utils.neighbors import compute_neighbors, graph_adata

        method = next(iter(keys))
        g = graph_adata(adata.obs[["cell_type", "batch"]], adata.obsm[keys[method]])
        compute_neighbors(g, 15, 0)
        t0 = time.perf_counter()
        res, nmi, _, _ = optimal_clustering(g, "cell_type", search="full", flavor="leidenalg")
        ref_s = time.perf_counter() - t0
        print(
            f"\nreference clustering for {method} (leidenalg to convergence, 20 resolutions): "
            f"{ref_s:.0f} s, resolution {res}, NMI {nmi:.4f} "
            f"(default search: {df.loc[method, 'NMI']:.4f}, "
            f"{df.attrs['details'][method]['seconds']['NMI']:.0f} s)"
        )
    sampler.close()


if __name__ == "__main__":
    main()
