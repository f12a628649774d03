"""Per-configuration estimators (docs/design.md §11): seed summaries with intervals, and Ê_k.

Score: v = the chosen metric of one run (higher is better). The score of a configuration is a
statistic over its seeds, `stat` = "mean" (the expected score of one run, the default) or "median".
Because small-β collapse is bimodal across seeds, every table that shows a mean also shows the
median and the collapse rate (the fraction of runs whose `collapsed` metric is 1).

Inputs are runs frames annotated by `grid.annotate`. Pure functions; no I/O, no plotting.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.load import SETTING_KEYS
from analysis.sft_level import delta_column
from analysis.selection import STATS, SeedBootstrap, validation_column
from analysis.stats import seed_interval

COLLAPSE_COLUMN = "collapsed"
# Metrics where lower is better: the tuning analysis maximises, so it refuses them as the score.
LOWER_IS_BETTER = ("kl", "length", "no_eos_rate", "collapsed")

CONFIG_COLUMNS = ("setting", "trap", *SETTING_KEYS, "method.name", "arm", "arm_kind", "is_imi", "config_id",
                  "config_label", "method.beta", "is_default")


# ---------------------------------------------------------------------------------------------
# Expected best of k trials


def expected_max_weights(n: int, k: int) -> np.ndarray:
    """Weights w_j, j = 1..n, with Ê_k = Σ_j v_(j)·w_j over scores sorted ascending.

    w_j = C(j−1, k−1) / C(n, k): the probability that the j-th smallest of n values is the largest
    of a uniformly random size-k subset (drawn without replacement). Shape (n,); sums to 1.
    """
    if not 1 <= k <= n:
        raise ValueError(f"expected best of k needs 1 <= k <= n, got k={k}, n={n}")
    total = math.comb(n, k)
    return np.array([math.comb(j - 1, k - 1) / total for j in range(1, n + 1)])


def expected_max(scores: np.ndarray, k: int) -> np.ndarray | float:
    """Ê_k: the expected maximum of k grid points drawn without replacement from the N given.

    Unbiased estimator Ê_k = Σ_j v_(j) · C(j−1, k−1) / C(N, k), scores ascending (docs/design.md §11; Dodge et
    al. 2019, "Show your work", use the with-replacement analogue). Ties are exact: tied values are
    interchangeable in the sorted order. Shapes: scores (..., N) -> (...); Ê_1 = mean, Ê_N = max.
    """
    values = np.sort(np.asarray(scores, dtype=float), axis=-1)
    result = values @ expected_max_weights(values.shape[-1], k)
    return float(result) if np.ndim(result) == 0 else result


def expected_max_curve(scores: np.ndarray) -> np.ndarray:
    """Ê_k for k = 1..N at once. Shapes: scores (..., N) -> (..., N), entry k−1 is Ê_k."""
    values = np.sort(np.asarray(scores, dtype=float), axis=-1)
    n = values.shape[-1]
    weights = np.stack([expected_max_weights(n, k) for k in range(1, n + 1)])  # (k, j)
    return values @ weights.T


# ---------------------------------------------------------------------------------------------
# Per-configuration summaries


def check_metric(frame: pd.DataFrame, metric: str) -> None:
    """Raise ValueError naming the metric when it is absent or lower-is-better."""
    if metric in LOWER_IS_BETTER:
        raise ValueError(f"metric {metric!r} is lower-is-better; the tuning analysis maximises its score "
                         f"(use gold_reward, win_rate, pref_acc or an lm_eval/<task>/<metric> accuracy)")
    if metric not in frame.columns:
        available = sorted(c for c in frame.columns if c in frame.attrs.get("metric_columns", ()))
        raise ValueError(f"metric {metric!r} is not in the run records; available metrics: {available}")


def seed_summary(frame: pd.DataFrame, metric: str, boot: SeedBootstrap | None = None, stat: str = "mean",
                 confidence: float = 0.95) -> pd.DataFrame:
    """Per configuration: the metric over seeds, its interval, the collapse rate and the SFT gap.

    In:  annotated runs (one row per run) with `metric`, optionally "val/<metric>" and
         "delta_sft/<metric>" (`reference.add_delta`); runs whose metric is NaN are left out. `boot`
         must be built on the same runs; without it the interval columns are NaN.
    Out: one row per configuration, sorted by setting, method, β: CONFIG_COLUMNS + n_runs, score (the
         `stat`), score_ci_low, score_ci_high (`stats.seed_interval`, n = the configuration's seeds),
         mean, mean_ci_low, mean_ci_high, std (ddof=1; NaN for one run), median, q25, q75 (linear quantiles), min, max,
         collapse_rate (mean of `collapsed`; NaN when no run reports it), val_score (`stat` of the
         validation score; NaN without one), delta_sft, delta_sft_ci_low, delta_sft_ci_high (mean of
         the per-run Δ vs SFT; NaN without an SFT value).
    """
    if stat not in STATS:
        raise ValueError(f"stat must be one of {STATS}, got {stat!r}")
    runs = frame[frame[metric].notna()]
    groups = runs.groupby("config_id", sort=False)
    scores = groups[metric]
    out = groups[[c for c in CONFIG_COLUMNS if c in runs.columns and c != "config_id"]].first()
    out["n_runs"] = scores.size()
    out["score"] = scores.mean() if stat == "mean" else scores.median()
    out["mean"] = scores.mean()
    out["std"] = scores.std(ddof=1)
    out["median"] = scores.median()
    out["q25"] = scores.quantile(0.25)
    out["q75"] = scores.quantile(0.75)
    out["min"] = scores.min()
    out["max"] = scores.max()
    out["collapse_rate"] = groups[COLLAPSE_COLUMN].mean() if COLLAPSE_COLUMN in runs.columns else math.nan
    val = validation_column(metric)
    out["val_score"] = groups[val].agg(stat) if val in runs.columns else math.nan
    delta = delta_column(metric)
    out["delta_sft"] = groups[delta].mean() if delta in runs.columns else math.nan
    for column in ("score_ci_low", "score_ci_high", "mean_ci_low", "mean_ci_high", "delta_sft_ci_low",
                   "delta_sft_ci_high"):
        out[column] = math.nan
    if boot is not None:
        for config_id in out.index:
            n = boot.min_seeds([config_id])
            for column, prefix, how in ((metric, "mean", "mean"), (metric, "score", stat), (delta, "delta_sft", "mean")):
                values = boot.values(runs, config_id, column)
                if not np.isfinite(values).all():
                    continue  # no SFT value (Δ vs SFT unknown): no interval
                point, replicates = boot.stat(runs, [config_id], column, how)
                out.loc[config_id, [f"{prefix}_ci_low", f"{prefix}_ci_high"]] = seed_interval(
                    point[0], replicates[:, 0], n, confidence)
    order = ["setting", "method.name", "method.beta", "config_label"]
    return out.sort_values(order, kind="stable", na_position="last").reset_index()
