"""What runs cost, and what reaching a target score costs (DESIGN §8, §11).

Cost of one run, under a convention for the one-off shared costs (SFT checkpoint, dataset build,
reference log-probs; the record's `cost.shared.<kind>` entries give each cache's key and build cost):
    own cost      the run's `cost.device_hours`, `cost.flops`, `cost.total_s`. bench times the setup
                  phase in which a run builds a missing cache, so a run that built one (hit = false) has
                  the build inside its own wall time and device-hours: it is taken out first, so no build
                  is counted twice. bench's FLOPs count only the tokens the run itself trains on and
                  scores, never a build, so nothing is taken out of them.
    "amortize"    each unique cache key's build cost is charged once, divided equally over the loaded
                  runs that used that key (the sweep shares it).
    "per_run"     every run is charged the full build cost of every cache it used, as if it ran alone.
The charged columns are "charged.device_hours", "charged.flops" and "charged.wall_s".

Cost to reach a target τ (trials, device-hours, FLOPs) for an arm (see `grid`):
    A trial is one run of one configuration; configuration j has score s_j (the seed statistic) and
    cost c_j (the mean charged cost of one of its runs). Of the N configurations, m reach τ (s_j ≥ τ).
    A baseline is tuned by random search over its grid without replacement until a trial reaches τ,
    so in a uniformly random order:
        E[trials] = (N + 1) / (m + 1)
        E[cost]   = Σ_{j: s_j < τ} c_j / (m + 1)  +  Σ_{j: s_j ≥ τ} c_j / m
    (each failing configuration comes before every reaching one with probability 1/(m+1); the first
    reaching one is each of the m with probability 1/m). m = 0: τ is never reached, cost = ∞.
    An IMI arm has N = 1: one run, which reaches τ or not.
    The full grid costs Σ_j c_j (one run per grid point), what tuning costs without knowing τ.
Savings of arm A against the baseline B at τ: 1 − E[cost_A] / E[cost_B](τ); against the full grid:
1 − E[cost_A] / Σ_j c_j(B).

Pure functions over DataFrames/arrays; no I/O, no plotting.
"""
from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np
import pandas as pd

from analysis.metrics import configuration_arrays, point_config_stats, resampled_config_stats
from analysis.stats import percentile_interval

CONVENTIONS = ("amortize", "per_run")
# (own cost column, shared entry field, charged column, whether a build is inside the own cost)
QUANTITIES = (
    ("cost.device_hours", "device_hours", "charged.device_hours", True),
    ("cost.flops", "flops", "charged.flops", False),
    ("cost.total_s", "wall_s", "charged.wall_s", True),
)
CHARGED_COLUMNS = tuple(q[2] for q in QUANTITIES)


def shared_kinds(frame: pd.DataFrame) -> list[str]:
    """The shared-cache kinds present in the records, e.g. ["dataset", "reference", "sft"]."""
    kinds = {m.group(1) for c in frame.columns if (m := re.fullmatch(r"cost\.shared\.([^.]+)\.key", c))}
    return sorted(kinds)


def _column(frame: pd.DataFrame, name: str) -> pd.Series:
    if name in frame.columns:
        return pd.to_numeric(frame[name], errors="coerce")
    return pd.Series(math.nan, index=frame.index)


def _is_false(values: pd.Series) -> pd.Series:
    return values.map(lambda v: v is False or (isinstance(v, (int, float, np.bool_)) and not pd.isna(v) and not v))


def shared_field(frame: pd.DataFrame, kind: str, field: str) -> pd.Series:
    """Per run, the build cost `field` (wall_s, device_hours, flops) its `kind` cache reports.

    Cache entries store wall_s and, where the builder counts them, flops; device-hours missing from an
    entry are wall_s × the run's cost.device_count / 3600 (the devices the job held while building).
    FLOPs an entry does not report (e.g. the dataset build) stay NaN and are charged as 0.
    """
    values = _column(frame, f"cost.shared.{kind}.{field}")
    if field == "device_hours":
        devices = _column(frame, "cost.device_count").fillna(1.0)
        values = values.fillna(_column(frame, f"cost.shared.{kind}.wall_s") * devices / 3600.0)
    return values


def shared_build_costs(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per unique shared cache: kind, key, n_runs (loaded runs that used it), n_builds (runs
    that built it, hit = false), device_hours, flops, wall_s.

    The build cost is the mean over the runs that built it; when every loaded run hit the cache (it
    was built by an earlier sweep), the median of the build cost the hits report.
    """
    rows = []
    for kind in shared_kinds(frame):
        prefix = f"cost.shared.{kind}."
        keys = frame[prefix + "key"]
        built = _is_false(frame[prefix + "hit"]) if prefix + "hit" in frame else pd.Series(False, index=frame.index)
        for key, users in frame[keys.notna()].groupby(keys[keys.notna()], sort=True):
            builders = users[built.loc[users.index]]
            row = {"kind": kind, "key": key, "n_runs": len(users), "n_builds": len(builders)}
            for _, field, _, _ in QUANTITIES:
                values = shared_field(frame, kind, field).loc[(builders if len(builders) else users).index]
                row[field] = values.mean() if len(builders) else values.median()
            rows.append(row)
    return pd.DataFrame(rows, columns=["kind", "key", "n_runs", "n_builds", *[q[1] for q in QUANTITIES]])


def charged_costs(frame: pd.DataFrame, convention: str = "amortize") -> pd.DataFrame:
    """Per-run cost under a shared-cost convention (see the module docstring).

    In:  runs frame with cost.* columns. Out: a frame with the same index and columns
         charged.device_hours, charged.flops, charged.wall_s (NaN where the run reports no own cost).
         A build taken out of a run's own cost never makes it negative (clipped at 0).
    """
    if convention not in CONVENTIONS:
        raise ValueError(f"cost convention must be one of {CONVENTIONS}, got {convention!r}")
    out = pd.DataFrame(index=frame.index)
    builds = shared_build_costs(frame)
    for own_column, field, charged_column, build_inside in QUANTITIES:
        charged = _column(frame, own_column)
        for kind in shared_kinds(frame):
            prefix = f"cost.shared.{kind}."
            keys = frame[prefix + "key"]
            if build_inside and prefix + "hit" in frame:
                built_here = _is_false(frame[prefix + "hit"]) & keys.notna()
                charged = charged - shared_field(frame, kind, field).where(built_here, 0.0).fillna(0.0)
                charged = charged.clip(lower=0.0)
            table = builds[builds["kind"] == kind].set_index("key")
            cost = keys.map(table[field]).astype(float)
            if convention == "amortize":
                cost = cost / keys.map(table["n_runs"]).astype(float)
            charged = charged + cost.fillna(0.0)
        out[charged_column] = charged
    return out


def expected_cost_to_reach(scores: np.ndarray, costs: np.ndarray, tau: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """Expected trials and cost of random search without replacement until a score reaches τ.

    Shapes: scores, costs (..., N); tau scalar or (...). Returns (trials, cost), each (...):
    trials = (N+1)/(m+1), cost = Σ_{fail} c_j/(m+1) + Σ_{reach} c_j/m, both ∞ where m = 0.
    """
    scores = np.asarray(scores, dtype=float)
    costs = np.broadcast_to(np.asarray(costs, dtype=float), scores.shape)
    reach = scores >= np.asarray(tau, dtype=float)[..., None]
    n = scores.shape[-1]
    m = reach.sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        trials = np.where(m > 0, (n + 1) / (m + 1), np.inf)
        cost = np.where(m > 0, np.where(reach, 0.0, costs).sum(-1) / (m + 1) + np.where(reach, costs, 0.0).sum(-1) / np.maximum(m, 1),
                        np.inf)
    return trials, cost


def _savings(cost: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """1 − cost/reference; −∞ where cost is ∞ (target missed)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isinf(cost), -np.inf, 1.0 - cost / reference)


def cost_to_reach_table(runs: pd.DataFrame, metric: str, baseline: str, tolerances: Sequence[float],
                        stat: str = "mean", n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> pd.DataFrame:
    """Cost of every arm to reach τ = best-of-grid(baseline) − tolerance, and its savings vs the baseline.

    In:  annotated runs with `metric` and the CHARGED_COLUMNS (from `charged_costs`). Only settings
         where the baseline has a grid are used. Intervals: bootstrap over seeds, resampling every
         configuration's runs (score and cost together) in the baseline and the arm, recomputing τ too.
    Out: one row per (setting, tolerance, arm): setting, tolerance, tau, arm, arm_kind, n_configs, reaches,
         p_reach (share of bootstrap replicates in which the arm reaches τ), expected_trials,
         expected_device_hours, expected_flops, baseline_full_grid_device_hours, baseline_full_grid_flops,
         savings_trials, savings_device_hours (+ _ci_low, _ci_high), savings_flops (+ _ci_low, _ci_high),
         savings_vs_full_grid_device_hours, savings_vs_full_grid_flops. Savings are −inf where the arm
         misses τ; a row for the baseline itself has savings 0.
    """
    rng = np.random.default_rng(seed)
    columns = [metric, "charged.device_hours", "charged.flops"]
    runs = runs[runs[metric].notna()]
    rows = []
    for setting, setting_runs in runs.groupby("setting", sort=True):
        base_runs = setting_runs[(setting_runs["method.name"] == baseline) & (setting_runs["arm_kind"] == "grid")]
        if base_runs.empty:
            continue
        base_configs = configuration_arrays(base_runs, columns)
        base_point = point_config_stats(base_configs, stat)  # (N, 3)
        base_boot = resampled_config_stats(base_configs, stat, n_boot, rng)  # (B, N, 3)
        best_point, best_boot = base_point[:, 0].max(), base_boot[:, :, 0].max(axis=1)
        for arm, arm_runs in setting_runs.groupby("arm", sort=True):
            if arm == baseline:
                arm_point, arm_boot = base_point, base_boot
            else:
                configs = configuration_arrays(arm_runs, columns)
                arm_point, arm_boot = point_config_stats(configs, stat), resampled_config_stats(configs, stat, n_boot, rng)
            for tolerance in tolerances:
                rows.append(_reach_row(setting, arm, arm_runs, tolerance, best_point, best_boot,
                                       base_point, base_boot, arm_point, arm_boot, confidence))
    return pd.DataFrame(rows)


def _reach_row(setting, arm, arm_runs, tolerance, best_point, best_boot, base_point, base_boot,
               arm_point, arm_boot, confidence) -> dict:
    tau, tau_boot = best_point - tolerance, best_boot - tolerance
    row = {"setting": setting, "tolerance": tolerance, "tau": tau, "arm": arm,
           "arm_kind": arm_runs["arm_kind"].iloc[0], "n_configs": len(arm_point)}
    trials = expected_cost_to_reach(arm_point[:, 0], 1.0, tau)[0]
    base_trials = expected_cost_to_reach(base_point[:, 0], 1.0, tau)[0]
    row.update(reaches=bool(np.isfinite(trials)), expected_trials=float(trials),
               p_reach=float(np.mean(np.isfinite(expected_cost_to_reach(arm_boot[:, :, 0], 1.0, tau_boot)[0]))))
    row["savings_trials"] = float(_savings(trials, base_trials))
    for c, name in ((1, "device_hours"), (2, "flops")):
        cost = expected_cost_to_reach(arm_point[:, 0], arm_point[:, c], tau)[1]
        base_cost = expected_cost_to_reach(base_point[:, 0], base_point[:, c], tau)[1]
        cost_boot = expected_cost_to_reach(arm_boot[:, :, 0], arm_boot[:, :, c], tau_boot)[1]
        base_cost_boot = expected_cost_to_reach(base_boot[:, :, 0], base_boot[:, :, c], tau_boot)[1]
        full_grid = base_point[:, c].sum()
        low, high = percentile_interval(_savings(cost_boot, base_cost_boot), confidence)
        row.update({
            f"expected_{name}": float(cost), f"baseline_full_grid_{name}": float(full_grid),
            f"savings_{name}": float(_savings(cost, base_cost)),
            f"savings_{name}_ci_low": float(low), f"savings_{name}_ci_high": float(high),
            f"savings_vs_full_grid_{name}": float(_savings(cost, full_grid)),
        })
    return row


def savings_summary(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Savings summed over settings: what matching the tuned baseline on every setting costs.

    In:  `cost_to_reach_table` output. Out: one row per (tolerance, arm other than the baseline):
         tolerance, arm, n_settings (settings where both ran), n_reached (settings where the arm reaches τ),
         total_device_hours / total_flops (Σ over those settings of the arm's expected cost; ∞ if it misses
         τ anywhere), baseline_total_device_hours / baseline_total_flops, savings_device_hours /
         savings_flops = 1 − total / baseline total (−∞ when the arm misses τ on some setting).
    """
    rows = []
    base = table[table["arm"] == baseline].set_index(["setting", "tolerance"])
    for (tolerance, arm), group in table[table["arm"] != baseline].groupby(["tolerance", "arm"], sort=True):
        reference = base.loc[[(s, tolerance) for s in group["setting"]]]
        row = {"tolerance": tolerance, "arm": arm, "n_settings": len(group), "n_reached": int(group["reaches"].sum())}
        for name in ("device_hours", "flops"):
            total = float(group[f"expected_{name}"].sum())
            base_total = float(reference[f"expected_{name}"].sum())
            row.update({f"total_{name}": total, f"baseline_total_{name}": base_total,
                        f"savings_{name}": float(_savings(np.array(total), np.array(base_total)))})
        rows.append(row)
    columns = ["tolerance", "arm", "n_settings", "n_reached", "total_device_hours", "baseline_total_device_hours",
               "savings_device_hours", "total_flops", "baseline_total_flops", "savings_flops"]
    return pd.DataFrame(rows, columns=columns)
