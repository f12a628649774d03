"""Comparisons across settings: IQM and probability of improvement with stratified bootstrap intervals
(DESIGN §11; definitions in `analysis.stats`).

The compared "entries" are built from the arms (see `grid`):
    "<method> (tuned)"      a baseline's runs at its best configuration on each setting (best by the seed
                            statistic over the full data: an oracle-tuned baseline, the comparison the
                            IMI claim is about)
    "<method> (default β)"  a baseline's runs at its published default β
    "<IMI arm>"             an IMI method's runs at its fixed configuration
Normalised score, so settings with different score scales can be pooled: per setting,
    (v − worst) / (best − worst), worst/best = the lowest/highest configuration statistic of the
reference baseline's grid; 0 = its worst grid point, 1 = its best-of-grid.

Pure functions over DataFrames; no I/O, no plotting.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.stats import interval, iqm, probability_of_improvement, probability_of_improvement_bootstrap, stratified_bootstrap

ENTRY_COLUMNS = ("setting", "entry", "entry_kind", "method.name", "config_label", "score", "collapsed")


def comparison_entries(runs: pd.DataFrame, summary: pd.DataFrame, metric: str, stat: str = "mean") -> pd.DataFrame:
    """Per-run scores of every entry (see the module docstring).

    In:  annotated runs and their `metrics.seed_summary`. Out: one row per (entry, run): ENTRY_COLUMNS,
         score = the run's metric, collapsed = its collapse flag (NaN if not reported). A baseline with
         several configurations at its default β has no "(default β)" entry on that setting.
    """
    runs = runs[runs[metric].notna()]
    collapsed = runs["collapsed"] if "collapsed" in runs.columns else pd.Series(math.nan, index=runs.index)
    frames = []

    def add(config_ids, entry: str, kind: str) -> None:
        chosen = runs[runs["config_id"].isin(config_ids)]
        frames.append(pd.DataFrame({
            "setting": chosen["setting"], "entry": entry, "entry_kind": kind, "method.name": chosen["method.name"],
            "config_label": chosen["config_label"], "score": chosen[metric], "collapsed": collapsed.loc[chosen.index],
        }))

    for (setting, arm), group in summary.groupby(["setting", "arm"], sort=True):
        if group["arm_kind"].iloc[0] == "grid":
            add([group.loc[group[stat].idxmax(), "config_id"]], f"{arm} (tuned)", "tuned")
            defaults = group[group["is_default"].astype(bool)]
            if len(defaults) == 1:
                add(list(defaults["config_id"]), f"{arm} (default β)", "default")
        else:
            add(list(group["config_id"]), arm, "fixed")
    if not frames:
        return pd.DataFrame(columns=list(ENTRY_COLUMNS))
    return pd.concat(frames, ignore_index=True)


def normalize_scores(entries: pd.DataFrame, summary: pd.DataFrame, baseline: str, stat: str = "mean") -> pd.DataFrame:
    """`entries` with a "normalized" column (see the module docstring); settings where the baseline has
    no grid, or a flat one (best = worst), get NaN."""
    grid = summary[(summary["method.name"] == baseline) & (summary["arm_kind"] == "grid")]
    bounds = grid.groupby("setting")[stat].agg(["min", "max"])
    worst = entries["setting"].map(bounds["min"]).astype(float)
    best = entries["setting"].map(bounds["max"]).astype(float)
    span = (best - worst).where(best > worst)
    out = entries.copy()
    out["normalized"] = (out["score"] - worst) / span
    return out


def iqm_table(entries: pd.DataFrame, score: str = "normalized", n_boot: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> pd.DataFrame:
    """IQM and mean of `score` per entry over all its runs and settings, stratified bootstrap intervals.

    In:  `comparison_entries` (+ `normalize_scores`) output; rows with NaN score are left out.
    Out: one row per entry: entry, entry_kind, n_settings, n_runs, iqm, iqm_ci_low, iqm_ci_high, mean,
         mean_ci_low, mean_ci_high, median, collapse_rate (pooled over runs). Sorted by IQM, best first.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for entry, group in entries[entries[score].notna()].groupby("entry", sort=True):
        strata = [g[score].to_numpy(float) for _, g in group.groupby("setting", sort=True)]
        pooled = np.concatenate(strata)
        iqm_ci = interval(iqm(pooled), stratified_bootstrap(strata, lambda s: iqm(s, axis=-1), n_boot, rng), confidence)
        mean_ci = interval(pooled.mean(), stratified_bootstrap(strata, lambda s: s.mean(axis=-1), n_boot, rng), confidence)
        rows.append({
            "entry": entry, "entry_kind": group["entry_kind"].iloc[0], "n_settings": len(strata), "n_runs": len(pooled),
            "iqm": iqm_ci["estimate"], "iqm_ci_low": iqm_ci["ci_low"], "iqm_ci_high": iqm_ci["ci_high"],
            "mean": mean_ci["estimate"], "mean_ci_low": mean_ci["ci_low"], "mean_ci_high": mean_ci["ci_high"],
            "median": float(np.median(pooled)), "collapse_rate": float(group["collapsed"].mean()),
        })
    columns = ["entry", "entry_kind", "n_settings", "n_runs", "iqm", "iqm_ci_low", "iqm_ci_high", "mean",
               "mean_ci_low", "mean_ci_high", "median", "collapse_rate"]
    return pd.DataFrame(rows, columns=columns).sort_values("iqm", ascending=False, kind="stable").reset_index(drop=True)


def improvement_table(entries: pd.DataFrame, reference: str, score: str = "score", n_boot: int = 2000,
                      confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """P(entry > reference) for every other entry, over the settings both have, with a stratified
    bootstrap interval (each side's runs resampled independently within each setting).

    In:  `comparison_entries` output; `reference` an entry name, e.g. "dpo (tuned)". Raw scores suffice:
         the statistic only compares runs within a setting.
    Out: one row per entry: entry, reference, n_settings, probability, ci_low, ci_high.
    """
    rng = np.random.default_rng(seed)
    valid = entries[entries[score].notna()]
    ref = {s: g[score].to_numpy(float) for s, g in valid[valid["entry"] == reference].groupby("setting")}
    rows = []
    for entry, group in valid[valid["entry"] != reference].groupby("entry", sort=True):
        mine = {s: g[score].to_numpy(float) for s, g in group.groupby("setting")}
        common = sorted(set(mine) & set(ref))
        if not common:
            continue
        xs, ys = [mine[s] for s in common], [ref[s] for s in common]
        estimate = interval(probability_of_improvement(xs, ys),
                            probability_of_improvement_bootstrap(xs, ys, n_boot, rng), confidence)
        rows.append({"entry": entry, "reference": reference, "n_settings": len(common),
                     "probability": estimate["estimate"], "ci_low": estimate["ci_low"], "ci_high": estimate["ci_high"]})
    columns = ["entry", "reference", "n_settings", "probability", "ci_low", "ci_high"]
    return pd.DataFrame(rows, columns=columns).sort_values("probability", ascending=False, kind="stable").reset_index(drop=True)
