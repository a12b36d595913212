"""The README's results are generated from a report's files (docs/update_results.py)."""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from mmae_utils.report import REPORT_DEFAULTS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("update_results", ROOT / "docs/update_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_results_are_generated_from_docs_results(gen):
    assert gen.main(["--check"]) == 0, "README.md was edited by hand or docs/results changed"


def test_docs_results_come_from_a_default_demo_report(gen):
    params = json.loads((gen.RESULTS / "params.json").read_text())
    assert params["DATA"] == "demo"
    assert set(params) <= {"DATA", *REPORT_DEFAULTS}, params  # defaults only
    assert {k: params.get(k) for k in REPORT_DEFAULTS} == REPORT_DEFAULTS
    per_seed = pd.read_csv(gen.RESULTS / "metrics_seeds.csv", index_col=[0, 1])
    assert per_seed.index.get_level_values("seed").nunique() == params["N_SEEDS"]
    for figure in gen.FIGURES.values():
        assert (ROOT / "docs" / figure).stat().st_size > 10_000


def test_the_block_follows_the_files(gen, tmp_path):
    results = tmp_path / "results"
    shutil.copytree(gen.RESULTS, results)
    before = gen.render(results)
    per_seed = pd.read_csv(results / "metrics_seeds.csv", index_col=[0, 1])
    per_seed.loc[(slice(None), "mmae"), "overall"] = 0.4242
    per_seed.to_csv(results / "metrics_seeds.csv")
    after = gen.render(results)
    assert after != before
    assert "0.424 ± 0.000" in after and "0.424 ± 0.000" not in before
    text = gen.rewrite(f"intro\n{gen.BEGIN}\nold\n{gen.END}\noutro\n", after)
    assert text.startswith("intro\n") and text.endswith("\noutro\n") and "old" not in text


def test_a_missing_marker_or_report_file_is_an_error(gen, tmp_path):
    with pytest.raises(ValueError, match="one <!-- results:begin --> line"):
        gen.rewrite("no markers here", "block")
    with pytest.raises(SystemExit, match="lacks .*metrics_seeds.csv"):
        gen.copy_report(tmp_path)


def test_the_parameter_table_follows_the_notebooks(gen):
    table = gen.parameters_table()
    rows = {line.split(" | ")[0].strip("| `"): line for line in table.splitlines()[2:]}
    for name in gen.report.NOTEBOOKS:
        path = gen.report.notebooks_dir() / f"{name}.ipynb"
        for param, spec in gen.report.notebook_parameters(path).items():
            assert f"| `{spec['default']}`" in rows[param], (param, rows[param])
            assert name[:2] in rows[param].rsplit("|", 2)[-2], (param, name)
    assert "(report: `5`)" in rows["N_SEEDS"]
    assert "(report: `original`)" in rows["BEFORE_PRESET"]
    assert gen.PARAMS_BEGIN in gen.README.read_text()
