"""Own silhouette kernel vs the maintained libraries, in one run: seconds, ratios, agreement.

:func:`mmae_utils.metrics.silhouette_samples` (a numba kernel) is kept only if it is at least
2x faster than a library computing the same definition (the project's rule). Compared:

- ``sklearn.metrics.silhouette_samples`` (what ``scib.me.silhouette`` and
  ``scib.me.silhouette_batch`` call), and ``scib.me.silhouette`` / ``silhouette_batch``
  themselves for the two metrics;
- ``scib_metrics`` (JAX): ``scib_metrics.utils.silhouette_samples``, ``silhouette_label``
  and ``silhouette_batch`` (float32 arithmetic; the first call at a size includes its JIT
  compilation, as in a real evaluation: each new shape compiles again, and batch ASW has a
  new shape per cell type; "2nd call" repeats it, compiled).

Data: a 20-dimensional Gaussian mixture of 22 labels of unequal size (the real data's cell
types) and 13 batches that shift the label centres, float32 (as the autoencoder's
embedding), at 20,000 and 69,249 cells (the real dataset's size). Every timing is one call;
the numba kernel is compiled (and cached) before timing.

    python benchmarks/bench_metric_kernels.py [--sizes 20000 69249] [--dims 20]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
import pandas as pd


def mixture(n: int, dims: int, n_labels: int, n_batches: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    weights = rng.dirichlet(np.full(n_labels, 1.5))
    labels = rng.choice(n_labels, n, p=weights)
    batches = rng.integers(0, n_batches, n)
    centres = rng.normal(0, 3, (n_labels, dims))
    shifts = rng.normal(0, 0.5, (n_batches, dims))
    x = centres[labels] + shifts[batches] + rng.normal(0, 1, (n, dims))
    names = np.array([f"type{i:02d}" for i in range(n_labels)])
    return x.astype(np.float32), names[labels], np.array([f"s{b}" for b in batches])


def timed(fn, *args, **kwargs):
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - t0, out


def kernels(x, labels):
    """silhouette_samples of all cells by label: {name: (seconds, values)}."""
    import scib_metrics
    from sklearn.metrics import silhouette_samples as sk_silhouette

    from mmae_utils.metrics import silhouette_samples

    def jax_silhouette(a, b):
        return np.asarray(scib_metrics.utils.silhouette_samples(a, b))

    return {
        "own (numba)": timed(silhouette_samples, x, labels),
        "sklearn": timed(sk_silhouette, x, labels),
        "scib_metrics": timed(jax_silhouette, x, labels),
        "scib_metrics, 2nd call": timed(jax_silhouette, x, labels),
    }


def label_asw(x, labels):
    """cell type ASW: {name: (seconds, value)}."""
    import anndata as ad
    import scib_metrics

    from mmae_utils.metrics import cell_type_asw, import_scib

    scib = import_scib()
    obs = pd.DataFrame({"cell_type": labels}, index=[str(i) for i in range(len(x))])
    g = ad.AnnData(obs=obs, obsm={"X_emb": x})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "own (numba)": timed(cell_type_asw, x, labels),
            "scib.me.silhouette": timed(scib.me.silhouette, g, "cell_type", "X_emb"),
            "scib_metrics": timed(lambda: float(scib_metrics.silhouette_label(x, labels))),
        }


def batch_asw(x, labels, batches):
    """batch ASW: {name: (seconds, value)}."""
    import anndata as ad
    import scib_metrics

    from mmae_utils.metrics import batch_asw as own_batch_asw
    from mmae_utils.metrics import import_scib

    scib = import_scib()
    obs = pd.DataFrame(
        {"cell_type": labels, "batch": batches}, index=[str(i) for i in range(len(x))]
    )
    g = ad.AnnData(obs=obs, obsm={"X_emb": x})

    def jax_batch_asw():
        return float(scib_metrics.silhouette_batch(x, labels, batches))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {
            "own (numba)": timed(own_batch_asw, x, labels, batches),
            "scib.me.silhouette_batch": timed(
                scib.me.silhouette_batch, g, "batch", "cell_type", "X_emb", verbose=False
            ),
            "scib_metrics": timed(jax_batch_asw),
            "scib_metrics, 2nd call": timed(jax_batch_asw),
        }


def report(title: str, n: int, results: dict, reference: str) -> list[dict]:
    ref_s, ref_v = results[reference]
    own_s, own_v = results["own (numba)"]
    rows = []
    for name, (secs, value) in results.items():
        diff = float(
            np.max(np.abs(np.asarray(value, dtype=float) - np.asarray(ref_v, dtype=float)))
        )
        rows.append(
            {
                "what": title,
                "cells": n,
                "implementation": name,
                "seconds": secs,
                "x own": secs / own_s,
                f"max |diff| vs {reference}": diff,
            }
        )
    return rows


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 69_249])
    parser.add_argument("--dims", type=int, default=20)
    parser.add_argument("--labels", type=int, default=22)
    parser.add_argument("--batches", type=int, default=13)
    args = parser.parse_args()

    from mmae_utils.metrics import silhouette_samples

    silhouette_samples(*mixture(500, args.dims, 4, 2)[:2])  # compile (cached) before timing
    print(f"{os.cpu_count()} CPUs; {args.dims} dims, {args.labels} labels, {args.batches} batches")
    rows = []
    for n in args.sizes:
        x, labels, batches = mixture(n, args.dims, args.labels, args.batches)
        rows += report("silhouette_samples", n, kernels(x, labels), "sklearn")
        rows += report("cell type ASW", n, label_asw(x, labels), "scib.me.silhouette")
        rows += report("batch ASW", n, batch_asw(x, labels, batches), "scib.me.silhouette_batch")
        print(f"{n} cells done", flush=True)
    table = pd.DataFrame(rows)
    diff_cols = [c for c in table.columns if c.startswith("max |diff|")]
    table["max |diff| vs library"] = table[diff_cols].bfill(axis=1).iloc[:, 0]
    table = table.drop(columns=diff_cols)
    print("\nAll (x own = seconds / own kernel's seconds; diff vs sklearn or scib.me):")
    print(
        table.to_string(
            index=False,
            formatters={
                "seconds": "{:.2f}".format,
                "x own": "{:.1f}".format,
                "max |diff| vs library": "{:.1e}".format,
            },
        )
    )


if __name__ == "__main__":
    main()
