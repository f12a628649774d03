"""Tuning tables: expected best of k, tuners' cost to reach τ, and savings (DESIGN §11, §11a).

Turns annotated runs into the tables of the report with the estimators of `analysis.tuners` (whose
docstring has the exact definitions) over the seed bootstrap of `analysis.selection`. Every number
is computed on the observed runs and again in every replicate; intervals are
`stats.seed_interval` with n = the smallest seed count involved. Costs are the charged costs of
`analysis.costs` under the report's convention; FLOPs first, device-hours beside.

Pure functions over DataFrames; no I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from analysis.costs import COST_FIELDS, charged_costs, procedure_builds, shared_build_costs
from analysis.selection import SeedBootstrap, has_validation, validation_column
from analysis.stats import seed_interval
from analysis.tuners import (GRID, RANDOM, SH_VARIANTS, GridArrays, cost_to_reach, curve_columns, grid_arrays,
                             grid_search, random_search, rung_arrays, savings, subsets, successive_halving, with_point)


def _ci(values: np.ndarray, n: int, confidence: float, upper: float = np.inf) -> tuple[float, float]:
    """Interval of a quantity computed on the observed runs (values[0]) and per replicate (values[1:]),
    kept at or below `upper` where the quantity cannot exceed it (a saving: 1 − cost/cost ≤ 1; the
    t-type widening of `seed_interval` knows nothing of bounds)."""
    low, high = seed_interval(values[0], values[1:], n, confidence)
    return float(min(low, upper)), float(min(high, upper))


def prepare(runs: pd.DataFrame, metric: str, convention: str) -> pd.DataFrame:
    """`runs` (with charged.* columns under `convention`) plus what the tuners read: "share.<f>" (the
    run's per-run build charge: charged − own cost) and the curve columns at every SH rung."""
    own = charged_costs(runs, "per_procedure")
    shares = pd.DataFrame({f"share.{f}": (runs[f"charged.{f}"] - own[f"charged.{f}"]).fillna(0.0) for f in COST_FIELDS},
                          index=runs.index)
    rungs = sorted({f for _, _, fractions in SH_VARIANTS for f in fractions if f < 1.0})
    curves = curve_columns(runs, rungs, (validation_column(metric), *COST_FIELDS))
    return pd.concat([runs, shares, curves], axis=1)


def _grid(runs, boot, setting_runs, method, metric, stat, convention, all_builds):
    """(config ids, GridArrays) of `method`'s grid on one setting; `all_builds`: shared_build_costs(runs)."""
    arm_runs = setting_runs[(setting_runs["method.name"] == method) & (setting_runs["arm_kind"] == "grid")]
    if arm_runs.empty:
        return None
    ids = sorted(arm_runs["config_id"].unique())
    on = "validation" if has_validation(boot, runs, ids, metric) else "test"
    return ids, grid_arrays(boot, runs, ids, metric, stat, procedure_builds(arm_runs, runs, convention, all_builds), on)


def expected_best_table(runs: pd.DataFrame, boot: SeedBootstrap, metric: str, stat: str, convention: str,
                        confidence: float) -> pd.DataFrame:
    """Random search over every grid arm: per (setting, arm, k), k = 1..N.

    Out: setting, trap, arm, selected_on, n_configs, k, expected_test (E_k: the test score of the
    val-argmax of k random configurations) + expected_test_ci_low, _ci_high, oracle (Ê_k: the best test score of k)
    + oracle_ci_low, oracle_ci_high, expected_flops, expected_device_hours (k · mean run cost + the
    procedure's builds). `runs` as returned by `prepare`.
    """
    rows, all_builds = [], shared_build_costs(runs)
    for (setting, method), group in runs[runs["arm_kind"] == "grid"].groupby(["setting", "method.name"], sort=True):
        ids, g = _grid(runs, boot, group, method, metric, stat, convention, all_builds)
        test, cost = random_search(g.val, g.test, g.cost, g.builds)
        oracle = random_search(g.test, g.test, g.cost, g.builds)[0]
        for k in range(1, len(ids) + 1):
            row = {"setting": setting, "trap": group["trap"].iloc[0], "arm": method, "selected_on": g.selected_on,
                   "n_configs": len(ids), "k": k, "expected_test": test[0, k - 1], "oracle": oracle[0, k - 1]}
            row["expected_test_ci_low"], row["expected_test_ci_high"] = _ci(test[:, k - 1], g.n_seeds, confidence)
            row["oracle_ci_low"], row["oracle_ci_high"] = _ci(oracle[:, k - 1], g.n_seeds, confidence)
            row.update({f"expected_{f}": cost[0, k - 1, c] for c, f in enumerate(COST_FIELDS)})
            rows.append(row)
    columns = ["setting", "trap", "arm", "selected_on", "n_configs", "k", "expected_test", "expected_test_ci_low",
               "expected_test_ci_high",
               "oracle", "oracle_ci_low", "oracle_ci_high", *[f"expected_{f}" for f in COST_FIELDS]]
    return pd.DataFrame(rows).reindex(columns=columns)


@dataclass
class Tuner:
    """One tuner on one setting: per budget, trials (K,), expected test (R, K), expected cost (R, K, C)."""

    name: str
    trials: np.ndarray
    test: np.ndarray
    cost: np.ndarray


def tuners_for(runs: pd.DataFrame, boot: SeedBootstrap, ids, g: GridArrays, metric: str, stat: str,
               seed: int) -> tuple[list[Tuner], list[str]]:
    """Grid search, random search and the successive-halving variants on one baseline grid, and
    why any of them is unavailable (e.g. no val_curve in older records)."""
    n = len(ids)
    test, cost = grid_search(g.val, g.test, g.cost, g.builds)
    tuners = [Tuner(GRID, np.array([n]), test[:, None], cost[:, None, :])]
    test, cost = random_search(g.val, g.test, g.cost, g.builds)
    tuners.append(Tuner(RANDOM, np.arange(1, n + 1), test, cost))
    problems = []
    rng = np.random.default_rng(seed)
    for name, eta, rungs in SH_VARIANTS:
        arrays = rung_arrays(boot, runs, ids, metric, stat, rungs)
        if isinstance(arrays, str):
            problems.append(f"{name}: {arrays}")
            continue
        rung_val, rung_cost = arrays
        per_n = [successive_halving(g.val, g.test, g.cost, rung_val, rung_cost, g.builds, subsets(n, size, rng), eta)
                 for size in range(1, n + 1)]
        tuners.append(Tuner(name, np.arange(1, n + 1), np.stack([t for t, _ in per_n], axis=1),
                            np.stack([c for _, c in per_n], axis=1)))
    return tuners, problems


@dataclass
class TuningResult:
    curves: pd.DataFrame
    reach: pd.DataFrame
    savings: pd.DataFrame
    summary: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def tuning_comparison(runs: pd.DataFrame, boot: SeedBootstrap, metric: str, baseline: str, tolerances, stat: str,
                      convention: str, confidence: float, seed: int = 0) -> TuningResult:
    """Every tuner of `baseline` and every fixed arm, on every setting where the baseline has a grid.

    `runs` as returned by `prepare`. Tables (τ = the tuned baseline's test score − tolerance):
    curves   setting, trap, tuner, selected_on, budget, trials, expected_test (+ _ci_low, _ci_high),
             expected_<cost>
    reach    setting, trap, tolerance, tau, tuner, budget, trials, <cost> (∞: misses τ), p_reach
    savings  setting, trap, tolerance, arm, tuner, arm_reaches, p_reach, arm_<cost>, tuner_<cost>,
             savings_<cost> (+ _ci_low, _ci_high), n_seeds
    summary  scope ("clean" | "trap"), tolerance, arm, tuner, n_settings, n_reached, arm_<cost>,
             tuner_<cost> (sums over the settings), savings_<cost> (+ _ci_low, _ci_high), n_seeds
    """
    curves, reach, saved, kept = [], [], [], {}
    unavailable: dict[str, list[str]] = {}
    all_builds = shared_build_costs(runs)  # the builds' costs over every loaded run, read once
    for setting, setting_runs in runs.groupby("setting", sort=True):
        found = _grid(runs, boot, setting_runs, baseline, metric, stat, convention, all_builds)
        if found is None:
            continue
        ids, g = found
        trap = setting_runs["trap"].iloc[0]
        tuners, problems = tuners_for(runs, boot, ids, g, metric, stat, seed)
        for problem in problems:
            unavailable.setdefault(problem, []).append(setting)
        for t in tuners:
            for b, trials in enumerate(t.trials):
                row = {"setting": setting, "trap": trap, "tuner": t.name, "selected_on": g.selected_on, "budget": int(trials),
                       "trials": int(trials), "expected_test": t.test[0, b]}
                row["expected_test_ci_low"], row["expected_test_ci_high"] = _ci(t.test[:, b], g.n_seeds, confidence)
                row.update({f"expected_{f}": t.cost[0, b, c] for c, f in enumerate(COST_FIELDS)})
                curves.append(row)
        tuned_test = grid_search(g.val, g.test, g.cost, g.builds)[0]
        fixed = setting_runs[setting_runs["arm_kind"] == "fixed"]
        arms = {}
        for arm, arm_runs in fixed.groupby("arm", sort=True):
            arm_ids = sorted(arm_runs["config_id"].unique())
            test = with_point(*boot.stat(runs, arm_ids, metric, stat))[:, 0]
            builds = procedure_builds(arm_runs, runs, convention, all_builds)
            cost = np.stack([with_point(*boot.stat(runs, arm_ids, f"charged.{f}", "mean"))[:, 0] + builds[f]
                             for f in COST_FIELDS], axis=-1)
            arms[arm] = (test, cost, min(g.n_seeds, boot.min_seeds(arm_ids)))
        for tolerance in tolerances:
            tau = tuned_test - tolerance
            for t in tuners:
                budget, cost = cost_to_reach(t.test, t.cost, tau)
                row = {"setting": setting, "trap": trap, "tolerance": tolerance, "tau": tau[0], "tuner": t.name,
                       "budget": int(t.trials[budget[0]]) if budget[0] >= 0 else math.nan,
                       "trials": int(t.trials[budget[0]]) if budget[0] >= 0 else math.inf,
                       "p_reach": float(np.mean(budget[1:] >= 0))}
                row.update({f: cost[0, c] for c, f in enumerate(COST_FIELDS)})
                reach.append(row)
                for arm, (test, arm_cost, n) in arms.items():
                    reaches = test >= tau - 1e-12
                    paid = np.where(reaches[:, None], arm_cost, np.inf)
                    kept[(setting, trap, tolerance, arm, t.name)] = (paid, cost, n, bool(reaches[0]))
                    row = {"setting": setting, "trap": trap, "tolerance": tolerance, "arm": arm, "tuner": t.name,
                           "arm_reaches": bool(reaches[0]), "p_reach": float(reaches[1:].mean()), "n_seeds": n}
                    for c, f in enumerate(COST_FIELDS):
                        value = savings(paid[:, c], cost[:, c])
                        row.update({f"arm_{f}": arm_cost[0, c], f"tuner_{f}": cost[0, c], f"savings_{f}": value[0]})
                        row[f"savings_{f}_ci_low"], row[f"savings_{f}_ci_high"] = _ci(value, n, confidence, upper=1.0)
                    saved.append(row)
    notes = [f"{problem} (on {', '.join(settings)})" for problem, settings in unavailable.items()]
    return TuningResult(pd.DataFrame(curves), pd.DataFrame(reach), pd.DataFrame(saved), _summary(kept, confidence), notes)


def _summary(kept: dict, confidence: float) -> pd.DataFrame:
    """Sum arm and tuner costs over the settings of each scope; savings from the sums, per replicate."""
    groups: dict[tuple, list] = {}
    for (setting, trap, tolerance, arm, tuner), value in kept.items():
        groups.setdefault(("trap" if trap else "clean", tolerance, arm, tuner), []).append(value)
    rows = []
    for (scope, tolerance, arm, tuner), values in sorted(groups.items()):
        arm_total = np.sum([v[0] for v in values], axis=0)    # (R, C); ∞ if the arm misses τ anywhere
        tuner_total = np.sum([v[1] for v in values], axis=0)
        n = min(v[2] for v in values)
        row = {"scope": scope, "tolerance": tolerance, "arm": arm, "tuner": tuner, "n_settings": len(values),
               "n_reached": int(sum(v[3] for v in values)),
               "n_seeds": n}
        for c, f in enumerate(COST_FIELDS):
            value = savings(arm_total[:, c], tuner_total[:, c])
            row.update({f"arm_{f}": arm_total[0, c], f"tuner_{f}": tuner_total[0, c], f"savings_{f}": value[0]})
            row[f"savings_{f}_ci_low"], row[f"savings_{f}_ci_high"] = _ci(value, n, confidence, upper=1.0)
        rows.append(row)
    return pd.DataFrame(rows)
