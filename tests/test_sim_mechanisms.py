"""Each mechanism of the simulator does what it says: compared with the linear model."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr

from mmae_utils import data, datasets, evaluation, pp
from mmae_utils.metrics import CellCycle

SIZE = {"n_cells": 2000, "n_genes": 1000, "n_peaks": 3000, "seed": 11, "progress": False}


@pytest.fixture(scope="module")
def draws():
    """The same small draw with the mechanisms (the default) and with the linear model."""
    return {
        "default": datasets.synthetic_bmmc(**SIZE),
        "linear": datasets.synthetic_bmmc(**SIZE, mechanisms=datasets.Mechanisms.linear()),
    }


def _log_gex(adata) -> np.ndarray:
    gex, _ = data.split_modalities(adata, copy=False)
    return pp.log_normalized(gex).toarray()


def test_mechanisms_validate_their_values():
    with pytest.raises(ValueError, match="nonlinearity must be in"):
        datasets.Mechanisms(nonlinearity=1.5)
    with pytest.raises(ValueError, match="ambient must be a number >= 0"):
        datasets.Mechanisms(ambient=-0.1)
    with pytest.raises(TypeError, match="mechanisms must be a Mechanisms"):
        datasets.synthetic_bmmc(**SIZE, mechanisms={"ambient": 0.1})


def test_the_schema_is_kept(draws):
    for adata in draws.values():
        data.validate_multiome(adata)
    a, b = draws["default"], draws["linear"]
    assert list(a.obs.columns) == list(b.obs.columns) and a.var.equals(b.var)
    assert a.uns["GEX_synthetic"]["mechanisms"]["ambient"] == datasets.Mechanisms().ambient


def test_atac_pseudotime_is_measured_on_its_own(draws):
    for name, below in (("default", 0.95), ("linear", 1.01)):
        obs = draws[name].obs
        known = obs["GEX_pseudotime_order"].notna() & obs["ATAC_pseudotime_order"].notna()
        rho = spearmanr(
            obs.loc[known, "GEX_pseudotime_order"], obs.loc[known, "ATAC_pseudotime_order"]
        )[0]
        assert rho < below, (name, rho)
        if name == "linear":
            assert rho > 0.98  # the earlier model: GEX pseudotime plus a little noise
        else:
            assert rho > 0.7  # still the same trajectories


def test_chromatin_runs_ahead_of_expression(draws):
    obs = draws["default"].obs
    known = obs["GEX_pseudotime_order"].notna()
    lead = (
        obs.loc[known, "ATAC_pseudotime_order"] - obs.loc[known, "GEX_pseudotime_order"]
    ).median()
    assert lead > 0.01


def test_batch_correction_raises_nmi(draws):
    adata = draws["default"].copy()
    keys = evaluation.baselines(adata, n_comps=20, methods=["pca_concat", "harmony"], seed=0)
    df = evaluation.evaluate(adata, keys, metrics=["NMI"], seed=0, progress=False)
    assert df.loc["harmony", "NMI"] > df.loc["pca_concat", "NMI"] + 0.02


def _pca(x: np.ndarray, n: int) -> np.ndarray:
    x = x - x.mean(axis=0)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    return u[:, :n] * s[:n]


def test_expression_is_a_nonlinear_function_of_chromatin(draws):
    """kNN regression of the GEX principal components from the ATAC LSI beats least squares
    on held-out cells with the mechanisms, by a margin it does not reach in the linear model."""
    from sklearn.linear_model import LinearRegression
    from sklearn.neighbors import KNeighborsRegressor

    gains = {}
    for name, adata in draws.items():
        gex, atac = data.split_modalities(adata, copy=False)
        y = _pca(_log_gex(adata), 10)
        x = pp.lsi(pp.binarized(atac), 20)[0]
        train = np.random.default_rng(0).random(adata.n_obs) < 0.7
        r2 = {}
        for label, reg in (("linear", LinearRegression()), ("knn", KNeighborsRegressor(15))):
            pred = reg.fit(x[train], y[train]).predict(x[~train])
            r2[label] = (
                1 - ((pred - y[~train]) ** 2).sum() / ((y[~train] - y[~train].mean(0)) ** 2).sum()
            )
        gains[name] = r2["knn"] - r2["linear"]
    assert gains["default"] > gains["linear"] + 0.03, gains


def test_marker_genes_are_among_the_top_hvgs(draws):
    from mmae_utils import features

    gex, _ = data.split_modalities(draws["default"])
    features.select_gex(gex, n_top=500, progress=False)
    top = gex.var.sort_values("highly_variable_rank").head(20).index
    assert sum(g in datasets.MARKERS for g in top) >= 5, list(top)


def _cell_cycle_before(adata) -> float:
    """Mean over batches of the variance share the S/G2M scores explain (scib's "before")."""
    obs = pd.DataFrame(index=adata.obs_names.astype(str))
    obs["batch"] = pd.Categorical(adata.obs["batch"].astype(str))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cc = CellCycle(adata, obs, "batch", gex=None, layer="counts", organism="human", n_comps=50)
    return float(np.mean([before for *_, before in cc.batches]))


def test_the_cell_cycle_explains_a_real_share_of_variance(draws):
    default, linear = _cell_cycle_before(draws["default"]), _cell_cycle_before(draws["linear"])
    assert default > 2 * linear and default > 0.04, (default, linear)


def test_batches_shift_lineages_differently(draws):
    """Donor x lineage: the s1d1 - s2d1 shift of the T/NK cells and of the myeloid cells
    agree less (across genes) than in the linear model, where batch shifts are shared."""
    corr = {}
    for name, adata in draws.items():
        x = _log_gex(adata)
        lineage = adata.obs["cell_type"].map(datasets.LINEAGE).astype(str).to_numpy()
        batch = adata.obs["batch"].astype(str).to_numpy()
        shifts = []
        for lin in ("T/NK", "myeloid"):
            a, b = (lineage == lin) & (batch == "s1d1"), (lineage == lin) & (batch == "s2d1")
            shifts.append(x[a].mean(0) - x[b].mean(0))
        corr[name] = np.corrcoef(*shifts)[0, 1]
    assert corr["default"] < corr["linear"] - 0.1, corr


def test_sites_differ_in_capture(draws):
    """Site-level ATAC signal-to-noise: the fraction of reads in peaks differs by site."""
    spread = {}
    for name, adata in draws.items():
        frip = adata.obs.groupby("Site", observed=True)["ATAC_reads_in_peaks_frac"].mean()
        spread[name] = frip.max() - frip.min()
    assert spread["default"] > 0.03 > spread["linear"], spread


def test_ambient_rna_reaches_every_cell(draws):
    """Haemoglobin (an erythroid marker) shows up in T cells through ambient RNA."""
    share = {}
    for name, adata in draws.items():
        gex, _ = data.split_modalities(adata, copy=False)
        t_cells = adata.obs["cell_type"].map(datasets.LINEAGE).to_numpy() == "T/NK"
        hbb = sp.csr_matrix(gex[t_cells, "HBB"].layers["counts"]).toarray().ravel()
        share[name] = float((hbb > 0).mean())
    assert share["default"] > share["linear"] + 0.02, share
