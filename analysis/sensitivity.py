"""Does the tuned hyperparameter matter on a setting? The spread of a baseline grid's configuration means
against the paired seed noise (docs/design.md §11a, "β matters"). Pure functions over an annotated runs frame.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

# A grid whose configuration means spread less than this many paired seed SDs cannot be told apart from its
# seed noise with 5 seeds: choosing among its points is mostly choosing noise, and "matches the tuned
# baseline" says little. 3 SDs: the spread of 5 equal configurations' means over 5 seeds is ~1.0–1.5 SD.
MATTERS_RATIO = 3.0


def paired_seed_sd(table: np.ndarray) -> float:
    """The residual SD of a complete configurations × seeds table after removing each configuration's mean and
    each seed's mean (double centring): sqrt(Σ r² / ((C − 1)(S − 1))), the noise a paired comparison sees.
    NaN with fewer than 2 configurations or seeds."""
    c, s = table.shape
    if c < 2 or s < 2:
        return math.nan
    residual = table - table.mean(axis=1, keepdims=True) - table.mean(axis=0, keepdims=True) + table.mean()
    return float(math.sqrt((residual ** 2).sum() / ((c - 1) * (s - 1))))


def grid_spread(runs: pd.DataFrame, baseline: str, metric: str) -> pd.DataFrame:
    """Per setting, how much `baseline`'s grid spreads against its paired seed noise.

    In: annotated runs (setting, method.name, arm_kind, config_id, config_label, seed, `metric`). Only seeds
    every grid configuration has count (the table must be complete to pair). Out, one row per setting with a
    grid: setting, n_configs, n_seeds, best / worst (config labels), spread (max − min of configuration
    means), paired_sd (`paired_seed_sd`), ratio (spread / paired_sd) and matters (ratio ≥ MATTERS_RATIO).
    """
    columns = ["setting", "n_configs", "n_seeds", "best", "worst", "spread", "paired_sd", "ratio", "matters"]
    grid = runs[(runs["method.name"] == baseline) & (runs["arm_kind"] == "grid") & runs[metric].notna()]
    rows = []
    for setting, group in grid.groupby("setting", sort=True):
        table = group.pivot_table(index="config_id", columns="seed", values=metric, aggfunc="mean").dropna(axis=1)
        if table.shape[0] < 2 or table.shape[1] < 2:
            continue
        means = table.mean(axis=1)
        labels = group.drop_duplicates("config_id").set_index("config_id")["config_label"]
        spread, sd = float(means.max() - means.min()), paired_seed_sd(table.to_numpy(dtype=float))
        ratio = spread / sd if sd > 0 else math.inf
        rows.append({"setting": setting, "n_configs": table.shape[0], "n_seeds": table.shape[1],
                     "best": labels[means.idxmax()], "worst": labels[means.idxmin()], "spread": spread,
                     "paired_sd": sd, "ratio": ratio, "matters": bool(ratio >= MATTERS_RATIO)})
    return pd.DataFrame(rows, columns=columns)
