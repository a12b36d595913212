"""Seconds per epoch and peak memory of training, streaming vs. the original dense approach.

Usage::

    python benchmarks/bench_training.py [--cells 69249] [--epochs 3] [--dense-epochs 2]

At the real scale (69,249 cells; 2,500 + 5,000 selected features at about 15% GEX and
20% ATAC non-zero, random CSR), in one run and each path in its own subprocess (so that
each peak RSS is that path's alone):

- **streaming**: :func:`mmae_utils.training.train` with its defaults (tf.data over CSR
  rows, one dense batch at a time, fused Adam kernel); with ``--xla-variant`` also
  ``train(..., jit_compile=True)`` (**streaming-xla**);
- with ``--autotune-variant`` also ``train()`` with tf.data autotuning switched back on
  (**streaming-autotune**, how it ran before: see benchmarks/README.md);
- **dense**: the original notebook's approach: the whole matrix densified
  (``X.todense()``), split by column ranges and given to ``model.fit`` (Keras' defaults,
  no XLA on CPU), with the same model, batch size and allocator settings.

For each: seconds per epoch (steady state: the median of the epochs after the first,
which includes tracing / XLA compilation); the matmul floor ``6 x parameters x cells /
GEMM rate``, with the GEMM rate measured in that subprocess with NumPy on a layer-shaped
product (1024 x 5000 @ 5000 x 250 float32, best of 3) before training, after every epoch
and after training: the floor uses the median of these samples (the machine is shared,
so the rate available to the run varies; the ratio against the best sample is printed
too); their ratio; and the peak RSS (``ru_maxrss``) of the whole subprocess, data
included, at the end of training and at the end (after embedding all cells). All cells
are trained every epoch (no validation split) so that an epoch does the work the floor
counts.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

REAL_CELLS, GENES, PEAKS = 69_249, 2_500, 5_000
GB = 1e9


# ---------------------------------------------------------------------------- data
def random_csr(n_rows, n_cols, density, *, seed, kind, chunk=4096):
    """Random CSR float32 (int32 indices) built in row chunks, without a transient copy.

    Two passes over the same per-chunk random streams: the first counts the non-zeros of
    each row, the second fills preallocated ``indices`` / ``data``. ``kind="gex"`` gives
    log1p of counts >= 1, ``kind="atac"`` ones.
    """
    import scipy.sparse as sp

    def mask(c):
        rng = np.random.default_rng([seed, c])
        rows = min(chunk, n_rows - c * chunk)
        return rng, rng.random((rows, n_cols), dtype=np.float32) < density

    n_chunks = -(-n_rows // chunk)
    counts = np.zeros(n_rows + 1, dtype=np.int64)
    for c in range(n_chunks):
        _, m = mask(c)
        counts[c * chunk + 1 : c * chunk + 1 + m.shape[0]] = m.sum(axis=1)
    indptr = np.cumsum(counts)
    indices = np.empty(indptr[-1], dtype=np.int32)
    data = np.empty(indptr[-1], dtype=np.float32)
    for c in range(n_chunks):
        rng, m = mask(c)
        _, cols = np.nonzero(m)
        lo, hi = indptr[c * chunk], indptr[c * chunk + m.shape[0]]
        indices[lo:hi] = cols
        if kind == "gex":
            data[lo:hi] = np.log1p(rng.geometric(0.5, size=len(cols)).astype(np.float32))
        else:
            data[lo:hi] = 1.0
    return sp.csr_matrix((data, indices, indptr), shape=(n_rows, n_cols))


def make_data(n_cells, gex_density, atac_density):
    gex = random_csr(n_cells, GENES, gex_density, seed=1, kind="gex")
    atac = random_csr(n_cells, PEAKS, atac_density, seed=2, kind="atac")
    return gex, atac


def gemm_rate(rows=1024, repeats=3, clock=time.perf_counter) -> float:
    """FLOP/s of NumPy float32 matmul on a layer-shaped product (best of ``repeats``).

    ``rows x 5000 @ 5000 x 250``: the shape of the ATAC encoder's first layer (and of the
    decoder's output layer, transposed) for a block of cells.
    """
    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, PEAKS), dtype=np.float32)
    b = rng.standard_normal((PEAKS, 250), dtype=np.float32)
    a @ b
    best = np.inf
    for _ in range(repeats):
        t = clock()
        a @ b
        best = min(best, clock() - t)
    return 2 * a.shape[0] * a.shape[1] * b.shape[1] / best


def gemm_rate_1thread() -> float:
    """The same GEMM on one BLAS thread, timed in CPU time (for the CPU-time ratio)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1, user_api="blas"):
        return gemm_rate(clock=time.thread_time)


def _release_free_memory():
    """Give freed heap memory back to the system (so GEMM samples do not inflate RSS)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # pragma: no cover
        pass


def gemm_sampler(rates: list, cpu_seconds: list):
    """Keras callback: process CPU time of every epoch, and a GEMM rate sample after it.

    The sample is taken in ``on_epoch_end`` after the library's epoch timer has read the
    clock, so it is not part of the reported epoch time.
    """
    import keras

    class GemmSampler(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._cpu = time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            cpu_seconds.append(time.process_time() - self._cpu)
            rates.append(gemm_rate())
            _release_free_memory()

    return GemmSampler()


def n_params(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


# ---------------------------------------------------------------------------- workers
def worker(path: str, args) -> dict:
    import psutil

    from mmae_utils._utils import peak_rss_bytes

    marks = {}

    def mark(name):
        marks[name] = (psutil.Process().memory_info().rss / GB, peak_rss_bytes() / GB)

    t0 = time.perf_counter()
    gex, atac = make_data(args.cells, args.gex_density, args.atac_density)
    gen_s = time.perf_counter() - t0
    csr_bytes = sum(x.data.nbytes + x.indices.nbytes + x.indptr.nbytes for x in (gex, atac))
    out = {
        "path": path,
        "cells": args.cells,
        "gex_density": gex.nnz / np.prod(gex.shape),
        "atac_density": atac.nnz / np.prod(atac.shape),
        "csr_gb": csr_bytes / GB,
        "data_seconds": gen_s,
        "batch_size": args.batch_size,
    }
    mark("data")
    rates = [gemm_rate()]
    batch_rates = [gemm_rate(rows=args.batch_size, repeats=20)]
    rate_1thread = gemm_rate_1thread()
    cpu_seconds = []
    _release_free_memory()

    import keras

    mark("import")

    from mmae_utils.model import build_model

    # The full-width network of Figure 4 (the "seed" preset): 2,500 + 5,000 inputs, where the
    # matmul floor is what an epoch should cost. The default "jae" preset trains on 100 + 100
    # projected components instead (see benchmarks/README.md, Ablation).
    model = build_model(GENES, PEAKS, preset="seed", seed=0)
    out["params"] = n_params(model)
    mark("model")

    if path.startswith("streaming"):
        from mmae_utils import training
        from mmae_utils.training import embed, train

        if path == "streaming-autotune":  # train() as it was before tf.data autotuning was off
            import tensorflow as tf

            plain = training.make_dataset

            def with_autotune(*a, **k):
                options = tf.data.Options()
                options.autotune.enabled = True
                return plain(*a, **k).with_options(options)

            training.make_dataset = with_autotune

        hist = train(
            model,
            gex,
            atac,
            epochs=args.epochs,
            batch_size=args.batch_size,
            validation_fraction=0.0,
            patience=None,
            seed=0,
            jit_compile=path == "streaming-xla",
            verbose=0,
            callbacks=[gemm_sampler(rates, cpu_seconds)],
        )
        seconds = hist["seconds"].tolist()
        out["jit_compile"] = bool(model.jit_compile)
        mark("trained")
        t = time.perf_counter()
        embed(model, gex, atac)
        mark("embedded")
        out["embed_seconds"] = time.perf_counter() - t
        out["final_loss"] = float(hist["loss"].iloc[-1])
    else:
        # The original notebook: the whole (selected) matrix as one dense array, split by
        # column ranges, fed to model.fit. Same model, Keras' default compile.
        import scipy.sparse as sp

        from mmae_utils.training import epoch_timer, tune_malloc

        x = sp.hstack([gex, atac], format="csr")  # adata.X restricted to the features
        del gex, atac
        dense = x.todense()
        x_gex, x_atac = dense[:, :GENES], dense[:, GENES:]
        tune_malloc()  # the same process-wide allocator settings as train() uses
        model.compile(optimizer=keras.optimizers.Adam(1e-3))
        timer = epoch_timer()
        inputs = {"gex": np.asarray(x_gex), "atac": np.asarray(x_atac)}
        hist = model.fit(
            inputs,
            inputs,
            batch_size=args.batch_size,
            epochs=args.dense_epochs,
            shuffle=True,
            verbose=0,
            callbacks=[timer, gemm_sampler(rates, cpu_seconds)],
        )
        mark("trained")
        seconds = hist.history["seconds"]
        out["jit_compile"] = bool(model.jit_compile)
        out["final_loss"] = float(hist.history["loss"][-1])
    out["train_peak_rss_gb"] = marks["trained"][1]
    out["peak_rss_gb"] = peak_rss_bytes() / GB
    out["rss_marks_gb"] = marks
    rates.append(gemm_rate())
    batch_rates.append(gemm_rate(rows=args.batch_size, repeats=20))
    rate_1thread = max(rate_1thread, gemm_rate_1thread())
    out["epoch_seconds"] = seconds
    out["epoch_cpu_seconds"] = cpu_seconds
    cpu_epoch = float(np.median(cpu_seconds[1:])) if len(cpu_seconds) > 1 else cpu_seconds[0]
    out["cpu_seconds_per_epoch"] = cpu_epoch
    out["gemm_flops_1thread"] = rate_1thread
    out["cpu_floor_seconds"] = 6 * out["params"] * args.cells / rate_1thread
    out["cpu_ratio"] = cpu_epoch / out["cpu_floor_seconds"]
    out["seconds_per_epoch"] = float(np.median(seconds[1:])) if len(seconds) > 1 else seconds[0]
    out["gemm_flops_samples"] = rates
    out["gemm_flops"] = float(np.median(rates))
    out["floor_seconds"] = 6 * out["params"] * args.cells / out["gemm_flops"]
    out["ratio"] = out["seconds_per_epoch"] / out["floor_seconds"]
    # the same product with as many rows as a training batch: the rate matmuls of that
    # shape can reach here (informative; the target is against the floor above)
    out["gemm_flops_batch_rows"] = float(np.median(batch_rates))
    out["ratio_batch_gemm"] = (
        out["seconds_per_epoch"] * out["gemm_flops_batch_rows"] / (6 * out["params"] * args.cells)
    )
    out["ratio_vs_best_gemm"] = (
        out["seconds_per_epoch"] * max(rates) / (6 * out["params"] * args.cells)
    )
    cpu = resource.getrusage(resource.RUSAGE_SELF)
    out["cpu_seconds"] = cpu.ru_utime + cpu.ru_stime
    return out


def run_worker(path: str, argv: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", path, *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT ") :])
    sys.stderr.write(proc.stderr[-5000:])
    raise RuntimeError(f"{path} worker failed (exit code {proc.returncode})")


def table(results: list[dict]) -> str:
    head = (
        "| path | batch | XLA | s/epoch (1st) | GEMM GFLOP/s median [min-max] | floor s | "
        "ratio (vs best GEMM) | batch-row GEMM GFLOP/s | ratio at it | CPU s/epoch | "
        "CPU ratio | train peak RSS GB | peak RSS GB incl. embed |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    rows = []
    for r in results:
        g = np.array(r["gemm_flops_samples"]) / 1e9
        rows.append(
            f"| {r['path']} | {r['batch_size']} | {'yes' if r['jit_compile'] else 'no'} | "
            f"{r['seconds_per_epoch']:.1f} ({r['epoch_seconds'][0]:.1f}) | "
            f"{np.median(g):.0f} [{g.min():.0f}-{g.max():.0f}] | {r['floor_seconds']:.1f} | "
            f"{r['ratio']:.2f} ({r['ratio_vs_best_gemm']:.2f}) | "
            f"{r['gemm_flops_batch_rows'] / 1e9:.0f} | {r['ratio_batch_gemm']:.2f} | "
            f"{r['cpu_seconds_per_epoch']:.1f} | {r['cpu_ratio']:.2f} | "
            f"{r['train_peak_rss_gb']:.2f} | {r['peak_rss_gb']:.2f} |"
        )
    return "\n".join([head, *rows])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=REAL_CELLS)
    parser.add_argument("--gex-density", type=float, default=0.15)
    parser.add_argument("--atac-density", type=float, default=0.20)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3, help="streaming epochs")
    parser.add_argument("--dense-epochs", type=int, default=2)
    parser.add_argument("--skip-dense", action="store_true")
    parser.add_argument(
        "--xla-variant",
        action="store_true",
        help="also run the streaming path with XLA (train(..., jit_compile=True))",
    )
    parser.add_argument(
        "--autotune-variant",
        action="store_true",
        help="also run the streaming path with tf.data autotuning on (as before it was off)",
    )
    parser.add_argument(
        "--worker",
        choices=["streaming", "streaming-xla", "streaming-autotune", "dense"],
        help=argparse.SUPPRESS,
    )
    args = parser.parse_args()

    if args.worker:
        print("RESULT " + json.dumps(worker(args.worker, args)), flush=True)
        return

    flags = ("--skip-dense", "--xla-variant", "--autotune-variant")
    argv = [a for a in sys.argv[1:] if a not in flags]
    results = [run_worker("streaming", argv)]
    if args.xla_variant:
        results.append(run_worker("streaming-xla", argv))
    if args.autotune_variant:
        results.append(run_worker("streaming-autotune", argv))
    if not args.skip_dense:
        import psutil

        need = 3.5 * args.cells * (GENES + PEAKS) * 4  # dense float32 + copies + TF
        avail = psutil.virtual_memory().available
        if avail < need:
            print(f"skipping the dense path: needs ~{need / GB:.1f} GB, {avail / GB:.1f} free")
        else:
            results.append(run_worker("dense", argv))

    s = results[0]
    print(
        f"\n{s['cells']:,} cells, {GENES:,} GEX ({s['gex_density']:.1%} non-zero) + "
        f"{PEAKS:,} ATAC ({s['atac_density']:.1%} non-zero) features; "
        f"{s['params']:,} parameters; CSR inputs {s['csr_gb']:.2f} GB"
    )
    print(table(results))
    print(
        "floor = 6 x parameters x cells / GEMM rate (median of the samples of the run); "
        "CPU ratio = CPU seconds of the process per epoch / (6 x parameters x cells / "
        "one-thread GEMM rate), insensitive to other load on the machine; batch-row GEMM: "
        f"the floor's product with {args.batch_size} rows, the rate matmuls of a training "
        "batch's shape reach here (informative: the target is against the floor)"
    )
    if results[-1]["path"] == "dense":
        d = results[-1]
        print(
            f"dense / streaming: epoch time {d['seconds_per_epoch'] / s['seconds_per_epoch']:.2f}, "
            f"CPU time per epoch {d['cpu_seconds_per_epoch'] / s['cpu_seconds_per_epoch']:.2f}, "
            f"training peak RSS {d['train_peak_rss_gb'] / s['train_peak_rss_gb']:.1f}"
        )
    print(f"streaming embed of all cells: {s['embed_seconds']:.1f} s")
    print(
        f"targets (streaming): ratio <= 1.3 -> {'met' if s['ratio'] <= 1.3 else 'NOT met'}; "
        f"training peak RSS <= 2 GB -> {'met' if s['train_peak_rss_gb'] <= 2.0 else 'NOT met'}"
    )
    print(f"load average at the end: {os.getloadavg()}")
    print("raw:", json.dumps(results))


if __name__ == "__main__":
    main()
