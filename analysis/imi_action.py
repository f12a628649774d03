"""Does the IMI regulator act? Each IMI configuration against its base loss at the same β, paired by seed, beside
how much the regulator moved the pairs' gradients in training (docs/design.md §4 "Does the regulator act?",
§11). Pure functions over an annotated runs frame and its paired seed bootstrap; no I/O.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.selection import SeedBootstrap

# The unregulated loss each IMI method wraps: its name and the base hyperparameters the IMI method fixes
# (RMiPO is SimPO with γ/β = 0 under its margin; the others keep their base's keys in their own config).
BASES = {"imi_dpo": ("dpo", {}), "imi_ipo": ("ipo", {}), "imi_simpo": ("simpo", {}), "imi_kto": ("kto", {}),
         "rmipo": ("simpo", {"method.gamma_beta_ratio": 0.0})}
ACTION = "imi/acting_share"
EFFECTIVE = ("effective_margin", "effective_beta", "effective_weight")


def _equal(a, b) -> bool:
    if pd.isna(a) and pd.isna(b):
        return True
    if isinstance(a, (int, float, np.number)) and isinstance(b, (int, float, np.number)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return str(a) == str(b)


def base_config(runs: pd.DataFrame, imi_row: pd.Series) -> int | None:
    """The config_id of the IMI configuration's base at the same β on the same setting: the base method's
    configuration whose method.* keys equal the IMI configuration's wherever both have one (and the base keys
    the IMI method fixes, BASES); None when the runs hold none, or more than one would fit."""
    name, fixed = BASES.get(str(imi_row["method.name"]), (None, {}))
    if name is None:
        return None
    same_setting = runs[(runs["setting"] == imi_row["setting"]) & (runs["method.name"] == name)]
    candidates = same_setting.drop_duplicates("config_id")
    keys = [c for c in runs.columns if c.startswith("method.") and c != "method.name"]
    found = []
    for _, row in candidates.iterrows():
        shared = [k for k in keys if pd.notna(row[k]) and pd.notna(imi_row[k])]
        if not all(_equal(row[k], imi_row[k]) for k in shared):
            continue
        if all(k in row and _equal(row[k], v) for k, v in fixed.items()) and "method.beta" in shared:
            found.append(int(row["config_id"]))
    return found[0] if len(found) == 1 else None


def _mean_of(boot: SeedBootstrap, runs: pd.DataFrame, config_id: int, column: str) -> float:
    if column not in runs.columns:
        return math.nan
    values = boot.values(runs, config_id, column)
    return float(np.nanmean(values)) if np.isfinite(values).any() else math.nan


def imi_action_table(runs: pd.DataFrame, boot: SeedBootstrap, metric: str, confidence: float) -> pd.DataFrame:
    """Per setting and IMI configuration: how much the regulator acted and whether the run differs from its base.

    In: annotated runs (setting, config_id, config_label, is_imi, method.*, seed, `metric`, the records'
    imi/* run means) and their bootstrap. Out, one row per IMI configuration: setting, method, config (label),
    n_seeds, acting_share (mean over seeds of the share of pairs whose gradient the regulator moved by ≥ 10%),
    regulator (margin/beta/weight: the effective value logged) with effective_p10/p50/p90 (means over seeds),
    base (the base configuration's label, "" when none is in the runs), score and base_score (mean over seeds of
    `metric` over the seeds both have), delta (IMI − base) with delta_ci_low/high (the report's paired seed
    interval), and verdict: "differs from its base" (interval excludes 0), "within the seed spread of its base",
    "no interval: fewer than 2 shared seeds", or "no base at this β".
    """
    columns = ["setting", "method", "config", "n_seeds", "acting_share", "regulator", "effective_p10",
               "effective_p50", "effective_p90", "base", "score", "base_score", "delta", "delta_ci_low",
               "delta_ci_high", "verdict"]
    if runs.empty or not runs["is_imi"].astype(bool).any():
        return pd.DataFrame(columns=columns)
    rows = []
    for _, row in runs[runs["is_imi"].astype(bool)].drop_duplicates("config_id").sort_values(
            ["setting", "method.name", "config_id"]).iterrows():
        config_id = int(row["config_id"])
        regulator = next((name for name in EFFECTIVE if f"imi/{name}_p50" in runs.columns
                          and np.isfinite(boot.values(runs, config_id, f"imi/{name}_p50")).any()), None)
        effective = {q: _mean_of(boot, runs, config_id, f"imi/{regulator}_{q}") if regulator else math.nan
                     for q in ("p10", "p50", "p90")}
        out = {"setting": row["setting"], "method": row["method.name"], "config": row["config_label"],
               "acting_share": _mean_of(boot, runs, config_id, ACTION),
               "regulator": regulator.removeprefix("effective_") if regulator else "",
               **{f"effective_{q}": v for q, v in effective.items()}}
        base_id = base_config(runs, row)
        if base_id is None:
            observed, _ = boot.stat(runs, [config_id], metric, "mean")
            rows.append({**out, "n_seeds": boot.min_seeds([config_id]), "base": "", "score": float(observed[0]),
                         "base_score": math.nan, "delta": math.nan, "delta_ci_low": math.nan,
                         "delta_ci_high": math.nan, "verdict": "no base at this β"})
            continue
        score, base_score, delta, low, high, n = boot.paired_difference(runs, config_id, base_id, metric, confidence)
        base_row = runs[runs["config_id"] == base_id].iloc[0]
        verdict = ("no interval: fewer than 2 shared seeds" if math.isnan(low) else
                   "differs from its base" if (low > 0 or high < 0) else "within the seed spread of its base")
        rows.append({**out, "n_seeds": n, "base": f"{base_row['method.name']} ({base_row['config_label']})",
                     "score": score, "base_score": base_score, "delta": delta,
                     "delta_ci_low": low, "delta_ci_high": high, "verdict": verdict})
    return pd.DataFrame(rows, columns=columns)
