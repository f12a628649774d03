"""What the report compares on each setting ("entries"), and the per-setting comparison tables
(docs/design.md §11, §11a).

One place decides what "tuned", "oracle", "default", a fixed arm and the SFT row mean (docs/design.md §11
"Entries"), so every table and the headline compare the same things. Pure functions over DataFrames; no I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.sft_level import delta_column
from analysis.selection import Choice, SeedBootstrap, choose, chosen_stat, first_argmax, has_validation
from analysis.stats import seed_interval

SFT_ENTRY = "SFT (reference)"
COMPOSITION_PREFIX = "composition/"
KIND_ORDER = {"sft": 0, "tuned": 1, "oracle": 2, "default": 3, "fixed": 4}


@dataclass
class Entry:
    setting: str
    trap: str
    name: str
    kind: str        # "tuned" | "oracle" | "default" | "fixed"
    method: str
    arm: str
    is_imi: bool
    choice: Choice


def build_entries(runs: pd.DataFrame, boot: SeedBootstrap, metric: str, stat: str) -> list[Entry]:
    """The entries of every setting (docs/design.md §11, "Entries"), in setting and arm order.

    In: annotated runs with `metric` (no NaN) and the bootstrap built on them.
    """
    entries: list[Entry] = []
    for (setting, arm), arm_runs in runs.groupby(["setting", "arm"], sort=True):
        first = arm_runs.iloc[0]
        method, trap, imi = first["method.name"], first["trap"], bool(first["is_imi"])
        ids = sorted(arm_runs["config_id"].unique())

        def add(name: str, kind: str, choice: Choice) -> None:
            entries.append(Entry(setting, trap, name, kind, method, arm, imi, choice))

        if first["arm_kind"] == "grid":
            on = "validation" if has_validation(boot, runs, ids, metric) else "test"
            add(f"{method} (tuned)", "tuned", choose(boot, runs, ids, metric, stat, on))
            add(f"{method} (oracle)", "oracle", choose(boot, runs, ids, metric, stat, "test"))
            defaults = sorted(arm_runs.loc[arm_runs["is_default"].astype(bool), "config_id"].unique())
            if len(defaults) == 1:
                add(f"{method} (default)", "default", choose(boot, runs, defaults, metric, stat, "fixed"))
        else:
            kind = "default" if not imi and bool(first["is_default"]) else "fixed"
            add(arm, kind, choose(boot, runs, ids, metric, stat, "fixed"))
    return entries


def composition_column(metric: str) -> str:
    """The composition test set's name of a test metric: "gold_reward" -> "composition/gold_reward"."""
    return f"{COMPOSITION_PREFIX}{metric}"


def find_entry(entries: list[Entry], setting: str, method: str, kind: str) -> Entry | None:
    return next((e for e in entries if e.setting == setting and e.method == method and e.kind == kind), None)


def _ci(point: float, replicates: np.ndarray, n: int, confidence: float) -> tuple[float, float]:
    if not np.isfinite(replicates).all():
        return math.nan, math.nan
    low, high = seed_interval(point, replicates, n, confidence)
    return float(low), float(high)


def comparison_table(entries: list[Entry], runs: pd.DataFrame, boot: SeedBootstrap, metric: str, stat: str,
                     baseline: str, sft: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Per setting: the SFT row and one row per entry.

    Out columns: setting, trap, entry, kind, method, selected_on, config (chosen on the observed runs),
    stability (share of replicates choosing it), n_runs, n_seeds (the interval's n), score (`stat` of
    the test metric), score_ci_low, score_ci_high, median, q25, q75, collapse_rate, delta_sft (+ _ci_low,
    _ci_high: mean of the per-run Δ vs SFT), delta_tuned (+ _ci_low, _ci_high: score − the score of
    "<baseline> (tuned)" on the setting, both from the same replicates), and where the records carry the
    composition test set's score "composition/<metric>": composition (+ _ci_low, _ci_high: `stat` of it
    for the chosen configuration, selection as for score).
    """
    rows = []
    delta = delta_column(metric)
    for setting, level in sft.set_index("setting").iterrows():
        rows.append({"setting": setting, "trap": level["trap"], "entry": SFT_ENTRY, "kind": "sft", "method": "sft",
                     "selected_on": "", "config": "", "n_seeds": level["n_seeds"], "score": level["level"],
                     "score_ci_low": level["ci_low"], "score_ci_high": level["ci_high"]})
    for entry in entries:
        point, replicates = chosen_stat(boot, runs, entry.choice, metric, stat)
        n = boot.min_seeds(entry.choice.config_ids)
        values = boot.values(runs, entry.choice.config_id, metric)
        collapsed = boot.values(runs, entry.choice.config_id, "collapsed")
        row = {"setting": entry.setting, "trap": entry.trap, "entry": entry.name, "kind": entry.kind,
               "method": entry.method, "selected_on": entry.choice.selected_on,
               "config": runs.loc[boot.rows[entry.choice.config_id][0], "config_label"],
               "stability": entry.choice.stability(), "n_runs": len(values), "n_seeds": n, "score": point,
               "median": float(np.median(values)), "q25": float(np.quantile(values, 0.25)),
               "q75": float(np.quantile(values, 0.75)), "collapse_rate": float(np.nanmean(collapsed))
               if np.isfinite(collapsed).any() else math.nan}
        row["score_ci_low"], row["score_ci_high"] = _ci(point, replicates, n, confidence)
        if composition_column(metric) in runs.columns and runs[composition_column(metric)].notna().any():
            c_point, c_rep = chosen_stat(boot, runs, entry.choice, composition_column(metric), stat)
            row["composition"] = c_point
            row["composition_ci_low"], row["composition_ci_high"] = _ci(c_point, c_rep, n, confidence)
        if delta in runs.columns:
            d_point, d_rep = chosen_stat(boot, runs, entry.choice, delta, "mean")
            row["delta_sft"] = d_point
            row["delta_sft_ci_low"], row["delta_sft_ci_high"] = _ci(d_point, d_rep, n, confidence)
        tuned = find_entry(entries, entry.setting, baseline, "tuned")
        if tuned is not None:
            t_point, t_rep = chosen_stat(boot, runs, tuned.choice, metric, stat)
            both = min(n, boot.min_seeds(tuned.choice.config_ids))
            row["delta_tuned"] = point - t_point
            row["delta_tuned_ci_low"], row["delta_tuned_ci_high"] = _ci(point - t_point, replicates - t_rep, both,
                                                                        confidence)
        rows.append(row)
    composition = ["composition", "composition_ci_low", "composition_ci_high"] if any("composition" in r for r in rows) else []
    columns = ["setting", "trap", "entry", "kind", "method", "selected_on", "config", "stability", "n_runs", "n_seeds",
               "score", "score_ci_low", "score_ci_high", *composition, "median", "q25", "q75", "collapse_rate",
               "delta_sft", "delta_sft_ci_low", "delta_sft_ci_high", "delta_tuned", "delta_tuned_ci_low",
               "delta_tuned_ci_high"]
    table = pd.DataFrame(rows).reindex(columns=columns)
    rank = table["kind"].map(KIND_ORDER) - 0.5 * ((table["method"] == baseline) & (table["kind"] == "tuned"))
    return (table.assign(_rank=rank).sort_values(["setting", "_rank", "entry"], kind="stable")
            .drop(columns="_rank").reset_index(drop=True))


def grid_table(entries: list[Entry], runs: pd.DataFrame, boot: SeedBootstrap, metric: str, stat: str,
               confidence: float) -> pd.DataFrame:
    """Best-of-grid and default regret of every grid arm.

    Out: one row per (setting, grid arm): setting, trap, method, n_configs, selected_on, tuned_config,
    tuned (test `stat` of the validation-selected configuration) + tuned_ci_low/high, tuned_val (its
    validation `stat`), stability, oracle_config, oracle (the best test `stat`: selected on test),
    default_config, default (test `stat` at the published defaults), regret = tuned − default
    (+ regret_ci_low/high, re-selection inside), note (why there is no default).
    """
    rows = []
    for tuned in (e for e in entries if e.kind == "tuned"):
        oracle = find_entry(entries, tuned.setting, tuned.method, "oracle")
        default = find_entry(entries, tuned.setting, tuned.method, "default")
        point, replicates = chosen_stat(boot, runs, tuned.choice, metric, stat)
        n = boot.min_seeds(tuned.choice.config_ids)
        label = lambda e: runs.loc[boot.rows[e.choice.config_id][0], "config_label"]  # noqa: E731
        row = {"setting": tuned.setting, "trap": tuned.trap, "method": tuned.method,
               "n_configs": len(tuned.choice.config_ids), "selected_on": tuned.choice.selected_on,
               "tuned_config": label(tuned), "tuned": point, "stability": tuned.choice.stability(),
               "oracle_config": label(oracle), "oracle": chosen_stat(boot, runs, oracle.choice, metric, stat)[0],
               "default_config": "", "default": math.nan, "regret": math.nan, "regret_ci_low": math.nan,
               "regret_ci_high": math.nan, "note": ""}
        row["tuned_ci_low"], row["tuned_ci_high"] = _ci(point, replicates, n, confidence)
        val_column = f"val/{metric}"
        row["tuned_val"] = chosen_stat(boot, runs, tuned.choice, val_column, stat)[0] if val_column in runs else math.nan
        if default is None:
            n_default = int(runs.loc[runs["config_id"].isin(tuned.choice.config_ids), ["config_id", "is_default"]]
                            .drop_duplicates()["is_default"].astype(bool).sum())
            row["note"] = ("the published defaults are not on the grid" if n_default == 0 else
                           f"{n_default} configurations are at the defaults (another key varies)")
        else:
            d_point, d_rep = chosen_stat(boot, runs, default.choice, metric, stat)
            row.update(default_config=label(default), default=d_point, regret=point - d_point)
            row["regret_ci_low"], row["regret_ci_high"] = _ci(point - d_point, replicates - d_rep, n, confidence)
        rows.append(row)
    columns = ["setting", "trap", "method", "n_configs", "selected_on", "tuned_config", "tuned", "tuned_ci_low",
               "tuned_ci_high", "tuned_val", "stability", "oracle_config", "oracle", "default_config", "default",
               "regret", "regret_ci_low", "regret_ci_high", "note"]
    return pd.DataFrame(rows).reindex(columns=columns)


def moves_the_model(comparison: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """docs/design.md §11a: on every clean (non-trap) setting, does tuned `baseline` beat SFT with an interval
    that excludes 0? Out: setting, entry, delta_sft, delta_sft_ci_low, delta_sft_ci_high, verdict."""
    rows = comparison[(comparison["method"] == baseline) & (comparison["kind"] == "tuned")
                      & (comparison["trap"].fillna("") == "")]
    out = rows[["setting", "entry", "selected_on", "delta_sft", "delta_sft_ci_low", "delta_sft_ci_high"]].copy()
    out["verdict"] = [moves_verdict(low, high) for low, high in zip(out["delta_sft_ci_low"], out["delta_sft_ci_high"])]
    return out.reset_index(drop=True)


def moves_verdict(low: float, high: float) -> str:
    """Does an interval of Δ vs SFT say the model moved up?"""
    if pd.isna(low):
        return "unknown (no SFT value)"
    if low > 0:
        return "yes: the interval excludes 0"
    return "no: below SFT" if high < 0 else "no: the interval includes 0"


def practitioners_testbed(entries: list[Entry], runs: pd.DataFrame, boot: SeedBootstrap, metric: str, baseline: str,
                          confidence: float) -> pd.DataFrame:
    """docs/design.md §11a under the practitioner's model: on every clean setting, one grid search of `baseline`
    at one seed (every configuration trained once at seed s, the validation-best run kept) against the SFT
    model of that seed. d_s = Δ vs SFT of the run chosen at seed s; the estimate is the mean of d_s over the
    seeds at which every configuration ran, and replicate b weighs each seed by how often it was drawn (the
    paired seed bootstrap). Out: setting, practitioner_delta_sft (+ _ci_low, _ci_high), n_seeds,
    practitioner_verdict; no rows where the records carry no validation score or no SFT level."""
    rows = []
    val_column, delta = f"val/{metric}", delta_column(metric)
    for tuned in (e for e in entries if e.kind == "tuned" and e.method == baseline and not e.trap):
        ids = tuned.choice.config_ids
        if delta not in runs.columns or not has_validation(boot, runs, ids, metric):
            continue
        val, val_present = boot.matrix(runs, ids, val_column)
        gain, gain_present = boot.matrix(runs, ids, delta)
        usable = (val_present & gain_present & np.isfinite(val) & np.isfinite(gain)).all(axis=0)
        if not usable.any():
            continue
        chosen = first_argmax(val[:, usable].T)                       # (S',): the configuration kept at each seed
        d = gain[:, usable][chosen, np.arange(usable.sum())]           # (S',)
        counts = boot.counts[boot.setting(ids)][:, usable].astype(float)
        with np.errstate(invalid="ignore", divide="ignore"):
            replicates = counts @ d / counts.sum(axis=1)
        point = float(d.mean())
        low, high = _ci(point, replicates, int(usable.sum()), confidence)
        rows.append({"setting": tuned.setting, "practitioner_delta_sft": point, "practitioner_delta_sft_ci_low": low,
                     "practitioner_delta_sft_ci_high": high, "n_seeds": int(usable.sum()),
                     "practitioner_verdict": moves_verdict(low, high)})
    return pd.DataFrame(rows, columns=["setting", "practitioner_delta_sft", "practitioner_delta_sft_ci_low",
                                       "practitioner_delta_sft_ci_high", "n_seeds", "practitioner_verdict"])
