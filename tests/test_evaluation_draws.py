"""benchmarks/evaluation_draws.py: the table of the frozen default on evaluation draws is
computed from the reports' per-seed scores, and development seeds are refused."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mmae_utils.evaluation import METRICS

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def draws():
    spec = importlib.util.spec_from_file_location(
        "evaluation_draws", ROOT / "benchmarks/evaluation_draws.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def per_seed(gain: float, seeds=5) -> pd.DataFrame:
    """Scores of mmae, harmony, pca_concat and random over seeds; mmae = harmony + gain."""
    rng = np.random.default_rng(0)
    base = {"harmony": 0.70, "pca_concat": 0.65, "random": 0.2}
    rows = {}
    for s in range(seeds):
        for method, level in {**base, "mmae": base["harmony"] + gain}.items():
            scores = dict.fromkeys(METRICS, level) | {"ARI": level}
            noise = rng.normal(0, 0.002, len(scores))
            rows[(s, method)] = {k: v + e for (k, v), e in zip(scores.items(), noise, strict=True)}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index.names = ["seed", "method"]
    table["overall"] = table[list(METRICS)].mean(axis=1)
    return table


def test_the_table_calls_each_draw_from_its_scores(draws, tmp_path, monkeypatch):
    monkeypatch.setattr(draws, "RAW", tmp_path)
    per_seed(+0.05).to_csv(tmp_path / "eval-a.csv")
    per_seed(-0.04).to_csv(tmp_path / "eval-b.csv")
    out = tmp_path / "table.md"
    draws.write_table(["eval-a", "eval-b"], out)
    text = out.read_text()
    rows = {
        line.split(" | ")[0].strip("| "): line for line in text.splitlines() if "`harmony`" in line
    }
    assert rows["eval-a"].endswith("| better | none | met |") and "| +0.050 [" in rows["eval-a"]
    assert "| -0.040 [" in rows["eval-b"] and rows["eval-b"].endswith(" | not met |")
    assert "| worse | NMI, ARI, cell_type_ASW" not in rows["eval-b"]  # ARI is not in overall
    assert "| worse | NMI, cell_type_ASW, cell_cycle_conservation" in rows["eval-b"]
    assert text.count("goal") >= 2 and "## eval-a" in text and "## eval-b" in text
    assert "`mmae` - `harmony`, paired by seed" in text  # the difference tables
    assert "`mmae` - `pca_concat`, paired by seed" in text


def test_a_development_seed_is_refused(draws, monkeypatch):
    monkeypatch.setitem(draws.EVALUATION_DRAWS, "leak", {"n_cells": 100, "seed": 101})
    with pytest.raises(SystemExit, match="development seed"):
        draws.draw_path("leak")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({}, None),
        ({"SEED": 1}, "not a report of the full-size file"),
        ({"DATA": "demo"}, "not a report of the full-size file"),
        ({"PRESET": "mmae"}, "trained 'mmae'"),
    ],
)
def test_only_a_full_size_report_of_the_default_is_taken(draws, tmp_path, change, message):
    import json

    from mmae_utils.config import DEFAULT_PRESET

    params = {"DATA": "/data/bmmc_full.h5ad", "SEED": 0, "PRESET": DEFAULT_PRESET} | change
    (tmp_path / "params.json").write_text(json.dumps(params))
    if message is None:
        draws.check_full_size(tmp_path)
    else:
        with pytest.raises(SystemExit, match=message):
            draws.check_full_size(tmp_path)
