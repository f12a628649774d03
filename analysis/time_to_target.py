"""Time to τ (docs/design.md §11, "Time to τ"): the training FLOPs and steps a method needs before its
validation curve reaches the level of the validation-tuned baseline, for each method at its defaults beside
the tuned baseline itself — the claim that a regulator makes training converge more quickly, measured.

The curve is scored on its own fixed validation sample, so τ is taken on that sample too: the tuned
baseline's curve at the end of training minus a tolerance. Computed on the observed seeds and in every
replicate of the report's paired seed bootstrap (the tuned configuration chosen again in each). Pure
functions and one figure; no I/O.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from analysis.plots import _hide_unused, _legend, _panels, _style, method_color
from analysis.selection import SeedBootstrap, choose, has_validation, seed_stat, validation_column
from analysis.stats import probability_interval, seed_interval
from analysis.tuner_benchmark import common_fractions
from analysis.tuner_models import reaches

CURVE_KEYS = ("flops", "step")


def first_reach(curve: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """The first curve point at or above τ per row, −1 where none is. curve (R, P), tau (R,) -> (R,)."""
    hits = reaches(curve, tau)
    return np.where(hits.any(axis=1), np.argmax(hits, axis=1), -1)


def at_point(values: np.ndarray, index: np.ndarray) -> np.ndarray:
    """values (R, P) at point index (R,); ∞ where index is −1 (the target is never reached)."""
    picked = np.take_along_axis(values, np.maximum(index, 0)[:, None], axis=1)[:, 0]
    return np.where(index >= 0, picked, math.inf)


def curve_matrix(boot: SeedBootstrap, runs: pd.DataFrame, ids, fractions: np.ndarray, key: str) -> np.ndarray:
    """(N, S, P): each configuration's runs' curve value `key` at each fraction, NaN where absent."""
    out = []
    for f in fractions:
        column = [next((p.get(key, math.nan) for p in (c or []) if math.isclose(p["fraction"], f, abs_tol=1e-9)),
                       math.nan) for c in runs["val_curve"]]
        frame = pd.DataFrame({"value": column}, index=runs.index)
        out.append(boot.matrix(frame, ids, "value")[0])
    return np.stack(out, axis=-1)


def _stat_curve(values: np.ndarray, present: np.ndarray, weights: np.ndarray, stat: str) -> np.ndarray:
    """(N, S, P) -> (R, N, P): `stat` over seeds at every point, per bootstrap row."""
    return np.stack([seed_stat(values[:, :, p], present, weights, stat) for p in range(values.shape[-1])], axis=-1)


def _ci(values: np.ndarray, n: int, confidence: float) -> tuple[float, float]:
    """A cost's or cost ratio's interval: the t-type widening of `seed_interval` can reach below 0, where
    neither can be, so it is cut there."""
    low, high = seed_interval(values[0], values[1:], n, confidence)
    return max(float(low), 0.0), float(high)


def time_to_target(runs: pd.DataFrame, boot: SeedBootstrap, metric: str, baseline: str, tolerances, stat: str,
                   confidence: float, traps: bool = False) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
    """Per setting where `baseline` has a grid with validation scores (clean settings unless `traps`): the
    FLOPs and steps to τ of "<baseline> (tuned)", of "<baseline> (default)" where the grid holds its
    defaults, and of every fixed arm.

    Out: (table, curves, notes). table: setting, trap, tolerance, tau (on the curve's sample: the tuned
    baseline's final curve point `stat` over seeds, − tolerance), entry, method, reaches (its `stat` curve
    reaches τ), fraction, steps, flops (+ _ci_low, _ci_high: the mean cumulative FLOPs at the first curve
    point whose `stat` over seeds reaches τ; ∞ if none), flops_ratio (+ _ci: flops / the tuned baseline's,
    paired by seed), p_runs_reach (+ _ci: the share of seeds whose own curve reaches τ by the end), n_seeds.
    curves: setting, entry, method, fraction, value (`stat` over seeds), flops, step (means), observed runs.
    """
    rows, points, notes = [], [], []
    key = validation_column(metric)
    for setting, setting_runs in runs.groupby("setting", sort=True):
        trap = setting_runs["trap"].iloc[0]
        grid_runs = setting_runs[(setting_runs["method.name"] == baseline) & (setting_runs["arm_kind"] == "grid")]
        if grid_runs.empty or (trap and not traps):
            continue
        ids = sorted(int(c) for c in grid_runs["config_id"].unique())
        if not has_validation(boot, runs, ids, metric):
            notes.append(f"time to τ on {setting}: left out, not every {baseline} run has a validation score")
            continue
        entries = {f"{baseline} (tuned)": (baseline, ids, choose(boot, runs, ids, metric, stat, "validation"))}
        defaults = sorted(grid_runs.loc[grid_runs["is_default"].astype(bool), "config_id"].unique())
        if len(defaults) == 1:
            entries[f"{baseline} (default)"] = (baseline, [int(defaults[0])], None)
        for arm, arm_runs in setting_runs[setting_runs["arm_kind"] == "fixed"].groupby("arm", sort=True):
            entries[arm] = (arm_runs["method.name"].iloc[0], sorted(int(c) for c in arm_runs["config_id"].unique()), None)
        used = setting_runs[setting_runs["config_id"].isin([c for _, i, _ in entries.values() for c in i])]
        fractions = common_fractions(used["val_curve"], end=True)
        if len(fractions) == 0 or not math.isclose(fractions[-1], 1.0):
            notes.append(f"time to τ on {setting}: left out, the runs share no validation curve that ends at 1")
            continue
        weights = boot.seed_weights(setting)
        curves = {}
        for name, (method, config_ids, choice) in entries.items():
            val = curve_matrix(boot, used, config_ids, fractions, key)
            present = np.isfinite(val).all(axis=2)
            by_row = _stat_curve(val, present, weights, stat)                       # (R, N, P)
            cost = {k: _stat_curve(curve_matrix(boot, used, config_ids, fractions, k), present, weights, "mean")
                    for k in CURVE_KEYS}
            pick = (np.concatenate([[choice.point], choice.replicates]) if choice is not None
                    else np.zeros(len(weights), dtype=int))
            rows_idx = np.arange(len(weights))
            curves[name] = (method, by_row[rows_idx, pick], {k: v[rows_idx, pick] for k, v in cost.items()},
                            val[pick], present[pick], int(present.sum(axis=1).min()))
            for p, f in enumerate(fractions):
                points.append({"setting": setting, "entry": name, "method": method, "fraction": f,
                               "value": curves[name][1][0, p], **{k: curves[name][2][k][0, p] for k in CURVE_KEYS}})
        tuned = curves[f"{baseline} (tuned)"]
        for tolerance in tolerances:
            tau = tuned[1][:, -1] - tolerance
            tuned_flops = at_point(tuned[2]["flops"], first_reach(tuned[1], tau))
            for name, (method, curve, cost, run_val, run_present, n_name) in curves.items():
                index = first_reach(curve, tau)
                flops = at_point(cost["flops"], index)
                n = min(n_name, tuned[5])
                with np.errstate(invalid="ignore", divide="ignore"):
                    ratio = flops / tuned_flops
                # each row's chosen configuration: its runs' own curves, (R, S, P) -> (R, S)
                run_hits = reaches(np.where(run_present[..., None], run_val, -np.inf), tau).any(axis=2)
                w = weights * run_present
                share = (w * run_hits).sum(axis=1) / w.sum(axis=1)
                row = {"setting": setting, "trap": trap, "tolerance": tolerance, "tau": tau[0], "entry": name,
                       "method": method, "reaches": bool(index[0] >= 0),
                       "fraction": fractions[index[0]] if index[0] >= 0 else math.inf,
                       "steps": at_point(cost["step"], index)[0], "flops": flops[0], "flops_ratio": ratio[0],
                       "p_runs_reach": share[0], "n_seeds": n}
                row["flops_ci_low"], row["flops_ci_high"] = _ci(flops, n, confidence)
                row["flops_ratio_ci_low"], row["flops_ratio_ci_high"] = _ci(ratio, n, confidence)
                row["p_runs_reach_ci_low"], row["p_runs_reach_ci_high"] = map(float, probability_interval(
                    share[0], share[1:], n_name, confidence))
                rows.append(row)
    return pd.DataFrame(rows), pd.DataFrame(points), notes


def time_to_target_figure(curves: pd.DataFrame, table: pd.DataFrame,
                          shown: dict[tuple[str, str], str] | None = None) -> Figure:
    """One panel per setting: each entry's validation curve (`stat` over seeds) against the cumulative
    training FLOPs, τ at each tolerance as a dotted line, and where each curve first reaches it. `shown`:
    (setting, arm) -> label of the fixed arms drawn beside the tuned baseline and its defaults (None: every
    entry, under its own name).

    In: the (curves, table) of `time_to_target`.
    """
    settings = sorted(curves["setting"].unique())
    fig, axes = _panels(len(settings), "Time to τ: validation curve against training FLOPs (τ on the curve's sample)")
    handles: dict[str, object] = {}
    styles, style_of = ("-", "--", "-.", ":"), {}
    for ax, setting in zip(axes.ravel(), settings):
        here = curves[curves["setting"] == setting]
        baseline = set(here.loc[here["entry"].str.endswith("(tuned)"), "method"])
        if shown is not None:
            keep = [(setting, e) in shown or m in baseline for e, m in zip(here["entry"], here["method"])]
            here = here[keep]
        for entry, points in here.groupby("entry", sort=False):
            label = shown.get((setting, entry), entry) if shown is not None else entry
            color = method_color(points["method"].iloc[0])
            # one style per label in every panel, so that the legend's entry is each panel's line
            style = "-" if entry.endswith("(tuned)") else style_of.setdefault(label, styles[1 + len(style_of) % 3])
            ax.plot(points["flops"], points["value"], color=color, linestyle=style, marker="o", markersize=3)
            handles.setdefault(label, Line2D([], [], color=color, linestyle=style, marker="o", markersize=3, label=label))
            hit = table[(table["setting"] == setting) & (table["entry"] == entry) & table["reaches"]]
            for _, row in hit.iterrows():
                ax.plot([row["flops"]], [points.loc[np.isclose(points["fraction"], row["fraction"]), "value"].iloc[0]],
                        marker="*", color=color, markersize=10, linestyle="none")
        for tolerance, tau in table[table["setting"] == setting].groupby("tolerance")["tau"].first().items():
            ax.axhline(tau, color="black", linestyle=":", linewidth=1.0)
            ax.annotate(f"τ − {tolerance:g}" if tolerance else "τ", (ax.get_xlim()[0], tau), fontsize=7,
                        va="bottom")
        ax.set_title(setting, fontsize=10)
        ax.set_xlabel("cumulative training FLOPs")
        ax.set_ylabel("validation score (curve sample)")
        _style(ax)
    handles["_star"] = Line2D([], [], color="black", marker="*", linestyle="none", markersize=9,
                              label="first curve point at or above τ")
    _hide_unused(axes, len(settings))
    _legend(fig, list(handles.values()))
    return fig
