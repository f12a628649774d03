"""Tuning estimators over annotated runs (DESIGN §11): seed summaries, best-of-grid, default regret,
and the expected best of k trials from a grid with bootstrap intervals over seeds.

Score: v = the chosen metric of one run (higher is better). The score of a configuration is a
statistic over its seeds, `stat` = "mean" (the expected score of one run, the default) or "median".
Because small-β collapse is bimodal across seeds, every table that shows a mean also shows the
median and the collapse rate (the fraction of runs whose `collapsed` metric is 1).

Inputs are runs frames annotated by `grid.annotate`. Pure functions; no I/O, no plotting.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.grid import published_default_beta
from analysis.load import SETTING_KEYS
from analysis.stats import bootstrap_indices, percentile_interval

STATS = ("mean", "median")
COLLAPSE_COLUMN = "collapsed"
# Metrics where lower is better: the tuning analysis maximises, so it refuses them as the score.
LOWER_IS_BETTER = ("kl", "length", "no_eos_rate", "collapsed")

CONFIG_COLUMNS = ("setting", *SETTING_KEYS, "method.name", "arm", "arm_kind", "config_id", "config_label",
                  "method.beta", "is_default")


def _check_stat(stat: str) -> None:
    if stat not in STATS:
        raise ValueError(f"stat must be one of {STATS}, got {stat!r}")


def _reduce(values: np.ndarray, stat: str, axis: int = -1) -> np.ndarray:
    return np.mean(values, axis=axis) if stat == "mean" else np.median(values, axis=axis)


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

    Unbiased estimator Ê_k = Σ_j v_(j) · C(j−1, k−1) / C(N, k), scores ascending (DESIGN §11; Dodge et
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


def seed_summary(frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Per configuration: the metric's mean, median and spread over seeds, and the collapse rate.

    In:  annotated runs (one row per run) with `metric`; runs whose metric is NaN are left out.
    Out: one row per configuration, sorted by setting, method, β: CONFIG_COLUMNS +
         n_runs, mean, std (ddof=1; NaN for one run), median, q25, q75 (linear quantiles), min, max,
         collapse_rate (mean of `collapsed` over the runs; NaN when no run reports it).
    """
    runs = frame[frame[metric].notna()]
    groups = runs.groupby("config_id", sort=False)
    scores = groups[metric]
    out = groups[list(CONFIG_COLUMNS)].first()
    out["n_runs"] = scores.size()
    out["mean"] = scores.mean()
    out["std"] = scores.std(ddof=1)
    out["median"] = scores.median()
    out["q25"] = scores.quantile(0.25)
    out["q75"] = scores.quantile(0.75)
    out["min"] = scores.min()
    out["max"] = scores.max()
    if COLLAPSE_COLUMN in runs.columns:
        out["collapse_rate"] = groups[COLLAPSE_COLUMN].mean()
    else:
        out["collapse_rate"] = math.nan
    order = ["setting", "method.name", "method.beta", "config_label"]
    return out.sort_values(order, kind="stable", na_position="last").reset_index(drop=True)


def best_of_grid(summary: pd.DataFrame, stat: str = "mean") -> pd.DataFrame:
    """The best configuration of each baseline grid.

    In:  `seed_summary` output. Out: one row per (setting, grid arm): setting, method.name, n_configs,
         best_config_label, best_beta, best (its `stat`), best_median, best_collapse_rate, best_n_runs.
         Ties go to the smallest β (the first in grid order).
    """
    _check_stat(stat)
    rows = []
    for (setting, method), group in summary[summary["arm_kind"] == "grid"].groupby(["setting", "method.name"], sort=True):
        best = group.loc[group[stat].idxmax()]
        rows.append({
            "setting": setting, "method.name": method, "n_configs": len(group),
            "best_config_label": best["config_label"], "best_beta": best["method.beta"], "best": best[stat],
            "best_median": best["median"], "best_collapse_rate": best["collapse_rate"], "best_n_runs": best["n_runs"],
        })
    return pd.DataFrame(rows, columns=["setting", "method.name", "n_configs", "best_config_label", "best_beta",
                                       "best", "best_median", "best_collapse_rate", "best_n_runs"])


def default_regret(summary: pd.DataFrame, stat: str = "mean") -> pd.DataFrame:
    """Default regret of each baseline grid: best-of-grid − score at the published default β.

    In:  `seed_summary` output. Out: one row per (setting, grid arm): setting, method.name,
         default_beta, default_score (its `stat`), default_median, default_collapse_rate, best, regret,
         note. regret is NaN (with a note) when the default β is not on the grid, or when several
         configurations share it (another hyperparameter was swept too), since the default is then
         not one configuration.
    """
    _check_stat(stat)
    best = best_of_grid(summary, stat).set_index(["setting", "method.name"])
    rows = []
    for (setting, method), group in summary[summary["arm_kind"] == "grid"].groupby(["setting", "method.name"], sort=True):
        beta = published_default_beta(method)
        at_default = group[group["is_default"].astype(bool)]
        row = {"setting": setting, "method.name": method, "default_beta": beta if beta is not None else math.nan,
               "default_score": math.nan, "default_median": math.nan, "default_collapse_rate": math.nan,
               "best": best.loc[(setting, method), "best"], "regret": math.nan, "note": ""}
        if beta is None:
            row["note"] = "no published default β known for this method"
        elif at_default.empty:
            row["note"] = f"default β={beta:g} is not on the grid"
        elif len(at_default) > 1:
            row["note"] = f"{len(at_default)} configurations have β={beta:g} (another hyperparameter varies)"
        else:
            d = at_default.iloc[0]
            row.update(default_score=d[stat], default_median=d["median"], default_collapse_rate=d["collapse_rate"],
                       regret=row["best"] - d[stat])
        rows.append(row)
    return pd.DataFrame(rows, columns=["setting", "method.name", "default_beta", "default_score", "default_median",
                                       "default_collapse_rate", "best", "regret", "note"])


# ---------------------------------------------------------------------------------------------
# Expected best of k, with bootstrap intervals over seeds


def configuration_arrays(arm_runs: pd.DataFrame, columns: Sequence[str]) -> list[np.ndarray]:
    """The runs of one arm split by configuration: one (n_runs_j, len(columns)) array per config,
    in config_id order."""
    return [group[list(columns)].to_numpy(dtype=float) for _, group in arm_runs.groupby("config_id", sort=True)]


def resampled_config_stats(configs: Sequence[np.ndarray], stat: str, n_boot: int,
                           rng: np.random.Generator) -> np.ndarray:
    """Bootstrap over seeds: resample each configuration's runs with replacement, then reduce.

    configs[j]: (n_runs_j, C) values of configuration j (column 0 the score; other columns, e.g. cost,
    are resampled with it and always averaged). Returns (n_boot, N, C): column 0 reduced by `stat`,
    the others by the mean.
    """
    indices = bootstrap_indices([len(c) for c in configs], n_boot, rng)
    out = np.empty((n_boot, len(configs), configs[0].shape[1]))
    for j, (values, idx) in enumerate(zip(configs, indices)):
        sample = values[idx]  # (B, n_runs_j, C)
        out[:, j, 0] = _reduce(sample[:, :, 0], stat, axis=1)
        out[:, j, 1:] = sample[:, :, 1:].mean(axis=1)
    return out


def point_config_stats(configs: Sequence[np.ndarray], stat: str) -> np.ndarray:
    """The same reduction as `resampled_config_stats` on the observed runs: (N, C)."""
    return np.stack([np.concatenate([[_reduce(v[:, 0], stat, axis=0)], v[:, 1:].mean(axis=0)]) for v in configs])


def expected_best_table(runs: pd.DataFrame, metric: str, cost_columns: Sequence[str] = (), stat: str = "mean",
                        n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Ê_k per arm and k, with percentile bootstrap intervals over seeds.

    In:  annotated runs with `metric` and the per-run cost columns to accumulate (e.g.
         "charged.device_hours"). Configuration scores are `stat` over seeds; resampling the seeds of
         every configuration (scores and costs together) and recomputing Ê_k gives the interval.
    Out: one row per (setting, arm, k), k = 1..N: setting, arm, arm_kind, method.name, n_configs, k,
         expected_best, ci_low, ci_high, and for each cost column c "expected_<c>" = k · mean_j(c̄_j),
         the expected total cost of k distinct grid points drawn at random (c̄_j: the mean cost of one
         run of configuration j). IMI arms have N = 1.
    """
    _check_stat(stat)
    rng = np.random.default_rng(seed)
    runs = runs[runs[metric].notna()]
    rows = []
    for (setting, arm), arm_runs in runs.groupby(["setting", "arm"], sort=True):
        configs = configuration_arrays(arm_runs, [metric, *cost_columns])
        n = len(configs)
        point = point_config_stats(configs, stat)
        replicates = resampled_config_stats(configs, stat, n_boot, rng)
        curve = expected_max_curve(point[:, 0])
        low, high = percentile_interval(expected_max_curve(replicates[:, :, 0]), confidence, axis=0)
        first = arm_runs.iloc[0]
        for k in range(1, n + 1):
            row = {"setting": setting, "arm": arm, "arm_kind": first["arm_kind"], "method.name": first["method.name"],
                   "n_configs": n, "k": k, "expected_best": curve[k - 1], "ci_low": low[k - 1], "ci_high": high[k - 1]}
            for c, column in enumerate(cost_columns, start=1):
                row[f"expected_{column}"] = k * point[:, c].mean()
            rows.append(row)
    columns = ["setting", "arm", "arm_kind", "method.name", "n_configs", "k", "expected_best", "ci_low", "ci_high",
               *[f"expected_{c}" for c in cost_columns]]
    return pd.DataFrame(rows, columns=columns)
