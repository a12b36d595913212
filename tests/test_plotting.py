"""Tests of the evaluation figures in mmae_utils.plotting (Agg backend, see conftest)."""

from __future__ import annotations

import matplotlib
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from mmae_utils import evaluation as ev
from mmae_utils import neighbors, plotting

matplotlib.use("Agg")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def embedded(small_mdata):
    adata = small_mdata.copy()
    keys = ev.baselines(adata, n_comps=6, methods=["gex_pca", "random"], seed=0)
    return adata, keys


def _scatter_points(ax) -> np.ndarray:
    return np.vstack([c.get_offsets() for c in ax.collections if len(c.get_offsets())])


def test_umaps_grid_titles_data_and_file(embedded, tmp_path):
    adata, keys = embedded
    out = tmp_path / "fig" / "umaps.png"
    fig = plotting.umaps(adata, keys, color=("cell_type", "batch"), save=out)
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert len(axes) == 4  # 2 methods x 2 colourings
    assert [ax.get_title() for ax in axes] == [
        "gex_pca: cell_type",
        "gex_pca: batch",
        "random: cell_type",
        "random: batch",
    ]
    for method, key in keys.items():
        coords = adata.obsm[plotting.umap_key(key)]
        assert coords.shape == (adata.n_obs, 2)
        ax = next(a for a in axes if a.get_title() == f"{method}: cell_type")
        pts = _scatter_points(ax)
        assert pts.shape == coords.shape
        # the same points (plotted in shuffled order)
        np.testing.assert_allclose(np.sort(pts, axis=0), np.sort(coords, axis=0), rtol=1e-6)
    # legend of the first row lists the cell types
    legend = axes[0].get_legend()
    labels = {t.get_text() for t in legend.get_texts()}
    assert labels == set(adata.obs["cell_type"].astype(str))
    assert out.exists() and out.stat().st_size > 10_000
    assert not list(out.parent.glob(".*tmp*"))  # written atomically, no leftovers


def test_umaps_reuse_stored_coordinates_and_graph(embedded):
    adata, keys = embedded
    key = keys["gex_pca"]
    plotting.umaps(adata, {"g": key}, color="cell_type")
    first = adata.obsm[plotting.umap_key(key)].copy()
    # a stored UMAP for the same embedding is reused, not recomputed
    adata.obsm[plotting.umap_key(key)] = first + 100
    fig = plotting.umaps(adata, {"g": key}, color="cell_type")
    pts = _scatter_points(fig.axes[0])
    assert pts.min(axis=0)[0] > first.min(axis=0)[0] + 50
    # a changed embedding invalidates it
    adata.obsm[key] = adata.obsm[key] * 2
    plotting.umaps(adata, {"g": key}, color="cell_type")
    assert np.abs(adata.obsm[plotting.umap_key(key)] - (first + 100)).max() > 1
    # evaluate's stored graph is reused (same content, n_neighbors and seed)
    g, reused = neighbors.graph_for(adata, key, adata.obsm[key], 15, 0)
    assert not reused
    ev.evaluate(adata, {"g": key}, metrics=["graph_connectivity"], progress=False)
    g, reused = neighbors.graph_for(adata, key, adata.obsm[key], 15, 0)
    assert reused
    nk = ev.neighbors_key(key)
    assert (g.obsp["connectivities"] != adata.obsp[f"{nk}_connectivities"]).nnz == 0


def test_umaps_numeric_colour_and_errors(embedded):
    adata, keys = embedded
    fig = plotting.umaps(adata, {"r": keys["random"]}, color="GEX_pseudotime_order")
    assert fig.axes[0].get_title() == "r: GEX_pseudotime_order"
    assert len(fig.axes) == 2  # the panel and its colour bar
    with pytest.raises(KeyError, match="obs\\['nope'\\]"):
        plotting.umaps(adata, keys, color="nope")
    with pytest.raises(KeyError, match="X_missing"):
        plotting.umaps(adata, ["X_missing"])


def test_umaps_colour_each_row_by_its_own_clusters(embedded):
    adata, keys = embedded
    adata = adata.copy()
    clusters = ev.cluster(adata, keys, seed=0)
    fig = plotting.umaps(adata, keys, color=["leiden_{method}", "batch"])
    axes = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in axes] == [
        "gex_pca: leiden",
        "gex_pca: batch",
        "random: leiden",
        "random: batch",
    ]
    for ax, method in ((axes[0], "gex_pca"), (axes[2], "random")):  # each row its own clusters
        labels = {t.get_text() for t in ax.get_legend().get_texts()}
        assert labels == set(adata.obs[clusters[method]].astype(str)), method
    batches = {
        t.get_text() for t in axes[3].get_legend().get_texts()
    }  # a legend beside every panel
    assert batches == set(adata.obs["batch"].astype(str))
    with pytest.raises(KeyError, match="obs\\['nope_gex_pca'\\]"):
        plotting.umaps(adata, keys, color="nope_{method}")


def test_composition_without_labels_or_batches(small_mdata, tmp_path):
    adata = small_mdata
    both = plotting.composition(adata)
    assert len(both.axes) == 2
    for label_key, batch_key, key in ((None, "batch", "batch"), ("cell_type", None, "cell_type")):
        fig = plotting.composition(
            adata, label_key=label_key, batch_key=batch_key, save=tmp_path / f"{key}.png"
        )
        (ax,) = fig.axes
        assert ax.get_title() == f"cells per {key} (n = {adata.n_obs:,})"
        bars = {
            t.get_text(): p.get_width()
            for t, p in zip(ax.get_yticklabels(), ax.patches, strict=True)
        }
        assert bars == adata.obs[key].astype(str).value_counts().to_dict()
        assert (tmp_path / f"{key}.png").exists()
    with pytest.raises(ValueError, match="both None"):
        plotting.composition(adata, label_key=None, batch_key=None)
    with pytest.raises(KeyError, match="pass None"):
        plotting.composition(adata, label_key="celltype")


def _table():
    df = pd.DataFrame(
        {
            "NMI": [0.7, 0.1, 0.8],
            "ARI": [0.6, 0.0, 0.7],
            "cell_type_ASW": [0.55, 0.5, 0.6],
            "cell_cycle_conservation": [0.8, 0.4, np.nan],
            "trajectory_conservation": [0.7, 0.5, 0.75],
            "batch_ASW": [0.85, 0.9, 0.86],
            "graph_connectivity": [0.9, 0.3, 0.95],
        },
        index=pd.Index(["pca_concat", "random", "mmae"], name="method"),
    )
    values = df[list(ev.METRICS)]
    df["overall"] = values.mean(axis=1)
    df["n_metrics"] = values.notna().sum(axis=1)
    return df


def test_metrics_heatmap_values_order_and_file(tmp_path):
    df = _table()
    fig = plotting.metrics_heatmap(df, save=tmp_path / "m.svg")
    ax = fig.axes[0]
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows == list(df.sort_values("overall", ascending=False).index)
    cols = [t.get_text() for t in ax.get_xticklabels()]
    assert len(cols) == 8 and cols[-1] == "overall" and cols[0] == "NMI"
    texts = [t.get_text() for t in ax.texts]
    assert len(texts) == 3 * 8
    assert "n/a" in texts  # the NaN cell-cycle score of "mmae"
    mmae_overall = df.loc["mmae", "overall"]
    assert f"{mmae_overall:.2f} (5/6)" in texts  # overall says it averaged 5 metrics
    assert f"{df.loc['random', 'overall']:.2f}" in texts
    bold = [t for t in ax.texts if t.get_fontweight() == "bold"]
    assert len(bold) == 3  # the overall column
    assert (tmp_path / "m.svg").read_text().lstrip().startswith("<?xml")


def test_metrics_heatmap_on_evaluate_output(small_mdata):
    adata = small_mdata.copy()
    keys = ev.baselines(adata, n_comps=5, methods=["gex_pca", "random"])
    df = ev.evaluate(adata, keys, metrics=["cell_type_ASW", "batch_ASW"], progress=False)
    fig = plotting.metrics_heatmap(df, columns=["cell_type_ASW", "batch_ASW", "overall"])
    texts = [t.get_text() for t in fig.axes[0].texts]
    for method in keys:
        assert f"{df.loc[method, 'cell_type_ASW']:.2f}" in texts
        assert f"{df.loc[method, 'overall']:.2f} (2/6)" in texts
    with pytest.raises(KeyError, match="not in the table"):
        plotting.metrics_heatmap(df, columns=["kBET"])


def _history(val: bool = True) -> pd.DataFrame:
    epochs = np.arange(1, 9)
    h = {
        "loss": 1 / epochs,
        "gex_loss": 1.5 / epochs,
        "atac_loss": 0.5 / epochs + 0.3,
        "seconds": np.full(8, 2.0),
    }
    if val:
        h |= {
            "val_loss": 1 / epochs + (epochs - 5) ** 2 / 50,
            "val_gex_loss": 1.6 / epochs,
            "val_atac_loss": 0.6 / epochs + 0.3,
        }
    return pd.DataFrame(h)


def test_loss_curves_per_modality_train_and_validation(tmp_path):
    h = _history()
    fig = plotting.loss_curves(h, save=tmp_path / "loss.png")
    assert len(fig.axes) == 3
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("total") and titles[1].startswith("GEX")
    assert titles[2] == "ATAC (binary cross-entropy)"
    from mmae_utils.model import build_model

    jae = build_model(300, 500, preset="jae")
    titles = [ax.get_title() for ax in plotting.loss_curves(h, model=jae).axes]
    assert titles[1:] == [
        "GEX (mean squared error, on components)",
        "ATAC (mean squared error, on components)",
    ]
    best = int(h["val_loss"].idxmin()) + 1
    for ax, col in zip(fig.axes, ["loss", "gex_loss", "atac_loss"], strict=True):
        lines = {line.get_label(): line for line in ax.get_lines()}
        np.testing.assert_allclose(lines["train"].get_ydata(), h[col])
        np.testing.assert_allclose(lines["validation"].get_ydata(), h[f"val_{col}"])
        np.testing.assert_array_equal(lines["train"].get_xdata(), np.arange(1, 9))
        assert lines[f"best epoch ({best})"].get_xdata()[0] == best
    assert (tmp_path / "loss.png").stat().st_size > 5_000


def test_loss_curves_without_validation_and_from_dict():
    h = _history(val=False)
    fig = plotting.loss_curves({k: list(v) for k, v in h.items()})
    for ax in fig.axes:
        assert [line.get_label() for line in ax.get_lines()] == ["train"]

    class History:  # keras.callbacks.History-like
        history = {"loss": [3.0, 2.0, 1.0], "val_loss": [3.5, 2.5, 2.0]}

    fig = plotting.loss_curves(History())
    assert len(fig.axes) == 1
    with pytest.raises(ValueError, match="none of the columns"):
        plotting.loss_curves(pd.DataFrame({"accuracy": [0.5]}))
    with pytest.raises(TypeError, match="history must be"):
        plotting.loss_curves([1, 2, 3])


def test_data_stage_figures_are_reexported():
    for name in ("composition", "qc", "highly_variable_genes", "peak_variability", "architecture"):
        assert callable(getattr(plotting, name))


def test_evaluation_leaves_matplotlib_style_alone():
    """Importing scib sets seaborn's "talk" context globally; evaluate() must not leak it."""
    import subprocess
    import sys

    code = (
        "import matplotlib as mpl\n"
        "before = dict(mpl.rcParams)\n"
        "from mmae_utils import evaluation, metrics\n"
        "metrics.import_scib()\n"
        "import scib\n"
        "changed = [k for k, v in before.items() if mpl.rcParams[k] != v]\n"
        "assert not changed, changed\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_seed_scores_panels_and_differences(tmp_path):
    import pandas as pd

    from mmae_utils import plotting
    from mmae_utils.evaluation import COLUMNS

    rows = {}
    for seed in range(3):
        for method, value in (("mmae", 0.80 + 0.01 * seed), ("pca_concat", 0.78), ("random", 0.4)):
            rows[(seed, method)] = {c: value for c in COLUMNS}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["seed", "method"])
    fig = plotting.seed_scores(table, save=tmp_path / "seeds.png")
    assert (tmp_path / "seeds.png").exists()
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["overall", "NMI", "ARI", "overall minus pca_concat (95 % CI)"]
    # methods ordered by mean overall, best on top (last y tick)
    assert [t.get_text() for t in fig.axes[0].get_yticklabels()] == ["random", "pca_concat", "mmae"]
    # the difference panel holds the three per-seed differences of mmae: 0.02, 0.03, 0.04
    from matplotlib.collections import PathCollection

    dots = [c for c in fig.axes[3].collections if isinstance(c, PathCollection)]
    xs = np.concatenate([c.get_offsets()[:, 0] for c in dots])
    np.testing.assert_allclose(np.sort(xs), [0.02, 0.03, 0.04], atol=1e-9)
    # its bar is the 95 % t interval of those differences (what the verdict judges by)
    from scipy import stats

    (bar,) = fig.axes[3].containers
    (segment,) = bar.lines[2][0].get_segments()
    half = stats.t.ppf(0.975, 2) * np.std([0.02, 0.03, 0.04], ddof=1) / np.sqrt(3)
    np.testing.assert_allclose(segment[:, 0], [0.03 - half, 0.03 + half], atol=1e-9)
    assert len(plotting.seed_scores(table, reference=None).axes) == 3


def test_seed_scores_leave_out_scores_nan_everywhere():
    from mmae_utils.evaluation import COLUMNS

    rows = {}
    for seed in range(2):
        for method, value in (("mmae", 0.8 + 0.01 * seed), ("pca_concat", 0.78)):
            rows[(seed, method)] = {c: value for c in COLUMNS} | {"NMI": np.nan, "ARI": np.nan}
    table = pd.DataFrame.from_dict(rows, orient="index")
    table.index = pd.MultiIndex.from_tuples(table.index, names=["seed", "method"])
    fig = plotting.seed_scores(table)  # e.g. without labels: no NMI, no ARI
    assert [ax.get_title() for ax in fig.axes] == ["overall", "overall minus pca_concat (95 % CI)"]
