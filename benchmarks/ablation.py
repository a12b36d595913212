"""Which autoencoder configuration becomes the default: an ablation on development draws.

Usage::

    python benchmarks/ablation.py [--datasets dev-a dev-c] [--seeds 0 1 2] [--configs NAME ...]
        [--epochs 100] [--out benchmarks/ablation.md] [--table-only] [--quick]

The project's rule (``benchmarks/README.md``, "Development draws and evaluation draws"):
configurations are chosen only on the development draws of
:data:`mmae_utils.datasets.DEVELOPMENT_DRAWS`; ``demo()`` and every other seed are
evaluation draws and are refused here. The default datasets are ``dev-a`` (the demo's
size and settings, another seed) and ``dev-c`` (1.5x batch effect, 0.7x ATAC density).

Per dataset, the 2,500 most variable genes and 5,000 most variable peaks are selected
once, as the notebooks do (``features.select_gex``, ``features.select_atac``,
``data.combine_selected``), and cached. Then, for every seed, every configuration of
:data:`CONFIGS` is built (``model.build_model(seed=seed)``; with
``batch_categories=sorted(obs["batch"].unique())`` when it reads batches), trained
(``training.train``: at most ``--epochs`` epochs, early stopping on the validation loss
with patience 10 and the best weights restored, 10 % of the cells held out, batch 128,
Adam 1e-3, ``batch_key="batch"``) and embedded. The competitors of :data:`COMPETITORS`
(20 dimensions each, ``evaluation.baselines``) are scored in the same
``evaluation.evaluate(seed=seed)`` call as the models. Of them only ``harmony`` depends
on the seed (Harmony's random state); the others are exact SVDs, so their embeddings are
computed once per dataset and reused for every seed (their scores still differ by seed,
through the seeded kNN graph and Leiden clustering).

The table (``--out``) holds, per dataset, mean +- sd over seeds of every score of every
configuration with results (not only those of this call's ``--configs``) and competitor,
and for every configuration its seed-paired difference in overall, NMI and ARI to (a)
``pca_concat`` and (b) the best other method (the competitor with the highest mean
overall on that dataset), each with its 95 % t-interval
(``evaluation.seed_difference``) and a call (``comparison.interval_call``: better or worse
when the interval excludes 0, else tie). A last section ranks the configurations by
their mean paired difference in overall to the best other method, averaged over the
datasets, and names the top one, run on every dataset and seed, as the default it would
choose. With 3 seeds the interval is wide: the t quantile is 4.30.

Results are appended to ``benchmarks/_data/ablation_dev/results.jsonl``, one line per
run. A rerun skips what is there; a run that failed is logged there with its error, the
others go on, and a rerun tries it again. Each trained model's embedding is kept in
``embeddings/`` beside the results until its seed is scored, so a run killed mid-seed
does not train those models again. ``--quick`` is a smoke test: a small
development draw (800 cells, 600 genes, 1,800 peaks, 400 + 900 features selected), 3
epochs, 1 seed, one dataset, cache and table under ``/tmp/mmae_ablation_quick``.

Dropped from the earlier ablation (``ablation_linear_simulator.md``) to keep the run
short: the configurations that lost to ``jae`` there. That ranking was made on the
earlier simulator and on ``demo`` (an evaluation draw), so leaving them out is a budget
choice, not a result of this protocol.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
import traceback
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from mmae_utils.datasets import DEVELOPMENT_DRAWS
from mmae_utils.evaluation import COLUMNS

HERE = Path(__file__).resolve().parent
CACHE = HERE / "_data" / "ablation_dev"
QUICK_DIR = Path("/tmp/mmae_ablation_quick")
DEFAULT_DATASETS = ("dev-a", "dev-c")

#: Features kept per modality (the notebooks' defaults).
N_TOP = {"gex": 2500, "atac": 5000}

#: ``--quick``: a small draw (``development_draw`` overrides; the seed stays the draw's),
#: fewer features, 3 epochs, 1 seed, 1 dataset.
QUICK = {
    "draw": {"n_cells": 800, "n_genes": 600, "n_peaks": 1800},
    "n_top": {"gex": 400, "atac": 900},
    "epochs": 3,
    "seeds": [0],
    "datasets": ["dev-a"],
}

#: Name -> (``build_model`` options, one-line description). ``preset`` picks the starting
#: point; ``train`` (if present) holds options for ``training.train`` beside :data:`TRAIN`.
CONFIGS: dict[str, tuple[dict, str]] = {
    "seed": ({"preset": "seed"}, "reference: the seed notebook's model, defects fixed (log GEX, MSE; binary ATAC, BCE)"),
    "jae": ({"preset": "jae"}, "reference: JAE's recipe (SVD inputs, batch norm, block scaling), the default before jae_batch"),
    "jae+shared": (
        {"preset": "jae", "fusion": "shared", "latent_scaling": "none"},
        "jae with one shared code (no block scaling: shared has no halves)",
    ),
    "jae+batchcond": (
        {"preset": "jae", "batch_conditioning": True},
        "jae with decoders conditioned on a one-hot of the batch (preset jae_batch, the default before)",
    ),
    "jae+adv0.1": (
        {"preset": "jae", "adversarial_batch": 0.1},
        "jae + adversarial batch classifier on the code, weight 0.1",
    ),
    "jae+adv1": (
        {"preset": "jae", "adversarial_batch": 1.0},
        "jae + adversarial batch classifier on the code, weight 1",
    ),
    "jae+batchcond+adv0.1": (
        {"preset": "jae", "batch_conditioning": True, "adversarial_batch": 0.1},
        "jae+batchcond + adversarial batch classifier, weight 0.1 (both forms of batch awareness)",
    ),
    "jae+nb": (
        {"preset": "jae", "gex_likelihood": "nb"},
        "jae reconstructing the selected genes' counts (negative binomial)",
    ),
    "jae+bern": (
        {"preset": "jae", "atac_likelihood": "bernoulli"},
        "jae reconstructing the binarised peaks (Bernoulli)",
    ),
    "jae+nb+bern": (
        {"preset": "jae", "gex_likelihood": "nb", "atac_likelihood": "bernoulli"},
        "jae with both count likelihoods",
    ),
    "jae+batchcond+harmony": (
        {"preset": "jae", "batch_conditioning": True, "integration": "harmony"},
        "jae+batchcond, its code then corrected for the batch by Harmony, as the harmony competitor corrects pca_concat (adopted: preset jae_harmony)",
    ),
    "jae+harmony": (
        {"preset": "jae", "integration": "harmony"},
        "jae, its code then corrected for the batch by Harmony",
    ),
    "jae+batchcond+adv0.1+harmony": (
        {"preset": "jae", "batch_conditioning": True, "adversarial_batch": 0.1, "integration": "harmony"},
        "jae_harmony + adversarial batch classifier, weight 0.1: less batch in the code that Harmony corrects",
    ),
    "jae+batchcond+harmony+gex14": (
        {"preset": "jae", "batch_conditioning": True, "integration": "harmony", "gex_latent_dim": 14},
        "jae_harmony with 14 of the 20 dimensions for GEX (the more informative modality alone; named by the rule in round 3 by +0.002, with opposite signs on the two draws: not adopted, see benchmarks/README.md)",
    ),
    "jae+batchcond+harmony+gex6": (
        {"preset": "jae", "batch_conditioning": True, "integration": "harmony", "gex_latent_dim": 6},
        "jae_harmony with 6 of the 20 dimensions for GEX (the other way)",
    ),
    "mmae": ({"preset": "mmae"}, "the preset: shared code + batch-conditioned decoders + NB + Bernoulli"),
    "mmae+adv0.1": (
        {"preset": "mmae", "adversarial_batch": 0.1},
        "mmae + adversarial batch classifier, weight 0.1",
    ),
    "mmae+moddrop0.2": (
        {"preset": "mmae", "modality_dropout": 0.2},
        "mmae + modality dropout 0.2",
    ),
    "mmae-batchcond": (
        {"preset": "mmae", "batch_conditioning": False},
        "mmae without batch conditioning",
    ),
    "mmae-shared": (
        {"preset": "mmae", "fusion": "concat", "latent_scaling": "block"},
        "mmae with jae's concatenated, block-scaled code (jae+batchcond+nb+bern)",
    ),
    "mmae+harmony": (
        {"preset": "mmae", "integration": "harmony"},
        "mmae (shared code, batch-conditioned decoders, NB + Bernoulli), its code then corrected by Harmony as jae_harmony's is (round 4)",
    ),
}  # fmt: skip

#: The other methods, scored beside the models; ``REFERENCE`` is comparison (a).
COMPETITORS = ("pca_concat", "pca_competition", "harmony", "guanlab", "gex_pca")
REFERENCE = "pca_concat"
#: Competitors whose embedding depends on the seed (the rest are computed once per dataset).
SEEDED = frozenset({"harmony"})
LATENT_DIM = 20

#: Scores recorded per run (:data:`mmae_utils.evaluation.COLUMNS` without ``n_metrics``),
#: and those the paired differences are shown for.
SCORES = tuple(c for c in COLUMNS if c != "n_metrics")
DIFF_SCORES = ("overall", "NMI", "ARI")
SHORT = {
    "NMI": "NMI",
    "ARI": "ARI",
    "cell_type_ASW": "ct ASW",
    "cell_cycle_conservation": "cc cons",
    "trajectory_conservation": "traj",
    "batch_ASW": "batch ASW",
    "graph_connectivity": "graph conn",
    "overall": "overall",
}

TRAIN = {
    "epochs": 100,
    "patience": 10,
    "validation_fraction": 0.1,
    "batch_size": 128,
    "learning_rate": 1e-3,
}

RULE = (
    "configurations are chosen only on development draws (benchmarks/README.md, "
    "'Development draws and evaluation draws'); demo() and every other seed are "
    "evaluation draws, only ever scored"
)


# --------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------


def check_datasets(names: list[str]) -> list[str]:
    """``names`` if all are development draws, else ``SystemExit`` citing the rule.

    Parameters
    ----------
    names
        Dataset names asked for on the command line.

    Returns
    -------
    The names, de-duplicated, in order.
    """
    bad = [n for n in names if n not in DEVELOPMENT_DRAWS]
    if bad:
        raise SystemExit(
            f"ablation.py: refused dataset(s) {bad}: {RULE}. Choose from the development "
            f"draws {list(DEVELOPMENT_DRAWS)}."
        )
    return list(dict.fromkeys(names))


def describe_dataset(name: str, quick: bool) -> str:
    """One line: the draw's ``synthetic_bmmc`` arguments and the features selected."""
    draw = {**DEVELOPMENT_DRAWS[name], **(QUICK["draw"] if quick else {})}
    n_top = QUICK["n_top"] if quick else N_TOP
    args = ", ".join(f"{k}={v}" for k, v in draw.items())
    return f"`development_draw({name!r})`: {args}; {n_top['gex']:,} + {n_top['atac']:,} selected"


def prepare(name: str, cache: Path, quick: bool):
    """Selected counts and the full GEX (for the cell-cycle genes) of a draw, cached.

    Parameters
    ----------
    name
        A development draw (:data:`~mmae_utils.datasets.DEVELOPMENT_DRAWS`).
    cache
        Folder of the cached ``.h5ad`` files.
    quick
        Use the small draw and feature counts of :data:`QUICK`.

    Returns
    -------
    ``(selected, gex)``: the selected GEX + ATAC features (multiome AnnData) and all genes.
    """
    import anndata as ad

    from mmae_utils import data, datasets, features

    sel_path, gex_path = cache / f"{name}_selected.h5ad", cache / f"{name}_gex.h5ad"
    if sel_path.exists() and gex_path.exists():
        return ad.read_h5ad(sel_path), ad.read_h5ad(gex_path)
    adata = datasets.development_draw(name, **(QUICK["draw"] if quick else {}))
    n_top = QUICK["n_top"] if quick else N_TOP
    gex, atac = data.split_modalities(adata)
    del adata
    features.select_gex(gex, n_top=n_top["gex"], progress=False)
    features.select_atac(atac, n_top=n_top["atac"], progress=False)
    selected = data.combine_selected(gex, atac, progress=False)
    cache.mkdir(parents=True, exist_ok=True)
    data.write_h5ad(selected, sel_path)
    data.write_h5ad(gex, gex_path)
    return selected, gex


# --------------------------------------------------------------------------------------
# Results file
# --------------------------------------------------------------------------------------


def load_rows(path: Path) -> list[dict]:
    """Every row of the results file (``[]`` without one); unreadable lines are skipped
    with a warning (a run killed while writing leaves at most one)."""
    if not path.exists():
        return []
    rows = []
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            warnings.warn(f"{path}:{i}: unreadable line skipped.", RuntimeWarning, stacklevel=2)
    return rows


def scored(rows: list[dict]) -> pd.DataFrame:
    """Successful runs (models and competitors), the last row of each
    ``(dataset, config, seed)``."""
    ok = [r for r in rows if r.get("kind") in ("model", "baseline") and "error" not in r]
    if not ok:
        return pd.DataFrame(columns=["dataset", "config", "seed", "kind", *SCORES])
    return pd.DataFrame(ok).drop_duplicates(["dataset", "config", "seed"], keep="last")


def done_keys(rows: list[dict]) -> set[tuple[str, str, int]]:
    """``(dataset, config, seed)`` of every successful run."""
    df = scored(rows)
    return set(zip(df["dataset"], df["config"], df["seed"].astype(int), strict=True))


def append(path: Path, rows: list[dict]) -> None:
    """Append ``rows`` to the results file, one JSON object per line (NaN as ``null``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        for row in rows:
            clean = {
                k: (None if isinstance(v, float) and not np.isfinite(v) else v)
                for k, v in row.items()
            }
            f.write(json.dumps(clean) + "\n")


def error_row(dataset: str, name: str, seed: int, kind: str, err: BaseException, **extra) -> dict:
    """The row logging a failed run: the error and the last lines of its traceback."""
    tb = traceback.format_exception(type(err), err, err.__traceback__)
    return {
        "dataset": dataset,
        "config": name,
        "seed": seed,
        "kind": kind,
        "error": f"{type(err).__name__}: {err}",
        "traceback": "".join(tb[-3:])[-2000:],
        **extra,
    }


# --------------------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------------------


def train_config(name: str, selected, gex, atac, seed: int, epochs: int):
    """Build, train and embed configuration ``name``; ``(embedding, row fields)``.

    Raises whatever building or training raises, and ``FloatingPointError`` for an
    embedding with non-finite values.
    """
    import keras

    from mmae_utils import model, training
    from mmae_utils.config import ModelConfig

    options = dict(CONFIGS[name][0])
    train_options = {**TRAIN, "epochs": epochs, **options.pop("train", {})}
    preset = options.pop("preset", None)
    needs_batch = ModelConfig.from_preset(preset, **options).needs_batch
    batches = sorted(selected.obs["batch"].astype(str).unique()) if needs_batch else None
    t0 = time.perf_counter()
    mmae = model.build_model(
        gex.n_vars,
        atac.n_vars,
        preset=preset,
        seed=seed,
        n_cells=selected.n_obs,
        batch_categories=batches,
        **options,
    )
    history = training.train(
        mmae, gex, atac, seed=seed, verbose=0, batch_key="batch", **train_options
    )
    t1 = time.perf_counter()
    z = training.embed(mmae, gex, atac, batch_key="batch", seed=seed)
    t2 = time.perf_counter()
    del mmae
    keras.backend.clear_session()
    if not np.isfinite(z).all():
        raise FloatingPointError(f"{name}: the embedding has non-finite values.")
    return z, {
        "epochs": int(history.attrs["best_epoch"]),
        "epochs_run": len(history),
        "train_seconds": round(t1 - t0, 2),
        "embed_seconds": round(t2 - t1, 2),
    }


def competitor_embeddings(selected, names: list[str], seed: int, fixed: dict) -> tuple[dict, dict]:
    """Embeddings of the competitors ``names`` with ``seed``: ``({name: array}, {name: error})``.

    ``fixed`` caches those that do not depend on the seed (see :data:`SEEDED`): computed on
    first use, then reused. Each embedding's compute seconds go to ``fixed["_seconds"]``.
    """
    from mmae_utils import evaluation

    out, errors = {}, {}
    seconds = fixed.setdefault("_seconds", {})
    for name in names:
        if name in fixed:
            out[name] = fixed[name]
            continue
        t0 = time.perf_counter()
        try:
            x = evaluation.baselines(
                selected, n_comps=LATENT_DIM, methods=(name,), seed=seed, inplace=False
            )[name]
        except Exception as err:  # noqa: BLE001 - logged, the run goes on
            errors[name] = err
            continue
        seconds[name] = round(time.perf_counter() - t0, 2)
        out[name] = x
        if name not in SEEDED:
            fixed[name] = x
    return out, errors


def trained(dataset: str, name: str, seed: int, ctx: dict):
    """``train_config``'s ``(embedding, row fields)``, kept in ``ctx["cache"]/embeddings``
    so that a run killed before its seed was scored does not train the models again."""
    path = ctx["cache"] / "embeddings" / f"{dataset}_s{seed}_e{ctx['epochs']}_{name}.npz"
    if path.exists():
        with np.load(path) as f:
            return f["z"], json.loads(str(f["extra"])) | {"cached": True}
    selected, _, gex, atac = ctx["data"]
    z, extra = train_config(name, selected, gex, atac, seed, ctx["epochs"])
    extra["max_epochs"] = ctx["epochs"]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, z=z, extra=json.dumps(extra))
    return z, extra


def score(selected, gex_all, embeddings: dict, seed: int) -> tuple[pd.DataFrame, dict]:
    """One ``evaluate`` call over every embedding; the table and seconds per embedding."""
    from mmae_utils import evaluation

    table = evaluation.evaluate(
        selected, embeddings, gex=gex_all, seed=seed, store_neighbors=False, progress=False
    )
    details = table.attrs["details"]
    seconds = {name: round(sum(details[name]["seconds"].values()), 2) for name in embeddings}
    return table, seconds


def run_seed(dataset: str, seed: int, todo: dict, ctx: dict, bar) -> list[dict]:
    """Train the configurations and score them with the competitors for one seed.

    Parameters
    ----------
    dataset, seed
        The draw and the seed.
    todo
        ``{"models": [...], "baselines": [...]}``: what is not in the results yet.
    ctx
        ``{"data": (selected, gex_all, gex, atac), "fixed": {...}, "epochs": int,
        "results": Path, "cache": Path}``.
    bar
        The progress bar (one step per model, one per ``evaluate`` call).

    Returns
    -------
    The rows written (successes and errors).
    """
    embeddings, rows, extra = {}, [], {}
    for name in todo["models"]:
        bar.set_postfix_str(f"{dataset} s{seed} {name}")
        try:
            embeddings[name], extra[name] = trained(dataset, name, seed, ctx)
            e = extra[name]
            bar.write(
                f"  {dataset} seed {seed} {name}: train {e['train_seconds']:.1f} s, best "
                f"epoch {e['epochs']}/{e['epochs_run']}{' (cached)' if 'cached' in e else ''}"
            )
        except Exception as err:  # noqa: BLE001 - logged, the run goes on
            rows.append(error_row(dataset, name, seed, "model", err))
            bar.write(f"  {dataset} seed {seed} {name}: FAILED {rows[-1]['error']}")
        bar.update(1)
    base, errors = competitor_embeddings(ctx["data"][0], todo["baselines"], seed, ctx["fixed"])
    rows += [error_row(dataset, n, seed, "baseline", e) for n, e in errors.items()]
    seconds = ctx["fixed"].get("_seconds", {})
    for name in base:
        extra[name] = {"embed_seconds": seconds.get(name), "reused": name not in SEEDED}
    embeddings |= base
    rows += score_rows(dataset, seed, embeddings, extra, ctx, bar)
    bar.update(1)
    append(ctx["results"], rows)
    return rows


def score_rows(dataset: str, seed: int, embeddings: dict, extra: dict, ctx: dict, bar) -> list:
    """Rows of one ``evaluate`` call (or error rows for all, if it fails)."""
    if not embeddings:
        return []
    bar.set_postfix_str(f"{dataset} s{seed} evaluate {len(embeddings)}")
    selected, gex_all = ctx["data"][:2]
    t0 = time.perf_counter()
    try:
        table, seconds = score(selected, gex_all, embeddings, seed)
    except Exception as err:  # noqa: BLE001 - logged, the run goes on
        return [
            error_row(dataset, n, seed, "model" if n in CONFIGS else "baseline", err)
            for n in embeddings
        ]
    bar.write(
        f"  {dataset} seed {seed}: evaluate {len(embeddings)} embeddings "
        f"{time.perf_counter() - t0:.1f} s"
    )
    rows = []
    for name in embeddings:
        row = {"dataset": dataset, "config": name, "seed": seed}
        row["kind"] = "model" if name in CONFIGS else "baseline"
        row |= {m: float(table.loc[name, m]) for m in SCORES}
        rows.append(row | extra.get(name, {}) | {"eval_seconds": seconds[name]})
    return rows


def plan(args, rows: list[dict]) -> dict:
    """``{(dataset, seed): {"models": [...], "baselines": [...]}}`` of what is not done."""
    done = done_keys(rows)
    todo = {}
    for dataset in args.datasets:
        for seed in args.seeds:
            models = [c for c in args.configs if (dataset, c, seed) not in done]
            baselines = [b for b in COMPETITORS if (dataset, b, seed) not in done]
            if models or baselines:
                todo[(dataset, seed)] = {"models": models, "baselines": baselines}
    return todo


def run_all(args) -> None:
    """Every run not in the results yet, with a progress bar; the session's wall time and
    its failures are printed and recorded (a ``"session"`` row)."""
    from tqdm.auto import tqdm

    from mmae_utils import data

    todo = plan(args, load_rows(args.results))
    total = sum(len(t["models"]) + 1 for t in todo.values())
    print(f"{total} steps to run ({len(todo)} dataset x seed pairs); results: {args.results}")
    t0, failed, n_runs = time.perf_counter(), [], 0
    with tqdm(total=total, desc="ablation", unit="run") as bar:
        for dataset in args.datasets:
            pairs = [(d, s) for d, s in todo if d == dataset]
            if not pairs:
                continue
            selected, gex_all = prepare(dataset, args.cache, args.quick)
            gex, atac = data.split_modalities(selected)
            ctx = {"data": (selected, gex_all, gex, atac), "fixed": {}}
            ctx |= {"epochs": args.epochs, "results": args.results, "cache": args.cache}
            for key in pairs:
                rows = run_seed(*key, todo[key], ctx, bar)
                n_runs += len(rows)
                failed += [
                    f"{r['dataset']} s{r['seed']} {r['config']}" for r in rows if "error" in r
                ]
    wall = time.perf_counter() - t0
    if n_runs:
        append(args.results, [session_row(args, wall, n_runs, failed)])
    print(f"Wall time {wall / 60:.1f} min for {n_runs} runs; {len(failed)} failed: {failed}")


def session_row(args, wall: float, n_runs: int, failed: list[str]) -> dict:
    """The row recording one invocation: when, what was asked, wall time, failures."""
    return {
        "kind": "session",
        "finished": time.strftime("%Y-%m-%d %H:%M:%S"),
        "datasets": args.datasets,
        "seeds": args.seeds,
        "configs": args.configs,
        "epochs": args.epochs,
        "quick": args.quick,
        "runs": n_runs,
        "failed": failed,
        "wall_seconds": round(wall, 1),
    }


# --------------------------------------------------------------------------------------
# Table
# --------------------------------------------------------------------------------------


def seed_table(df: pd.DataFrame, dataset: str, methods: list[str], seeds: list[int]):
    """Scores of ``methods`` on ``dataset`` indexed by ``(seed, method)``, as
    ``evaluation.aggregate_seeds`` and ``seed_difference`` expect."""
    d = df[(df["dataset"] == dataset) & df["config"].isin(methods) & df["seed"].isin(seeds)]
    t = d.rename(columns={"config": "method"}).set_index(["seed", "method"])
    return t[list(SCORES)].astype(float).sort_index(level="seed")


def fmt_mean_sd(mean: float, sd: float) -> str:
    """``0.812 ± 0.010`` (``± –`` without a spread: one seed)."""
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.3f} ± {sd:.3f}" if np.isfinite(sd) else f"{mean:.3f} ± –"


def fmt_diff(row) -> str:
    """``+0.012 [-0.003, +0.027] tie`` for a row of ``seed_difference``."""
    from mmae_utils.comparison import interval_call

    if not np.isfinite(row["mean"]):
        return "–"
    call = interval_call(row["ci_low"], row["ci_high"])
    if int(row["n_seeds"]) < 2:
        return f"{row['mean']:+.3f} (1 seed, no interval) {call}"
    return f"{row['mean']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] {call}"


def scores_section(df: pd.DataFrame, table: pd.DataFrame, dataset: str, order: list[str]) -> list:
    """Mean ± sd over seeds of every score, per method, with training epochs and times."""
    from mmae_utils.evaluation import aggregate_seeds

    agg = aggregate_seeds(table)
    d = df[df["dataset"] == dataset].set_index("config")
    head = "| method | " + " | ".join(SHORT[c] for c in SCORES)
    lines = [
        head + " | seeds | best epoch | train s | eval s |",
        "|---|" + "---|" * (len(SCORES) + 4),
    ]
    for name in [m for m in order if m in agg.index]:
        cells = [fmt_mean_sd(agg.loc[name, (c, "mean")], agg.loc[name, (c, "sd")]) for c in SCORES]
        runs = d.loc[[name]]
        epochs = runs["epochs"].mean() if "epochs" in runs else np.nan
        train = runs["train_seconds"].mean() if "train_seconds" in runs else np.nan
        cells += [str(int(agg.loc[name, ("n_seeds", "")]))]
        cells += [f"{v:.0f}" if np.isfinite(v) else "" for v in (epochs, train)]
        cells += [f"{runs['eval_seconds'].mean():.1f}"]
        label = f"`{name}`" if name in CONFIGS else f"*{name}*"
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def best_other(table: pd.DataFrame) -> str | None:
    """The competitor with the highest mean overall in ``table`` (``None`` without any)."""
    methods = table.index.get_level_values("method")
    means = table[methods.isin(COMPETITORS)].groupby(level="method")["overall"].mean()
    return None if means.dropna().empty else str(means.idxmax())


def differences(table: pd.DataFrame, configs: list[str], reference: str) -> dict:
    """``{config: seed_difference(config - reference)}`` for the configurations present."""
    from mmae_utils.evaluation import seed_difference

    present = set(table.index.get_level_values("method"))
    if reference not in present:
        return {}
    return {
        c: seed_difference(table, method=c, reference=reference) for c in configs if c in present
    }


def differences_section(table: pd.DataFrame, configs: list[str], best: str) -> tuple[list, dict]:
    """The paired differences to ``pca_concat`` and to ``best``; lines and those to ``best``."""
    to_ref, to_best = differences(table, configs, REFERENCE), differences(table, configs, best)
    cols = [f"Δ {s} vs {ref}" for ref in (REFERENCE, best) for s in DIFF_SCORES]
    lines = ["| config | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name in configs:
        if name not in to_best:
            continue
        cells = [
            fmt_diff(d.loc[s]) if d is not None else "–"
            for d in (to_ref.get(name), to_best[name])
            for s in DIFF_SCORES
        ]
        lines.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return lines, to_best


def ranking(to_best: dict[str, dict], configs: list[str], n_seeds: int) -> list[dict]:
    """Configurations ranked by their mean paired difference in overall to each dataset's
    best other method, averaged over the datasets.

    Parameters
    ----------
    to_best
        ``{dataset: {config: seed_difference(config - best other method)}}``.
    configs
        The configurations to rank.
    n_seeds
        Seeds asked for: a configuration is ``eligible`` to become the default only if
        it was scored with all of them on every dataset.

    Returns
    -------
    One dict per configuration, best first (no value last): ``name``, ``mean`` (the
    average over datasets of the mean paired difference), ``eligible`` and ``per``
    (``{dataset: the seed_difference row of overall}``).
    """
    ranked = []
    for name in configs:
        per = {ds: d[name].loc["overall"] for ds, d in to_best.items() if name in d}
        means = [float(r["mean"]) for r in per.values()]
        complete = len(per) == len(to_best) and all(
            int(r["n_seeds"]) == n_seeds and np.isfinite(r["mean"]) for r in per.values()
        )
        mean = float(np.mean(means)) if means else np.nan
        ranked.append({"name": name, "mean": mean, "eligible": complete, "per": per})
    return sorted(ranked, key=lambda r: -r["mean"] if np.isfinite(r["mean"]) else np.inf)


def choose_default(ranked: list[dict]) -> dict | None:
    """The top-ranked eligible configuration's record (``None`` if none is eligible)."""
    return next((r for r in ranked if r["eligible"]), None)


def ranking_section(ranked: list[dict], best: dict[str, str], n_seeds: int) -> list[str]:
    """The ranking table and the default it chooses, with what its intervals say."""
    from mmae_utils.comparison import interval_call

    datasets = list(best)
    cols = [f"{ds}: Δ overall vs {best[ds]}" for ds in datasets]
    lines = ["| rank | config | mean Δ over datasets | " + " | ".join(cols) + " | eligible |"]
    lines.append("|---|---|---|" + "---|" * (len(cols) + 1))
    for i, r in enumerate(ranked, 1):
        cells = [fmt_diff(r["per"][ds]) if ds in r["per"] else "–" for ds in datasets]
        mean = f"{r['mean']:+.3f}" if np.isfinite(r["mean"]) else "–"
        cells += ["yes" if r["eligible"] else "no"]
        lines.append(f"| {i} | `{r['name']}` | {mean} | " + " | ".join(cells) + " |")
    chosen = choose_default(ranked)
    lines.append("")
    if chosen is None:
        lines.append(
            f"**No configuration was scored with all {n_seeds} seed(s) on every dataset: "
            "none is chosen.**"
        )
        return lines
    calls = [
        interval_call(chosen["per"][ds]["ci_low"], chosen["per"][ds]["ci_high"]) for ds in datasets
    ]
    said = "; ".join(f"{c} vs {best[ds]} on {ds}" for c, ds in zip(calls, datasets, strict=True))
    lines.append(
        f"**Default by this rule: `{chosen['name']}`**: the eligible configuration with the "
        f"highest mean Δ overall to the best other method ({chosen['mean']:+.3f} averaged "
        f"over {', '.join(datasets)}), chosen by the script from the numbers above. Its "
        f"intervals: {said}."
    )
    if "better" not in calls:
        lines.append(
            "\nIt is not better than the best other method on any dataset: it would be the "
            "default as the best autoencoder here, not as one that beats the competitors."
        )
    return lines


def dataset_section(df: pd.DataFrame, dataset: str, configs: list[str], seeds: list[int], quick):
    """Scores and paired differences for one dataset; ``(lines, best other, to best)``."""
    methods = [*configs, *COMPETITORS]
    rows = df[(df["dataset"] == dataset) & df["seed"].isin(seeds)]
    table = seed_table(rows, dataset, methods, seeds)
    lines = [f"## {dataset}\n", describe_dataset(dataset, quick) + ".\n"]
    if table.empty:
        return lines + ["No results yet.\n"], None, {}
    used = sorted(set(table.index.get_level_values("seed")))
    lines.append(f"Mean ± sd over seeds {', '.join(map(str, used))}; *competitors* in italics.\n")
    lines += scores_section(rows, table, dataset, [*CONFIGS, *COMPETITORS]) + [""]
    best = best_other(table)
    if best is None:
        return lines + ["No competitor scored: no differences.\n"], None, {}
    overall = table.xs(best, level="method")["overall"].mean()
    lines.append(
        f"Paired by seed, configuration minus competitor: mean [95% t-interval] and the call. "
        f"Best other method: **{best}** (mean overall {overall:.3f}).\n"
    )
    diff_lines, to_best = differences_section(table, configs, best)
    return lines + diff_lines + [""], best, to_best


def failures_section(rows: list[dict], args) -> list[str]:
    """The runs whose last row is an error, with the error."""
    last = {}
    for r in rows:
        if r.get("kind") in ("model", "baseline") and r.get("dataset") in args.datasets:
            last[(r["dataset"], r["config"], r["seed"])] = r
    bad = [r for r in last.values() if "error" in r and r["seed"] in args.seeds]
    if not bad:
        return []
    lines = ["## Failed runs\n", "| dataset | seed | method | error |", "|---|---|---|---|"]
    for r in bad:
        lines.append(
            f"| {r['dataset']} | {r['seed']} | `{r['config']}` | {r['error'][:300].replace('|', '/')} |"
        )
    return lines + [""]


def header(args, configs: list[str]) -> list[str]:
    """Title, protocol and the options of ``configs``."""
    from scipy import stats

    n = len(args.seeds)
    if n > 1:
        width = (
            f"With {n} seeds the t quantile is {stats.t.ppf(0.975, n - 1):.2f}: intervals are wide."
        )
    else:
        width = "With 1 seed there is no interval, and every call is a tie."
    train = ", ".join(f"{k}={v}" for k, v in {**TRAIN, "epochs": args.epochs}.items())
    lines = [
        "<!-- written by benchmarks/ablation.py; do not edit by hand -->\n",
        "# Ablation on development draws: which configuration becomes the default\n",
        f"Datasets: {', '.join(args.datasets)}. The rule: {RULE}. Seeds: "
        f"{', '.join(map(str, args.seeds))}. Training: {train} (early stopping on the "
        f"validation loss, best weights restored); latent {LATENT_DIM}. Competitors "
        f"({LATENT_DIM} dimensions, scored in the same `evaluate` call as the models, seed "
        f"by seed): {', '.join(COMPETITORS)}; all but {', '.join(sorted(SEEDED))} are exact "
        "SVDs, computed once per dataset. Δ: configuration minus competitor, paired by "
        "seed, mean and 95% t-interval (`evaluation.seed_difference`); the call is better / "
        f"worse when the interval excludes 0, else tie. {width}\n",
    ]
    if args.quick:
        lines.append(
            "**Smoke test (`--quick`): a small draw and 3 epochs; these numbers choose nothing.**\n"
        )
    lines += ["| config | build_model options | what |", "|---|---|---|"]
    lines += [f"| `{c}` | `{CONFIGS[c][0]}` | {CONFIGS[c][1]} |" for c in configs]
    return lines + [""]


def timings_section(rows: list[dict]) -> list[str]:
    """Wall time of every recorded session."""
    sessions = [r for r in rows if r.get("kind") == "session"]
    if not sessions:
        return []
    lines = ["## Sessions\n", "| finished | runs | failed | wall |", "|---|---|---|---|"]
    for s in sessions:
        lines.append(
            f"| {s['finished']} | {s['runs']} | {len(s['failed'])} | {s['wall_seconds'] / 60:.1f} min |"
        )
    return lines + [""]


def write_table(args) -> str:
    """Write the whole table to ``args.out`` and return it."""
    rows = load_rows(args.results)
    df = scored(rows)
    # every configuration with results, not only those run now (--configs runs a subset)
    configs = [c for c in CONFIGS if c in set(df["config"])]
    lines, best, to_best = header(args, configs), {}, {}
    for dataset in args.datasets:
        part, b, d = dataset_section(df, dataset, configs, args.seeds, args.quick)
        lines += part
        if b is not None:
            best[dataset], to_best[dataset] = b, d
    lines.append("## Ranking and the default\n")
    if len(best) == len(args.datasets) and best:
        lines.append(
            "Configurations ranked by their mean paired Δ overall to the best other method "
            "of each dataset, averaged over the datasets; eligible: scored with every seed "
            "on every dataset.\n"
        )
        lines += ranking_section(ranking(to_best, configs, len(args.seeds)), best, len(args.seeds))
    else:
        lines.append("Not every dataset has results yet: no ranking.")
    lines += [""] + failures_section(rows, args) + timings_section(rows)
    text = "\n".join(lines).rstrip() + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return text


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------


def parse_args(argv=None) -> argparse.Namespace:
    """The command line, with ``--quick``'s defaults filled in where not given."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--datasets", nargs="+", default=None, help="development draws (default dev-a dev-c)"
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default 0 1 2")
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--epochs", type=int, default=None, help="maximum epochs (default 100)")
    parser.add_argument("--results", type=Path, default=None, help="results file (.jsonl)")
    parser.add_argument(
        "--out", type=Path, default=None, help="table (default benchmarks/ablation.md)"
    )
    parser.add_argument("--table-only", action="store_true", help="only rewrite the table")
    parser.add_argument("--quick", action="store_true", help="smoke test, under /tmp")
    args = parser.parse_args(argv)
    quick = args.quick
    args.datasets = check_datasets(
        args.datasets or (QUICK["datasets"] if quick else list(DEFAULT_DATASETS))
    )
    args.seeds = list(dict.fromkeys(args.seeds or (QUICK["seeds"] if quick else [0, 1, 2])))
    args.epochs = args.epochs or (QUICK["epochs"] if quick else TRAIN["epochs"])
    args.cache = QUICK_DIR if quick else CACHE
    args.results = args.results or args.cache / "results.jsonl"
    args.out = args.out or (QUICK_DIR / "ablation.md" if quick else HERE / "ablation.md")
    if args.table_only and not args.results.exists():
        parser.error(f"--table-only: no results at {args.results}; run without it first.")
    return args


def main(argv=None) -> None:
    """Run what is not done yet (unless ``--table-only``), then write the table."""
    args = parse_args(argv)
    warnings.filterwarnings("ignore", category=UserWarning)
    logging.getLogger("mmae_utils").setLevel(logging.WARNING)
    if not args.table_only:
        run_all(args)
    text = write_table(args)
    print(text[text.index("## Ranking") :])
    print(f"Table: {args.out}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
