"""Regenerate the README's results from a report's files, so that no number is copied by hand.

    python docs/update_results.py reports/demo   # copy the report's files, rewrite the README
    python docs/update_results.py --check        # exit 1 if the README differs from docs/results

With a report folder (``make report`` on the defaults), the script copies its
``metrics_seeds.csv``, ``params.json`` (without ``RUN_DIR``) and ``timings.json`` into
``docs/results/`` and its
figures into ``docs/``; then (and with ``--check``) it renders the README's results block,
between the ``<!-- results:begin -->`` and ``<!-- results:end -->`` lines, from
``docs/results/`` alone, the parameter table, between ``<!-- parameters:begin -->``
and ``<!-- parameters:end -->``, from the notebooks' ``parameters`` cells, and the
evaluation-draw table, between ``<!-- evaluation-draws:begin -->`` and
``<!-- evaluation-draws:end -->``, from ``benchmarks/evaluation_draws/*.csv``.
``tests/test_docs.py`` fails when the README and ``docs/results`` or the notebooks
disagree.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pandas as pd

from mmae_utils import report
from mmae_utils.comparison import draws_overview, goal, references, verdict
from mmae_utils.config import DEFAULT_PRESET
from mmae_utils.evaluation import METRICS

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
README = ROOT / "README.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
PARAMS_BEGIN, PARAMS_END = "<!-- parameters:begin -->", "<!-- parameters:end -->"
DRAWS_BEGIN, DRAWS_END = "<!-- evaluation-draws:begin -->", "<!-- evaluation-draws:end -->"
#: Per-seed scores of the default on evaluation draws (benchmarks/evaluation_draws.py).
DRAWS = ROOT / "benchmarks" / "evaluation_draws"
FILES = ("metrics_seeds.csv", "params.json", "timings.json")
#: Report figure -> its copy in docs/.
FIGURES = {
    "05_seeds.png": "report_seeds.png",
    "05_metrics.png": "report_metrics.png",
    "04_loss_curves.png": "report_loss_curves.png",
}
LABELS = {
    "mmae": f'`mmae` (the default, `"{DEFAULT_PRESET}"` preset)',
    "mmae_original": "`mmae_original` (the seed notebook's model)",
    "mmae_seed": '`mmae_seed` (the `"seed"` preset)',
}
HEADERS = {
    "NMI": "NMI",
    "ARI": "ARI",
    "cell_type_ASW": "cell type ASW",
    "cell_cycle_conservation": "cell cycle",
    "trajectory_conservation": "trajectory",
    "batch_ASW": "batch ASW",
    "graph_connectivity": "graph conn.",
    "overall": "overall",
}


def copy_report(report: Path) -> None:
    """Copy the report's result files into ``docs/results`` and its figures into ``docs``."""
    missing = [f for f in (*FILES, *(f"figures/{k}" for k in FIGURES)) if not (report / f).exists()]
    if missing:
        sys.exit(f"{report} lacks {missing}: pass the folder of a finished `make report`.")
    RESULTS.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(report / name, RESULTS / name)
    params = json.loads((report / "params.json").read_text())
    params.pop("RUN_DIR", None)  # a path on the machine that ran it
    (RESULTS / "params.json").write_text(json.dumps(params, indent=2, sort_keys=True) + "\n")
    for src, dst in FIGURES.items():
        shutil.copyfile(report / "figures" / src, ROOT / "docs" / dst)


def table(per_seed: pd.DataFrame) -> str:
    """Markdown table: mean ± sd over seeds per method and metric."""
    cols = [c for c in HEADERS if c in per_seed]
    grouped = per_seed.groupby(level="method", sort=False)[cols]
    mean, sd = grouped.mean(), grouped.std(ddof=1).fillna(0.0)
    lines = [
        "| method | " + " | ".join(HEADERS[c] for c in cols) + " |",
        "|---" * (len(cols) + 1) + "|",
    ]
    for method in mean.index:
        cells = [f"{mean.loc[method, c]:.3f} ± {sd.loc[method, c]:.3f}" for c in cols]
        lines.append(f"| {LABELS.get(method, f'`{method}`')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def render(results: Path = RESULTS) -> str:
    """The README's results block (without the marker lines), from ``results`` alone."""
    per_seed = pd.read_csv(results / "metrics_seeds.csv", index_col=[0, 1])
    params = json.loads((results / "params.json").read_text())
    timings = json.loads((results / "timings.json").read_text())
    n_seeds = per_seed.index.get_level_values("seed").nunique()
    minutes = sum(timings["notebooks"].values()) / 60
    head = (
        f"What the demo report shows (`make report` on the defaults, data `{params['DATA']}`, "
        f"{n_seeds} seeds; mean ± sd over seeds from its `metrics_seeds.csv`; the notebooks "
        f"ran {minutes:.1f} minutes on {timings['cpus']} CPUs):"
    )
    missing = [m for m in METRICS if m not in per_seed]
    note = f"\n\nNot computed on these data: {', '.join(missing)}." if missing else ""
    return "\n\n".join(
        [
            head,
            "![scores over seeds](docs/report_seeds.png)",
            table(per_seed) + note,
            "Notebook 05's verdicts on these numbers, word for word:",
            *("> " + verdict(per_seed, reference=r) for r in references(per_seed)),
            "> " + goal(per_seed),
            "![metrics of the demo report, seed 0](docs/report_metrics.png)",
            "![loss curves](docs/report_loss_curves.png)",
        ]
    )


def draws_block(folder: Path = DRAWS) -> str:
    """The README's table of the default on every evaluation draw scored so far, from the
    per-seed scores ``benchmarks/evaluation_draws.py`` keeps (the demo first)."""
    paths = sorted(folder.glob("*.csv"), key=lambda p: (p.stem != "demo", p.stem))
    tables = {p.stem: pd.read_csv(p, index_col=[0, 1]) for p in paths}
    if not tables:
        return "No evaluation draw has been scored yet (`benchmarks/evaluation_draws.py`)."
    seeds = {t.index.get_level_values("seed").nunique() for t in tables.values()}
    head = (
        "The frozen default against the best other method on every evaluation draw scored "
        f"so far ({'/'.join(map(str, sorted(seeds)))} seeds each; details and every "
        "verdict in `benchmarks/evaluation_draws.md`):"
    )
    return "\n\n".join([head, "\n".join(draws_overview(tables))])


def parameters_table() -> str:
    """The README's parameter table, from the notebooks' ``parameters`` cells: each
    parameter once, its default and help from the first notebook that declares it."""
    lines = ["| parameter | default | meaning | notebooks |", "|---|---|---|---|"]
    for param, row in report.tutorial_parameters().items():
        default = f"`{row['default']}`"
        if param in report.REPORT_DEFAULTS:
            default += f" (report: `{report.REPORT_DEFAULTS[param]}`)"
        meaning = row["help"].replace("|", "\\|")
        notebooks = ", ".join(name[:2] for name in row["notebooks"])
        lines.append(f"| `{param}` | {default} | {meaning} | {notebooks} |")
    return "\n".join(lines)


def rewrite(text: str, block: str, begin: str = BEGIN, end: str = END) -> str:
    """``text`` with the part between the marker lines ``begin`` and ``end`` replaced by
    ``block``."""
    if text.count(begin) != 1 or text.count(end) != 1:
        raise ValueError(f"README.md must hold one {begin} line and one {end} line.")
    before, rest = text.split(begin)
    _, after = rest.split(end)
    return f"{before}{begin}\n{block}\n{end}{after}"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", nargs="?", type=Path, help="a finished report folder")
    parser.add_argument("--check", action="store_true", help="only check the README")
    args = parser.parse_args(argv)
    if args.report is not None and not args.check:
        copy_report(args.report)
    text = README.read_text()
    new = rewrite(rewrite(text, render()), parameters_table(), PARAMS_BEGIN, PARAMS_END)
    new = rewrite(new, draws_block(), DRAWS_BEGIN, DRAWS_END)
    if args.check:
        if new != text:
            print(
                "README.md's results, parameter table or evaluation-draw table differ from "
                "docs/results, the notebooks and benchmarks/evaluation_draws: run "
                "docs/update_results.py."
            )
            return 1
        return 0
    tmp = README.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(README)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
