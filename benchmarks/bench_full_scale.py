"""The whole pipeline on a full-size file in bounded memory, stage by stage.

Usage::

    python benchmarks/bench_full_scale.py [--file benchmarks/_data/bmmc_full.h5ad]
        [--epochs 2] [--skip-original] [--skip-evaluation]

Writes the full-size synthetic file with ``synthetic_bmmc`` (69,249 x 129,921) if it is not
there, then runs, in this process: backed load + validation -> chunked feature selection
(2,500 genes + 5,000 peaks) -> reading the selected columns -> training -> embedding ->
evaluation, and prints wall time and peak RSS per stage (RSS sampled every 20 ms).

Beside it, in a separate process so that its memory does not mix with ours, the original
notebook's way: read the whole file into memory, then densify the GEX block; the dense
matrix of all features (``X.todense()``, as the original did) cannot fit in 24 GB and is
reported by its size.

``--report`` instead runs the whole tutorial report (``mmae-report``, notebooks 01-05) on
``--data`` (``demo``, or a file: by default the full-size file with ``params/bmmc.yaml``)
and prints each notebook's time and peak memory, measured from outside (the RSS of the
runner and its kernels summed, sampled every 0.2 s), and the cells that took a second or
more, from papermill's record::

    python benchmarks/bench_full_scale.py --report --data demo     # make report's run
    python benchmarks/bench_full_scale.py --report                 # full size, bmmc.yaml
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

GiB = 2**30


class RssSampler:
    """Peak resident memory of this process within a stage, sampled in a thread."""

    def __init__(self, interval: float = 0.02):
        self.interval = interval
        self.proc = psutil.Process()
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(self.interval)

    def reset(self):
        self.peak = self.proc.memory_info().rss

    def close(self):
        self._stop.set()
        self._thread.join()


ROWS: list[tuple[str, float, float]] = []


def release_memory() -> None:
    """Hand freed heap memory back to the OS (glibc keeps it otherwise), so RSS is honest."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:  # not glibc
        pass


@contextmanager
def stage(name: str, sampler: RssSampler):
    sampler.reset()
    start = sampler.peak
    t0 = time.perf_counter()
    yield
    wall = time.perf_counter() - t0
    time.sleep(2 * sampler.interval)
    ROWS.append((name, wall, sampler.peak / GiB))
    print(
        f"  {name:<34} {wall:8.1f} s   peak RSS {sampler.peak / GiB:6.2f} GiB"
        f"   (at start {start / GiB:5.2f})",
        flush=True,
    )


def original_way(path: Path) -> dict:
    """Run in a subprocess: read everything, densify the GEX block (the original notebook)."""
    code = f"""
import json, resource, time
import anndata as ad, numpy as np
t0 = time.perf_counter()
a = ad.read_h5ad({str(path)!r})
t_read = time.perf_counter() - t0
gex_cols = np.flatnonzero(a.var["feature_types"].to_numpy() == "GEX")
t1 = time.perf_counter()
dense_gex = a.X[:, gex_cols].toarray()
t_dense = time.perf_counter() - t1
print(json.dumps(dict(read_s=t_read, densify_s=t_dense, n_obs=a.n_obs, n_vars=a.n_vars,
    gex_dense_gib=dense_gex.nbytes / 2**30, peak_gib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def tree_rss(proc: psutil.Process) -> int:
    """Resident memory of ``proc`` and all its descendants (the report's kernels), bytes."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:  # ended between listing and reading
            pass
    return total


def run_report(data: str, params: Path | None, out: Path) -> dict[str, float]:
    """``mmae-report`` in a subprocess; the peak summed RSS while each notebook ran."""
    cmd = [sys.executable, "-c", "import sys; from mmae_utils.report import main; "
           "sys.exit(main(sys.argv[1:]))", "--data", data, "--out", str(out), "--no-html",
           "--quiet"]  # fmt: skip
    if params is not None:
        cmd += ["-f", str(params)]
    timings = out / "timings.json"
    timings.unlink(missing_ok=True)
    proc = psutil.Popen(cmd)
    peaks: dict[int, int] = {}
    while proc.poll() is None:
        done = len(json.loads(timings.read_text())["notebooks"]) if timings.exists() else 0
        peaks[done] = max(peaks.get(done, 0), tree_rss(proc))
        time.sleep(0.2)
    if proc.returncode:
        sys.exit(f"mmae-report failed (exit {proc.returncode}); see {out}")
    from mmae_utils.report import NOTEBOOKS

    return {name: peaks.get(i, 0) / 1e9 for i, name in enumerate(NOTEBOOKS)}


def cell_rows(ipynb: Path, min_seconds: float = 1.0) -> list[tuple[str, float]]:
    """``(first line of the cell, seconds)`` of the code cells that ran that long."""
    nb = json.loads(ipynb.read_text())
    rows = []
    for cell in nb["cells"]:
        seconds = cell.get("metadata", {}).get("papermill", {}).get("duration") or 0.0
        if cell["cell_type"] == "code" and seconds >= min_seconds:
            source = "".join(cell["source"]).strip().splitlines()
            rows.append((source[0][:52] if source else "", seconds))
    return rows


def report_stages(args) -> None:
    """Stage table of a whole report: notebooks, their slow cells, peak RSS from outside."""
    data = args.data or str(args.file)
    params = args.params or (None if data == "demo" else Path("params/bmmc.yaml"))
    out = args.out / ("demo" if data == "demo" else "full")
    out.mkdir(parents=True, exist_ok=True)
    print(f"report on {data} (parameters: {params or 'the defaults'}) into {out}", flush=True)
    peaks = run_report(data, params, out)
    seconds = json.loads((out / "timings.json").read_text())
    print(f"\n{'notebook / cell':<60} {'s':>7} {'peak RSS GB':>12}   ({seconds['cpus']} CPUs)")
    for name, total in seconds["notebooks"].items():
        print(f"{name:<60} {total:7.1f} {peaks[name]:12.2f}")
        for source, s in cell_rows(out / f"{name}.ipynb"):
            print(f"    {source:<56} {s:7.1f}")
    total = sum(seconds["notebooks"].values())
    print(f"{'whole report (notebooks)':<60} {total:7.1f} {max(peaks.values()):12.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=Path("benchmarks/_data/bmmc_full.h5ad"))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--skip-original", action="store_true")
    parser.add_argument("--skip-evaluation", action="store_true")
    parser.add_argument("--report", action="store_true", help="time the whole report instead")
    parser.add_argument("--data", help="--report: 'demo' or a file (default: --file)")
    parser.add_argument("--params", type=Path, help="--report: parameter file (-f)")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/_data/report_stages"))
    args = parser.parse_args()
    if args.report:
        if args.data != "demo" and not (Path(args.data or args.file)).exists():
            sys.exit(
                f"{args.data or args.file} does not exist: run without --report once to write it."
            )
        return report_stages(args)

    from mmae_utils import data, features, pp
    from mmae_utils._utils import set_seed
    from mmae_utils.datasets import REAL_N_CELLS, REAL_N_GENES, REAL_N_PEAKS, synthetic_bmmc

    sampler = RssSampler()
    if not args.file.exists():
        with stage("simulate + stream to disk", sampler):
            synthetic_bmmc(
                REAL_N_CELLS, REAL_N_GENES, REAL_N_PEAKS, seed=0, path=args.file, progress=True
            )
    set_seed(0)
    print(f"\nbounded-memory pipeline on {args.file} ({args.file.stat().st_size / GiB:.2f} GiB)")
    with stage("load (backed) + validate", sampler):
        adata = data.load_multiome(args.file, backed=True, progress=False)
        release_memory()
    with stage("select 2,500 genes (seurat_v3)", sampler):
        gex, atac = data.split_modalities(adata)
        features.select_gex(gex, n_top=2500, progress=False)
    with stage("select 5,000 peaks", sampler):
        features.select_atac(atac, n_top=5000, progress=False)
    with stage("read selected columns", sampler):
        selected = data.combine_selected(gex, atac, progress=False)
        del adata, gex, atac
        release_memory()
    from mmae_utils import model as mmodel
    from mmae_utils import training

    with stage("model inputs (free the counts)", sampler):
        g_sel, a_sel = data.split_modalities(selected, copy=False)
        x_gex, x_atac = pp.log_normalized(g_sel), pp.binarized(a_sel)
        del g_sel, a_sel
        if args.skip_evaluation:  # evaluation needs the selected counts (cell cycle, baselines)
            del selected.layers["counts"]
        release_memory()
    with stage(f"train ({args.epochs} epochs)", sampler):
        mmae = mmodel.build_model(x_gex.shape[1], x_atac.shape[1], seed=0)
        training.train(mmae, x_gex, x_atac, epochs=args.epochs, patience=None, seed=0, verbose=0)
        release_memory()
    with stage("embed", sampler):
        training.embed(mmae, x_gex, x_atac, adata=selected)
    # The tutorial evaluates in its own notebook (a fresh kernel): the model and its inputs
    # are gone by then, so free them here too.
    del mmae, x_gex, x_atac
    import tensorflow as tf

    tf.keras.backend.clear_session()
    release_memory()
    if not args.skip_evaluation:
        from mmae_utils import evaluation

        with stage("baselines (all five)", sampler):
            evaluation.baselines(selected, n_comps=20, seed=0)
        with stage("evaluate 2 embeddings", sampler):
            evaluation.evaluate(selected, {"mmae": "X_mmae", "pca_concat": "X_pca_concat"}, seed=0)
    sampler.close()
    total = sum(r[1] for r in ROWS)
    peak = max(r[2] for r in ROWS)
    print(f"  {'whole pipeline':<34} {total:8.1f} s   peak RSS {peak:6.2f} GiB")
    print(f"  (peak RSS {peak * GiB / 1e9:.2f} GB; target: at most 4 GB)")

    if not args.skip_original:
        print("\noriginal notebook's way (separate process)")
        o = original_way(args.file)
        print(f"  read whole file (X + layers)       {o['read_s']:8.1f} s")
        print(
            f"  densify GEX block                  {o['densify_s']:8.1f} s   ({o['gex_dense_gib']:.2f} GiB dense)"
        )
        print(f"  peak RSS                                       {o['peak_gib']:6.2f} GiB")
        all_dense = o["n_obs"] * o["n_vars"] * 4 / GiB
        print(f"  X.todense() of all features would need {all_dense:.1f} GiB (float32): not run")
        print(f"\n  peak RSS, original / bounded: {o['peak_gib'] / peak:.1f}x")


if __name__ == "__main__":
    main()
