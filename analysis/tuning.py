"""The report's tuning tables from annotated runs: expected best of k, each tuner's cost to reach τ
and every fixed arm's savings, per setting and summed over settings (docs/design.md §11, §11a).

Composes the estimators of `analysis.tuner_models` and `analysis.savings` over each setting's arrays
(`analysis.seed_arrays`), on the observed runs and again in every bootstrap replicate, and owns only
the tables' rows and columns and their intervals. Pure functions; no I/O.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from analysis.costs import COST_FIELDS, shared_build_costs
from analysis.savings import cost_to_reach, plausible_costs, saving_interval, savings, summed_saving_range
from analysis.seed_arrays import arm_seeds, grid_seeds, oracle_grid
from analysis.selection import SeedBootstrap
from analysis.stats import probability_interval, seed_interval
from analysis.tuner_models import PRACTITIONER, arm_outcome, grid_tuners, reaches, tau_rows
from analysis.tuner_selection import RANDOM


def _ci(values: np.ndarray, n: int, confidence: float, upper: float = np.inf) -> tuple[float, float]:
    """Interval of a quantity computed on the observed runs (values[0]) and per replicate (values[1:]),
    kept at or below `upper` where the quantity cannot exceed it (a saving: 1 − cost/cost ≤ 1; the
    t-type widening of `seed_interval` knows nothing of bounds)."""
    low, high = seed_interval(values[0], values[1:], n, confidence)
    return float(min(low, upper)), float(min(high, upper))


def expected_best_table(runs: pd.DataFrame, boot: SeedBootstrap, metric: str, stat: str, convention: str,
                        confidence: float, model: str = PRACTITIONER) -> pd.DataFrame:
    """Random search over every grid arm under the tuner `model`: per (setting, arm, k), k = 1..N.

    Out: setting, trap, arm, tuner_model, selected_on, n_configs, k, expected_test (E_k: the test score of
    the val-argmax of k random configurations) + expected_test_ci_low, _ci_high, oracle (Ê_k: the best
    test score of k) + oracle_ci_low, oracle_ci_high, expected_flops, expected_device_hours (the runs
    trained + the procedure's builds). `runs` as returned by `seed_arrays.prepare`. A grid whose configurations share
    no seed is left out (the practitioner's model needs one).
    """
    rows, all_builds = [], shared_build_costs(runs)
    for (setting, method), group in runs[runs["arm_kind"] == "grid"].groupby(["setting", "method.name"], sort=True):
        ids, grid, _ = grid_seeds(runs, boot, group, metric, convention, all_builds)
        grid = replace(grid, rung_val={}, rung_cost={})
        weights = boot.seed_weights(boot.setting(ids))
        try:
            chosen = next(t for t in grid_tuners(grid, weights, stat, model, np.random.default_rng(0)) if t.name == RANDOM)
            oracle = next(t for t in grid_tuners(oracle_grid(grid), weights, stat, model, np.random.default_rng(0))
                          if t.name == RANDOM)
        except ValueError:
            continue
        for k in range(1, len(ids) + 1):
            row = {"setting": setting, "trap": group["trap"].iloc[0], "arm": method, "tuner_model": model,
                   "selected_on": grid.selected_on, "n_configs": len(ids), "k": k,
                   "expected_test": chosen.expected_test[0, k - 1], "oracle": oracle.expected_test[0, k - 1]}
            row["expected_test_ci_low"], row["expected_test_ci_high"] = _ci(chosen.expected_test[:, k - 1],
                                                                            grid.n_seeds, confidence)
            row["oracle_ci_low"], row["oracle_ci_high"] = _ci(oracle.expected_test[:, k - 1], grid.n_seeds, confidence)
            row.update({f"expected_{f}": chosen.expected_cost[0, k - 1, c] for c, f in enumerate(COST_FIELDS)})
            rows.append(row)
    columns = ["setting", "trap", "arm", "tuner_model", "selected_on", "n_configs", "k", "expected_test",
               "expected_test_ci_low", "expected_test_ci_high", "oracle", "oracle_ci_low", "oracle_ci_high",
               *[f"expected_{f}" for f in COST_FIELDS]]
    return pd.DataFrame(rows).reindex(columns=columns)


@dataclass
class TuningResult:
    curves: pd.DataFrame
    reach: pd.DataFrame
    savings: pd.DataFrame
    summary: pd.DataFrame
    notes: list[str] = field(default_factory=list)


def tuning_comparison(runs: pd.DataFrame, boot: SeedBootstrap, metric: str, baseline: str, tolerances, stat: str,
                      convention: str, confidence: float, seed: int = 0, model: str = PRACTITIONER) -> TuningResult:
    """Every tuner of `baseline` under the tuner `model` and every fixed arm, on every setting where the
    baseline has a grid.

    `runs` as returned by `seed_arrays.prepare`. Tables (τ = the tuned baseline's test score − tolerance; "tuner" is
    the tuner's label, which names the idealised model; tuner_model says which):
    curves   setting, trap, tuner, tuner_model, selected_on, budget, trials, expected_test (+ _ci_low,
             _ci_high), expected_<cost>
    reach    setting, trap, tolerance, tau, tuner, tuner_model, budget, trials (∞: misses τ), <cost>
             (∞: misses τ), expected_test (at the budget), p_reach (+ _ci_low, _ci_high): the probability
             that ONE tuning procedure at p_reach_budget (the budget, or the largest one where none
             reaches τ in expectation) ends with a run that reaches τ
    savings  setting, trap, tolerance, arm, tuner, tuner_model, arm_reaches (its score ≥ τ), p_reach (+
             _ci_low, _ci_high: the share of seeds whose one run of the arm reaches τ), arm_<cost>,
             tuner_<cost>, savings_<cost> (+ _ci_low, _ci_high), n_seeds
    summary  scope ("clean" | "trap"), tolerance, arm, tuner, tuner_model, n_settings, n_reached, arm_<cost>,
             tuner_<cost> (sums over the settings), savings_<cost> (+ _ci_low, _ci_high), n_seeds
    """
    curves, reach, saved, kept = [], [], [], {}
    unavailable: dict[str, list[str]] = {}
    all_builds = shared_build_costs(runs)  # the builds' costs over every loaded run, read once
    for setting, setting_runs in runs.groupby("setting", sort=True):
        grid_runs = setting_runs[(setting_runs["method.name"] == baseline) & (setting_runs["arm_kind"] == "grid")]
        if grid_runs.empty:
            continue
        _, grid, problems = grid_seeds(runs, boot, grid_runs, metric, convention, all_builds)
        weights = boot.seed_weights(setting)
        try:
            tuners = grid_tuners(grid, weights, stat, model, np.random.default_rng(seed))
        except ValueError as err:
            problems = [f"every tuner: {err}"]
            tuners = []
        for problem in problems:
            unavailable.setdefault(problem, []).append(setting)
        trap = setting_runs["trap"].iloc[0]
        n = grid.n_seeds
        for t in tuners:
            for b, trials in enumerate(t.trials):
                row = {"setting": setting, "trap": trap, "tuner": t.label, "tuner_model": model,
                       "selected_on": grid.selected_on, "budget": int(trials), "trials": int(trials),
                       "expected_test": t.expected_test[0, b]}
                row["expected_test_ci_low"], row["expected_test_ci_high"] = _ci(t.expected_test[:, b], n, confidence)
                row.update({f"expected_{f}": t.expected_cost[0, b, c] for c, f in enumerate(COST_FIELDS)})
                curves.append(row)
        arms = {}
        for arm, arm_runs in setting_runs[setting_runs["arm_kind"] == "fixed"].groupby("arm", sort=True):
            arm_ids, seeds = arm_seeds(runs, boot, arm_runs, metric, convention, all_builds)
            arms[arm] = (arm_outcome(seeds, weights, stat, model), min(n, boot.min_seeds(arm_ids)))
        for tolerance in tolerances if tuners else ():
            tau = tau_rows(grid, weights, stat, tolerance)
            for t in tuners:
                budget, cost = cost_to_reach(t.expected_test, t.expected_cost, tau)
                at = int(budget[0]) if budget[0] >= 0 else len(t.trials) - 1
                p_reach = t.p_reach(tau)[:, at]
                row = {"setting": setting, "trap": trap, "tolerance": tolerance, "tau": tau[0], "tuner": t.label,
                       "tuner_model": model, "budget": int(t.trials[budget[0]]) if budget[0] >= 0 else math.nan,
                       "trials": int(t.trials[budget[0]]) if budget[0] >= 0 else math.inf,
                       "expected_test": t.expected_test[0, at], "p_reach": p_reach[0],
                       "p_reach_budget": int(t.trials[at])}
                row["p_reach_ci_low"], row["p_reach_ci_high"] = map(float, probability_interval(p_reach[0], p_reach[1:], n,
                                                                                           confidence))
                row.update({f: cost[0, c] for c, f in enumerate(COST_FIELDS)})
                reach.append(row)
                for arm, (outcome, n_arm) in arms.items():
                    hits = reaches(outcome.score, tau)
                    paid = np.where(hits[:, None], outcome.cost, np.inf)
                    arm_p = outcome.p_reach(tau)
                    open_costs = plausible_costs(t, tau, outcome, n, n_arm, confidence)
                    kept[(setting, trap, tolerance, arm, t.label)] = (paid, cost, n_arm, bool(hits[0]), open_costs)
                    row = {"setting": setting, "trap": trap, "tolerance": tolerance, "arm": arm, "tuner": t.label,
                           "tuner_model": model, "arm_reaches": bool(hits[0]), "p_reach": arm_p[0], "n_seeds": n_arm}
                    row["p_reach_ci_low"], row["p_reach_ci_high"] = map(float, probability_interval(
                        arm_p[0], arm_p[1:], n_arm, confidence))
                    for c, f in enumerate(COST_FIELDS):
                        value = savings(paid[:, c], cost[:, c])
                        row.update({f"arm_{f}": outcome.cost[0, c], f"tuner_{f}": cost[0, c], f"savings_{f}": value[0]})
                        row[f"savings_{f}_ci_low"], row[f"savings_{f}_ci_high"] = saving_interval(
                            value, open_costs, c, n_arm, confidence)
                    saved.append(row)
    notes = [f"{problem} (on {', '.join(settings)})" for problem, settings in unavailable.items()]
    return TuningResult(pd.DataFrame(curves), pd.DataFrame(reach), pd.DataFrame(saved),
                        _summary(kept, confidence, model), notes)


def _summary(kept: dict, confidence: float, model: str) -> pd.DataFrame:
    """Sum arm and tuner costs over the settings of each scope; savings from the sums, per replicate
    (settings are independent strata of the bootstrap, so their replicates add up row by row); the
    interval widened as `saving_interval` widens one setting's (`summed_saving_range`)."""
    groups: dict[tuple, list] = {}
    for (setting, trap, tolerance, arm, tuner), value in kept.items():
        groups.setdefault(("trap" if trap else "clean", tolerance, arm, tuner), []).append(value)
    rows = []
    for (scope, tolerance, arm, tuner), values in sorted(groups.items()):
        arm_total = np.sum([v[0] for v in values], axis=0)    # (R, C); ∞ if the arm misses τ anywhere
        tuner_total = np.sum([v[1] for v in values], axis=0)
        n = min(v[2] for v in values)
        row = {"scope": scope, "tolerance": tolerance, "arm": arm, "tuner": tuner, "tuner_model": model,
               "n_settings": len(values), "n_reached": int(sum(v[3] for v in values)), "n_seeds": n}
        for c, f in enumerate(COST_FIELDS):
            value = savings(arm_total[:, c], tuner_total[:, c])
            row.update({f"arm_{f}": arm_total[0, c], f"tuner_{f}": tuner_total[0, c], f"savings_{f}": value[0]})
            low, high = _ci(value, n, confidence, upper=1.0)
            lowest, highest = summed_saving_range([v[4] for v in values], c)
            row[f"savings_{f}_ci_low"], row[f"savings_{f}_ci_high"] = min(low, lowest), min(max(high, highest), 1.0)
        rows.append(row)
    return pd.DataFrame(rows)
