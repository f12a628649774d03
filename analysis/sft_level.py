"""The starting point: the SFT (reference) model's level on each setting, and Δ vs SFT (docs/design.md §11).

A metric M has an SFT counterpart when records carry "reference_M" (for win_rate the level is 0.5 by
definition); every table shows it so that a gain is read against where training started. Pure functions over
DataFrames; no I/O.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.selection import SeedBootstrap, seed_stat
from analysis.stats import seed_interval

SFT_WIN_RATE = 0.5
DELTA_PREFIX = "delta_sft/"
SFT_COLUMNS = ["setting", "trap", "sft_source", "n_seeds", "level", "ci_low", "ci_high"]


def reference_column(runs: pd.DataFrame, metric: str) -> str | None:
    """The column holding the SFT model's value of `metric` ("reference_<metric>"; for a validation
    metric "val/<m>", "val/reference_<m>"), or None when no run has it."""
    name = f"val/reference_{metric[4:]}" if metric.startswith("val/") else f"reference_{metric}"
    return name if name in runs.columns and runs[name].notna().any() else None


def sft_source(runs: pd.DataFrame, metric: str) -> str | None:
    """How the SFT level of `metric` is known: "records" (a reference column), "definition"
    (win_rate = 0.5) or None (unknown: no SFT row, no Δ vs SFT)."""
    if reference_column(runs, metric):
        return "records"
    if metric.removeprefix("val/") == "win_rate":
        return "definition"
    return None


def delta_column(metric: str) -> str:
    return f"{DELTA_PREFIX}{metric}"


def add_delta(runs: pd.DataFrame, metric: str) -> pd.DataFrame:
    """A copy of `runs` with "delta_sft/<metric>" = metric − its SFT value, per run (NaN when the SFT
    value is unknown)."""
    out = runs.copy()
    source = sft_source(runs, metric)
    if source == "records":
        out[delta_column(metric)] = out[metric] - out[reference_column(runs, metric)]
    elif source == "definition":
        out[delta_column(metric)] = out[metric] - SFT_WIN_RATE
    else:
        out[delta_column(metric)] = np.nan
    return out


def sft_levels(runs: pd.DataFrame, metric: str, boot: SeedBootstrap, confidence: float) -> pd.DataFrame:
    """The SFT level of `metric` per setting, with its interval over seeds.

    In:  annotated runs (setting, trap, seed, config_id, the reference column) and the report's paired
         bootstrap `boot` built on them: the level's replicates are the count-weighted means of the
         per-seed levels under the same seed draws as every other number of the setting. Seeds whose
         runs have no reference value take no part; a replicate that draws none of the seeds with one
         is left out of the interval. Out: one row per setting: SFT_COLUMNS. Empty when the level is
         unknown (`sft_source` None). With SFT level 0.5 by definition (win_rate) the interval is the point.
    """
    source = sft_source(runs, metric)
    if source is None or runs.empty:
        return pd.DataFrame(columns=SFT_COLUMNS)
    column = reference_column(runs, metric)
    rows = []
    for setting, group in runs.groupby("setting", sort=True):
        trap = group["trap"].iloc[0] if "trap" in group else ""
        if source == "definition":
            rows.append([setting, trap, source, group["seed"].nunique(), SFT_WIN_RATE, SFT_WIN_RATE, SFT_WIN_RATE])
            continue
        seeds = boot.seeds[setting]
        per_seed = group.groupby("seed")[column].mean().reindex(seeds).to_numpy(dtype=float)
        known = np.isfinite(per_seed)
        if not known.any():
            continue
        values, present = per_seed[None, :], known[None, :]
        point = float(seed_stat(values, present, None, "mean")[0])
        replicates = seed_stat(values, present, boot.counts[setting], "mean")[:, 0]
        replicates = replicates[np.isfinite(replicates)]
        low, high = seed_interval(point, replicates, int(known.sum()), confidence)
        rows.append([setting, trap, source, int(known.sum()), point, float(low), float(high)])
    return pd.DataFrame(rows, columns=SFT_COLUMNS)
