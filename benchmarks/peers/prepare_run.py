"""Write a run folder's inputs the way notebooks 01 and 02 do, without running them.

``RUN_DIR/input.json`` (+ ``input.h5ad`` for the built-in demo) as notebook 01 writes them
(``datasets.save_input``), and ``RUN_DIR/selected.h5ad`` as notebook 02 does (2,500
seurat_v3 genes + 5,000 variable peaks with their raw counts): what a peer such as
``multivi/run_multivi.py`` reads and ``score_peer.py`` scores. Runs in the mmae
environment::

    python benchmarks/peers/prepare_run.py /work/peer_run            # the demo, seed 0
    python benchmarks/peers/prepare_run.py RUN_DIR --data PATH.h5ad

Notebooks 03-04 (``papermill notebooks/0N_*.ipynb OUT -p RUN_DIR RUN_DIR``) then add the
autoencoder's ``embeddings.h5ad`` if its row is wanted in the peer's table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path


def prepare(run_dir: Path, data: str, seed: int, n_gex: int, n_atac: int) -> Path:
    import mmae_utils
    from mmae_utils import data as mdata
    from mmae_utils import datasets, features

    mmae_utils.setup_session(seed)
    run_dir.mkdir(parents=True, exist_ok=True)
    adata = datasets.load_dataset(data, seed=seed)
    datasets.save_input(adata, run_dir, source=data)
    gex, atac = mdata.split_modalities(datasets.load_input(run_dir))
    features.select_gex(gex, n_top=n_gex)
    features.select_atac(atac, n_top=n_atac)
    selected = mdata.combine_selected(gex, atac)
    path = run_dir / "selected.h5ad"
    mdata.write_h5ad(selected, path)
    return path


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--data", default="demo", help="demo, bmmc or a path (notebook 01's DATA)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-gex", type=int, default=2500)
    p.add_argument("--n-atac", type=int, default=5000)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    path = prepare(args.run_dir, args.data, args.seed, args.n_gex, args.n_atac)
    print(f"wrote {path} in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
