"""The report runner: notebooks 01-05 executed with papermill into one folder.

``mmae-report --data {demo,bmmc,PATH} --out DIR [-p NAME VALUE]... [-f params.yaml]``

The folder receives the executed notebooks (``*.ipynb`` and ``*.html``), what each notebook
writes (``selected.h5ad``, ``model.keras``, ``history.csv``, ``embeddings.h5ad``,
``metrics.csv``, ``figures/``) and a short ``summary.md``. A failing notebook stops the run
with the notebook and cell named; everything already written stays.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import yaml

from ._utils import atomic_path, logger

#: The tutorial, in order.
NOTEBOOKS: tuple[str, ...] = (
    "01_load_data",
    "02_feature_selection",
    "03_autoencoder",
    "04_training",
    "05_evaluation",
)


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


def verdict(
    metrics, *, method: str = "mmae", reference: str = "pca_concat", tie: float = 0.01
) -> str:
    """A Markdown paragraph, computed from a metrics table, answering "does ``method`` beat ``reference``?".

    Parameters
    ----------
    metrics
        :func:`mmae_utils.evaluation.evaluate`'s table (methods as rows).
    method, reference
        Rows to compare.
    tie
        Differences of ``overall`` smaller than this are called a tie.

    Returns
    -------
    Markdown text: the overall comparison, the metrics won and lost, how the joint
    embeddings compare with each modality alone and with the random floor.
    """
    import numpy as np

    from .evaluation import METRICS

    if method not in metrics.index or reference not in metrics.index:
        missing = [m for m in (method, reference) if m not in metrics.index]
        return f"Cannot compare: {missing} not in the table ({list(metrics.index)})."
    a, b = metrics.loc[method], metrics.loc[reference]
    diff = a["overall"] - b["overall"]
    if abs(diff) < tie:
        head = f"**`{method}` and `{reference}` tie overall** ({a['overall']:.3f} vs {b['overall']:.3f}, {diff:+.3f})."
    elif diff > 0:
        head = f"**`{method}` beats `{reference}` overall**: {a['overall']:.3f} vs {b['overall']:.3f} ({diff:+.3f})."
    else:
        head = f"**`{method}` does not beat `{reference}` overall**: {a['overall']:.3f} vs {b['overall']:.3f} ({diff:+.3f})."
    cols = [
        c for c in (*METRICS, "ARI") if c in metrics and np.isfinite(a[c]) and np.isfinite(b[c])
    ]
    won = [f"{c} ({a[c] - b[c]:+.3f})" for c in cols if a[c] - b[c] > 0.005]
    lost = [f"{c} ({a[c] - b[c]:+.3f})" for c in cols if a[c] - b[c] < -0.005]
    parts = [head]
    parts.append(
        f"It is better on {', '.join(won) if won else 'no metric'}"
        f" and worse on {', '.join(lost) if lost else 'no metric'}."
    )
    alone = [m for m in ("gex_pca", "atac_lsi") if m in metrics.index]
    if alone:
        best_alone = max(alone, key=lambda m: metrics.loc[m, "overall"])
        line = f"The best single modality, `{best_alone}`, scores {metrics.loc[best_alone, 'overall']:.3f}"
        beats = [
            m
            for m in (method, reference)
            if metrics.loc[m, "overall"] > metrics.loc[best_alone, "overall"]
        ]
        line += (
            f": integration pays for {', '.join(f'`{m}`' for m in beats)}."
            if beats
            else ": neither joint embedding beats it, so integration has not paid here."
        )
        parts.append(line)
    if "random" in metrics.index:
        parts.append(f"The random floor scores {metrics.loc['random', 'overall']:.3f}.")
    n = int(a["n_metrics"]) if "n_metrics" in metrics and np.isfinite(a["n_metrics"]) else None
    if n is not None and n < 6:
        parts.append(
            f"Only {n} of the 6 metrics could be computed on these data, so `overall` averages {n}."
        )
    parts.append(
        "For scale, the competition's own scores on the real data were 0.616 (PCA), 0.661 (MNN + PCA) "
        "and 0.306 (random); synthetic data give other absolute values."
    )
    return " ".join(parts)


def write_summary(out: Path) -> Path | None:
    """Write ``summary.md`` from ``metrics.csv``: which method won on which metric.

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
    if "overall" in numeric:
        order = numeric["overall"].sort_values(ascending=False)
        lines += [f"**Best overall: `{order.index[0]}`** ({order.iloc[0]:.3f}).", ""]
        if {"mmae", "pca_concat"} <= set(df.index):
            lines += [verdict(df), ""]
    lines.append("| metric | best method | score |")
    lines.append("|---|---|---|")
    for col in numeric.columns:
        series = numeric[col].dropna()
        if series.empty:
            lines.append(f"| {col} | (not computed) | |")
            continue
        lines.append(f"| {col} | `{series.idxmax()}` | {series.max():.3f} |")
    lines += ["", "Full table: `metrics.csv`; notebooks: `*.html`; figures: `figures/`."]
    path = out / "summary.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return path


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
        or the path of a multiome ``.h5ad``.
    out
        Report folder (created; it is also the notebooks' ``RUN_DIR``).
    params
        Notebook parameters (UPPER_CASE names, see each notebook's ``parameters`` cell).
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
    The report folder, holding ``NN_name.ipynb``/``.html``, ``params.json``, the notebooks'
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
    full = {"DATA": str(data), "RUN_DIR": str(out), **params}
    with atomic_path(out / "params.json") as tmp:
        tmp.write_text(json.dumps(full, indent=2, sort_keys=True, default=str))
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
            )
        except pm.PapermillExecutionError as err:
            if html and dst.exists():
                _to_html(dst)
            raise ReportError(
                f"Notebook {name} failed in {_failed_cell(dst)} (execution count "
                f"{err.exec_count}): {err.ename}: {err.evalue}. The executed notebook with the "
                f"traceback is {dst}; outputs of earlier notebooks in {out} are kept."
            ) from None
        logger.info("%s done in %.0f s", name, time.perf_counter() - t0)
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
        "or the path of a multiome .h5ad / .h5ad.gz",
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
