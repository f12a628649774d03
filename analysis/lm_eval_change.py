"""lm-eval after training: each entry's change in its lm-eval scores against the reference model's on the same
items (records carry "reference_lm_eval/…" beside "lm_eval/…", docs/design.md §7), with the report's paired seed
interval. Pure functions over an annotated runs frame, its bootstrap and the report's entries; no I/O.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.entries import Entry
from analysis.selection import SeedBootstrap, chosen_stat
from analysis.sft_level import add_delta, delta_column, reference_column
from analysis.stats import seed_interval

PREFIX = "lm_eval/"


def lm_eval_columns(runs: pd.DataFrame) -> list[str]:
    """The lm-eval scores that have a reference counterpart in the records (stderr columns left out)."""
    return sorted(c for c in runs.columns if c.startswith(PREFIX) and not c.endswith("_stderr")
                  and runs[c].notna().any() and reference_column(runs, c))


def lm_eval_change(runs: pd.DataFrame, boot: SeedBootstrap, entries: list[Entry], confidence: float) -> pd.DataFrame:
    """Per setting, entry and lm-eval score: the reference's level, the entry's score and its change.

    In: annotated runs, their bootstrap and the report's entries (each with the configuration it chose). Out, one
    row per (setting, entry, score): setting, entry, score (the column), n_seeds, reference (mean over the
    entry's runs of the reference's value), value (the entry's mean), delta (mean of value − reference per run)
    with delta_ci_low/high (paired seed interval), spread (SD of the score over every run of the setting: 0 when
    the score never moves), and moved ("up"/"down" when the interval excludes 0, else "no change shown").
    """
    columns = ["setting", "entry", "score", "n_seeds", "reference", "value", "delta", "delta_ci_low",
               "delta_ci_high", "spread", "moved"]
    scores = lm_eval_columns(runs)
    rows = []
    for score in scores:
        with_delta = add_delta(runs, score)
        for entry in entries:
            here = with_delta[with_delta["setting"] == entry.setting]
            if here[score].isna().all():
                continue
            value, _ = chosen_stat(boot, with_delta, entry.choice, score, "mean")
            reference, _ = chosen_stat(boot, with_delta, entry.choice, reference_column(runs, score), "mean")
            delta, replicates = chosen_stat(boot, with_delta, entry.choice, delta_column(score), "mean")
            n = boot.min_seeds(entry.choice.config_ids)
            low, high = ((float(v) for v in seed_interval(delta, replicates, n, confidence))
                         if np.isfinite(replicates).all() else (math.nan, math.nan))
            moved = "up" if low > 0 else "down" if high < 0 else "no change shown"
            rows.append({"setting": entry.setting, "entry": entry.name, "score": score.removeprefix(PREFIX),
                         "n_seeds": n, "reference": reference, "value": value, "delta": delta, "delta_ci_low": low,
                         "delta_ci_high": high, "spread": float(here[score].std(ddof=1)) if len(here) > 1 else 0.0,
                         "moved": moved})
    return pd.DataFrame(rows, columns=columns)
