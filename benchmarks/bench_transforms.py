"""The default model's SVD input transforms, exact against randomized: speed and quality.

Usage::

    python benchmarks/bench_transforms.py [--n-cells 69249] [--skip-quality]

**Speed** (one run, so the ratios hold on a shared machine): ``InputTransform.fit`` of the
default model's GEX transform (PCA, 100 components of 2,500 log-normalised genes) and ATAC
transform (LSI, 100 components of 5,000 binarised peaks) on the benchmark cells of
``bench_evaluation.py`` (69,249 by default), with ``solver="exact"``, ``"randomized"`` and
``"auto"`` (what training uses), each once (the in-process cache keys on the solver).

**Quality, on development draws only** (``dev-a``, ``dev-c``; never an evaluation draw):
the default model, seeds 0-2, its transforms fitted exact or randomized before training
(``--skip-quality`` leaves it out), otherwise trained and scored as ``ablation.py`` does;
the seed-paired difference randomized - exact of every score with its 95 % t-interval.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pandas as pd  # noqa: E402

SOLVERS = ("exact", "randomized", "auto")


def speed(n_cells: int) -> None:
    """Seconds of each transform's fit per solver, and their ratio."""
    from bench_evaluation import load_data

    from mmae_utils import data, pp
    from mmae_utils.layers import InputTransform

    adata, _ = load_data(n_cells)
    gex, atac = data.split_modalities(adata, copy=False)
    inputs = {"gex": pp.log_normalized(gex), "atac": pp.binarized(atac)}
    print(f"{adata.n_obs:,} cells; GEX {gex.n_vars:,} genes, ATAC {atac.n_vars:,} peaks\n")
    print(f"{'transform':<10}" + "".join(f"{s:>14}" for s in SOLVERS) + "   exact / randomized")
    totals = dict.fromkeys(SOLVERS, 0.0)
    for modality, x in inputs.items():
        seconds = {}
        for solver in SOLVERS:
            t = InputTransform(modality, "svd", x.shape[1], n_components=100)
            t0 = time.perf_counter()
            t.fit(x, solver=solver)
            seconds[solver] = time.perf_counter() - t0
            totals[solver] += seconds[solver]
        ratio = seconds["exact"] / seconds["randomized"]
        print(f"{modality:<10}" + "".join(f"{seconds[s]:>12.1f} s" for s in SOLVERS)
              + f"   {ratio:.1f}x")  # fmt: skip
    print(f"{'both':<10}" + "".join(f"{totals[s]:>12.1f} s" for s in SOLVERS))
    print(f"\ntarget (issue 15): both fitted in at most 10 s: {totals['auto']:.1f} s with auto")


def quality() -> pd.DataFrame:
    """Scores of the default model with exact and with randomized transforms."""
    import ablation
    import keras

    from mmae_utils import config, data, evaluation, model, training
    from mmae_utils.inputs import prepare_inputs

    rows = []
    for draw in ablation.DEFAULT_DATASETS:
        selected, gex_all = ablation.prepare(draw, ablation.CACHE, quick=False)
        gex, atac = data.split_modalities(selected, copy=False)
        batches = sorted(selected.obs["batch"].astype(str).unique())
        for seed in (0, 1, 2):
            for solver in ("exact", "randomized"):
                m = model.build_model(gex.n_vars, atac.n_vars, preset=config.DEFAULT_PRESET,
                                      seed=seed, n_cells=selected.n_obs, batch_categories=batches)  # fmt: skip
                x_gex, x_atac, _ = prepare_inputs(m, gex, atac, layer="counts")
                m.gex_transform.fit(x_gex, solver=solver)
                m.atac_transform.fit(x_atac, solver=solver)
                training.train(m, gex, atac, seed=seed, verbose=0, **ablation.TRAIN)
                z = training.embed(m, gex, atac, seed=seed)
                del m
                keras.backend.clear_session()
                table = evaluation.evaluate(selected, {"mmae": z}, gex=gex_all, seed=seed,
                                            store_neighbors=False, progress=False)  # fmt: skip
                rows.append({"draw": draw, "seed": seed, "solver": solver, **table.loc["mmae"]})
                print(f"  {draw} seed {seed} {solver:<10} overall {rows[-1]['overall']:.4f}")
    return pd.DataFrame(rows)


def quality_table(df: pd.DataFrame) -> None:
    """Mean scores per solver and the paired difference with its 95 % t-interval."""
    from mmae_utils.comparison import interval_call
    from mmae_utils.evaluation import seed_difference

    for draw, d in df.groupby("draw"):
        runs = d.drop(columns="draw").rename(columns={"solver": "method"})
        runs = runs.set_index(["seed", "method"])
        diff = seed_difference(runs, method="randomized", reference="exact")
        means = runs.groupby(level="method").mean()
        print(f"\n{draw}: mean over seeds, and randomized - exact paired by seed [95% CI]")
        for c, row in diff.iterrows():
            call = interval_call(row["ci_low"], row["ci_high"])
            print(f"  {c:<26} exact {means.loc['exact', c]:.3f}  "
                  f"randomized {means.loc['randomized', c]:.3f}  {row['mean']:+.3f} "
                  f"[{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] {call}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-cells", type=int, default=69249)
    parser.add_argument("--skip-quality", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    speed(args.n_cells)
    if not args.skip_quality:
        print("\nquality on development draws (3 seeds each):")
        quality_table(quality())


if __name__ == "__main__":
    main()
