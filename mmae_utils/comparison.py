"""Comparing two methods over seeds: seed-paired differences, 95 % intervals, the verdict.

- :func:`seed_intervals`: :func:`~mmae_utils.evaluation.seed_difference` of two methods
  (``None`` for a single run);
- :func:`interval_call`: better, worse or tie from an interval;
- :func:`verdict`: the Markdown paragraph of notebook 05 and ``summary.md``;
- :func:`difference_table`: every score's difference, interval and call as Markdown;
- :func:`draws_overview`: one row per draw of the method against the best other method.

A method is better or worse on a score only when the interval of its seed-paired
difference excludes 0. NMI and ARI come from an approximate clustering search; their
differences are printed with its measured error (:data:`mmae_utils.metrics.CLUSTERING_ERROR`).
"""

from __future__ import annotations

__all__ = [
    "GOAL_MARGIN",
    "SINGLE_RUN_MARGIN",
    "best_other",
    "references",
    "clustering_note",
    "difference_table",
    "draws_overview",
    "goal",
    "interval_call",
    "interval_text",
    "seed_intervals",
    "verdict",
]


#: The single-run rule (one seed, no interval): a metric counts as won or lost only when it
#: differs by more than this (``overall``: by more than ``verdict``'s ``tie``).
SINGLE_RUN_MARGIN = 0.005


def seed_intervals(per_seed, method: str, reference: str, confidence: float):
    """:func:`~mmae_utils.evaluation.seed_difference` of the two methods, or ``None`` for a
    single run (one table, or one seed: no interval)."""
    if per_seed is None:
        return None
    from .evaluation import seed_difference

    d = seed_difference(per_seed, method=method, reference=reference, confidence=confidence)
    return d if int(d["n_seeds"].max()) > 1 else None


def interval_call(ci_low: float, ci_high: float) -> str:
    """``"better"`` when a difference's interval lies above 0, ``"worse"`` below, else
    ``"tie"`` (also when there is no interval: NaN bounds)."""
    if ci_low > 0:  # False for NaN
        return "better"
    if ci_high < 0:
        return "worse"
    return "tie"


def interval_text(row, confidence: float, *, n_all: int | None = None) -> str:
    """``+0.012 (95% CI +0.004 to +0.020, 5 seeds)`` for a row of ``seed_difference``;
    the number of seeds is left out when it is ``n_all`` (stated once elsewhere)."""
    n = int(row["n_seeds"])
    if n < 2:
        return f"{row['mean']:+.3f} ({n} seed, no interval)"
    seeds = "" if n == n_all else f", {n} seeds"
    return (
        f"{row['mean']:+.3f} ({confidence:.0%} CI {row['ci_low']:+.3f} to "
        f"{row['ci_high']:+.3f}{seeds})"
    )


def clustering_note(score: str) -> str:
    """``"clustering error up to 0.024"`` for NMI and ARI (their measured approximation,
    :data:`mmae_utils.metrics.CLUSTERING_ERROR`), ``""`` for the other scores."""
    from .metrics import CLUSTERING_ERROR

    error = CLUSTERING_ERROR.get(score)
    return "" if error is None else f"clustering error up to {error:.3f}"


def _qualified(score: str, text: str) -> str:
    """``text`` (ending in ``)``) with the clustering note of ``score`` added inside."""
    note = clustering_note(score)
    return text if not note else f"{text[:-1]}; {note})"


def _verdict_head(a, b, method: str, reference: str, *, tie: float, d, confidence: float) -> str:
    """The bold first sentence: win, tie or loss on ``overall``. Over seeds: by the
    interval of the paired difference (``d``); a single run: by the ``tie`` threshold."""
    means = f"{a['overall']:.3f} vs {b['overall']:.3f}"
    if d is None:
        diff = a["overall"] - b["overall"]
        call = "tie" if abs(diff) < tie else "better" if diff > 0 else "worse"
        detail = (
            f" in a single run** ({means}, {diff:+.3f}; one seed gives no confidence interval, "
            f"so differences under {tie} are called a tie and a larger one may still be noise)."
        )
    else:
        row = d.loc["overall"]
        call = interval_call(row["ci_low"], row["ci_high"])
        includes = "; the interval includes 0" if call == "tie" else ""
        detail = (
            f"**: overall {interval_text(row, confidence)}{includes}; "
            f"means {means} over {int(row['n_seeds'])} seeds."
        )
    subject = {
        "better": f"**`{method}` beats `{reference}` overall",
        "tie": f"**`{method}` and `{reference}` tie overall",
        "worse": f"**`{method}` is worse than `{reference}` overall",
    }[call]
    return subject + detail


def _won_and_lost(a, b, cols: list[str], d, confidence: float) -> str:
    """The sentence naming the metrics ``a`` is better and worse on: over seeds, those whose
    interval excludes 0; in a single run, those differing by more than 0.005."""
    if d is None:
        diffs = {c: a[c] - b[c] for c in cols}
        text = {c: _qualified(c, f"{c} ({v:+.3f})") for c, v in diffs.items()}
        won = [text[c] for c, v in diffs.items() if v > SINGLE_RUN_MARGIN]
        lost = [text[c] for c, v in diffs.items() if v < -SINGLE_RUN_MARGIN]
        rule = f"by more than {SINGLE_RUN_MARGIN} in this single run"
    else:
        n_all = int(d.loc["overall", "n_seeds"]) if "overall" in d.index else None
        calls = {c: interval_call(d.loc[c, "ci_low"], d.loc[c, "ci_high"]) for c in cols}
        text = {
            c: _qualified(c, f"{c} {interval_text(d.loc[c], confidence, n_all=n_all)}")
            for c in cols
        }
        won = [text[c] for c in cols if calls[c] == "better"]
        lost = [text[c] for c in cols if calls[c] == "worse"]
        rule = f"where the {confidence:.0%} interval excludes 0; the other metrics tie"
    return (
        f"It is better on {', '.join(won) if won else 'no metric'}"
        f" and worse on {', '.join(lost) if lost else 'no metric'} ({rule})."
    )


def _best_single_modality(metrics, method: str, reference: str) -> str | None:
    """The sentence saying whether the joint embeddings beat the best single modality (None
    without ``gex_pca`` or ``atac_lsi`` rows)."""
    alone = [m for m in ("gex_pca", "atac_lsi") if m in metrics.index]
    if not alone:
        return None
    best_alone = max(alone, key=lambda m: metrics.loc[m, "overall"])
    line = (
        f"The best single modality, `{best_alone}`, scores {metrics.loc[best_alone, 'overall']:.3f}"
    )
    beats = [
        m
        for m in (method, reference)
        if metrics.loc[m, "overall"] > metrics.loc[best_alone, "overall"]
    ]
    line += (
        f": integration pays for {', '.join(f'`{m}`' for m in beats)}."
        if beats
        else ": neither joint embedding beats it, so integration has not paid here."
    )
    return line


def _verdict_context(metrics, a, method: str, reference: str) -> list[str]:
    """The context sentences: single modalities, the random floor, how many metrics
    ``overall`` averages, and the competition's scale."""
    import numpy as np

    from .evaluation import COMPETITION_SCORES, METRICS

    parts = []
    line = _best_single_modality(metrics, method, reference)
    if line is not None:
        parts.append(line)
    if "random" in metrics.index:
        parts.append(f"The random floor scores {metrics.loc['random', 'overall']:.3f}.")
    n = int(a["n_metrics"]) if "n_metrics" in metrics and np.isfinite(a["n_metrics"]) else None
    if n is not None and n < 6:
        absent = ", ".join(m for m in METRICS if m in a and not np.isfinite(a[m]))
        parts.append(
            f"Only {n} of the 6 metrics could be computed on these data (not {absent}), so "
            f"`overall` is {'that one metric' if n == 1 else f'the mean of those {n}'}."
        )
    real = ", ".join(f"{s['overall']:.3f} ({name})" for name, s in COMPETITION_SCORES.items())
    over = "the same six metrics" if n is None or n == 6 else "all six metrics"
    parts.append(
        f"For scale, the competition's in-house scores on the real data, averaged over {over}, "
        f"are {real}; other data give other absolute values."
    )
    return parts


def verdict(
    metrics,
    *,
    method: str = "mmae",
    reference: str = "pca_concat",
    tie: float = 0.01,
    confidence: float = 0.95,
    context: bool = True,
) -> str:
    """A Markdown paragraph, computed from a metrics table, answering "does ``method`` beat ``reference``?".

    Over several seeds the answer is statistical: each score's difference ``method -
    reference`` is paired by seed, and ``method`` is called better (or worse) on a score
    only when the Student-t confidence interval of the mean difference
    (:func:`mmae_utils.evaluation.seed_difference`) lies above (or below) 0; otherwise the
    two tie on it. The text states the interval, e.g. ``overall +0.012 (95% CI +0.004 to
    +0.020, 5 seeds)``. One seed gives no interval: the text says it is a single run and
    falls back to thresholds (``tie`` for ``overall``, 0.005 for each metric).

    Parameters
    ----------
    metrics
        :func:`mmae_utils.evaluation.evaluate`'s table (methods as rows: a single run), or
        the scores of several seeds indexed by ``(seed, method)`` (:func:`replicate`).
    method, reference
        Rows to compare.
    tie
        A single run only: differences of ``overall`` smaller than this are called a tie.
    confidence
        Coverage of the intervals over seeds (default 95 %).
    context
        Add how both compare with each modality alone, the random floor and the
        competition's scale (off to compare two variants of one method).

    Returns
    -------
    Markdown text: the overall comparison, the metrics won and lost, how the joint
    embeddings compare with each modality alone and with the random floor.
    """
    import numpy as np
    import pandas as pd

    from .evaluation import METRICS

    per_seed = metrics if isinstance(metrics.index, pd.MultiIndex) else None
    metrics = _method_means(metrics)
    if method not in metrics.index or reference not in metrics.index:
        missing = [m for m in (method, reference) if m not in metrics.index]
        return f"Cannot compare: {missing} not in the table ({list(metrics.index)})."
    a, b = metrics.loc[method], metrics.loc[reference]
    if not np.isfinite(a["overall"]) or not np.isfinite(b["overall"]):
        return f"Cannot compare `{method}` with `{reference}`: no metric could be computed."
    d = seed_intervals(per_seed, method, reference, confidence)
    parts = [_verdict_head(a, b, method, reference, tie=tie, d=d, confidence=confidence)]
    cols = [
        c for c in (*METRICS, "ARI") if c in metrics and np.isfinite(a[c]) and np.isfinite(b[c])
    ]
    parts.append(_won_and_lost(a, b, cols, d, confidence))
    if not context:
        return " ".join(parts)
    parts += _verdict_context(metrics, a, method, reference)
    return " ".join(parts)


def difference_table(per_seed, method: str, reference: str) -> list[str]:
    """Markdown lines: each score's seed-paired difference, its 95 % interval and the call
    (empty when a method is missing or there is one seed only)."""
    methods = set(per_seed.index.get_level_values("method"))
    if not {method, reference} <= methods:
        return []
    d = seed_intervals(per_seed, method, reference, 0.95)
    d = None if d is None else d.dropna(subset=["mean"])
    if d is None or d.empty:
        return []
    lines = [
        f"`{method}` - `{reference}`, paired by seed (95% Student-t interval of the mean; "
        "better or worse only where it excludes 0):",
        "",
        "| score | difference | 95% CI | seeds | call | note |",
        "|---|---|---|---|---|---|",
    ]
    for score, r in d.iterrows():
        ci = f"{r['ci_low']:+.3f} to {r['ci_high']:+.3f}" if int(r["n_seeds"]) > 1 else "none"
        call = interval_call(r["ci_low"], r["ci_high"])
        note = clustering_note(score)
        lines.append(
            f"| {score} | {r['mean']:+.3f} | {ci} | {int(r['n_seeds'])} | {call} | {note} |"
        )
    return [*lines, ""]


#: The project's bar: ``mmae`` minus the best other method, overall, at least this much.
GOAL_MARGIN = 0.03


def _method_means(metrics):
    """One row per method: ``metrics`` itself, or the mean over seeds of a ``(seed,
    method)``-indexed table."""
    import pandas as pd

    if isinstance(metrics.index, pd.MultiIndex):
        return metrics.groupby(level="method", sort=False).mean(numeric_only=True)
    return metrics


def references(metrics, *, method: str = "mmae") -> list[str]:
    """What ``method`` is compared with: ``pca_concat`` (the seed's question) and
    :func:`best_other`, each once and only if scored."""
    scored = set(_method_means(metrics).index)
    candidates = ("pca_concat", best_other(metrics, method=method))
    return [r for r in dict.fromkeys(candidates) if r is not None and r in scored]


def best_other(metrics, *, method: str = "mmae") -> str | None:
    """The method a user would pick instead of ``method``: the highest mean ``overall``
    among the rows that are neither ``method``, another autoencoder (``mmae_*``, e.g. the
    before) nor ``random``; ``None`` if there is none.

    ``metrics`` is one table (methods as rows) or the scores of several seeds indexed by
    ``(seed, method)``.
    """
    metrics = _method_means(metrics)
    others = [
        m for m in metrics.index if m != method and not m.startswith("mmae") and m != "random"
    ]
    overall = metrics.loc[others, "overall"].dropna() if others else None
    return None if overall is None or overall.empty else str(overall.idxmax())


def _goal_state(per_seed, method: str, margin: float):
    """``(best other, its overall difference row, metrics significantly worse, met)``; the
    row is ``None`` for a single run, the best other ``None`` when there is none."""
    import numpy as np

    from .evaluation import METRICS

    other = best_other(per_seed, method=method)
    if other is None:
        return None, None, [], False
    d = seed_intervals(per_seed if per_seed.index.nlevels == 2 else None, method, other, 0.95)
    if d is None:
        return other, None, [], False
    row = d.loc["overall"]
    worse = [
        m
        for m in METRICS
        if m in d.index and np.isfinite(d.loc[m, "ci_high"]) and d.loc[m, "ci_high"] < 0
    ]
    return other, row, worse, bool(row["mean"] >= margin and row["ci_low"] > 0 and not worse)


def goal(per_seed, *, method: str = "mmae", margin: float = GOAL_MARGIN) -> str:
    """A Markdown sentence: is the project's goal met on these scores?

    The goal: over seeds, ``method`` minus :func:`best_other` is at least ``margin``
    overall, with the 95 % interval above 0 and no metric worse (no interval below 0).
    Needs several seeds (``(seed, method)`` index); one seed cannot meet it.
    """
    other, row, worse, met = _goal_state(per_seed, method, margin)
    if other is None:
        return "No other method was scored: the goal cannot be judged."
    if row is None:
        return f"One seed gives no interval: the goal (vs `{other}`) cannot be judged."
    why = []
    if row["mean"] < margin:
        why.append(f"the mean difference is below +{margin:.2f}")
    if not row["ci_low"] > 0:
        why.append("its interval does not lie above 0")
    if worse:
        why.append(f"it is worse on {', '.join(worse)}")
    return (
        f"**Goal {'met' if met else 'not met'}**: `{method}` minus the best other method, "
        f"`{other}`, is {interval_text(row, 0.95)} overall (the goal: at least "
        f"+{margin:.2f}, the interval above 0, no metric worse)"
        + ("." if met else f"; {', and '.join(why)}.")
    )


def draws_overview(tables, *, method: str = "mmae") -> list[str]:
    """Markdown table, one row per draw (``{draw: per-seed scores}``, several seeds each):
    ``method`` minus the best other method of that draw, overall, with its 95 % interval,
    the call, the metrics significantly worse and whether the goal (:func:`goal`) is met."""
    lines = [
        f"| draw | best other | {method} overall | best other overall | Δ overall [95% CI] "
        "| call | worse on | goal |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, per_seed in tables.items():
        other, d, worse, met = _goal_state(per_seed, method, GOAL_MARGIN)
        means = _method_means(per_seed)["overall"]
        call = interval_call(d["ci_low"], d["ci_high"])
        lines.append(
            f"| {name} | `{other}` | {means[method]:.3f} | {means[other]:.3f} | "
            f"{d['mean']:+.3f} [{d['ci_low']:+.3f}, {d['ci_high']:+.3f}] | {call} | "
            f"{', '.join(worse) or 'none'} | {'met' if met else 'not met'} |"
        )
    return lines
