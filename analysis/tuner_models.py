"""Tuners and fixed arms scored under the two models of what a trial shows (docs/design.md §11).

The practitioner's model (the default: one run per configuration at one seed, chosen by that run's
validation score, expectations over the seeds) and the idealised one (a trial sees the statistic over
every seed while paying one run). Per row of seed counts (the observed runs, then each bootstrap
replicate): a tuner's expected test score, cost and P(reach τ) per budget, a fixed arm's score, cost
and P(reach τ), and τ itself. What reaching τ costs and saves is `analysis.savings`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.seed_arrays import ArmSeeds, GridSeeds
from analysis.selection import STATS, first_argmax, seed_stat
from analysis.tuner_selection import MAX_EXACT_SUBSETS, MAX_SUBSETS, tuner_selections

PRACTITIONER, IDEALISED = "practitioner", "idealised"
TUNER_MODELS = (PRACTITIONER, IDEALISED)
REACH_ROUNDING = 1e-12


def tuner_label(name: str, model: str) -> str:
    """A tuner's name as every table and figure shows it: the idealised model says so."""
    return f"{name} (idealised)" if model == IDEALISED else name


def _normalise(weights: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Seed weights (R, S) restricted to `usable` seeds (S,) or (N, S), rows summing to 1 (NaN if none)."""
    w = weights * usable
    with np.errstate(invalid="ignore", divide="ignore"):
        return w / w.sum(axis=-1, keepdims=True)


def reaches(scores: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """scores ≥ τ up to rounding; τ broadcast against scores' leading axis."""
    tau = np.asarray(tau, dtype=float)
    return np.asarray(scores) >= tau.reshape(tau.shape + (1,) * (np.ndim(scores) - tau.ndim)) - REACH_ROUNDING


@dataclass
class Tuner:
    """One tuner of one grid under one model, per row (observed, then replicates) and budget:
    expected test (R, K) and expected cost (R, K, C); `p_reach(tau)` gives P(reach τ) (R, K)."""

    name: str
    model: str
    trials: np.ndarray
    expected_test: np.ndarray
    expected_cost: np.ndarray
    selection: np.ndarray     # (S, K, N) practitioner, (R, K, N) idealised
    test: np.ndarray          # (N, S)
    weights: np.ndarray       # practitioner: (R, S) over usable seeds; idealised: (R, N, S) per configuration

    @property
    def label(self) -> str:
        return tuner_label(self.name, self.model)

    def p_reach(self, tau: np.ndarray) -> np.ndarray:
        """P(one procedure's chosen run reaches τ) per row and budget; tau (R,) -> (R, K)."""
        hits = reaches(np.nan_to_num(self.test, nan=-np.inf).T[None], tau).astype(float)  # (R, S, N)
        if self.model == PRACTITIONER:
            return np.einsum("rs,skn,rsn->rk", self.weights, self.selection, hits)
        share = np.einsum("rns,rsn->rn", self.weights, hits)
        return np.einsum("rkn,rn->rk", self.selection, share)


def tau_rows(grid: GridSeeds, weights: np.ndarray, stat: str, tolerance: float) -> np.ndarray:
    """τ per row: `stat` over seeds of the test score of the configuration with the best `stat` of val,
    − tolerance (the report's tuned entry). weights (R, S) seed counts, row 0 the observed runs -> (R,)."""
    val = seed_stat(grid.val, grid.present, weights, stat)
    test = seed_stat(grid.test, grid.present, weights, stat)
    return np.take_along_axis(test, first_argmax(val)[:, None], axis=1)[:, 0] - tolerance


def grid_tuners(grid: GridSeeds, weights: np.ndarray, stat: str, model: str, rng: np.random.Generator) -> list[Tuner]:
    """Every tuner of `grid` under `model` ("practitioner" or "idealised"), for each row of seed
    counts `weights` (R, S) (row 0: each seed once). Raises ValueError when the practitioner's model has
    no seed at which every configuration ran (in some row)."""
    if model not in TUNER_MODELS:
        raise ValueError(f"tuner model must be one of {TUNER_MODELS}, got {model!r}")
    if stat not in STATS:
        raise ValueError(f"stat must be one of {STATS}, got {stat!r}")
    test = np.nan_to_num(grid.test, nan=-np.inf)
    if model == PRACTITIONER:
        usable = grid.usable
        w = _normalise(weights, usable)
        if not np.isfinite(w).all():
            raise ValueError("the practitioner's tuner needs seeds at which every configuration of the grid ran "
                             "with both scores; some replicate draws none")
        rung_val = {r: _by_seed(v, usable) for r, v in grid.rung_val.items()}
        rung_cost = {r: _by_seed(v, usable) for r, v in grid.rung_cost.items()}
        chosen = tuner_selections(_by_seed(grid.val, usable), _by_seed(grid.cost, usable),
                                  np.where(usable[:, None], grid.seed_builds, 0.0), rung_val, rung_cost, rng,
                                  MAX_EXACT_SUBSETS)
        scores = np.where(usable[None], test, 0.0)
        return [Tuner(t.name, model, t.trials, np.einsum("rs,skn,ns->rk", w, t.selection, scores),
                      np.einsum("rs,skc->rkc", w, np.nan_to_num(t.cost, nan=0.0)) + _nan_where_missing(t.cost, w),
                      t.selection, grid.test, w) for t in chosen]
    val = seed_stat(grid.val, grid.present, weights, stat)
    mean_test = seed_stat(grid.test, grid.present, weights, stat)
    cost = _stat_rows(grid.cost, grid.present, weights)
    rung_val = {r: _stat_rows(v, grid.present, weights, stat) for r, v in grid.rung_val.items()}
    rung_cost = {r: _stat_rows(v, grid.present, weights) for r, v in grid.rung_cost.items()}
    chosen = tuner_selections(val, cost, grid.builds, rung_val, rung_cost, rng, MAX_SUBSETS)
    w = _normalise(weights[:, None, :], grid.present[None])
    return [Tuner(t.name, model, t.trials, np.einsum("rkn,rn->rk", t.selection, mean_test), t.cost, t.selection,
                  grid.test, w) for t in chosen]


def _by_seed(values: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """Per-run arrays seed first, (N, S, *rest) -> (S, N, *rest), with 0 at the seeds not `usable`
    (they carry no weight; 0 keeps NaN from missing runs out of the sums)."""
    moved = np.moveaxis(values, 0, 1)
    return np.where(usable.reshape((-1,) + (1,) * (moved.ndim - 1)), moved, 0.0)


def _nan_where_missing(cost: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """NaN where a seed with positive weight has a NaN cost (a record without that cost), else 0."""
    missing = np.isnan(cost).astype(float)                                   # (S, K, C)
    return np.where(np.einsum("rs,skc->rkc", (weights > 0).astype(float), missing) > 0, np.nan, 0.0)


def _stat_rows(values: np.ndarray, present: np.ndarray, weights: np.ndarray, stat: str = "mean") -> np.ndarray:
    """`stat` over seeds of per-run arrays with trailing axes: values (N, S, *rest) -> (R, N, *rest)."""
    rest = values.shape[2:]
    flat = np.moveaxis(values.reshape(values.shape[0], values.shape[1], -1), 2, 0)   # (M, N, S)
    out = np.stack([seed_stat(v, present, weights, stat) for v in flat], axis=-1)    # (R, N, M)
    return out.reshape(out.shape[:2] + rest)


@dataclass
class Arm:
    """A fixed arm per row: score (R,) (`stat` over its seeds), expected cost (R, C); `p_reach(tau)`."""

    score: np.ndarray
    cost: np.ndarray
    test: np.ndarray        # (S,)
    weights: np.ndarray     # (R, S) over its seeds

    def p_reach(self, tau: np.ndarray) -> np.ndarray:
        """The share of its seeds (as drawn) whose run reaches τ: tau (R,) -> (R,)."""
        return (self.weights * reaches(np.nan_to_num(self.test, nan=-np.inf)[None], tau)).sum(axis=1)


def arm_outcome(arm: ArmSeeds, weights: np.ndarray, stat: str, model: str) -> Arm:
    """A fixed arm's score, cost and reach per row of seed counts `weights` (R, S) under `model`."""
    w = _normalise(weights, arm.present)
    score = seed_stat(arm.test[None], arm.present[None], weights, stat)[:, 0]
    if model == PRACTITIONER:
        per_seed = np.where(arm.present[:, None], arm.cost + arm.seed_builds, 0.0)
        cost = w @ per_seed + np.where((w > 0) @ np.isnan(arm.cost).astype(float) > 0, np.nan, 0.0)
    else:
        cost = _stat_rows(arm.cost[None], arm.present[None], weights)[:, 0] + arm.builds
    return Arm(score, cost, arm.test, w)

