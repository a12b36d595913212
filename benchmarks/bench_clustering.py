"""How far the default clustering search is from exhaustive Leiden and from Louvain.

NMI and ARI need the clustering of the kNN graph at the resolution, of the competition's
20 (0.1, ..., 2.0), that maximises NMI. The competition ran Louvain (``scib``'s
``opt_louvain``: ``sc.tl.louvain`` at each resolution); ``evaluate`` by default runs igraph's
Leiden with a coarse-to-fine search (at most 11 of the 20). This script measures, on one
embedding per size, each method's wall time for the whole search and its best NMI / ARI:

- (a) the default: igraph Leiden, coarse to fine (``metrics.optimal_clustering``);
- (b) igraph Leiden at all 20 resolutions;
- (c) ``leidenalg`` (run to convergence, what ``scib`` calls) at all 20;
- (d) Louvain (``sc.tl.louvain``, the ``louvain`` package, scanpy's defaults, as
  ``opt_louvain`` called it) at all 20, if ``louvain`` imports.

and the NMI of (a) minus that of (b), (c), (d): the approximation error of the default.
Times are then extrapolated to 69,249 cells (the real dataset) by a power law through
the two sizes: an extrapolation from two points, not a measurement.

Data: ``synthetic_bmmc(n_cells, 2000, 6000, seed=101)`` (the development draw ``dev-a``'s
seed; nothing is chosen here), embedding: 20-component PCA of the log-normalised GEX,
kNN graph as ``evaluate`` builds it (15 neighbours, seed 0); NMI and ARI are ``scib``'s
(sklearn's arithmetic NMI and ARI).

``louvain`` 0.8.2 needs ``igraph < 0.12`` while the project's ``leidenalg`` needs
``igraph >= 1.0``, so it is not installed beside them: install it into a folder of its
own and pass it with ``--louvain-site``; Louvain then runs in a subprocess that puts
that folder (with its igraph 0.11) first on its path::

    pip install --target /tmp/louvain_site louvain
    python benchmarks/bench_clustering.py [--sizes 5000 20000] [--louvain-site /tmp/louvain_site]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REAL_CELLS = 69_249
LABEL = "cell_type"
METHODS = {
    "a": "(a) default: igraph, coarse to fine",
    "b": "(b) igraph, all 20",
    "c": "(c) leidenalg, all 20",
    "d": "(d) louvain, all 20",
}


def embedding_graph(n_cells: int, seed: int = 101):
    """The kNN graph AnnData (as ``evaluate`` builds it) of a 20-dim GEX PCA of a draw."""
    from mmae_utils import data, datasets, neighbors, pp

    adata = datasets.synthetic_bmmc(n_cells, 2000, 6000, seed=seed)
    gex, _ = data.split_modalities(adata, copy=False)
    x = pp.pca(pp.log_normalized(gex), 20)[0].astype(np.float32)
    obs = pd.DataFrame({LABEL: pd.Categorical(adata.obs[LABEL].astype(str))})
    obs.index = adata.obs_names.astype(str)
    g = neighbors.graph_adata(obs, x)
    neighbors.compute_neighbors(g, 15, seed=0)
    return g


def warm_up(g) -> None:
    """Imports and first calls (scib, both Leiden flavours) before anything is timed."""
    from mmae_utils import metrics

    for flavor in ("igraph", "leidenalg"):
        metrics.optimal_clustering(g[:200].copy(), LABEL, resolutions=[1.0], flavor=flavor)


def leiden_search(g, search: str, flavor: str) -> dict:
    """One of (a)-(c): seconds, best resolution, NMI, ARI, clusters."""
    from mmae_utils import metrics

    t0 = time.perf_counter()
    res, nmi, clusters, scores = metrics.optimal_clustering(
        g, LABEL, search=search, flavor=flavor, seed=0
    )
    seconds = time.perf_counter() - t0
    ari = metrics.ari(g, clusters, LABEL)
    return {
        "seconds": seconds,
        "resolution": res,
        "NMI": nmi,
        "ARI": ari,
        "clusters": int(clusters.nunique()),
        "tried": len(scores),
    }


def louvain_worker(path: str) -> None:
    """Run in the subprocess: Louvain at the 20 resolutions on the graph saved at ``path``,
    scib's rule (first strictly best NMI); prints one JSON line."""
    import anndata as ad
    import louvain  # noqa: F401  (fails here, clearly, when it is not installed)
    import scanpy as sc
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    g = ad.read_h5ad(path)
    labels = g.obs[LABEL].to_numpy()
    best = {"NMI": 0.0}
    t0 = time.perf_counter()
    for res in (round(0.1 * i, 1) for i in range(1, 21)):
        sc.tl.louvain(g, resolution=res, key_added="_louvain", random_state=0)
        clusters = g.obs["_louvain"].to_numpy()
        nmi = normalized_mutual_info_score(labels, clusters, average_method="arithmetic")
        if nmi > best["NMI"]:
            best = {"NMI": nmi, "resolution": res, "clusters": clusters}
    seconds = time.perf_counter() - t0
    ari = adjusted_rand_score(labels, best["clusters"])
    n_clusters = len(set(best["clusters"]))
    out = {"seconds": seconds, "resolution": best["resolution"], "NMI": best["NMI"], "ARI": ari}
    print(json.dumps(out | {"clusters": n_clusters, "tried": 20}))


def louvain_search(g, site: str | None) -> dict | None:
    """(d) in a subprocess (``site`` first on its path); ``None`` when louvain is missing."""
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = os.pathsep.join(p for p in (site, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "graph.h5ad"
        g.write_h5ad(path)
        proc = subprocess.run(
            [sys.executable, __file__, "--louvain-worker", str(path)],
            env=env,
            capture_output=True,
            text=True,
        )
    if proc.returncode != 0:
        print(f"louvain not run: {proc.stderr.strip().splitlines()[-1:]}", file=sys.stderr)
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run_size(n_cells: int, site: str | None) -> list[dict]:
    """Every method on the graph of ``n_cells`` cells: one row each."""
    t0 = time.perf_counter()
    g = embedding_graph(n_cells)
    print(f"{n_cells:,} cells: data, PCA and kNN graph in {time.perf_counter() - t0:.0f} s")
    warm_up(g)
    results = {
        "a": leiden_search(g, "coarse_to_fine", "igraph"),
        "b": leiden_search(g, "full", "igraph"),
        "c": leiden_search(g, "full", "leidenalg"),
        "d": louvain_search(g, site),
    }
    rows = []
    for key, r in results.items():
        if r is None:
            continue
        rows.append({"cells": n_cells, "method": METHODS[key]} | r)
    nmi_a = results["a"]["NMI"]
    for row in rows:
        row["NMI (a) - this"] = nmi_a - row["NMI"]
    return rows


def extrapolate(table: pd.DataFrame, n_target: int = REAL_CELLS) -> pd.Series:
    """Seconds at ``n_target`` cells by a power law through the two largest sizes."""
    out = {}
    for method, rows in table.groupby("method", sort=False):
        rows = rows.sort_values("cells").tail(2)
        if len(rows) < 2:
            continue
        (n1, t1), (n2, t2) = rows[["cells", "seconds"]].to_numpy()
        k = np.log(t2 / t1) / np.log(n2 / n1)
        out[method] = (t2 * (n_target / n2) ** k, k)
    return pd.DataFrame(out, index=["seconds", "exponent"]).T


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[5000, 20000])
    parser.add_argument("--louvain-site", default=os.environ.get("MMAE_LOUVAIN_SITE"))
    parser.add_argument("--louvain-worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.louvain_worker:
        louvain_worker(args.louvain_worker)
        return 0
    print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} CPUs)")
    rows = [row for n in args.sizes for row in run_size(n, args.louvain_site)]
    table = pd.DataFrame(rows)
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
        if len(args.sizes) > 1:
            print(f"\nExtrapolated to {REAL_CELLS:,} cells (power law through the two sizes):")
            print(extrapolate(table).to_string(float_format=lambda v: f"{v:.1f}"))
    print(f"load average at end: {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
