"""Train MultiVI (scvi-tools) on a run folder's selected features and save its latent space.

Runs in the peer's own environment (``benchmarks/peers/multivi/.venv``, see README.md
beside this file), never in the mmae one, and imports nothing from ``mmae_utils``::

    benchmarks/peers/multivi/.venv/bin/python benchmarks/peers/multivi/run_multivi.py \\
        RUN_DIR --seeds 0 1 2

Input: ``RUN_DIR/selected.h5ad`` as notebook 02 writes it: cells x selected features,
``var["feature_types"]`` "GEX" or "ATAC", raw counts in ``layers["counts"]``, batches in
``obs["batch"]``.

Model, as scvi-tools documents it for paired multiome data: genes first, then peaks;
one MuData with an ``"rna"`` and an ``"atac"`` modality registered with
``scvi.model.MULTIVI.setup_mudata(..., batch_key="batch")`` (scvi-tools 1.4 made
``setup_anndata`` of MULTIVI a no-op that only warns), ``MULTIVI(mdata, n_genes=...,
n_regions=..., n_latent=20)`` (the autoencoder's latent size), every other model argument
at its default, ``train()`` with its defaults (AdamW, lr 1e-4, batch 128, 90 % / 10 %
train / validation split, KL warm-up over 50 epochs, early stopping on the validation
reconstruction loss with patience 50) except ``max_epochs``, capped (``--max-epochs``)
so that one run on the demo's 5,000 cells takes minutes on one or two CPU threads.
``scvi.settings.seed`` is set to each seed before the model is built.

Output, in ``--out`` (default ``RUN_DIR/peers/multivi``), each written to a temporary file
and renamed: ``multivi_seed{S}.npz`` per seed (``obs_names``, ``latent`` =
``get_latent_representation()``, the posterior means, float32, and ``seed``) and
``multivi_run.json`` (options, versions, and per seed the training seconds, the epochs and
the losses per epoch; seeds of earlier runs into the same folder are kept unless run
again).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

LATENT_DIM = 20  # the autoencoder's latent size (notebook 03's LATENT_DIM)
MAX_EPOCHS = 100  # the cap on train()'s max_epochs (scvi-tools' default: 500)
FEATURE_TYPES = ("GEX", "ATAC")
#: Per-epoch losses kept in the run record (to see whether the epoch cap cut training short).
HISTORY_KEYS = (
    "elbo_train",
    "elbo_validation",
    "reconstruction_loss_validation",
    "kl_local_validation",
)


class InputError(ValueError):
    """``selected.h5ad`` does not follow the contract this peer reads."""


def check_input(adata, *, layer: str, batch_key: str | None) -> None:
    """Raise :class:`InputError` with what is wrong and what to do when ``adata`` is not
    notebook 02's ``selected.h5ad``."""
    if "feature_types" not in adata.var:
        raise InputError(
            "var['feature_types'] is missing: each feature must be marked 'GEX' or 'ATAC' "
            "(as notebook 02's selected.h5ad is)."
        )
    types = adata.var["feature_types"].astype(str)
    unknown = sorted(set(types) - set(FEATURE_TYPES))
    if unknown:
        raise InputError(
            f"var['feature_types'] has values other than 'GEX' and 'ATAC': {unknown[:5]}."
        )
    for t in FEATURE_TYPES:
        if not (types == t).any():
            raise InputError(
                f"No {t} features (var['feature_types'] == {t!r}): MultiVI needs both."
            )
    if layer not in adata.layers:
        raise InputError(
            f"layers[{layer!r}] (the raw counts) is missing; layers present: "
            f"{sorted(adata.layers.keys()) or 'none'}. MultiVI models counts, not the "
            "normalised X."
        )
    if batch_key is not None and batch_key not in adata.obs:
        raise InputError(
            f"obs[{batch_key!r}] (the batches) is missing; pass --batch-key NAME or "
            "--batch-key none to train without batches."
        )
    if batch_key is not None and adata.obs[batch_key].isna().any():
        raise InputError(f"obs[{batch_key!r}] has missing values.")
    if not adata.obs_names.is_unique:
        raise InputError("obs_names are not unique: the latent could not be matched to cells.")
    if adata.n_obs < 10:
        raise InputError(f"{adata.n_obs} cells: too few to train on.")
    data = _values(adata.layers[layer])
    if data.size and (not np.isfinite(data).all() or data.min() < 0):
        raise InputError(f"layers[{layer!r}] has negative or non-finite values: not counts.")
    if data.size and not np.array_equal(data, np.round(data)):
        warnings.warn(
            f"layers[{layer!r}] has non-integer values; MultiVI's likelihoods expect counts.",
            stacklevel=2,
        )


def _values(x) -> np.ndarray:
    """The stored values of a sparse or dense matrix."""
    return np.asarray(x.data if hasattr(x, "data") and hasattr(x, "indptr") else x).ravel()


def to_mudata(adata, *, layer: str, batch_key: str | None):
    """The documented MultiVI input: one MuData, ``"rna"`` (the genes) then ``"atac"``
    (the peaks), the counts as each modality's X, the batch in each modality's obs."""
    import anndata as ad
    import mudata as md
    import scipy.sparse as sp

    types = adata.var["feature_types"].astype(str).to_numpy()
    obs = adata.obs[[batch_key]].copy() if batch_key else adata.obs.iloc[:, :0].copy()
    if batch_key:
        obs[batch_key] = obs[batch_key].astype(str).astype("category")
    counts = adata.layers[layer]
    counts = sp.csr_matrix(counts) if not sp.issparse(counts) else counts.tocsr()
    mods = {}
    for name, t in (("rna", "GEX"), ("atac", "ATAC")):
        cols = np.flatnonzero(types == t)
        mods[name] = ad.AnnData(
            X=counts[:, cols].astype(np.float32), obs=obs.copy(), var=adata.var.iloc[cols].copy()
        )
    mdata = md.MuData(mods)
    if batch_key:
        mdata.obs[batch_key] = obs[batch_key]
    return mdata, int((types == "GEX").sum()), int((types == "ATAC").sum())


def atomic_write(path: Path, write) -> None:
    """``write(tmp_path)`` to a temporary file in ``path``'s folder, then rename it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 -> what a plain open() would give
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for pkg in ("scvi-tools", "torch", "lightning", "anndata", "mudata", "numpy", "scipy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            pass
    return out


def train_one(mdata, n_genes: int, n_regions: int, seed: int, args) -> tuple[np.ndarray, dict]:
    """Train one MultiVI model with ``seed``; its latent and a record of the run."""
    import scvi

    scvi.settings.seed = seed
    model_kwargs = {"n_genes": n_genes, "n_regions": n_regions, "n_latent": args.n_latent}
    model = scvi.model.MULTIVI(mdata, **model_kwargs)
    train_kwargs = {
        "max_epochs": args.max_epochs,
        "early_stopping": not args.no_early_stopping,
        "accelerator": "cpu",
        "devices": 1,
        "enable_progress_bar": False,
    }
    t0 = time.perf_counter()
    model.train(**train_kwargs)
    seconds = time.perf_counter() - t0
    t1 = time.perf_counter()
    latent = np.asarray(model.get_latent_representation(), dtype=np.float32)
    embed_seconds = time.perf_counter() - t1
    if latent.shape != (mdata.n_obs, args.n_latent) or not np.isfinite(latent).all():
        raise RuntimeError(f"MultiVI's latent has shape {latent.shape} or non-finite values.")
    history = model.history
    last = {
        k: float(history[k].iloc[-1, 0])
        for k in ("elbo_train", "elbo_validation", "reconstruction_loss_validation")
        if k in history
    }
    epochs = len(history["elbo_train"]) if "elbo_train" in history else None
    curves = {
        k: [round(float(v), 3) for v in history[k].iloc[:, 0].dropna()]
        for k in HISTORY_KEYS
        if k in history
    }
    record = {
        "seed": seed,
        "train_seconds": round(seconds, 2),
        "embed_seconds": round(embed_seconds, 2),
        "epochs": epochs,
        "stopped_early": epochs is not None and epochs < args.max_epochs,
        "last": last,
        "history": curves,
        "model": " ".join(model._model_summary_string.split()),
        "model_kwargs": model_kwargs,
        "train_kwargs": train_kwargs,
        "n_hidden": int(model.module.n_hidden),
    }
    return latent, record


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path, help="run folder with selected.h5ad (notebook 02)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="scvi.settings.seed values")
    p.add_argument("--out", type=Path, help="output folder (default RUN_DIR/peers/multivi)")
    p.add_argument("--input", type=Path, help="the AnnData (default RUN_DIR/selected.h5ad)")
    p.add_argument("--layer", default="counts", help="layer of raw counts (default counts)")
    p.add_argument("--batch-key", default="batch", help="obs column of batches, or 'none'")
    p.add_argument("--n-latent", type=int, default=LATENT_DIM)
    p.add_argument("--max-epochs", type=int, default=MAX_EPOCHS)
    p.add_argument("--no-early-stopping", action="store_true")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = p.parse_args(argv)
    if args.batch_key.lower() == "none":
        args.batch_key = None
    if args.max_epochs < 1 or args.n_latent < 1 or args.threads < 1:
        p.error("--max-epochs, --n-latent and --threads must be at least 1.")
    if len(set(args.seeds)) != len(args.seeds):
        p.error(f"--seeds has repeated values: {args.seeds}.")
    args.input = args.input or args.run_dir / "selected.h5ad"
    args.out = args.out or args.run_dir / "peers" / "multivi"
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if not args.input.is_file():
        print(f"error: {args.input} not found (run notebooks 01-02 first).", file=sys.stderr)
        return 2
    import anndata as ad
    import torch

    torch.set_num_threads(args.threads)
    import scvi

    scvi.settings.num_threads = args.threads
    scvi.settings.dl_num_workers = 0
    adata = ad.read_h5ad(args.input)
    try:
        check_input(adata, layer=args.layer, batch_key=args.batch_key)
    except InputError as err:
        print(f"error: {args.input}: {err}", file=sys.stderr)
        return 2
    mdata, n_genes, n_regions = to_mudata(adata, layer=args.layer, batch_key=args.batch_key)
    scvi.model.MULTIVI.setup_mudata(
        mdata,
        batch_key=args.batch_key,
        modalities={"rna_layer": "rna", "atac_layer": "atac", "batch_key": "rna"},
    )
    obs_names = np.asarray(adata.obs_names, dtype=str)
    meta_path = args.out / "multivi_run.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    seeds = {int(k): v for k, v in meta.get("seeds", {}).items()}
    print(
        f"MultiVI on {adata.n_obs:,} cells: {n_genes:,} genes + {n_regions:,} peaks, "
        f"batch_key={args.batch_key!r}, seeds {args.seeds}, {args.threads} thread(s)"
    )
    for seed in args.seeds:
        latent, record = train_one(mdata, n_genes, n_regions, seed, args)
        path = args.out / f"multivi_seed{seed}.npz"
        arrays = {"obs_names": obs_names, "latent": latent, "seed": np.int64(seed)}
        atomic_write(path, lambda tmp, a=arrays: np.savez(tmp, **a))
        record["file"] = path.name
        seeds[seed] = record
        meta = {
            "method": "MultiVI",
            "input": str(args.input),
            "n_cells": int(adata.n_obs),
            "n_genes": n_genes,
            "n_regions": n_regions,
            "layer": args.layer,
            "batch_key": args.batch_key,
            "threads": args.threads,
            "max_epochs": args.max_epochs,
            "early_stopping": not args.no_early_stopping,
            "n_latent": args.n_latent,
            "versions": versions(),
            "command": " ".join(sys.argv),
            "seeds": {str(k): seeds[k] for k in sorted(seeds)},
        }
        text = json.dumps(meta, indent=2)
        atomic_write(meta_path, lambda tmp, t=text: Path(tmp).write_text(t))
        print(
            f"seed {seed}: {record['epochs']} epochs in {record['train_seconds']:.1f} s -> {path}",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
