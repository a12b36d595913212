"""Score a peer's embeddings (one file per seed) beside the project's baselines.

Runs in the mmae environment; the peer ran in its own (``multivi/run_multivi.py``)::

    python benchmarks/peers/score_peer.py RUN_DIR RUN_DIR/peers/multivi/multivi_seed*.npz \\
        --name multivi

For each seed ``s`` (read from each file: its ``seed`` entry, else ``seed<N>`` in its
name) the peer's embedding is scored in one ``evaluation.evaluate`` call together with
``pca_concat``, ``pca_competition``, ``harmony`` and ``guanlab``
(``evaluation.baselines(selected, n_comps=<the peer's dimensions>, ..., seed=s)``) and,
when ``RUN_DIR/embeddings.h5ad`` has ``obsm["X_mmae"]``, the run's autoencoder, exactly
as notebook 05 does: ``selected.h5ad`` as the data, the GEX of all genes
(``datasets.load_input(RUN_DIR)``, ``data.split_modalities``) for the cell-cycle scores,
``seed=s`` for the kNN graphs and Leiden. Cells are matched by ``obs_names``; a file whose
cells are not exactly ``selected.h5ad``'s is an error.

Writes the scores of every seed (``--scores``, default ``<out>_scores.csv``) and a
Markdown page (``--out``, default ``benchmarks/peers/<name>.md``): mean +- sd over seeds
of each score and method, the seed-paired differences of the peer to every other method
(95 % t-intervals, ``evaluation.seed_difference``; better / worse only when the interval
excludes 0, ``report.interval_call``), headed by those to ``pca_concat`` and to the best
other method, and the peer's run times from its ``--run-json``. ``--table-only`` rewrites
the page from the scores file without scoring again (the peer's run record is copied
beside the page as ``<out>_run.json`` for that); ``--readme FILE`` also replaces the block
between ``<!-- peer:STEM -->`` and ``<!-- /peer:STEM -->`` in FILE with the headline
(``STEM``: the page's file name without ``.md``, e.g. ``multivi``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/: the ablation's table helpers

from ablation import SCORES, SHORT, fmt_mean_sd  # noqa: E402
from ablation import fmt_diff as _fmt_diff  # noqa: E402

#: The project's methods scored beside the peer (notebook 05 / the ablation's competitors).
BASELINES = ("pca_concat", "pca_competition", "harmony", "guanlab")
REFERENCE = "pca_concat"
MMAE_KEY = "X_mmae"


def fmt_diff(row) -> str:
    """The ablation's ``+0.012 [-0.003, +0.027] tie``; with one seed only the difference
    (no interval, so no call)."""
    if int(row["n_seeds"]) < 2 and np.isfinite(row["mean"]):
        return f"{row['mean']:+.3f} (1 seed)"
    return _fmt_diff(row)


class AlignmentError(ValueError):
    """An embedding's cells are not the run's cells."""


def read_embedding(path: Path) -> tuple[np.ndarray, np.ndarray, int | None]:
    """``(obs_names, embedding, seed or None)`` of a peer's file: a ``.npz`` with
    ``obs_names`` and ``latent`` (and optionally ``seed``), or a ``.h5ad`` whose obsm
    holds one embedding (or ``latent``) and optionally ``uns["seed"]``."""
    path = Path(path)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as f:
            missing = {"obs_names", "latent"} - set(f.files)
            if missing:
                raise ValueError(f"{path}: no {sorted(missing)} (has {sorted(f.files)}).")
            seed = int(f["seed"]) if "seed" in f.files else None
            return f["obs_names"].astype(str), np.asarray(f["latent"]), seed
    if path.suffix == ".h5ad":
        import anndata as ad

        a = ad.read_h5ad(path)
        keys = list(a.obsm.keys())
        key = "latent" if "latent" in keys else keys[0] if len(keys) == 1 else None
        if key is None:
            raise ValueError(f"{path}: expected one obsm entry or obsm['latent'], has {keys}.")
        seed = int(a.uns["seed"]) if "seed" in a.uns else None
        return np.asarray(a.obs_names, dtype=str), np.asarray(a.obsm[key]), seed
    raise ValueError(f"{path}: expected a .npz or .h5ad file.")


def seed_of(path: Path, stored: int | None) -> int:
    if stored is not None:
        return stored
    m = re.search(r"seed[_-]?(\d+)", Path(path).stem)
    if m is None:
        raise ValueError(f"{path}: no seed stored and none in the file name (e.g. *_seed0.npz).")
    return int(m.group(1))


def align(obs_names, x: np.ndarray, cells: pd.Index, *, what: str) -> np.ndarray:
    """Rows of ``x`` (one per name of ``obs_names``) in the order of ``cells``; raises
    :class:`AlignmentError` unless both name exactly the same cells, once each."""
    names = pd.Index(np.asarray(obs_names, dtype=str))
    if x.ndim != 2 or x.shape[0] != len(names):
        raise AlignmentError(f"{what}: {x.shape} array for {len(names)} cell names.")
    if not names.is_unique:
        raise AlignmentError(f"{what}: repeated cell names ({names.duplicated().sum()}).")
    missing, extra = cells.difference(names), names.difference(cells)
    if len(missing) or len(extra):
        raise AlignmentError(
            f"{what}: its cells differ from the run's selected.h5ad ({len(cells)} cells): "
            f"{len(missing)} missing (e.g. {list(missing[:3])}), {len(extra)} not in the run "
            f"(e.g. {list(extra[:3])})."
        )
    return np.asarray(x[names.get_indexer(cells)], dtype=np.float32)


def load_peer(files: list[Path], cells: pd.Index) -> dict[int, np.ndarray]:
    """``{seed: embedding aligned to cells}``; one file per seed."""
    out: dict[int, np.ndarray] = {}
    for path in files:
        names, x, stored = read_embedding(path)
        seed = seed_of(path, stored)
        if seed in out:
            raise ValueError(f"Two files for seed {seed} (the second: {path}).")
        out[seed] = align(names, x, cells, what=str(path))
        if not np.isfinite(out[seed]).all():
            raise ValueError(f"{path}: non-finite values in the embedding.")
    dims = {x.shape[1] for x in out.values()}
    if len(dims) != 1:
        raise ValueError(f"The files' embeddings have different dimensions: {sorted(dims)}.")
    return dict(sorted(out.items()))


def score(run_dir: Path, peer: dict[int, np.ndarray], name: str) -> tuple[pd.DataFrame, dict]:
    """Scores indexed by ``(seed, method)`` and evaluation seconds per seed and method."""
    import anndata as ad

    from mmae_utils import data, datasets, evaluation

    selected = ad.read_h5ad(run_dir / "selected.h5ad")
    n_dims = next(iter(peer.values())).shape[1]
    mmae = None
    if (run_dir / "embeddings.h5ad").is_file():
        emb = ad.read_h5ad(run_dir / "embeddings.h5ad")
        if MMAE_KEY in emb.obsm:
            mmae = align(emb.obs_names, np.asarray(emb.obsm[MMAE_KEY]), selected.obs_names,
                         what=f"{run_dir / 'embeddings.h5ad'} obsm[{MMAE_KEY!r}]")  # fmt: skip
    label_key, batch_key = data.annotation_keys(selected)
    full = datasets.load_input(run_dir)
    gex_all, _ = data.split_modalities(full, copy=False)
    tables, seconds = {}, {}
    for seed, x in peer.items():
        selected.obsm[f"X_{name}"] = x
        embeddings = {name: f"X_{name}"}
        if mmae is not None:
            selected.obsm[MMAE_KEY] = mmae
            embeddings["mmae"] = MMAE_KEY
        t0 = time.perf_counter()
        embeddings |= evaluation.baselines(
            selected, n_comps=n_dims, methods=list(BASELINES), seed=seed
        )
        t_base = time.perf_counter() - t0
        t0 = time.perf_counter()
        table = evaluation.evaluate(
            selected,
            embeddings,
            gex=gex_all,
            label_key=label_key,
            batch_key=batch_key,
            seed=seed,
            progress=False,
        )
        details = table.attrs.get("details", {})
        seconds[seed] = {
            m: round(sum(details[m]["seconds"].values()), 2) for m in embeddings if m in details
        }
        print(
            f"seed {seed}: baselines in {t_base:.0f} s, scored {list(embeddings)} in "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        tables[seed] = table[list(SCORES)].astype(float)
    return pd.concat(tables, names=["seed", "method"]), seconds


def read_scores(path: Path) -> pd.DataFrame:
    return pd.read_csv(path).set_index(["seed", "method"])[list(SCORES)].astype(float)


def best_other(table: pd.DataFrame, name: str) -> str:
    """The method other than the peer with the highest mean overall."""
    means = table["overall"].groupby(level="method").mean().drop(name, errors="ignore")
    return str(means.idxmax())


def headline(table: pd.DataFrame, name: str, label: str) -> str:
    """One paragraph: the peer's overall against ``pca_concat`` and the best other."""
    from mmae_utils.evaluation import aggregate_seeds, seed_difference
    from mmae_utils.report import interval_call

    agg = aggregate_seeds(table)
    n = int(agg.loc[name, ("n_seeds", "")])
    best = best_other(table, name)
    parts = []
    for ref in dict.fromkeys([REFERENCE, best]):
        d = seed_difference(table, method=name, reference=ref).loc["overall"]
        tag = " (the best other method)" if ref == best else ""
        if n > 1:
            call = interval_call(d["ci_low"], d["ci_high"])
            diff = f"Δ {d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}], **{call}**"
        else:
            diff = f"Δ {d['mean']:+.3f} (one seed: no interval, no call)"
        parts.append(f"vs `{ref}`{tag} {agg.loc[ref, ('overall', 'mean')]:.3f}: {diff}")
    spread = f" ± {agg.loc[name, ('overall', 'sd')]:.3f} over {n} seeds" if n > 1 else " (1 seed)"
    return (
        f"{label} overall {agg.loc[name, ('overall', 'mean')]:.3f}{spread}; "
        + "; ".join(parts)
        + "."
    )


def run_times(run: dict | None, eval_seconds: dict | None, name: str) -> list[str]:
    lines = []
    if run:
        lines += [
            "| seed | epochs | stopped early | train s | latent s |",
            "|---|---|---|---|---|",
        ]
        for seed, r in sorted(run.get("seeds", {}).items(), key=lambda kv: int(kv[0])):
            lines.append(
                f"| {seed} | {r.get('epochs')} | {'yes' if r.get('stopped_early') else 'no'} | "
                f"{r.get('train_seconds', float('nan')):.1f} | "
                f"{r.get('embed_seconds', float('nan')):.1f} |"
            )
        secs = [r["train_seconds"] for r in run.get("seeds", {}).values()]
        if secs:
            lines += ["", f"Training: {np.mean(secs):.0f} s per seed on average "
                      f"({min(secs):.0f}-{max(secs):.0f} s)."]  # fmt: skip
    if eval_seconds:
        mean = pd.DataFrame(eval_seconds).T.mean()
        lines += [
            "",
            "Evaluation seconds per embedding (mean over seeds; the first one scored in the "
            "process includes the kNN search's one-off numba compilation): "
            + ", ".join(f"{m} {s:.1f}" for m, s in mean.items())
            + ".",
        ]
    return lines


def markdown(
    table: pd.DataFrame,
    name: str,
    label: str,
    run: dict | None,
    eval_seconds,
    run_dir,
    note: str | None = None,
) -> str:
    from mmae_utils.evaluation import aggregate_seeds, seed_difference

    agg = aggregate_seeds(table)
    seeds = sorted(set(table.index.get_level_values("seed")))
    best = best_other(table, name)
    methods = [name] + [m for m in agg.index if m != name]
    out = [f"# Peer: {label}", ""]
    out += [
        "Generated by `benchmarks/peers/score_peer.py` (do not edit by hand). "
        f"Run folder `{run_dir}`; seeds {', '.join(map(str, seeds))}. Each seed's {label} "
        "embedding is scored in one `evaluation.evaluate` call with the baselines of that "
        "seed (and the run's autoencoder, `mmae`, one embedding scored under every seed), "
        "as notebook 05 does.",
        "",
    ]
    if run:
        v = run.get("versions", {})
        first = next(iter(run.get("seeds", {}).values()), {})
        out += [
            f"{label}: scvi-tools {v.get('scvi-tools')}, torch {v.get('torch')}, lightning "
            f"{v.get('lightning')}, Python {v.get('python')}; {run.get('n_cells'):,} cells, "
            f"{run.get('n_genes'):,} genes + {run.get('n_regions'):,} peaks (counts, "
            f"`layers[{run.get('layer')!r}]`), batch key `{run.get('batch_key')}`, "
            f"CPU threads: {run.get('threads')}.",
            "",
            f"Model: `{first.get('model', '')}`. `MULTIVI(mdata, "
            + ", ".join(f"{k}={val}" for k, val in first.get("model_kwargs", {}).items())
            + ")`, `train("
            + ", ".join(f"{k}={val!r}" for k, val in first.get("train_kwargs", {}).items())
            + ")`, everything else at scvi-tools' defaults.",
            "",
        ]
    out += ["## Headline", "", headline(table, name, label), ""]
    if note:
        out += [note, ""]
    out += ["## Scores (mean ± sd over seeds)", ""]
    out += ["| method | " + " | ".join(SHORT[c] for c in SCORES) + " | seeds |"]
    out += ["|---|" + "---|" * (len(SCORES) + 1)]
    for m in methods:
        cells = [fmt_mean_sd(agg.loc[m, (c, "mean")], agg.loc[m, (c, "sd")]) for c in SCORES]
        label_m = f"**{m}**" if m == name else m
        out.append(f"| {label_m} | " + " | ".join(cells) + f" | {agg.loc[m, ('n_seeds', '')]} |")
    out += [
        "",
        f"## {label} minus each other method, paired by seed",
        "",
        "Mean difference [95 % t-interval], then the call: better / worse when the interval "
        + (
            f"excludes 0, else tie. With {len(seeds)} seeds the t quantile is "
            f"{_t(len(seeds)):.2f}. "
            if len(seeds) > 1
            else "excludes 0, else tie (one seed: no interval). "
        )
        + f"First `{REFERENCE}`, then the best other method "
        f"(`{best}`, the highest mean overall), then the rest.",
        "",
    ]
    refs = list(dict.fromkeys([REFERENCE, best] + [m for m in methods if m != name]))
    out += ["| vs | " + " | ".join(SHORT[c] for c in SCORES) + " |"]
    out += ["|---|" + "---|" * len(SCORES)]
    for ref in refs:
        d = seed_difference(table, method=name, reference=ref)
        out.append(f"| {ref} | " + " | ".join(fmt_diff(d.loc[c]) for c in SCORES) + " |")
    out += ["", f"## {label} run times", ""] + run_times(run, eval_seconds, name)
    return "\n".join(out) + "\n"


def _t(n: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.975, n - 1)) if n > 1 else float("nan")


def update_readme(path: Path, name: str, text: str) -> bool:
    """Replace the block between ``<!-- peer:NAME -->`` and ``<!-- /peer:NAME -->``."""
    start, end = f"<!-- peer:{name} -->", f"<!-- /peer:{name} -->"
    body = path.read_text()
    pattern = re.compile(re.escape(start) + ".*?" + re.escape(end), re.S)
    if not pattern.search(body):
        return False
    path.write_text(pattern.sub(lambda _: f"{start}\n{text}\n{end}", body))
    return True


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("files", type=Path, nargs="*", help="the peer's embeddings, one per seed")
    p.add_argument("--name", required=True, help="the peer's method name (e.g. multivi)")
    p.add_argument("--label", help="display name (default: --name)")
    p.add_argument("--run-json", type=Path, help="the peer's run record (default: beside files)")
    p.add_argument("--out", type=Path, help="Markdown page (default benchmarks/peers/NAME.md)")
    p.add_argument("--scores", type=Path, help="scores CSV (default: OUT with _scores.csv)")
    p.add_argument("--table-only", action="store_true", help="rewrite OUT from --scores")
    p.add_argument("--readme", type=Path, help="file whose peer:STEM block gets the headline")
    p.add_argument("--note", help="a paragraph of context put under the headline")
    args = p.parse_args(argv)
    if not args.table_only and not args.files:
        p.error("give the peer's embedding files (or --table-only).")
    args.label = args.label or args.name
    args.out = args.out or HERE / f"{args.name}.md"
    args.scores = args.scores or args.out.with_name(f"{args.out.stem}_scores.csv")
    if args.run_json is None and args.files:
        candidate = args.files[0].parent / f"{args.name}_run.json"
        args.run_json = candidate if candidate.is_file() else None
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    run = json.loads(args.run_json.read_text()) if args.run_json else None
    eval_path = args.scores.with_name(f"{args.scores.stem}_eval_seconds.json")
    run_copy = args.out.with_name(f"{args.out.stem}_run.json")
    if args.table_only:
        table = read_scores(args.scores)
        eval_seconds = json.loads(eval_path.read_text()) if eval_path.is_file() else None
        if run is None and run_copy.is_file():
            run = json.loads(run_copy.read_text())
    else:
        import anndata as ad

        cells = ad.read_h5ad(args.run_dir / "selected.h5ad", backed="r").obs_names.copy()
        try:
            peer = load_peer(args.files, pd.Index(cells))
        except (AlignmentError, ValueError) as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.scores.parent.mkdir(parents=True, exist_ok=True)
        table, eval_seconds = score(args.run_dir, peer, args.name)
        table.reset_index().to_csv(args.scores, index=False)
        eval_path.write_text(json.dumps({str(k): v for k, v in eval_seconds.items()}, indent=1))
        if run is not None:  # kept beside the scores so that --table-only has it
            run_copy.write_text(json.dumps(run, indent=2))
    text = markdown(table, args.name, args.label, run, eval_seconds, args.run_dir, args.note)
    args.out.write_text(text)
    head = headline(table, args.name, args.label)
    print(text)
    if args.readme is not None:
        done = update_readme(args.readme, args.out.stem, head)
        print(f"{args.readme}: {'headline updated' if done else 'no peer block, left alone'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
