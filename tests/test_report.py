"""mmae-report end to end on a tiny dataset, failures, parameters."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml

from mmae_utils import report
from mmae_utils.datasets import synthetic_bmmc

TINY = {
    "N_GEX": 300,
    "N_ATAC": 600,
    "LATENT_DIM": 8,
    "HIDDEN": [32],
    "EPOCHS": 2,
    "BATCH_SIZE": 64,
    "BASELINES": ["pca_concat", "gex_pca", "random"],
    "UMAP_METHODS": ["mmae", "pca_concat"],
}


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny.h5ad"
    synthetic_bmmc(600, 800, 1500, seed=21).write_h5ad(path)
    return path


@pytest.fixture(scope="module")
def tiny_report(tiny_file, tmp_path_factory):
    out = tmp_path_factory.mktemp("report") / "run"
    params_file = tmp_path_factory.mktemp("params") / "p.yaml"
    params_file.write_text(yaml.safe_dump({**TINY, "EPOCHS": 50}))
    argv = ["--data", str(tiny_file), "--out", str(out), "-f", str(params_file), "--quiet"]
    argv += ["-p", "EPOCHS", "2"]  # the command line wins over the file
    assert report.main(argv) == 0
    return out


def test_report_folder_contents(tiny_report, tiny_file):
    out = tiny_report
    for name in report.NOTEBOOKS:
        assert (out / f"{name}.ipynb").exists() and (out / f"{name}.html").exists()
    for name in (
        "metrics.csv",
        "summary.md",
        "embeddings.h5ad",
        "model.keras",
        "history.csv",
        "params.json",
    ):
        assert (out / name).exists(), name
    assert {p.name for p in (out / "figures").glob("*.png")} >= {
        "01_composition.png",
        "02_hvg.png",
        "04_loss_curves.png",
        "05_metrics.png",
        "05_umaps.png",
    }
    params = json.loads((out / "params.json").read_text())
    assert params["EPOCHS"] == 2 and params["DATA"] == str(tiny_file)
    assert len(pd.read_csv(out / "history.csv")) == 2
    # the input file is referenced, not copied
    assert json.loads((out / "input.json").read_text())["path"] == str(tiny_file.resolve())


def test_report_metrics_table(tiny_report):
    metrics = pd.read_csv(tiny_report / "metrics.csv", index_col=0)
    # the autoencoder, the original model as the "before" (BEFORE_PRESET), the baselines
    assert list(metrics.index) == ["mmae", "mmae_seed", "pca_concat", "gex_pca", "random"]
    for col in ("NMI", "ARI", "cell_type_ASW", "batch_ASW", "graph_connectivity", "overall"):
        assert col in metrics
    six = metrics[
        [
            "NMI",
            "cell_type_ASW",
            "cell_cycle_conservation",
            "trajectory_conservation",
            "batch_ASW",
            "graph_connectivity",
        ]
    ]
    pd.testing.assert_series_equal(
        six.mean(axis=1), metrics["overall"], check_names=False, atol=1e-9
    )
    assert metrics.loc["random", "NMI"] < metrics.loc["pca_concat", "NMI"]
    emb = ad.read_h5ad(tiny_report / "embeddings.h5ad")
    assert emb.obsm["X_mmae"].shape == (600, 8)
    assert emb.obsm["X_pca_concat"].shape == (600, 8)
    summary = (tiny_report / "summary.md").read_text()
    assert "Best overall" in summary and "pca_concat" in summary


def test_failing_notebook_is_named_and_earlier_outputs_stay(tiny_file, tmp_path, capsys):
    out = tmp_path / "bad"
    argv = ["--data", str(tiny_file), "--out", str(out), "--quiet", "--no-html"]
    argv += ["-p", "N_GEX", "-5"]  # invalid: feature selection must fail
    assert report.main(argv) == 1
    err = capsys.readouterr().err
    assert "Notebook 02_feature_selection failed in code cell" in err
    assert "n_top must be at least 1" in err
    assert (out / "01_load_data.ipynb").exists() and (out / "input.json").exists()
    assert (out / "02_feature_selection.ipynb").exists()  # kept, with the traceback
    assert not (out / "03_autoencoder.ipynb").exists()


def test_unknown_parameter_and_missing_file(tmp_path, capsys):
    assert report.main(["--out", str(tmp_path / "x"), "-p", "EPOCHZ", "3"]) == 1
    assert "Unknown parameter(s) ['EPOCHZ']" in capsys.readouterr().err
    assert report.main(["--out", str(tmp_path / "x"), "-f", str(tmp_path / "none.yaml")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_parse_value_is_yaml():
    assert report._parse_value("20") == 20
    assert report._parse_value("1e-3") == 0.001
    assert report._parse_value("[250, 100]") == [250, 100]
    assert report._parse_value("joint") == "joint"
    assert report._parse_value("null") is None


def test_report_scores_three_seeds_and_the_before_model(tiny_report):
    runs = pd.read_csv(tiny_report / "metrics_seeds.csv", index_col=[0, 1])
    assert runs.index.names == ["seed", "method"]
    assert sorted(runs.index.get_level_values("seed").unique()) == [0, 1, 2]  # REPORT_DEFAULTS
    assert set(runs.xs(1, level="seed").index) == {
        "mmae",
        "mmae_seed",
        "pca_concat",
        "gex_pca",
        "random",
    }
    # the first seed's rows are notebook 05's single-seed table
    single = pd.read_csv(tiny_report / "metrics.csv", index_col=0)
    pd.testing.assert_frame_equal(
        runs.xs(0, level="seed").loc[single.index], single, check_names=False
    )
    # other seeds really are other runs
    assert not runs.xs(1, level="seed").loc["mmae"].equals(runs.xs(0, level="seed").loc["mmae"])
    assert "mean over 3 seeds" in (tiny_report / "summary.md").read_text()
    assert (tiny_report / "figures" / "05_seeds.png").exists()
    options = json.loads((tiny_report / "train_options.json").read_text())
    assert options["epochs"] == 2 and options["batch_size"] == 64


def _seed_table(values: dict[str, list[float]]) -> pd.DataFrame:
    """(seed, method) table where every score of a method equals the given value per seed."""
    from mmae_utils.evaluation import COLUMNS

    rows = {}
    for method, per_seed in values.items():
        for seed, v in enumerate(per_seed):
            rows[(seed, method)] = {c: v for c in COLUMNS if c != "n_metrics"} | {"n_metrics": 6}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index = pd.MultiIndex.from_tuples(df.index, names=["seed", "method"])
    return df


def test_aggregate_and_difference_over_seeds():
    from mmae_utils.evaluation import aggregate_seeds, seed_difference

    runs = _seed_table({"mmae": [0.80, 0.84, 0.82], "pca_concat": [0.79, 0.80, 0.81]})
    agg = aggregate_seeds(runs)
    assert agg.loc["mmae", ("overall", "mean")] == pytest.approx(0.82)
    assert agg.loc["mmae", ("overall", "sd")] == pytest.approx(0.02)
    assert agg.loc["pca_concat", ("n_seeds", "")] == 3
    diff = seed_difference(runs)
    # paired: differences 0.01, 0.04, 0.01
    assert diff.loc["overall", "mean"] == pytest.approx(0.02)
    assert diff.loc["overall", "sd"] == pytest.approx(np.std([0.01, 0.04, 0.01], ddof=1))
    assert diff.loc["NMI", "min"] == pytest.approx(0.01) and diff.loc["NMI", "n_seeds"] == 3
    with pytest.raises(KeyError, match="'umap' is not in the table"):
        seed_difference(runs, reference="umap")
    with pytest.raises(ValueError, match="indexed by \\(seed, method\\)"):
        aggregate_seeds(runs.droplevel("seed"))


def test_verdict_over_seeds_uses_the_spread():
    clear = _seed_table({"mmae": [0.85, 0.86, 0.87], "pca_concat": [0.80, 0.81, 0.82]})
    text = report.verdict(clear)
    assert "beats `pca_concat` overall" in text and "mean over 3 seeds" in text
    assert "+0.050 ± 0.000" in text
    # a mean difference smaller than its spread over seeds is a tie, not a win
    noisy = _seed_table({"mmae": [0.90, 0.78, 0.84], "pca_concat": [0.82, 0.82, 0.82]})
    assert "tie overall" in report.verdict(noisy)
    assert "tie overall" not in report.verdict(noisy.xs(0, level="seed"))  # one seed: +0.08
    short = report.verdict(clear, context=False)
    assert "random floor" not in short and "competition" not in short


def test_training_summary_with_and_without_validation():
    history = pd.DataFrame(
        {"loss": [2.0, 1.0, 1.5], "gex_loss": [1.0, 0.5, 0.7], "atac_loss": [3.0, 1.5, 2.3]},
        index=pd.Index([1, 2, 3], name="epoch"),
    )
    text = report.training_summary(history)
    assert "best training loss was at epoch 2" in text and "No cells were held out" in text
    val = history.rename(columns=lambda c: f"val_{c}") * [1.0, 1.0, 1.0]
    val["val_loss"] = [3.0, 2.0, 1.0]
    text = report.training_summary(pd.concat([history, val], axis=1))
    assert "best validation loss was at epoch 3" in text and "held out" not in text
