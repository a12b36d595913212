"""The report runner: notebooks 01-05 executed with papermill into one folder.

``mmae-report --data {demo,bmmc,PATH} --out DIR [-p NAME VALUE]... [-f params.yaml]``

The folder receives the executed notebooks (``*.ipynb`` and ``*.html``), what each notebook
writes (``selected.h5ad``, ``model.keras``, ``history.csv``, ``embeddings.h5ad``,
``metrics.csv``, ``figures/``) and a short ``summary.md``. A failing notebook stops the run
with the notebook and cell named; everything already written stays.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from ._utils import TEXT_PROGRESS_ENV, atomic_path, available_cpus, logger, progress_bar
from .comparison import difference_table, goal, references, verdict

#: The tutorial, in order.
__all__ = [
    "NOTEBOOKS",
    "REPORT_DEFAULTS",
    "ReportError",
    "load_params_file",
    "main",
    "notebook_parameters",
    "notebooks_dir",
    "replicate",
    "run_report",
    "train_like",
    "train_model_like",
    "training_summary",
    "write_json",
    "write_summary",
    "write_table",
]

NOTEBOOKS: tuple[str, ...] = (
    "01_load_data",
    "02_feature_selection",
    "03_autoencoder",
    "04_training",
    "05_evaluation",
)


#: Parameters whose report default differs from the notebook's (the notebooks keep the
#: quick value for interactive use and for the tests). 5 seeds: the verdict's 95 % t
#: interval is mean +- 2.78 sd / sqrt(5) (with 3 seeds +- 4.30 sd / sqrt(3), 2.0x as wide).
#: The report also trains the seed notebook's model as the "before" for every seed.
REPORT_DEFAULTS: dict = {"N_SEEDS": 5, "BEFORE_PRESET": "original"}


class ReportError(RuntimeError):
    """A notebook of the report failed; the message names the notebook and the cell."""


def notebooks_dir() -> Path:
    """Folder of the source notebooks: ``$MMAE_NOTEBOOKS`` or the repository's ``notebooks/``."""
    env = os.environ.get("MMAE_NOTEBOOKS")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parent.parent / "notebooks")
    for cand in candidates:
        if (cand / f"{NOTEBOOKS[0]}.ipynb").exists():
            return cand
    raise FileNotFoundError(
        "Cannot find the tutorial notebooks (looked in "
        + ", ".join(str(c) for c in candidates)
        + "). Run from a clone of the repository or set MMAE_NOTEBOOKS to its notebooks/ folder."
    )


def notebook_parameters(path: Path) -> dict[str, dict]:
    """Parameters declared in a notebook's ``parameters`` cell (name -> papermill info)."""
    import papermill as pm

    return dict(pm.inspect_notebook(str(path)))


def tutorial_parameters() -> dict[str, dict]:
    """Every parameter of the tutorial's notebooks, once: papermill's info (``default``,
    ``help``, ...) from the first notebook that declares it, and ``notebooks``, the names
    of all that do."""
    params: dict[str, dict] = {}
    for name in NOTEBOOKS:
        for key, spec in notebook_parameters(notebooks_dir() / f"{name}.ipynb").items():
            params.setdefault(key, {**spec, "notebooks": []})["notebooks"].append(name)
    return params


def load_params_file(path: str | os.PathLike) -> dict:
    """Read a YAML parameter file (a mapping of UPPER_CASE names to values)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Parameter file {path} does not exist.")
    with open(path) as fh:
        params = yaml.safe_load(fh) or {}
    if not isinstance(params, Mapping):
        raise ValueError(f"{path} must hold a mapping of parameter names to values.")
    # YAML 1.1 reads 1e-3 as a string; numbers are what the notebooks expect
    return {
        k: _parse_value(v) if isinstance(v, str) and _FLOAT.fullmatch(v) else v
        for k, v in params.items()
    }


_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_params(params: Mapping, declared: Mapping[str, Mapping]) -> None:
    known = set().union(*[set(d) for d in declared.values()])
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"Unknown parameter(s) {unknown}. The notebooks declare: {sorted(known)}.")


def _to_html(ipynb: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(ipynb, as_version=4)
    body, _ = HTMLExporter().from_notebook_node(nb)
    html = ipynb.with_suffix(".html")
    with atomic_path(html) as tmp:
        tmp.write_text(body, encoding="utf-8")
    return html


def _kernel_options() -> dict:
    """Engine options that start each kernel over IPC sockets where the OS has them.

    ipykernel 7 warns on every start that a TCP kernel's traffic is unencrypted; kernels
    that talk to this process over local sockets need no port and give no such warning.
    """
    if os.name != "posix":
        return {}
    return {"kernel_manager_class": _ipc_kernel_manager()}


@functools.cache
def _ipc_kernel_manager():
    """jupyter_client's kernel manager with IPC as its default transport (one class)."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import CaselessStrEnum

    class IPCKernelManager(AsyncKernelManager):
        transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    return IPCKernelManager


def _failed_cell(ipynb: Path) -> str:
    """Describe the first cell with an error output in an executed notebook."""
    import nbformat

    try:
        nb = nbformat.read(ipynb, as_version=4)
    except Exception:  # pragma: no cover - the notebook may not have been written
        return "an unknown cell"
    code_index = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        code_index += 1
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first_line = cell.source.strip().splitlines()[0] if cell.source.strip() else ""
                return f"code cell {code_index} ({first_line[:60]!r})"
    return "an unknown cell"


def training_summary(history, *, model=None) -> str:
    """A Markdown sentence on a :func:`~mmae_utils.training.train` history: epochs run, the
    best epoch, and how each modality's loss fell from the first epoch to it.

    Uses the validation losses when there are any (``validation_fraction > 0``), else the
    training losses; names the losses as the model computes them when ``model`` is given
    (:meth:`~mmae_utils.config.ModelConfig.loss_label`: MSE, NB NLL, or BCE), else as the
    ``"seed"`` preset's (GEX MSE, ATAC BCE).
    """
    prefix = "val_" if "val_loss" in history and history["val_loss"].notna().any() else ""
    which = "validation" if prefix else "training"
    best = int(history[f"{prefix}loss"].idxmin())  # the index is the epoch number, from 1
    first, last = history.iloc[0], history.loc[best]
    config = model.config if model is not None else None
    gex = "MSE" if config is None else config.loss_label("gex")
    atac = "BCE" if config is None else config.loss_label("atac")
    return (
        f"Training ran {len(history)} epochs; the best {which} loss was at epoch {best}. From "
        f"the first epoch to then, {which} GEX {gex} went from {first[f'{prefix}gex_loss']:.4f} "
        f"to {last[f'{prefix}gex_loss']:.4f} and ATAC {atac} from "
        f"{first[f'{prefix}atac_loss']:.4f} to {last[f'{prefix}atac_loss']:.4f}."
        + ("" if prefix else " No cells were held out (VALIDATION_FRACTION is 0).")
    )


def write_summary(out: Path) -> Path | None:
    """Write ``summary.md`` from ``metrics.csv``: which method won on which metric.

    With ``metrics_seeds.csv`` (several seeds) the verdict ``mmae`` vs ``pca_concat`` is
    drawn from the seed-paired differences and their 95 % intervals
    (:func:`mmae_utils.comparison.verdict`), and
    a table lists every score's difference, interval and call.

    Returns
    -------
    The path of ``summary.md``, or ``None`` when there is no ``metrics.csv`` yet.
    """
    import pandas as pd

    metrics_path = out / "metrics.csv"
    if not metrics_path.exists():
        return None
    df = pd.read_csv(metrics_path, index_col=0)
    numeric = df.select_dtypes("number").drop(columns=["n_metrics"], errors="ignore")
    lines = ["# mmae report summary", ""]
    params_path = out / "params.json"
    if params_path.exists():
        params = json.loads(params_path.read_text())
        lines += [
            f"Data: `{params.get('DATA')}`; parameters: `{json.dumps(params, sort_keys=True)}`",
            "",
        ]
    seeds_path = out / "metrics_seeds.csv"
    per_seed = pd.read_csv(seeds_path, index_col=[0, 1]) if seeds_path.exists() else None
    if "overall" in numeric:
        order = numeric["overall"].sort_values(ascending=False)
        lines += [f"**Best overall (seed run): `{order.index[0]}`** ({order.iloc[0]:.3f}).", ""]
        lines += _verdicts(df if per_seed is None else per_seed)
    lines += _best_table(numeric)
    lines += ["", "Full table: `metrics.csv`; notebooks: `*.html`; figures: `figures/`."]
    path = out / "summary.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


def _verdicts(scores) -> list[str]:
    """Markdown lines: ``mmae`` against ``pca_concat`` and against the best other method
    (verdicts, and over seeds the difference tables and the goal)."""
    if "mmae" not in scores.index.get_level_values("method" if scores.index.nlevels > 1 else 0):
        return []
    lines = []
    for reference in references(scores):
        lines += [verdict(scores, reference=reference), ""]
        if scores.index.nlevels > 1:
            lines += difference_table(scores, "mmae", reference)
    if scores.index.nlevels > 1:
        lines += [goal(scores), ""]
    return lines


def _best_table(numeric) -> list[str]:
    """Markdown lines: the best method and its score per metric (seed run)."""
    lines = ["| metric | best method | score |", "|---|---|---|"]
    for col in numeric.columns:
        series = numeric[col].dropna()
        if series.empty:
            lines.append(f"| {col} | (not computed) | |")
            continue
        lines.append(f"| {col} | `{series.idxmax()}` | {series.max():.3f} |")
    return lines


def write_json(obj, path: str | os.PathLike) -> Path:
    """Write a JSON-serialisable object atomically (temporary file + rename).

    Returns
    -------
    The path written.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return path


#: Options that describe the network's size: kept from the run's model when another preset
#: is trained beside it (:func:`train_like`).
_SIZE_OPTIONS = ("latent_dim", "hidden", "gex_latent_dim", "n_components")


def train_model_like(
    selected, run_dir: str | os.PathLike, *, seed: int, preset: str | None = None, **options
):
    """Train a model like the run's (``run_dir/model.keras`` + ``train_options.json``) and
    return it, with ``options`` of its :class:`~mmae_utils.config.ModelConfig` changed.

    Parameters
    ----------
    selected, run_dir, seed, preset
        As for :func:`train_like`.
    **options
        Options of the model's configuration to change, e.g. ``modality_dropout=0.3`` for a
        model that also works from one modality alone (validated as by
        :meth:`~mmae_utils.config.ModelConfig.replace`).

    Returns
    -------
    ``(model, history)``: the trained model and :func:`~mmae_utils.training.train`'s
    history (its ``attrs["validation_rows"]`` are the cells held out: the run's, with the
    run's seed).
    """
    from . import data, model, training

    run_dir = Path(run_dir)
    options_path = run_dir / "train_options.json"
    if not options_path.exists():
        raise FileNotFoundError(
            f"{options_path} is missing: run notebook 04_training first (it records the "
            "training options there)."
        )
    train_options = json.loads(options_path.read_text())
    run_model = training.load_model(run_dir / "model.keras", compile=False)
    config = run_model.config
    if preset is not None:
        sizes = {k: getattr(config, k) for k in _SIZE_OPTIONS}
        config = model.ModelConfig.from_preset(preset)
        if config.fusion == "shared":  # one code: no split to keep
            sizes.pop("gex_latent_dim")
        config = config.replace(**sizes)
    config = config.replace(**options, seed=int(seed))
    gex, atac = data.split_modalities(selected, copy=False)
    mmae = training.build_for(
        gex, atac, config=config, batch_key=train_options.get("batch_key", "batch")
    )
    history = training.train(mmae, gex, atac, **{**train_options, "seed": int(seed), "verbose": 0})
    return mmae, history


def train_like(selected, run_dir: str | os.PathLike, *, seed: int, preset: str | None = None):
    """Train a model like the run's (``run_dir/model.keras`` + ``train_options.json``).

    Parameters
    ----------
    selected
        The selected features' counts (``selected.h5ad``).
    run_dir
        The run folder (written by notebooks 03-04).
    seed
        Seed of the model and of the training.
    preset
        ``None``: the run's configuration. A name of :data:`mmae_utils.model.PRESETS`
        (e.g. ``"original"``, the seed notebook's model): that preset, its wiring
        (decoders, fusion) kept, with the run's sizes (latent dimension, hidden layers,
        components, and the split of the code unless the preset has
        ``fusion="shared"``, which has none). A preset that
        reads batches knows the run model's batches, or else those of
        ``obs[batch_key]``.

    Returns
    -------
    The embedding, ``np.ndarray`` of float32, cells x latent dimension (of the model
    :func:`train_model_like` trains; corrected for the batch of the run's ``batch_key``
    when its configuration has ``integration="harmony"``).
    """
    from . import data, training

    mmae, history = train_model_like(selected, run_dir, seed=seed, preset=preset)
    gex, atac = data.split_modalities(selected, copy=False)
    batch_key = history.attrs["options"].get("batch_key")
    return training.embed(mmae, gex, atac, batch_key=batch_key, seed=seed)


def replicate(
    selected,
    run_dir: str | os.PathLike,
    *,
    seeds: Sequence[int],
    first=None,
    presets: Mapping[str, str] | None = None,
    baselines: Sequence[str] | None = None,
    gex=None,
    method: str = "mmae",
    label_key: str | None = "cell_type",
    batch_key: str | None = "batch",
    n_neighbors: int = 15,
    resolution_search: str = "coarse_to_fine",
    progress: bool = True,
):
    """Score the autoencoder and the baselines over several seeds.

    For every seed the autoencoder is built anew with the configuration of
    ``run_dir/model.keras`` (the seed replaced), trained with the options of
    ``run_dir/train_options.json`` (both written by notebook 04), and embedded; the
    seeded baselines (:data:`~mmae_utils.baselines.SEEDED_BASELINES`: Harmony, random)
    are recomputed with that seed; all are scored by
    :func:`mmae_utils.evaluation.evaluate` with that seed. The other baselines are exact
    SVDs that no seed changes: they are computed and scored once, with the first seed,
    and their rows repeat for the others (scoring them again would only redraw the kNN
    graph's and Leiden's randomness). ``selected`` is not modified.

    Parameters
    ----------
    selected
        The selected features' counts (``selected.h5ad``), as for notebook 05.
    run_dir
        The run folder.
    seeds
        Seeds to score (e.g. ``range(SEED, SEED + N_SEEDS)``).
    first
        The scores already computed for ``seeds[0]`` (notebook 05's ``metrics``): that
        seed is then not run again. It must contain every method asked for.
    presets
        Further autoencoders to train per seed, ``{name in the table: preset}`` (e.g.
        ``{"mmae_original": "original"}`` for the before-and-after, see :func:`train_like`).
    baselines
        Baselines to score (default :data:`mmae_utils.evaluation.BASELINES`).
    gex
        All genes (for the cell-cycle genes), as for :func:`~mmae_utils.evaluation.evaluate`.
    method
        Name of the autoencoder in the table.
    label_key, batch_key, n_neighbors, resolution_search
        Passed to :func:`~mmae_utils.evaluation.evaluate` (``None``: no labels / batches).
    progress
        A progress bar over the seeds.

    Returns
    -------
    ``pandas.DataFrame`` indexed by ``(seed, method)`` with :func:`evaluate`'s columns;
    summarise it with :func:`mmae_utils.evaluation.aggregate_seeds` and
    :func:`mmae_utils.evaluation.seed_difference`.
    """
    import pandas as pd

    from . import evaluation
    from .baselines import SEEDED_BASELINES

    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers, at least one; got {seeds}.")
    presets = dict(presets or {})
    baselines = evaluation.BASELINES if baselines is None else tuple(baselines)
    tables = {}
    if first is not None:
        missing = [m for m in (method, *presets, *baselines) if m not in first.index]
        if missing:
            raise ValueError(f"first has no scores for {missing}; pass them or drop first.")
        tables[seeds[0]] = first
    todo = [s for s in seeds if s not in tables]
    bar = progress_bar(total=len(todo), desc="seeds", disable=not progress or not todo)
    for seed in todo:
        embeddings = {method: train_like(selected, run_dir, seed=seed)}
        for name, preset in presets.items():
            embeddings[name] = train_like(selected, run_dir, seed=seed, preset=preset)
        once = next(iter(tables.values()), None)  # the first scored seed's table
        again = [b for b in baselines if once is None or b in SEEDED_BASELINES]
        if again:
            n_comps = embeddings[method].shape[1]
            embeddings |= evaluation.baselines(
                selected, n_comps=n_comps, methods=again, seed=seed, inplace=False
            )
        table = evaluation.evaluate(
            selected,
            embeddings,
            gex=gex,
            label_key=label_key,
            batch_key=batch_key,
            n_neighbors=n_neighbors,
            resolution_search=resolution_search,
            seed=seed,
            progress=False,
        )
        if once is not None:  # the seed-free baselines, as scored once
            order = [method, *presets, *baselines]
            table = pd.concat([table, once.loc[[b for b in baselines if b not in again]]])
            table = table.loc[order]
        tables[seed] = table
        bar.update()
    bar.close()
    return pd.concat({s: tables[s] for s in seeds}, names=["seed", "method"])


def write_table(df, path: str | os.PathLike) -> Path:
    """Write a DataFrame as CSV atomically (temporary file + rename).

    Returns
    -------
    The path written.
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        df.to_csv(tmp)
    return path


def run_report(
    data: str = "demo",
    out: str | os.PathLike = "reports/demo",
    params: Mapping | None = None,
    *,
    notebooks: Sequence[str] | None = None,
    html: bool = True,
    kernel_name: str | None = None,
    progress: bool = True,
) -> Path:
    """Run the tutorial notebooks with papermill into ``out``.

    Parameters
    ----------
    data
        ``"demo"`` (built-in synthetic data), ``"bmmc"`` (the GEO file, fetched and cached)
        or the path of a multiome file: ``.h5ad`` / ``.h5ad.gz`` (GSE194122 schema), 10x Cell
        Ranger ARC ``.h5`` or muon ``.h5mu`` (read by :func:`mmae_utils.data.load_multiome`
        through :func:`mmae_utils.datasets.load_dataset`). A relative path is taken from
        the current folder (the notebooks run in ``out``).
    out
        Report folder (created; it is also the notebooks' ``RUN_DIR``).
    params
        Notebook parameters (UPPER_CASE names, see each notebook's ``parameters`` cell).
        :data:`REPORT_DEFAULTS` apply to those not given (5 seeds for notebook 05).
    notebooks
        Subset of :data:`NOTEBOOKS` to run (default all, in order).
    html
        Also write an HTML copy of each executed notebook.
    kernel_name
        Jupyter kernel (default: the notebook's own, ``python3``).
    progress
        Papermill's per-cell progress bar.

    Returns
    -------
    The report folder, holding ``NN_name.ipynb``/``.html``, ``params.json``,
    ``timings.json`` (seconds per notebook and the CPUs there were), the notebooks'
    outputs (``metrics.csv``, ``embeddings.h5ad``, ``model.keras``, ``figures/``...) and
    ``summary.md``.

    Raises
    ------
    ReportError
        When a notebook fails: names the notebook and the cell; earlier outputs stay.
    """
    import papermill as pm

    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    src_dir = notebooks_dir()
    names = list(notebooks) if notebooks else list(NOTEBOOKS)
    unknown = [n for n in names if not (src_dir / f"{n}.ipynb").exists()]
    if unknown:
        raise ValueError(f"Unknown notebook(s) {unknown}; available: {list(NOTEBOOKS)}.")
    declared = {n: notebook_parameters(src_dir / f"{n}.ipynb") for n in names}
    params = dict(params or {})
    _check_params(params, declared)
    declared_names = set().union(*(set(d) for d in declared.values()))
    defaults = {k: v for k, v in REPORT_DEFAULTS.items() if k in declared_names}
    if str(data) not in ("demo", "bmmc") and Path(data).expanduser().exists():
        data = Path(data).expanduser().resolve()  # the notebooks run in `out`, not here
    full = {"DATA": str(data), "RUN_DIR": str(out), **defaults, **params}
    write_json(full, out / "params.json")
    os.environ.setdefault(TEXT_PROGRESS_ENV, "1")  # the kernels inherit it: text bars
    timings = {"cpus": available_cpus(), "notebooks": {}}
    for name in names:
        src = src_dir / f"{name}.ipynb"
        dst = out / f"{name}.ipynb"
        nb_params = {k: v for k, v in full.items() if k in declared[name]}
        logger.info("Running %s", name)
        t0 = time.perf_counter()
        try:
            pm.execute_notebook(
                str(src),
                str(dst),
                parameters=nb_params,
                kernel_name=kernel_name,
                cwd=str(out),
                progress_bar=progress,
                **_kernel_options(),
            )
        except pm.PapermillExecutionError as err:
            if html and dst.exists():
                _to_html(dst)
            raise ReportError(
                f"Notebook {name} failed in {_failed_cell(dst)} (execution count "
                f"{err.exec_count}): {err.ename}: {err.evalue}. The executed notebook with the "
                f"traceback is {dst}; outputs of earlier notebooks in {out} are kept."
            ) from None
        timings["notebooks"][name] = round(time.perf_counter() - t0, 1)
        write_json(timings, out / "timings.json")
        logger.info("%s done in %.0f s", name, timings["notebooks"][name])
        if html:
            _to_html(dst)
    write_summary(out)
    return out


def _parse_value(text: str):
    """Values on the command line are YAML: 20 -> int, 1e-3 -> float, true -> bool, [a, b] -> list."""
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:  # YAML 1.1 reads "1e-3" as a string
            return float(value)
        except ValueError:
            return value
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """Console entry point ``mmae-report``."""
    parser = argparse.ArgumentParser(
        prog="mmae-report",
        description="Run the mmae tutorial notebooks (01-05) with papermill into a report folder.",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="'demo' (built-in synthetic data, default), 'bmmc' (the GEO file, downloaded once) "
        "or the path of a multiome .h5ad / .h5ad.gz, 10x Cell Ranger ARC .h5 or muon .h5mu",
    )
    parser.add_argument("--out", required=True, help="report folder (created)")
    parser.add_argument(
        "-p",
        "--param",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="notebook parameter, e.g. -p EPOCHS 30 (repeatable; values are YAML)",
    )
    parser.add_argument("-f", "--params-file", help="YAML file of parameters (-p overrides it)")
    parser.add_argument(
        "--notebooks", help="comma-separated subset to run, e.g. 01_load_data (default: all)"
    )
    parser.add_argument("--no-html", action="store_true", help="skip the HTML copies")
    parser.add_argument("--quiet", action="store_true", help="no per-cell progress bar")
    args = parser.parse_args(argv)
    try:
        params = load_params_file(args.params_file) if args.params_file else {}
        file_data = params.pop("DATA", None)
        params.pop("RUN_DIR", None)  # the report folder is --out
        params.update({name: _parse_value(value) for name, value in args.param})
        data = args.data or file_data or "demo"
        out = run_report(
            data,
            args.out,
            params,
            notebooks=args.notebooks.split(",") if args.notebooks else None,
            html=not args.no_html,
            progress=not args.quiet,
        )
    except (ReportError, ValueError, FileNotFoundError) as err:
        print(f"mmae-report: error: {err}", file=sys.stderr)
        return 1
    print(f"Report written to {out}")
    summary = out / "summary.md"
    if summary.exists():
        print(summary.read_text())
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
