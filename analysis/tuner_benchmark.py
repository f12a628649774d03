"""Optuna's tuners replayed against the records beside the hand-written ones and the IMI arms
(docs/design.md §11, "Tuners replayed with Optuna"): expected selected test score against cost, P(reach τ),
cost to τ, the cheapest tuner to reach τ and each fixed arm's saving against it.

Every number is computed on the observed seeds and again in every replicate of the report's paired seed
bootstrap, so a tuner, τ and an IMI arm are paired by seed; the Optuna replays enter through their mean over
each seed's replicates (Monte Carlo over the sampler's seed). Pure functions over the runs frame of
`analysis.seed_arrays.prepare`; no I/O.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from analysis.costs import COST_FIELDS, shared_build_costs
from analysis.optuna_replay import DEFAULT_TUNERS, Replays, SeedGrid, TunerSpec, gp_available, replay
from analysis.savings import PlausibleCosts, cost_to_reach, plausible_costs, saving_interval, savings
from analysis.seed_arrays import GridSeeds, arm_seeds, curve_columns, grid_seeds
from analysis.selection import SeedBootstrap, validation_column
from analysis.stats import probability_interval, seed_interval
from analysis.tuner_models import PRACTITIONER, arm_outcome, grid_tuners, reaches, tau_rows
from analysis.tuner_selection import RANDOM

OPTUNA, EXACT = "Optuna replay", "exact"


@dataclass
class ReplayGrid:
    """A baseline's grid on one setting as the replays see it: `grid` (`seed_arrays.GridSeeds`), choices (N,) what
    Optuna is offered (β, ascending, when β alone tells the configurations apart, else their labels;
    `ordered` says which), fractions (Q,) the curve points before the end that every run has, curve_val
    (N, S, Q), curve_cost (N, S, Q, C) cumulative (plus the run's build share where the convention charges
    one per run)."""

    grid: GridSeeds
    choices: tuple
    ordered: bool
    fractions: np.ndarray
    curve_val: np.ndarray
    curve_cost: np.ndarray

    @property
    def usable(self) -> np.ndarray:
        """(S,) seeds at which every configuration has every score, cost and curve point."""
        curves = np.isfinite(self.curve_val).all(axis=(0, 2)) & np.isfinite(self.curve_cost).all(axis=(0, 2, 3))
        return self.grid.usable & np.isfinite(self.grid.cost).all(axis=(0, 2)) & curves

    def seed_grids(self) -> list[SeedGrid]:
        """One `SeedGrid` per usable seed, in seed order."""
        g = self.grid
        return [SeedGrid(self.choices, g.val[:, s], g.test[:, s], g.cost[:, s], self.curve_val[:, s],
                         self.curve_cost[:, s]) for s in np.flatnonzero(self.usable)]


def common_fractions(curves: pd.Series, end: bool = False) -> np.ndarray:
    """The curve fractions that every run's `val_curve` holds, ascending: those below 1 (`end`: 1 too)."""
    sets = [{round(p["fraction"], 9) for p in (curve or []) if end or p["fraction"] < 1 - 1e-9} for curve in curves]
    return np.array(sorted(set.intersection(*sets))) if sets else np.zeros(0)


def replay_grid(runs: pd.DataFrame, boot: SeedBootstrap, grid_runs: pd.DataFrame, metric: str, convention: str,
                all_builds: pd.DataFrame) -> ReplayGrid:
    """A grid arm's runs as a `ReplayGrid`; `runs` as returned by `seed_arrays.prepare`."""
    ids, grid, _ = grid_seeds(runs, boot, grid_runs, metric, convention, all_builds)
    firsts = [boot.rows[c][0] for c in ids]
    betas = pd.to_numeric(runs.loc[firsts, "method.beta"], errors="coerce").to_numpy(dtype=float)
    ordered = bool(np.isfinite(betas).all() and (np.diff(betas) > 0).all())
    choices = tuple(float(b) for b in betas) if ordered else tuple(str(v) for v in runs.loc[firsts, "config_label"])
    fractions = common_fractions(grid_runs["val_curve"])
    keys = (validation_column(metric), *COST_FIELDS)
    curves = curve_columns(grid_runs, fractions, keys)
    n, s, c = grid.cost.shape
    curve_val = np.zeros((n, s, len(fractions)))
    curve_cost = np.zeros((n, s, len(fractions), c))
    for q, f in enumerate(fractions):
        curve_val[:, :, q] = boot.matrix(curves, ids, f"curve@{f:g}/{keys[0]}")[0]
        for i, name in enumerate(COST_FIELDS):
            curve_cost[:, :, q, i] = (boot.matrix(curves, ids, f"curve@{f:g}/{name}")[0]
                                      + boot.matrix(runs, ids, f"share.{name}")[0])
    return ReplayGrid(grid, choices, ordered, fractions, curve_val, curve_cost)


@dataclass
class TunerCurve:
    """One tuner on one setting per bootstrap row (row 0 the observed seeds, then the replicates) and budget:
    trials (K,), expected_test (R, K), expected_cost (R, K, C) with the procedure's builds, mc_se (K,) the
    Monte-Carlo standard error of row 0's expected_test (0 where it is exact), `p_reach(tau, at)` (R,):
    the probability that one procedure with budget position `at` ends with a run whose test score
    reaches τ (tau (R,)). `savings.plausible_costs` reads trials, expected_test and expected_cost."""

    name: str
    source: str
    trials: np.ndarray
    expected_test: np.ndarray
    expected_cost: np.ndarray
    mc_se: np.ndarray
    p_reach: Callable[[np.ndarray, int], np.ndarray]
    finished: np.ndarray = field(default_factory=lambda: np.zeros(0))   # (K,) mean configurations finished
    stopped: np.ndarray = field(default_factory=lambda: np.zeros(0))    # (K,) mean trials a pruner stopped


def _seed_weights(weights: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Bootstrap seed counts (R, S) restricted to the usable seeds and normalised, (R, S_usable)."""
    w = weights[:, usable].astype(float)
    if (w.sum(axis=1) <= 0).any():
        raise ValueError("a bootstrap replicate draws none of the seeds at which the whole grid ran with curves")
    return w / w.sum(axis=1, keepdims=True)


def replay_curve(rep: Replays, rgrid: ReplayGrid, weights: np.ndarray) -> TunerCurve:
    """An Optuna tuner's replays as a `TunerCurve`: per seed the mean over its replicates, then the seeds
    weighted as each bootstrap row draws them. weights (R, S) over the setting's seeds."""
    usable = rgrid.usable
    w = _seed_weights(weights, usable)
    if np.isnan(rep.chosen_test).any():
        raise ValueError(f"{rep.spec.name}: a replicate has no finished trial after some budget")
    onehot = (rep.seed_position[:, None] == np.arange(w.shape[1])[None, :]).astype(float)   # (Rep, S_u)
    count = onehot.sum(axis=0)
    per_seed = onehot.T @ rep.chosen_test / count[:, None]                                # (S_u, K)
    builds = rgrid.grid.seed_builds[usable]                                               # (S_u, C)
    per_seed_cost = np.einsum("rs,rkc->skc", onehot, rep.cost) / count[:, None, None] + builds[:, None, :]
    centred = rep.chosen_test - per_seed[rep.seed_position]
    within = (onehot.T @ centred ** 2) / np.maximum(count - 1, 1)[:, None]                # (S_u, K)
    mc_se = np.sqrt((within / count[:, None]).sum(axis=0)) / len(count)

    def p_reach(tau: np.ndarray, at: int) -> np.ndarray:
        hits = reaches(rep.chosen_test[:, at][None, :], tau).astype(float)               # (R, Rep)
        return (w * (hits @ onehot / count)).sum(axis=1)

    return TunerCurve(rep.spec.name, OPTUNA, np.arange(1, rep.chosen.shape[1] + 1), w @ per_seed,
                      np.einsum("rs,skc->rkc", w, per_seed_cost), mc_se, p_reach, rep.finished.mean(axis=0),
                      (rep.stopped >= 0).cumsum(axis=1).mean(axis=0))


def hand_written_curves(grid: GridSeeds, weights: np.ndarray, stat: str, seed: int) -> list[TunerCurve]:
    """Grid search, random search and successive halving of `analysis.tuner_models` (practitioner's model) as
    `TunerCurve`s: exact expectations over seeds and subsets (no Monte Carlo)."""
    out = []
    for t in grid_tuners(grid, weights, stat, PRACTITIONER, np.random.default_rng(seed)):
        out.append(TunerCurve(t.name, EXACT, t.trials, t.expected_test, t.expected_cost, np.zeros(len(t.trials)),
                              lambda tau, at, t=t: t.p_reach(tau)[:, at]))
    return out


def _ci(point, replicates, n, confidence, upper=math.inf) -> tuple[float, float]:
    low, high = seed_interval(point, replicates, n, confidence)
    return float(min(low, upper)), float(min(high, upper))


def best_of(parts: list[PlausibleCosts]) -> PlausibleCosts:
    """What the reach margins leave open for the cheapest of several tuners against one arm: every open cost
    of a tuner no dearer than the dearest open outcome of the best one; it may miss τ only if all may."""
    dearest = min(math.inf if p.tuner_may_miss else (p.tuner[:, 0].max() if len(p.tuner) else math.inf) for p in parts)
    costs = [row for p in parts for row in p.tuner if row[0] <= dearest]
    width = parts[0].arm.shape[0]
    return PlausibleCosts(np.array(costs).reshape(-1, width), all(p.tuner_may_miss for p in parts), parts[0].arm,
                          parts[0].arm_may_reach, parts[0].arm_may_miss)


@dataclass
class BenchmarkResult:
    """Tables (columns in `tuner_benchmark`'s docstring), notes and seconds spent per (setting, tuner)."""

    curves: pd.DataFrame
    reach: pd.DataFrame
    savings: pd.DataFrame
    agreement: pd.DataFrame
    replays: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


def _usable_specs(specs, rgrid: ReplayGrid, notes: list[str], setting: str) -> list[TunerSpec]:
    kept = []
    for spec in specs:
        if spec.sampler == "gp" and not gp_available():
            notes.append(f"{spec.name}: left out, Optuna's GPSampler needs torch and scipy")
        elif spec.space == "ordinal" and not rgrid.ordered:
            notes.append(f"{spec.name} on {setting}: left out, the grid is not ordered by β alone")
        elif spec.pruner is not None and len(rgrid.fractions) == 0:
            notes.append(f"{spec.name} on {setting}: left out, the runs share no validation-curve point before the end")
        else:
            kept.append(spec)
    return kept


def tuner_benchmark(runs: pd.DataFrame, boot: SeedBootstrap, metric: str, baseline: str, tolerances, stat: str,
                    convention: str, confidence: float, specs=DEFAULT_TUNERS, n_replicates: int = 200,
                    n_trials: int | None = None, seed: int = 0, traps: bool = False) -> BenchmarkResult:
    """Every tuner of `specs` replayed on every setting where `baseline` has a grid (clean settings only
    unless `traps`), beside the hand-written tuners, with every fixed arm's saving.

    `runs` as returned by `seed_arrays.prepare`; n_trials per study (None: three times the grid size, by which
    random draws with replacement have covered 95% of the grid). Tables:
    curves     setting, trap, tuner, source, trials, expected_test (+ _ci_low, _ci_high), mc_se,
               expected_<cost>, finished_configs, stopped_trials, n_seeds
    reach      setting, trap, tolerance, tau, tuner, source, budget (∞: misses τ), <cost> (+ _ci_low,
               _ci_high), expected_test, p_reach (+ _ci_low, _ci_high), p_reach_budget
    savings    setting, trap, tolerance, tau, arm, tuner ("best tuner" = the cheapest to reach τ, chosen
               again in every replicate; best_tuner names row 0's), best_tuner, arm_score, arm_reaches, arm_p_reach,
               arm_<cost>, tuner_<cost> (+ _ci), savings_<cost> (+ _ci_low, _ci_high), n_seeds
    agreement  setting, check, budget, exact, replay (+ _ci_low, _ci_high), mc_se, z, within_interval
    """
    curves, reach, saved, agreement, notes, seconds, kept = [], [], [], [], [], {}, {}
    all_builds = shared_build_costs(runs)
    for setting, setting_runs in runs.groupby("setting", sort=True):
        trap = setting_runs["trap"].iloc[0]
        grid_runs = setting_runs[(setting_runs["method.name"] == baseline) & (setting_runs["arm_kind"] == "grid")]
        if grid_runs.empty or (trap and not traps):
            continue
        rgrid = replay_grid(runs, boot, grid_runs, metric, convention, all_builds)
        if rgrid.grid.selected_on != "validation":
            notes.append(f"{setting}: left out, not every run of the {baseline} grid has a validation score")
            continue
        weights = boot.seed_weights(setting)
        n = int(rgrid.usable.sum())
        if n == 0:
            notes.append(f"{setting}: left out, no seed at which every {baseline} configuration ran with its curve")
            continue
        if n < len(rgrid.usable):  # said aloud: every interval of the setting then rests on fewer seeds
            notes.append(f"{setting}: {n} of {len(rgrid.usable)} seeds used, the others lack a {baseline} "
                         "configuration or its curve")
        seed_grids = rgrid.seed_grids()
        trials = n_trials or 3 * len(rgrid.choices)
        tuners = hand_written_curves(rgrid.grid, weights, stat, seed)
        for spec in _usable_specs(specs, rgrid, notes, setting):
            start = time.perf_counter()
            rep = replay(spec, seed_grids, n_replicates, trials, seed, label=f"{setting} · {spec.name}")
            seconds[(setting, spec.name)] = time.perf_counter() - start
            kept[(setting, spec.name)] = rep
            tuners.append(replay_curve(rep, rgrid, weights))
        for t in tuners:
            for b, k in enumerate(t.trials):
                row = {"setting": setting, "trap": trap, "tuner": t.name, "source": t.source, "trials": int(k),
                       "expected_test": t.expected_test[0, b], "mc_se": t.mc_se[b], "n_seeds": n,
                       "finished_configs": t.finished[b] if len(t.finished) else math.nan,
                       "stopped_trials": t.stopped[b] if len(t.stopped) else math.nan}
                row["expected_test_ci_low"], row["expected_test_ci_high"] = _ci(t.expected_test[0, b],
                                                                                t.expected_test[1:, b], n, confidence)
                row.update({f"expected_{f}": t.expected_cost[0, b, c] for c, f in enumerate(COST_FIELDS)})
                curves.append(row)
        random_replay = next((r for (s, _), r in kept.items() if s == setting and r.spec.sampler == "random"
                              and r.spec.pruner is None and r.spec.space == "categorical"), None)
        if random_replay is not None:
            agreement += agreement_rows(setting, rgrid, weights, random_replay,
                                        next(t for t in tuners if t.name == RANDOM), n, confidence)
        arms = {arm: arm_seeds(runs, boot, arm_runs, metric, convention, all_builds)
                for arm, arm_runs in setting_runs[setting_runs["arm_kind"] == "fixed"].groupby("arm", sort=True)}
        for tolerance in tolerances:
            tau = tau_rows(rgrid.grid, weights, stat, tolerance)
            costs = []
            for t in tuners:
                budget, cost = cost_to_reach(t.expected_test, t.expected_cost, tau)
                costs.append(cost)
                at = int(budget[0]) if budget[0] >= 0 else len(t.trials) - 1
                p = t.p_reach(tau, at)
                row = {"setting": setting, "trap": trap, "tolerance": tolerance, "tau": tau[0], "tuner": t.name,
                       "source": t.source, "budget": int(t.trials[budget[0]]) if budget[0] >= 0 else math.inf,
                       "expected_test": t.expected_test[0, at], "p_reach": p[0], "p_reach_budget": int(t.trials[at])}
                row["p_reach_ci_low"], row["p_reach_ci_high"] = map(float, probability_interval(p[0], p[1:], n,
                                                                                           confidence))
                for c, f in enumerate(COST_FIELDS):
                    row[f] = cost[0, c]
                    row[f"{f}_ci_low"], row[f"{f}_ci_high"] = _ci(cost[0, c], cost[1:, c], n, confidence)
                reach.append(row)
            saved += saving_rows(setting, trap, tolerance, tau, tuners, np.stack(costs), arms, weights, stat, n,
                                 boot, confidence)
    return BenchmarkResult(pd.DataFrame(curves), pd.DataFrame(reach), pd.DataFrame(saved), pd.DataFrame(agreement),
                           kept, notes, seconds)


def saving_rows(setting, trap, tolerance, tau, tuners: list[TunerCurve], costs: np.ndarray, arms: dict,
                weights: np.ndarray, stat: str, n: int, boot: SeedBootstrap, confidence: float) -> list[dict]:
    """Each fixed arm's saving against every tuner and against the cheapest one (chosen again in every
    replicate: the saving against the best tuner of that replicate). costs (T, R, C) each tuner's cost to τ."""
    rows = []
    primary = np.nan_to_num(costs[..., 0], nan=math.inf)                       # (T, R)
    best = np.argmin(primary, axis=0)                                           # first tuner on ties
    best_cost = costs[best, np.arange(costs.shape[1])]                          # (R, C)
    for arm, (arm_ids, seeds) in arms.items():
        outcome = arm_outcome(seeds, weights, stat, PRACTITIONER)
        n_arm = min(n, boot.min_seeds(arm_ids))
        hits = reaches(outcome.score, tau)
        paid = np.where(hits[:, None], outcome.cost, math.inf)
        arm_p = outcome.p_reach(tau)
        parts = [plausible_costs(t, tau, outcome, n, n_arm, confidence) for t in tuners]
        against = [(t.name, costs[i], parts[i]) for i, t in enumerate(tuners)]
        for name, cost, plausible in [("best tuner", best_cost, best_of(parts)), *against]:
            row = {"setting": setting, "trap": trap, "tolerance": tolerance, "tau": tau[0], "arm": arm, "tuner": name,
                   "best_tuner": tuners[best[0]].name if math.isfinite(primary[best[0], 0]) else "none reaches τ",
                   "arm_score": outcome.score[0], "arm_reaches": bool(hits[0]), "arm_p_reach": arm_p[0],
                   "n_seeds": n_arm}
            row["arm_p_reach_ci_low"], row["arm_p_reach_ci_high"] = map(float, probability_interval(
                arm_p[0], arm_p[1:], n_arm, confidence))
            for c, f in enumerate(COST_FIELDS):
                value = savings(paid[:, c], cost[:, c])
                row.update({f"arm_{f}": outcome.cost[0, c], f"tuner_{f}": cost[0, c], f"savings_{f}": value[0]})
                row[f"tuner_{f}_ci_low"], row[f"tuner_{f}_ci_high"] = _ci(cost[0, c], cost[1:, c], n, confidence)
                row[f"savings_{f}_ci_low"], row[f"savings_{f}_ci_high"] = saving_interval(value, plausible, c, n_arm,
                                                                                          confidence)
            rows.append(row)
    return rows


def agreement_rows(setting: str, rgrid: ReplayGrid, weights: np.ndarray, rep: Replays, hand: TunerCurve, n: int,
                   confidence: float) -> list[dict]:
    """Optuna's RandomSampler replayed against two exact expectations on the same seeds: random search with
    replacement after k trials (`optuna_replay.random_with_replacement`), and `analysis.tuner_selection`'s random
    search without replacement over m configurations, which the replay equals at the trial where its m-th
    distinct configuration finishes (the distinct configurations drawn so far are a uniform m-subset)."""
    from analysis.optuna_replay import random_with_replacement

    usable = rgrid.usable
    w = _seed_weights(weights, usable)
    g = rgrid.grid
    exact, _ = random_with_replacement(g.val[:, usable].T, g.test[:, usable].T, g.cost[:, usable].transpose(1, 0, 2),
                                       rep.chosen.shape[1])
    curve = replay_curve(rep, rgrid, weights)
    rows = []
    for b in range(rep.chosen.shape[1]):
        rows.append(_agreement_row(setting, "with replacement, k trials", b + 1, float(w[0] @ exact[:, b]),
                                   curve.expected_test[:, b], curve.mc_se[b], n, confidence))
    onehot = rep.seed_position[:, None] == np.arange(w.shape[1])[None, :]
    for m in range(1, len(rgrid.choices) + 1):
        first = np.argmax(rep.finished >= m, axis=1)                            # the trial of the m-th finish
        reached = (rep.finished >= m).any(axis=1)
        if not (onehot & reached[:, None]).any(axis=0).all():
            continue  # some seed never finished m configurations within the trials
        values = rep.chosen_test[np.arange(len(first)), first]
        per_seed, se2 = [], 0.0
        for s in range(w.shape[1]):
            v = values[onehot[:, s] & reached]
            per_seed.append(v.mean())
            se2 += (v.var(ddof=1) / len(v) if len(v) > 1 else 0.0) / w.shape[1] ** 2
        replicates = w @ np.array(per_seed)
        rows.append(_agreement_row(setting, "without replacement, m configurations", m, hand.expected_test[0, m - 1],
                                   replicates, math.sqrt(se2), n, confidence))
    return rows


def _agreement_row(setting, check, budget, exact, replicates, mc_se, n, confidence) -> dict:
    low, high = _ci(replicates[0], replicates[1:], n, confidence)
    return {"setting": setting, "check": check, "budget": budget, "exact": exact, "replay": replicates[0],
            "replay_ci_low": low, "replay_ci_high": high, "mc_se": mc_se,
            "z": (replicates[0] - exact) / mc_se if mc_se > 0 else math.nan, "within_interval": bool(low <= exact <= high)}
