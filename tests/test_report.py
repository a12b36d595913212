"""mmae-report end to end on a tiny dataset, failures, parameters."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import yaml

from mmae_utils import comparison, report
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
    assert list(metrics.index) == ["mmae", "mmae_original", "pca_concat", "gex_pca", "random"]
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


def test_failing_notebook_is_named_and_earlier_outputs_stay(tiny_file, tmp_path, capfd):
    out = tmp_path / "bad"
    argv = ["--data", str(tiny_file), "--out", str(out), "--quiet", "--no-html"]
    argv += ["-p", "N_GEX", "-5"]  # invalid: feature selection must fail
    assert report.main(argv) == 1
    err = capfd.readouterr().err  # also what the kernels write to the terminal
    assert "Notebook 02_feature_selection failed in code cell" in err
    assert "n_top must be at least 1" in err
    assert "without encryption" not in err  # ipykernel's TCP warning: kernels use IPC
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


def test_report_scores_the_default_seeds_and_the_before_model(tiny_report):
    runs = pd.read_csv(tiny_report / "metrics_seeds.csv", index_col=[0, 1])
    assert runs.index.names == ["seed", "method"]
    n_seeds = report.REPORT_DEFAULTS["N_SEEDS"]
    assert n_seeds == 5
    assert sorted(runs.index.get_level_values("seed").unique()) == list(range(n_seeds))
    assert set(runs.xs(1, level="seed").index) == {
        "mmae",
        "mmae_original",
        "pca_concat",
        "gex_pca",
        "random",
    }
    # the first seed's rows are notebook 05's single-seed table
    single = pd.read_csv(tiny_report / "metrics.csv", index_col=0)
    pd.testing.assert_frame_equal(
        runs.xs(0, level="seed").loc[single.index], single, check_names=False
    )
    # other seeds really are other runs; the seed-free SVD baselines are scored once
    assert not runs.xs(1, level="seed").loc["mmae"].equals(runs.xs(0, level="seed").loc["mmae"])
    assert not runs.xs(1, level="seed").loc["random"].equals(runs.xs(0, level="seed").loc["random"])
    for seed in range(1, n_seeds):
        for fixed in ("pca_concat", "gex_pca"):
            pd.testing.assert_series_equal(
                runs.xs(seed, level="seed").loc[fixed], single.loc[fixed], check_names=False
            )
    assert list(runs.xs(1, level="seed").index) == list(single.index)  # same row order
    summary = (tiny_report / "summary.md").read_text()
    assert f"{n_seeds} seeds" in summary and "95% CI" in summary and "| overall |" in summary
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


def _t_interval(diffs, confidence=0.95) -> tuple[float, float]:
    """The Student-t interval of the mean of ``diffs``, computed here with scipy."""
    from scipy import stats

    diffs = np.asarray(diffs, dtype=float)
    n = diffs.size
    half = stats.t.ppf(0.5 + confidence / 2, n - 1) * diffs.std(ddof=1) / np.sqrt(n)
    return diffs.mean() - half, diffs.mean() + half


def _paired(table: pd.DataFrame, score: str, method="mmae", reference="pca_concat"):
    """Per-seed differences ``method - reference`` of one score, read from the table."""
    return (
        table.xs(method, level="method")[score] - table.xs(reference, level="method")[score]
    ).to_numpy()


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
    # the Student-t interval, against scipy on the table's own differences
    low, high = _t_interval(_paired(runs, "overall"))
    assert diff.loc["overall", "ci_low"] == pytest.approx(low)
    assert diff.loc["overall", "ci_high"] == pytest.approx(high)
    wider = seed_difference(runs, confidence=0.99)
    assert wider.loc["overall", "ci_low"] < low and wider.loc["overall", "ci_high"] > high
    with pytest.raises(KeyError, match="'umap' is not in the table"):
        seed_difference(runs, reference="umap")
    with pytest.raises(ValueError, match="confidence must be strictly between 0 and 1"):
        seed_difference(runs, confidence=95)
    with pytest.raises(ValueError, match="indexed by \\(seed, method\\)"):
        aggregate_seeds(runs.droplevel("seed"))


def test_seed_difference_without_an_interval():
    from mmae_utils.evaluation import seed_difference

    one = seed_difference(_seed_table({"mmae": [0.9], "pca_concat": [0.8]}))
    assert one.loc["overall", "mean"] == pytest.approx(0.1) and one.loc["overall", "n_seeds"] == 1
    assert one[["sd", "ci_low", "ci_high"]].isna().all().all()
    # a score missing for some seeds: its interval uses the seeds where both have it
    runs = _seed_table({"mmae": [0.85, 0.87, 0.86, 0.88], "pca_concat": [0.80, 0.81, 0.82, 0.8]})
    runs.loc[(0, "mmae"), "trajectory_conservation"] = np.nan
    d = seed_difference(runs)
    assert d.loc["trajectory_conservation", "n_seeds"] == 3 and d.loc["NMI", "n_seeds"] == 4
    low, _ = _t_interval(_paired(runs, "trajectory_conservation")[1:])
    assert d.loc["trajectory_conservation", "ci_low"] == pytest.approx(low)


def _ci_text(diffs) -> str:
    low, high = _t_interval(diffs)
    return f"95% CI {low:+.3f} to {high:+.3f}"


def test_verdict_over_seeds_uses_the_interval():
    # consistently positive over 5 seeds: the interval excludes 0, so "better"
    clear = _seed_table(
        {"mmae": [0.85, 0.87, 0.86, 0.88, 0.86], "pca_concat": [0.84, 0.85, 0.85, 0.86, 0.85]}
    )
    text = comparison.verdict(clear)
    diffs = _paired(clear, "overall")
    assert "beats `pca_concat` overall" in text
    assert f"overall {diffs.mean():+.3f} ({_ci_text(diffs)}, 5 seeds)" in text
    assert "It is better on NMI" in text and "worse on no metric" in text
    # positive on average but noisy: the interval spans 0, so a tie
    noisy = _seed_table(
        {"mmae": [0.90, 0.78, 0.84, 0.86, 0.80], "pca_concat": [0.82, 0.82, 0.82, 0.82, 0.82]}
    )
    diffs = _paired(noisy, "overall")
    low, high = _t_interval(diffs)
    assert low < 0 < high and diffs.mean() > 0.01  # a win by the old 0.01 threshold
    text = comparison.verdict(noisy)
    assert "tie overall" in text and _ci_text(diffs) in text and "interval includes 0" in text
    assert "better on no metric and worse on no metric" in text
    # consistently negative: "worse"
    worse = comparison.verdict(clear, method="pca_concat", reference="mmae", context=False)
    assert "`pca_concat` is worse than `mmae` overall" in worse
    short = comparison.verdict(clear, context=False)
    assert "random floor" not in short and "competition" not in short


def test_verdict_calls_each_metric_by_its_interval():
    runs = _seed_table(
        {"mmae": [0.85, 0.86, 0.87, 0.86, 0.85], "pca_concat": [0.85, 0.86, 0.87, 0.86, 0.85]}
    )
    deltas = {
        "NMI": [0.03, 0.02, 0.04, 0.03, 0.02],  # consistently up
        "cell_type_ASW": [-0.02, -0.03, -0.02, -0.01, -0.02],  # consistently down
        "batch_ASW": [0.05, -0.06, 0.04, -0.03, 0.01],  # noise
    }
    for score, delta in deltas.items():
        runs.loc[(slice(None), "mmae"), score] += delta
    text = comparison.verdict(runs, context=False)
    nmi, asw = _paired(runs, "NMI"), _paired(runs, "cell_type_ASW")
    # NMI comes from the approximate clustering: its measured error is printed with it
    assert (
        f"better on NMI {nmi.mean():+.3f} ({_ci_text(nmi)}; clustering error up to 0.024)" in text
    )
    assert f"worse on cell_type_ASW {asw.mean():+.3f} ({_ci_text(asw)})" in text
    assert "batch_ASW" not in text  # its interval spans 0: a tie, not listed


def test_verdict_with_one_seed_says_it_is_a_single_run():
    noisy = _seed_table({"mmae": [0.90, 0.78], "pca_concat": [0.82, 0.82]})
    for table in (noisy.xs(0, level="seed"), noisy.loc[[0]]):  # one table, or one seed
        text = comparison.verdict(table, context=False)
        assert "beats `pca_concat` overall in a single run" in text  # +0.08 > the 0.01 threshold
        assert "no confidence interval" in text and "CI" not in text
    close = _seed_table({"mmae": [0.825], "pca_concat": [0.82]})
    assert "tie overall in a single run" in comparison.verdict(close, context=False)


def test_verdict_says_which_metrics_overall_averages():
    from mmae_utils.evaluation import METRICS

    table = _seed_table({"mmae": [0.9], "pca_concat": [0.8]}).xs(0, level="seed")
    assert "Only" not in comparison.verdict(table)
    assert "averaged over the same six metrics" in comparison.verdict(table)
    unlabelled = table.copy()
    unlabelled[[m for m in (*METRICS, "ARI") if m != "cell_cycle_conservation"]] = np.nan
    unlabelled["n_metrics"] = 1
    text = comparison.verdict(unlabelled)
    assert "Only 1 of the 6 metrics could be computed on these data (not NMI, cell_type_ASW" in text
    assert "so `overall` is that one metric" in text and "over all six metrics" in text
    assert "better on cell_cycle_conservation (+0.100)" in text
    no_batches = table.copy()
    no_batches["batch_ASW"] = np.nan
    no_batches["n_metrics"] = 5
    assert "(not batch_ASW), so `overall` is the mean of those 5" in comparison.verdict(no_batches)
    nothing = table.copy()
    nothing[list(METRICS)] = np.nan
    nothing["overall"] = np.nan
    assert comparison.verdict(nothing) == (
        "Cannot compare `mmae` with `pca_concat`: no metric could be computed."
    )


def test_write_summary_lists_the_intervals(tmp_path):
    runs = _seed_table(
        {"mmae": [0.85, 0.87, 0.86, 0.88, 0.86], "pca_concat": [0.84, 0.85, 0.85, 0.86, 0.85]}
    )
    report.write_table(runs.xs(0, level="seed"), tmp_path / "metrics.csv")
    report.write_table(runs, tmp_path / "metrics_seeds.csv")
    summary = report.write_summary(tmp_path).read_text()
    diffs = _paired(runs, "overall")
    low, high = _t_interval(diffs)
    assert "beats `pca_concat` overall" in summary and "5 seeds" in summary
    assert f"| overall | {diffs.mean():+.3f} | {low:+.3f} to {high:+.3f} | 5 | better |" in summary
    (tmp_path / "metrics_seeds.csv").unlink()  # a single run: no table of intervals
    summary = report.write_summary(tmp_path).read_text()
    assert "in a single run" in summary and "| overall | +" not in summary


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


PARAMS_DIR = report.notebooks_dir().parent / "params"


def _declared_defaults() -> dict:
    """Every notebook parameter's default (the first notebook's where two declare it),
    with the report's own defaults on top: what ``make report`` runs."""
    import ast

    declared = report.tutorial_parameters()
    defaults = {key: ast.literal_eval(spec["default"]) for key, spec in declared.items()}
    return defaults | report.REPORT_DEFAULTS


@pytest.mark.parametrize("name", ["demo.yaml", "bmmc.yaml"])
def test_params_files_set_known_parameters_and_the_default_model(name):
    from mmae_utils.config import DEFAULT_PRESET

    params = report.load_params_file(PARAMS_DIR / name)
    assert set(params) <= set(_declared_defaults()), set(params) - set(_declared_defaults())
    assert params["PRESET"] == DEFAULT_PRESET  # "the preset chosen on development draws"


def test_demo_params_file_is_what_make_report_runs():
    defaults = _declared_defaults() | {"DATA": "demo"}
    params = report.load_params_file(PARAMS_DIR / "demo.yaml")
    assert {k: v for k, v in params.items() if defaults[k] != v} == {}
