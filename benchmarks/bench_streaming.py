"""Training on more cells than memory holds: a backed file streamed a chunk at a time.

Usage::

    python benchmarks/bench_streaming.py [--cells 1000000] [--preset jae_harmony]
        [--epochs 1] [--file benchmarks/_data/stream_1000000.h5ad]

Simulates ``--cells`` cells of 2,500 genes and 5,000 peaks (the default selection's
sizes, so every feature is a selected one) into an ``.h5ad`` file chunk by chunk, if the
file is not there. Then, in this process: reads it backed (metadata only), builds the
``--preset`` model and trains it for ``--epochs`` epochs on the file, and embeds every
cell from it (the code; Harmony's correction is not run), printing wall time and peak
RSS per stage (sampled every 20 ms) and what holding the counts in memory would need.

``--compare-memory`` then trains the same model on the same file read into memory, for
the ratio of the epochs' times (for files that fit: e.g. ``--cells 100000``).

``mmae_utils.training.train`` streams backed AnnData through ``mmae_utils.streaming``:
SVD inputs (``jae_harmony``) are fitted on 50,000 cells and computed for all cells in one
pass, then training reads nothing more from disk; a model with count targets
(``--preset mmae``) or raw inputs (``seed``) reads every training cell's chunk each epoch.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from bench_full_scale import ROWS, GiB, RssSampler, release_memory, stage

HERE = Path(__file__).resolve().parent
N_GENES, N_PEAKS = 2500, 5000


def simulate(path: Path, n_cells: int) -> None:
    from mmae_utils.sim import synthetic_bmmc

    print(f"simulating {n_cells:,} cells to {path} (once) ...", flush=True)
    t0 = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    synthetic_bmmc(n_cells, N_GENES, N_PEAKS, seed=7, path=path, chunk_size=8192)
    print(f"  simulated in {time.perf_counter() - t0:.0f} s", flush=True)


def in_memory_need(path: Path) -> tuple[int, float]:
    """Stored counts in the file, and the GiB of a CSR float32 copy (values + int32 indices)."""
    import h5py

    with h5py.File(path, "r") as f:
        nnz = int(f["layers/counts/indptr"][-1])
        n_obs = len(f["layers/counts/indptr"]) - 1
    return nnz, (nnz * 8 + (n_obs + 1) * 8) / GiB


def compare_memory(path: Path, args, streamed, sampler) -> None:
    """The same model trained on the file read into memory; the ratio of epoch times."""
    from mmae_utils import data, training
    from mmae_utils.config import ModelConfig

    release_memory()
    with stage("in memory: read the file", sampler):
        gex, atac = data.split_modalities(data.load_multiome(path))
    with stage("in memory: train", sampler):
        model = training.build_for(gex, atac, config=ModelConfig.from_preset(args.preset))
        history = training.train(model, gex, atac, epochs=args.epochs, verbose=0, seed=0)
    ratio = streamed["seconds"].sum() / history["seconds"].sum()
    print(f"  epochs streamed / in memory: {ratio:.2f}x", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=1_000_000)
    parser.add_argument("--preset", default="jae_harmony")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--file", type=Path, default=None)
    parser.add_argument("--compare-memory", action="store_true")
    args = parser.parse_args()
    path = args.file or HERE / "_data" / f"stream_{args.cells}.h5ad"
    if not path.exists():
        simulate(path, args.cells)

    from mmae_utils import data, training
    from mmae_utils.config import ModelConfig

    sampler = RssSampler()
    print(f"\n{path.name}, preset {args.preset}, {args.epochs} epoch(s)", flush=True)
    with stage("open backed (metadata)", sampler):
        gex, atac = data.split_modalities(data.load_multiome(path, backed=True), copy=False)
    with stage("build model", sampler):
        model = training.build_for(gex, atac, config=ModelConfig.from_preset(args.preset))
    with stage("train (fit, components, epochs)", sampler):
        history = training.train(model, gex, atac, epochs=args.epochs, verbose=0, seed=0)
    release_memory()
    with stage("embed every cell (code)", sampler):
        z = training.embed(model, gex, atac, integrate=False)
    whole = max(peak for _, _, peak in ROWS)  # the streamed run's
    if args.compare_memory:
        compare_memory(path, args, history, sampler)
    sampler.close()
    nnz, need = in_memory_need(path)
    epochs = ", ".join(f"{s:.1f}" for s in history["seconds"])
    print(f"  epoch seconds: {epochs}; loss {history['loss'].iloc[-1]:.4f}", flush=True)
    print(f"  embedding {z.shape[0]:,} x {z.shape[1]}")
    print(f"  streamed run peak RSS {whole:.2f} GiB = {whole * GiB / 1e9:.2f} GB (target: 4 GB)")
    print(f"  the counts in memory alone: {nnz:,} stored values, {need:.2f} GiB as CSR float32")


if __name__ == "__main__":
    main()
