"""Each mechanism of the simulator does what it says: compared with the linear model."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import spearmanr

from mmae_utils import data, datasets, evaluation, pp

SIZE = {"n_cells": 2000, "n_genes": 1000, "n_peaks": 3000, "seed": 11, "progress": False}


@pytest.fixture(scope="module")
def draws():
    """The same small draw with the mechanisms (the default) and with the linear model."""
    return {
        "default": datasets.synthetic_bmmc(**SIZE),
        "linear": datasets.synthetic_bmmc(**SIZE, mechanisms=datasets.Mechanisms.linear()),
    }


def _without(**off):
    """The same draw with the default mechanisms except ``off``."""
    return datasets.synthetic_bmmc(**SIZE, mechanisms=datasets.Mechanisms().replace(**off))


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


def test_expression_follows_the_openness_of_linked_peaks(draws):
    """Regulation: a gene's expression correlates with its linked peaks' counts (the gene
    activity) more than without the regulation mechanism."""

    def coupling(adata):
        gex, _ = data.split_modalities(adata, copy=False)
        names = adata.uns["ATAC_gene_activity_var_names"]
        x = pp.log_normalized(gex[:, names]).toarray()
        ga = np.log1p(sp.csr_matrix(adata.obsm["ATAC_gene_activity"]).toarray())
        keep = (x.std(0) > 0) & (ga.std(0) > 0)
        x, ga = x[:, keep] - x[:, keep].mean(0), ga[:, keep] - ga[:, keep].mean(0)
        return float(np.median((x * ga).sum(0) / np.sqrt((x**2).sum(0) * (ga**2).sum(0))))

    on, off = coupling(draws["default"]), coupling(_without(regulation=0.0))
    assert on > 2 * off and on > 0.01, (on, off)


def _top_hvgs(adata, n: int = 20):
    from mmae_utils import features

    gex, _ = data.split_modalities(adata)
    features.select_gex(gex, n_top=500, progress=False)
    return list(gex.var.sort_values("highly_variable_rank").head(n).index)


def test_marker_genes_are_among_the_top_hvgs(draws):
    """Named markers lead the HVGs (haemoglobins first, as in real marrow), not fillers."""
    top = _top_hvgs(draws["default"])
    n_on = sum(g in datasets.MARKERS for g in top)
    n_off = sum(
        g in datasets.MARKERS for g in _top_hvgs(_without(marker_background=1, abundant_markers=0))
    )
    assert n_on >= 12 and n_on >= n_off + 4, (top, n_on, n_off)
    assert {"HBB", "HBA1"} <= set(top), top


def test_markers_are_nearly_silent_outside_their_types(draws):
    """CD3E (T/NK) and MS4A1 (B): mean counts outside their types over inside them, far
    below the linear model's (``marker_background``)."""

    def leak(adata):
        gex, _ = data.split_modalities(adata, copy=False)
        ratios = []
        for gene in ("CD3E", "MS4A1"):
            inside = adata.obs["cell_type"].isin(datasets.MARKERS[gene]).to_numpy()
            x = sp.csr_matrix(gex[:, gene].layers["counts"]).toarray().ravel()
            ratios.append(x[~inside].mean() / x[inside].mean())
        return max(ratios)

    on, linear = leak(draws["default"]), leak(draws["linear"])
    assert on < 0.2 and on < linear / 2, (on, linear)


def test_more_cells_cycle_and_chromatin_follows_weakly(draws):
    cycling = {n: float((a.obs["GEX_phase"] != "G1").mean()) for n, a in draws.items()}
    assert cycling["default"] > 1.8 * cycling["linear"], cycling

    def s_phase_opening(adata):
        """Mean openness of peaks linked to S-phase genes, S-phase cells over G1 cells."""
        s_genes, _ = datasets.cell_cycle_genes()
        ga_names = list(adata.uns["ATAC_gene_activity_var_names"])
        cols = [ga_names.index(g) for g in s_genes if g in ga_names]
        ga = sp.csr_matrix(adata.obsm["ATAC_gene_activity"])[:, cols].toarray().sum(1)
        phase = adata.obs["GEX_phase"].to_numpy()
        return ga[phase == "S"].mean() / ga[phase == "G1"].mean()

    on, off = s_phase_opening(draws["default"]), s_phase_opening(_without(atac_cell_cycle=0.0))
    assert on - 1 > 2 * (off - 1), (on, off)  # S-phase cells open the S genes' peaks


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

    def spread(adata):
        frip = adata.obs.groupby("Site", observed=True)["ATAC_reads_in_peaks_frac"].mean()
        return frip.max() - frip.min()

    on, off = spread(draws["default"]), spread(_without(capture=0.0))
    assert on > 0.03 > off, (on, off)


def test_ambient_rna_reaches_every_cell(draws):
    """Haemoglobin (an erythroid marker) shows up in more T cells through ambient RNA."""

    def share(adata):
        gex, _ = data.split_modalities(adata, copy=False)
        t_cells = adata.obs["cell_type"].map(datasets.LINEAGE).to_numpy() == "T/NK"
        hbb = sp.csr_matrix(gex[t_cells, "HBB"].layers["counts"]).toarray().ravel()
        return float((hbb > 0).mean())

    on, off = share(draws["default"]), share(_without(ambient=0.0))
    assert on > off + 0.15, (on, off)


def _expression_linearity(mech) -> float:
    """White box: R² of a linear fit of the GEX log profile on everything it is built from
    (latent state, type membership, cell cycle, batch x lineage one-hots), averaged over the
    programme genes of 1,500 cells."""
    from mmae_utils.sim import _counts, _design
    from mmae_utils.sim._facts import BATCH_COUNTS, CELL_TYPE_COUNTS

    d = _design.design(
        1500, 600, 1800, seed=5, cell_types=list(CELL_TYPE_COUNTS), batches=list(BATCH_COUNTS),
        batch_effect=1.0, modality_bias=0.6, atac_density=1.0, noise=1.0, mechanisms=mech,
    )  # fmt: skip
    rows = slice(0, d.obs.shape[0])
    logit = _counts.gex_logits(d, rows, _counts.atac_logits(d, rows))
    e = d.effects
    group = d.batch_codes * e.n_lineages + e.lineage_codes
    onehot = np.eye(group.max() + 1)[group]
    x = np.column_stack([d.z_gex, d.membership, d.cc, onehot, np.ones(group.size)])
    genes = np.flatnonzero((d.gex_w != 0).any(axis=1))
    y = logit[:, genes] - logit[:, genes].mean(axis=0)
    fit = x @ np.linalg.lstsq(x, y, rcond=None)[0]
    return float(np.mean(1 - ((y - fit) ** 2).sum(0) / (y**2).sum(0)))


def test_expression_responds_nonlinearly_to_the_latent_state():
    """Saturating and combinatorial responses: a linear model of the latent state no
    longer explains the expression programmes exactly (it does with ``nonlinearity`` 0).
    The nonlinear share is small (about 0.4 % of the programmes' variance) but far above
    the linear model's numerical zero; regulation by chromatin adds more (about 10 %)."""
    on = _expression_linearity(datasets.Mechanisms().replace(regulation=0.0))
    off = _expression_linearity(datasets.Mechanisms().replace(regulation=0.0, nonlinearity=0.0))
    regulated = _expression_linearity(datasets.Mechanisms())
    assert off > 0.9999 and 1 - on > 0.003 and regulated < on, (on, off, regulated)


def _type_silhouette(adata, types) -> float:
    from sklearn.metrics import silhouette_score

    gex, _ = data.split_modalities(adata, copy=False)
    z = pp.pca(pp.log_normalized(gex), 20)[0]
    keep = adata.obs["cell_type"].isin(types).to_numpy()
    return float(silhouette_score(z[keep], adata.obs["cell_type"].to_numpy()[keep]))


def test_t_cell_states_overlap_and_progenitors_form_a_continuum(draws):
    from mmae_utils.sim._facts import PROGENITORS, T_STATES

    on = _type_silhouette(draws["default"], T_STATES)
    off = _type_silhouette(_without(t_cell_overlap=0.0), T_STATES)
    assert on < 0.75 * off, (on, off)
    on = _type_silhouette(draws["default"], PROGENITORS)
    off = _type_silhouette(_without(progenitor_continuum=0.0), PROGENITORS)
    assert on < 0.75 * off, (on, off)


def test_cell_types_are_subtle(draws):
    """``type_separation``: all 22 types separate less than with the linear model's scale."""
    types = list(datasets.CELL_TYPE_COUNTS)
    on = _type_silhouette(draws["default"], types)
    off = _type_silhouette(_without(type_separation=1.0), types)
    assert on < off - 0.02, (on, off)
