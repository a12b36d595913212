"""Every documented value of every notebook parameter runs end to end.

The notebooks' ``parameters`` cells list the values each parameter accepts. nbval runs the
defaults on the demo data; here four report chains (01-05, papermill, as ``mmae-report``)
on a tiny simulated dataset together set every other documented value at least once, and
ask for more than the data have (genes, components, latent dimensions), which must adapt
with a warning instead of raising. One chain runs without cell-type labels and one without
batches: the metrics that need them are NaN, notebook 05 says which and why, and without
labels it writes the Leiden clusters of every embedding.
"""

from __future__ import annotations

import re

import anndata as ad
import nbformat
import pandas as pd
import pytest

from mmae_utils import evaluation, report
from mmae_utils.datasets import synthetic_bmmc

#: Documented non-default values (the comments of the parameters cells), per parameter.
#: Free-valued parameters (numbers, lists) get other values than their defaults.
DOCUMENTED: dict[str, list] = {
    "DATA": ["<path>"],  # "demo" is nbval's; "bmmc" downloads 2.8 GB and is not run here
    "BACKED": [True, False],
    "HVG_FLAVOR": ["seurat", "cell_ranger"],
    "HVG_BATCH_KEY": ["batch"],
    "PRESET": ["jae", "mmae", "seed", "original"],
    "FUSION": ["concat", "shared"],
    "GEX_LIKELIHOOD": ["mse", "nb"],
    "ATAC_LIKELIHOOD": ["auto", "mse", "bernoulli"],
    "BATCH_CONDITIONING": [True, False],
    "INTEGRATION": ["none", "harmony"],
    "DECODERS": ["joint", "own"],
    "GEX_INPUT": ["log", "standardize", "svd"],
    "ATAC_INPUT": ["binary", "tfidf", "svd"],
    "BATCH_NORM": [True, False],
    "LATENT_SCALING": ["block", "none"],
    "LR_SCHEDULE": ["plateau"],
    "PATIENCE": [None],
    "BEFORE_PRESET": ["original", "seed", "jae"],  # None is nbval's
    "RESOLUTION_SEARCH": ["full"],
    "LABEL_KEY": [None],  # or any obs column; "cell_type" is nbval's
    "BATCH_KEY": [None],  # or any obs column; "batch" is nbval's
}

#: Free-valued parameters, and the values the chains give them other than the default.
FREE = (
    "RUN_DIR", "SEED", "N_GEX", "N_ATAC", "LATENT_DIM", "HIDDEN", "N_COMPONENTS",
    "ADVERSARIAL_BATCH", "MODALITY_DROPOUT", "DROPOUT", "GEX_LOSS_WEIGHT", "ATAC_LOSS_WEIGHT", "EPOCHS",
    "BATCH_SIZE", "LEARNING_RATE", "VALIDATION_FRACTION", "CROSSMODAL_DROPOUT", "BASELINES",
    "UMAP_METHODS", "N_NEIGHBORS", "N_SEEDS",
)  # fmt: skip

#: The tiny dataset: 150 cells x (300 genes + 500 peaks).
CELLS, GENES, PEAKS = 150, 300, 500

#: The report runs 5 seeds by default (REPORT_DEFAULTS); one is enough here but in one chain.
QUICK = {"EPOCHS": 2, "BATCH_SIZE": 32, "HIDDEN": [16], "N_SEEDS": 1}

#: Three chains; each sets many non-default values at once.
CHAINS: dict[str, dict] = {
    "backed_seurat_svd_own": {
        **QUICK,
        "BACKED": True,
        "SEED": 1,
        "N_GEX": 5000,  # more genes than the data have: keeps all 300, warns
        "N_ATAC": 300,
        "HVG_FLAVOR": "seurat",
        "HVG_BATCH_KEY": "batch",
        "LATENT_DIM": 8,
        "HIDDEN": [16, 8],
        "PRESET": "original",  # the seed notebook's model (own decoders, ReLU outputs)
        "DECODERS": "own",
        "FUSION": "concat",
        "BATCH_CONDITIONING": False,
        "GEX_LIKELIHOOD": "mse",
        "ATAC_LIKELIHOOD": "auto",
        "GEX_INPUT": "svd",
        "ATAC_INPUT": "binary",
        "N_COMPONENTS": 200,  # more than 150 cells allow: 148, warns
        "BATCH_NORM": False,
        "LATENT_SCALING": "none",
        "GEX_LOSS_WEIGHT": 1.0,
        "ATAC_LOSS_WEIGHT": 0.0,
        "LEARNING_RATE": 0.01,
        "VALIDATION_FRACTION": 0.5,
        "LR_SCHEDULE": "plateau",
        "PATIENCE": 1,
        "BASELINES": ["pca_concat", "random"],
        "BEFORE_PRESET": None,
        "UMAP_METHODS": ["mmae"],
        "N_NEIGHBORS": 5,
        "RESOLUTION_SEARCH": "full",
    },
    "memory_cell_ranger_seed_preset": {
        **QUICK,
        "BACKED": False,
        "SEED": 2,
        "N_GEX": 100,
        "N_ATAC": 200,
        "HVG_FLAVOR": "cell_ranger",
        "PRESET": "seed",
        "BATCH_CONDITIONING": True,  # but no batches (BATCH_KEY None): built without, warns
        "ATAC_LIKELIHOOD": "mse",
        "LATENT_DIM": 6,
        "GEX_INPUT": "standardize",
        "ATAC_INPUT": "tfidf",
        "BATCH_NORM": True,
        "LATENT_SCALING": "block",
        "MODALITY_DROPOUT": 0.5,
        "DROPOUT": 0.2,
        "VALIDATION_FRACTION": 0.0,
        "BEFORE_PRESET": "jae",  # its 100 components exceed the 100 genes: 98, warns
        "BASELINES": ["gex_pca", "atac_lsi", "pca_competition"],
        "UMAP_METHODS": ["mmae", "mmae_jae", "gex_pca"],
        "N_SEEDS": 2,
        "BATCH_KEY": None,  # no batches: the batch ASW is skipped, in both seeds
    },
    "few_features_wide_latent": {
        **QUICK,
        "N_GEX": 60,
        "N_ATAC": 40,
        "PRESET": "mmae",  # shared code, batch-conditioned decoders, NB + Bernoulli
        "FUSION": "shared",
        "GEX_LIKELIHOOD": "nb",
        "ATAC_LIKELIHOOD": "bernoulli",
        "LATENT_DIM": 100,  # wider than the features: the baselines get fewer, warns
        "GEX_INPUT": "log",
        "ATAC_INPUT": "svd",  # 100 components of 40 peaks: 39, warns
        "PATIENCE": None,
        "CROSSMODAL_DROPOUT": 0.0,  # cross-modal prediction by the run's model, without any
        "DECODERS": "joint",
        "INTEGRATION": "none",
        "BEFORE_PRESET": "seed",  # the seed notebook's model with its defects fixed
        "LABEL_KEY": None,  # unlabelled: the label-free metrics, Leiden clusters
    },
    "jae_with_a_batch_adversary": {
        **QUICK,
        "PRESET": "jae",
        "ADVERSARIAL_BATCH": 0.5,  # reads the batches: built from obs["batch"]
        "INTEGRATION": "harmony",  # and embeds with them: the code corrected by Harmony
        "BASELINES": ["pca_concat"],
        "BEFORE_PRESET": "original",  # the report's default, set here as a user would
        "UMAP_METHODS": ["mmae", "pca_concat"],
    },
}

#: Warnings each chain must show: (notebook, text in its outputs).
ADAPTS: dict[str, list[tuple[str, str]]] = {
    "backed_seurat_svd_own": [
        ("02_feature_selection", "Asked for 5000 genes but only 300 exist"),
        ("03_autoencoder", "n_components=200 asked"),
    ],
    "memory_cell_ranger_seed_preset": [
        ("05_evaluation", "n_components=100 asked"),
        ("03_autoencoder", "but the data have no batches (batch_key=None)"),
        ("05_evaluation", "batch_ASW needs batches (batch_key is None)"),
    ],
    "few_features_wide_latent": [
        ("03_autoencoder", "using n_components=39"),
        ("05_evaluation", "n_comps=100 asked"),
        ("05_evaluation", "and graph_connectivity need cell-type labels (label_key is None)"),
        ("05_evaluation", "Leiden clusters"),
    ],
    "jae_with_a_batch_adversary": [
        ("03_autoencoder", "through gradient reversal (weight 0.5)"),
        ("03_autoencoder", "corrected for their batch by Harmony"),
        ("05_evaluation", "corrected for their batch by Harmony"),
    ],
}

#: What each of LABEL_KEY / BATCH_KEY being None takes away (evaluation.Metric.needs).
NEEDS = {"LABEL_KEY": "labels", "BATCH_KEY": "batches"}


def _outputs(path) -> str:
    nb = nbformat.read(path, as_version=4)
    return "\n".join(
        out.get("text", "")
        + "".join(out.get("data", {}).get("text/plain", ""))
        + "".join(out.get("data", {}).get("text/markdown", ""))
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
    )


def test_every_parameter_is_covered_and_every_value_is_set():
    declared = report.tutorial_parameters()
    assert set(declared) == set(DOCUMENTED) | set(FREE), (
        "a notebook parameter was added or removed: list its documented values in "
        "DOCUMENTED (or FREE) and set them in a chain"
    )
    for name, values in DOCUMENTED.items():
        for value in values:
            if name == "DATA":
                continue
            assert any(c.get(name, object()) == value for c in CHAINS.values()), (name, value)
    for name in FREE:
        if name != "RUN_DIR":
            default = eval(declared[name]["default"])  # noqa: S307 - the notebooks' literals
            assert any(name in c and c[name] != default for c in CHAINS.values()), name
    for name in ("DROPOUT", "MODALITY_DROPOUT", "CROSSMODAL_DROPOUT"):  # "0 to below 1"
        assert re.search(r"below 1", declared[name]["help"]), declared[name]["help"]


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("params") / "tiny.h5ad"
    synthetic_bmmc(CELLS, GENES, PEAKS, seed=5).write_h5ad(path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("chain", list(CHAINS))
def test_chain_runs_end_to_end_and_adapts_with_warnings(chain, tiny_path, tmp_path):
    out = report.run_report(
        str(tiny_path), tmp_path / chain, CHAINS[chain], html=False, progress=False
    )
    assert (out / "metrics.csv").exists()
    for notebook, text in ADAPTS[chain]:
        assert text in _outputs(out / f"{notebook}.ipynb"), (notebook, text)
    metrics = pd.read_csv(out / "metrics.csv", index_col=0)
    absent = {
        need for key, need in NEEDS.items() if key in CHAINS[chain] and CHAINS[chain][key] is None
    }
    for name, metric in evaluation.REGISTRY.items():
        if absent & set(metric.needs):
            assert metrics[name].isna().all(), (name, absent)
        elif name != "trajectory_conservation":  # 150 cells may hold too few on a trajectory
            assert metrics[name].notna().all(), (name, absent)
    obs = ad.read_h5ad(out / "embeddings.h5ad").obs
    clusters = [f"leiden_{m}" for m in metrics.index]
    if "labels" in absent:  # every embedding clustered, and saved
        assert all(obs[c].nunique() > 1 for c in clusters), obs.columns
    else:
        assert not any(c in obs for c in clusters)
