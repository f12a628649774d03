"""Across settings: IQM and probability of improvement with bootstrap intervals (docs/design.md §11).

Pools the entries of `analysis.entries` over settings on SFT-to-tuned normalised scores, each setting weighted
equally whatever its run count, with intervals from the stratified paired seed bootstrap; why each setting
counts equally, and how, is in docs/design.md §11 "Across settings". The numerics are in `analysis.stats`.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

from analysis.entries import Entry, find_entry
from analysis.selection import SeedBootstrap, chosen_runs, weighted_reduce
from analysis.stats import iqm, iqm_shares, probability_of_improvement_batched, seed_interval

NORMALIZER_COLUMNS = ["setting", "trap", "sft", "tuned", "usable", "reason"]


def normalizers(comparison: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Per setting of a `entries.comparison_table`: SFT_s, T_s and whether z can be formed there."""
    rows = []
    for setting, group in comparison.groupby("setting", sort=True):
        sft = group.loc[group["kind"] == "sft", "score"]
        tuned = group.loc[(group["kind"] == "tuned") & (group["method"] == baseline), "score"]
        sft_value = float(sft.iloc[0]) if len(sft) else math.nan
        tuned_value = float(tuned.iloc[0]) if len(tuned) else math.nan
        reason = ("no SFT level for this metric" if math.isnan(sft_value) else
                  f"no `{baseline}` grid to tune" if math.isnan(tuned_value) else
                  f"tuned `{baseline}` does not score above SFT" if tuned_value <= sft_value else "")
        rows.append([setting, group["trap"].iloc[0], sft_value, tuned_value, reason == "", reason])
    return pd.DataFrame(rows, columns=NORMALIZER_COLUMNS)


def _normalized(entry: Entry, runs: pd.DataFrame, boot: SeedBootstrap, metric: str, norm: pd.Series):
    """(observed z (n,), replicate z (B, S) seed-aligned, their seed counts (B, S))."""
    point, replicates, counts = chosen_runs(boot, runs, entry.choice, metric)
    span = norm["tuned"] - norm["sft"]
    return (point - norm["sft"]) / span, (replicates - norm["sft"]) / span, counts


def _pooled(parts):
    """Concatenate per-setting (point (n_s,), replicates (B, S_s), counts (B, S_s)) with weights
    1/(settings · n_s): each replicate's runs weighted by how often their seed was drawn."""
    count = len(parts)
    point = np.concatenate([p for p, _, _ in parts])
    point_w = np.concatenate([np.full(len(p), 1.0 / (count * len(p))) for p, _, _ in parts])
    reps = np.concatenate([np.where(w > 0, r, np.nan) for _, r, w in parts], axis=1)
    rep_w = np.concatenate([w / (count * w.sum(axis=1, keepdims=True)) for _, _, w in parts], axis=1)
    return point, point_w, reps, rep_w


def iqm_table(entries: list[Entry], runs: pd.DataFrame, boot: SeedBootstrap, metric: str, norms: pd.DataFrame,
              settings, confidence: float) -> pd.DataFrame:
    """IQM and mean of the normalised scores per entry name over `settings` (those it ran on).

    Out: one row per entry name: entry, kind, n_settings, n_runs, n_seeds, iqm, iqm_ci_low, iqm_ci_high,
    mean (the equal-weight mean over settings), mean_ci_low, mean_ci_high, collapse_rate (mean over
    its settings of the per-setting collapse rate), trimmed (settings none of whose runs lies within the
    range of values the IQM keeps, i.e. trimmed away entirely; comma-separated). Sorted by IQM, best first.
    """
    usable = norms[norms["usable"] & norms["setting"].isin(list(settings))].set_index("setting")
    rows = []
    names = sorted({e.name for e in entries if e.kind != "oracle" and e.setting in usable.index})
    for name in names:
        chosen = [e for e in entries if e.name == name and e.setting in usable.index]
        parts = [_normalized(e, runs, boot, metric, usable.loc[e.setting]) for e in chosen]
        point, point_w, reps, rep_w = _pooled(parts)
        n = min(boot.min_seeds(e.choice.config_ids) for e in chosen)
        shares = iqm_shares(point, point_w)
        # trimmed away: none of the setting's runs lies within the range of values the IQM keeps (a
        # range, not the shares, so that a setting tied with kept values is not called trimmed)
        kept = point[shares > 0]
        trimmed = [e.setting for e, (p, _, _) in zip(chosen, parts)
                   if not ((p >= kept.min()) & (p <= kept.max())).any()]
        point_iqm, point_mean = float((shares * point).sum()), float((point_w * point).sum())
        iqm_low, iqm_high = seed_interval(point_iqm, iqm(reps, rep_w), n, confidence)
        means = np.nansum(np.where(rep_w > 0, reps * rep_w, 0.0), axis=1)
        mean_low, mean_high = seed_interval(point_mean, means, n, confidence)
        collapse = [np.nanmean(boot.values(runs, e.choice.config_id, "collapsed")) for e in chosen]
        rows.append({"entry": name, "kind": chosen[0].kind, "n_settings": len(chosen), "n_runs": len(point),
                     "n_seeds": n, "iqm": point_iqm, "iqm_ci_low": float(iqm_low),
                     "iqm_ci_high": float(iqm_high), "mean": point_mean,
                     "mean_ci_low": float(mean_low), "mean_ci_high": float(mean_high),
                     "collapse_rate": float(np.nanmean(collapse)) if np.isfinite(collapse).any() else math.nan,
                     "trimmed": ", ".join(trimmed)})
    columns = ["entry", "kind", "n_settings", "n_runs", "n_seeds", "iqm", "iqm_ci_low", "iqm_ci_high", "mean",
               "mean_ci_low", "mean_ci_high", "collapse_rate", "trimmed"]
    table = pd.DataFrame(rows).reindex(columns=columns)
    return table.sort_values("iqm", ascending=False, kind="stable").reset_index(drop=True)


def per_setting_table(entries: list[Entry], runs: pd.DataFrame, boot: SeedBootstrap, metric: str,
                      norms: pd.DataFrame, confidence: float) -> pd.DataFrame:
    """Every entry's mean normalised score on every setting it can be normalised on (what the IQM
    may trim). Out: setting, trap, entry, kind, n_runs, mean_normalized, mean_ci_low, mean_ci_high."""
    usable = norms[norms["usable"]].set_index("setting")
    rows = []
    for entry in entries:
        if entry.kind == "oracle" or entry.setting not in usable.index:
            continue
        point, reps, counts = _normalized(entry, runs, boot, metric, usable.loc[entry.setting])
        means = weighted_reduce(reps, counts, "mean")
        low, high = seed_interval(point.mean(), means, boot.min_seeds(entry.choice.config_ids), confidence)
        rows.append({"setting": entry.setting, "trap": entry.trap, "entry": entry.name, "kind": entry.kind,
                     "n_runs": len(point), "mean_normalized": float(point.mean()), "mean_ci_low": float(low),
                     "mean_ci_high": float(high)})
    columns = ["setting", "trap", "entry", "kind", "n_runs", "mean_normalized", "mean_ci_low", "mean_ci_high"]
    return pd.DataFrame(rows).reindex(columns=columns)


def improvement_table(entries: list[Entry], runs: pd.DataFrame, boot: SeedBootstrap, metric: str, baseline: str,
                      settings, confidence: float) -> pd.DataFrame:
    """P(X > "<baseline> (tuned)") for every other (non-oracle) entry X over the settings in `settings`
    both ran on, on raw scores. Out: entry, reference, n_settings, n_seeds, probability, probability_ci_low,
    probability_ci_high."""
    settings = set(settings)
    rows = []
    for name in sorted({e.name for e in entries if e.kind != "oracle" and e.setting in settings}):
        pairs = [(e, find_entry(entries, e.setting, baseline, "tuned")) for e in entries
                 if e.name == name and e.setting in settings]
        pairs = [(x, y) for x, y in pairs if y is not None and y.name != name]
        if not pairs:
            continue
        xs = [chosen_runs(boot, runs, x.choice, metric) for x, _ in pairs]
        ys = [chosen_runs(boot, runs, y.choice, metric) for _, y in pairs]
        point = float(probability_of_improvement_batched([x[0][None] for x in xs], [y[0][None] for y in ys])[0])
        # each run weighs as often as its seed was drawn; X and Y share the draws (paired)
        replicates = probability_of_improvement_batched([x[1] for x in xs], [y[1] for y in ys],
                                                        [x[2] for x in xs], [y[2] for y in ys])
        n = min(min(boot.min_seeds(x.choice.config_ids), boot.min_seeds(y.choice.config_ids)) for x, y in pairs)
        low, high = seed_interval(point, replicates, n, confidence)
        rows.append({"entry": name, "reference": pairs[0][1].name, "n_settings": len(pairs), "n_seeds": n,
                     "probability": point, "probability_ci_low": float(low), "probability_ci_high": float(high)})
    columns = ["entry", "reference", "n_settings", "n_seeds", "probability", "probability_ci_low", "probability_ci_high"]
    table = pd.DataFrame(rows).reindex(columns=columns)
    return table.sort_values("probability", ascending=False, kind="stable").reset_index(drop=True)
