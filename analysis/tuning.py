"""Tuners replayed over a baseline's grid, and what reaching τ costs and saves (docs/design.md §11, §11a).

Grid search, random search and successive halving are described by their selection probabilities over
configuration × seed arrays, under the practitioner's model (the default) or the idealised one; the
report's tables (expected best of k, each tuner's cost to reach τ, savings per setting and summed over
settings) apply them to annotated runs, on the observed runs and again in every bootstrap replicate.
The array functions take no DataFrame so that `analysis.coverage` runs the same estimators on simulated
data. Rows of the arrays: the observed runs first, then the bootstrap replicates. Pure functions;
no I/O.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from analysis.costs import COST_FIELDS, charged_costs, procedure_builds, shared_build_costs
from analysis.metrics import expected_max_weights
from analysis.selection import STATS, SeedBootstrap, first_argmax, has_validation, seed_stat, validation_column
from analysis.stats import probability_interval, seed_interval

# idealised successive halving: subsets averaged per start size (each costs a pass over every replicate)
MAX_SUBSETS = 256
# practitioner's successive halving: one pass per seed, so every subset up to this many (C(12, 6) = 924)
MAX_EXACT_SUBSETS = 5000
# (name, η, rungs): η = 2 halves at 25% and 50%; η = 3 keeps a third at 25%, 50% and 75%.
SH_VARIANTS = (("successive halving η=2", 2, (0.25, 0.5, 1.0)), ("successive halving η=3", 3, (0.25, 0.5, 0.75, 1.0)))
GRID, RANDOM = "grid search", "random search"
PRACTITIONER, IDEALISED = "practitioner", "idealised"
TUNER_MODELS = (PRACTITIONER, IDEALISED)
REACH_ROUNDING = 1e-12


def tuner_label(name: str, model: str) -> str:
    """A tuner's name as every table and figure shows it: the idealised model says so."""
    return f"{name} (idealised)" if model == IDEALISED else name


# ---------------------------------------------------------------------------------------------
# Selection probabilities


def random_search_selection(val: np.ndarray) -> np.ndarray:
    """π_k(j) of random search for k = 1..N: shapes val (..., N) -> (..., N budgets, N configurations).

    NaN never wins (it ranks lowest), as in `selection.first_argmax`.
    """
    val = np.asarray(val, dtype=float)
    val = np.where(np.isnan(val), -np.inf, val)
    n = val.shape[-1]
    # ascending by val; a stable sort of the reversed configurations puts the later one of a tie first,
    # i.e. ranks the first configuration (the one first_argmax picks) higher
    order = n - 1 - np.argsort(val[..., ::-1], axis=-1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.broadcast_to(np.arange(n), order.shape), axis=-1)
    weights = np.stack([expected_max_weights(n, k) for k in range(1, n + 1)])  # (k, rank)
    return np.moveaxis(weights[:, rank], 0, -2)


def val_selected_expectation(val: np.ndarray, test: np.ndarray) -> np.ndarray:
    """E_k for k = 1..N: the expected test score of the val-argmax of a random k-subset.

    Shapes: val, test (..., N) -> (..., N), entry k−1 is E_k.
    """
    return (random_search_selection(val) * np.asarray(test, dtype=float)[..., None, :]).sum(axis=-1)


def grid_selection(val: np.ndarray) -> np.ndarray:
    """π of grid search: 1 at the first val-argmax. Shapes: (..., N) -> (..., N)."""
    val = np.asarray(val, dtype=float)
    return (np.arange(val.shape[-1]) == first_argmax(val)[..., None]).astype(float)


def subsets(n_configs: int, size: int, rng: np.random.Generator, max_subsets: int = MAX_SUBSETS) -> np.ndarray:
    """The size-`size` subsets of range(n_configs) a tuner averages over, (S, size), each sorted:
    all of them when there are at most `max_subsets`, else `max_subsets` distinct random ones."""
    if math.comb(n_configs, size) <= max_subsets:
        return np.array(list(itertools.combinations(range(n_configs), size)), dtype=int).reshape(-1, size)
    drawn: set[tuple[int, ...]] = set()
    while len(drawn) < max_subsets:
        drawn.add(tuple(sorted(rng.choice(n_configs, size=size, replace=False).tolist())))
    return np.array(sorted(drawn), dtype=int)


def halving_selection(val: np.ndarray, cost: np.ndarray, rung_val: np.ndarray, rung_cost: np.ndarray,
                      chosen: np.ndarray, eta: int, chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Successive halving started from each row of `chosen`: (π (L, N), expected cost of the runs (L, C)).

    Shapes: val (L, N); cost (L, N, C); rung_val (L, N, Q) and rung_cost (L, N, Q, C) at the rungs
    before 100%; chosen (Sub, n) subsets of configurations. Builds are not included.
    """
    n_rungs = rung_val.shape[-1]
    size = chosen.shape[1]
    picked = np.zeros(val.shape)
    cost_sum = np.zeros((val.shape[0], cost.shape[-1]))
    for start in range(0, len(chosen), chunk):
        block = chosen[start:start + chunk]                                   # (Sub_c, n)
        alive = np.ones((val.shape[0], len(block), size), dtype=bool)
        spent = np.zeros((val.shape[0], len(block), cost.shape[-1]))
        survivors = size
        for rung in range(n_rungs):
            if survivors == 1:
                break  # nothing left to compare: the last configuration runs to the end
            keep = max(1, survivors // eta)
            scores = np.where(alive, rung_val[:, block, rung], -np.inf)
            order = np.argsort(-scores, axis=-1, kind="stable")                # best first, first on ties
            rank = np.empty_like(order)
            np.put_along_axis(rank, order, np.arange(size)[None, None, :], axis=-1)
            stays = alive & (rank < keep)
            spent += ((alive & ~stays)[..., None] * rung_cost[:, block, rung, :]).sum(axis=2)
            alive, survivors = stays, keep
        spent += (alive[..., None] * cost[:, block, :]).sum(axis=2)
        selected = first_argmax(np.where(alive, val[:, block], -np.inf))      # (L, Sub_c), position in block
        winners = block[np.arange(len(block))[None, :], selected]             # (L, Sub_c) configuration index
        np.add.at(picked, (np.repeat(np.arange(val.shape[0]), len(block)), winners.ravel()), 1.0)
        cost_sum += spent.sum(axis=1)
    return picked / len(chosen), cost_sum / len(chosen)


@dataclass
class TunerSelection:
    """One tuner's choice per budget: trials (K,), π (L, K, N) and expected cost with builds (L, K, C);
    L = seeds (practitioner) or rows (idealised: the observed statistic, then each replicate's)."""

    name: str
    trials: np.ndarray
    selection: np.ndarray
    cost: np.ndarray


def tuner_selections(val: np.ndarray, cost: np.ndarray, builds: np.ndarray, rung_val, rung_cost,
                     rng: np.random.Generator, max_subsets: int) -> list[TunerSelection]:
    """Grid search, random search and the successive-halving variants of SH_VARIANTS whose rungs the
    rung arrays hold.

    Shapes: val (L, N); cost (L, N, C); builds broadcastable to (L, C); rung_val {rungs: (L, N, Q)} and
    rung_cost {rungs: (L, N, Q, C)}, keyed by a variant's rungs (a variant without a key is left out).
    """
    n = val.shape[-1]
    builds = np.broadcast_to(builds, (val.shape[0], cost.shape[-1]))
    out = [TunerSelection(GRID, np.array([n]), grid_selection(val)[:, None, :], (cost.sum(axis=1) + builds)[:, None, :])]
    k = np.arange(1, n + 1, dtype=float)
    out.append(TunerSelection(RANDOM, np.arange(1, n + 1), random_search_selection(val),
                              k[None, :, None] * cost.mean(axis=1)[:, None, :] + builds[:, None, :]))
    for name, eta, rungs in SH_VARIANTS:
        if rungs not in rung_val:
            continue
        per_n = [halving_selection(val, cost, rung_val[rungs], rung_cost[rungs], subsets(n, size, rng, max_subsets), eta)
                 for size in range(1, n + 1)]
        out.append(TunerSelection(name, np.arange(1, n + 1), np.stack([p for p, _ in per_n], axis=1),
                                  np.stack([c for _, c in per_n], axis=1) + builds[:, None, :]))
    return out


# ---------------------------------------------------------------------------------------------
# A grid and a fixed arm over seeds, and the two models


@dataclass
class GridSeeds:
    """A baseline grid on one setting, configuration × the setting's seeds (NaN where there is no run).

    val, test (N, S); present (N, S) bool; cost (N, S, C); seed_builds (S, C): the builds its runs at
    each seed used, once; builds (C,): every build its runs used, once; rung_val {rungs: (N, S, Q)} and
    rung_cost {rungs: (N, S, Q, C)} at the rungs before 100% of each successive-halving variant whose
    points the curves hold (keyed by the variant's rungs); selected_on: "validation" or "test" (what val
    holds).
    """

    val: np.ndarray
    test: np.ndarray
    present: np.ndarray
    cost: np.ndarray
    seed_builds: np.ndarray
    builds: np.ndarray
    rung_val: dict = field(default_factory=dict)
    rung_cost: dict = field(default_factory=dict)
    selected_on: str = "validation"

    @property
    def usable(self) -> np.ndarray:
        """(S,) seeds at which every configuration has a run with both scores: the practitioner's seeds."""
        return (self.present & np.isfinite(self.val) & np.isfinite(self.test)).all(axis=0)

    @property
    def n_seeds(self) -> int:
        """The n of an interval over this grid: the smallest seed count of its configurations."""
        return int(self.present.sum(axis=1).min())


@dataclass
class ArmSeeds:
    """A fixed arm on one setting over the setting's seeds: test (S,), present (S,), cost (S, C),
    seed_builds (S, C), builds (C,) (as in GridSeeds)."""

    test: np.ndarray
    present: np.ndarray
    cost: np.ndarray
    seed_builds: np.ndarray
    builds: np.ndarray


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


def oracle_grid(grid: GridSeeds) -> GridSeeds:
    """The same grid selecting on the test scores themselves (the oracle Ê_k of docs/design.md §11)."""
    return replace(grid, val=grid.test, selected_on="test")


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


def cost_to_reach(test: np.ndarray, cost: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest budget (by the primary cost, column 0) whose expected test score reaches τ.

    Shapes: test (R, K) per budget, cost (R, K, C), tau (R,) -> (budget position (R,), -1 where no
    budget reaches τ; its cost (R, C), ∞ where none does).
    """
    reach = reaches(test, tau)
    # records without FLOPs rank budgets by device-hours, records without either by budget order
    usable = [cost[..., c] for c in range(cost.shape[-1]) if np.isfinite(cost[..., c]).any()]
    key = usable[0] if usable else np.broadcast_to(np.arange(test.shape[-1], dtype=float), test.shape)
    primary = np.where(reach, np.nan_to_num(key, nan=np.inf), np.inf)
    best = np.argmin(primary, axis=-1)
    found = reach.any(axis=-1)
    picked = np.take_along_axis(cost, best[:, None, None], axis=1)[:, 0, :]
    return np.where(found, best, -1), np.where(found[:, None], picked, np.inf)


def savings(cost: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """1 − cost/reference; −∞ where cost is ∞ (the arm misses τ), 1 where only the reference is ∞."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(np.isinf(cost), -np.inf, np.where(np.isinf(reference), 1.0, 1.0 - cost / reference))


# ---------------------------------------------------------------------------------------------
# The interval of a saving


def reach_range(score: np.ndarray, tau: np.ndarray, n_seeds: int, confidence: float) -> tuple[bool, bool]:
    """(may reach τ, may miss τ): whether `seed_interval` of the margin score − τ (rows: observed, then
    replicates; τ per row) reaches up to 0, and down below 0."""
    margin = np.asarray(score, dtype=float) - tau
    low, high = seed_interval(margin[0], margin[1:], n_seeds, confidence)
    return bool(high >= -REACH_ROUNDING), bool(low < -REACH_ROUNDING)


@dataclass
class PlausibleCosts:
    """What the reach margins leave open on one setting: the tuner's cost at every budget that may be the
    cheapest to reach τ (costs (P, C); `tuner_may_miss`: no budget surely reaches it) and the arm's
    cost (C,) with whether it may reach / may miss τ."""

    tuner: np.ndarray
    tuner_may_miss: bool
    arm: np.ndarray
    arm_may_reach: bool
    arm_may_miss: bool

    def savings_range(self, field: int) -> tuple[float, float]:
        """The lowest and highest saving (cost column `field`) among the open outcomes."""
        tuner = list(self.tuner[:, field]) + ([math.inf] if self.tuner_may_miss else [])
        values = [float(savings(np.array([self.arm[field]]), np.array([c]))[0]) for c in tuner] if self.arm_may_reach else []
        values += [-math.inf] if self.arm_may_miss else []
        return min(values), max(values)


def plausible_costs(tuner: Tuner, tau: np.ndarray, arm: Arm, n_tuner: int, n_arm: int,
                    confidence: float) -> PlausibleCosts:
    """Which outcomes of the discrete choices behind a saving the data cannot rule out (see
    `saving_interval`). Costs are the observed expected costs (row 0)."""
    open_reach = [reach_range(tuner.expected_test[:, k], tau, n_tuner, confidence) for k in range(len(tuner.trials))]
    primary = np.nan_to_num(tuner.expected_cost[0, :, 0], nan=np.inf)
    sure = [k for k, (_, miss) in enumerate(open_reach) if not miss]
    cap = min((primary[k] for k in sure), default=math.inf)
    candidates = [k for k, (reach, _) in enumerate(open_reach) if reach and primary[k] <= cap]
    arm_reach, arm_miss = reach_range(arm.score, tau, n_arm, confidence)
    costs = tuner.expected_cost[0, candidates, :] if candidates else np.zeros((0, tuner.expected_cost.shape[-1]))
    return PlausibleCosts(costs, not sure, arm.cost[0], arm_reach, arm_miss)


def saving_interval(values: np.ndarray, plausible: PlausibleCosts, field: int, n_seeds: int,
                    confidence: float) -> tuple[float, float]:
    """The report's interval of a saving (rows: observed, then replicates): `seed_interval` of the
    replicates, widened to hold every saving the reach margins leave open, and kept ≤ 1.

    Why: a saving jumps where a budget's expected score, or the arm's score, crosses τ (to 1 when the tuner
    cannot reach τ, to −∞ when the arm cannot), and at five seeds the bootstrap replicates cross too
    seldom, so a percentile interval misses the jump (simulated coverage 0.82 on a setting where both sit
    within 0.005 of τ). The decisions are therefore widened as the continuous statistics are: a budget
    or the arm *may reach* τ when the `seed_interval` of its margin score − τ reaches 0, *may miss* it when
    that interval goes below 0. Every cheapest budget consistent with those (any budget that may reach and
    costs no more than the cheapest sure one; "misses" when none is sure), against the arm reaching (if it
    may) or missing (if it may), gives a saving the interval must hold.
    """
    low, high = seed_interval(values[0], values[1:], n_seeds, confidence)
    lowest, highest = plausible.savings_range(field)
    return float(min(low, lowest, 1.0)), float(min(max(high, highest), 1.0))


def summed_saving_range(parts: list[PlausibleCosts], field: int) -> tuple[float, float]:
    """The range of savings the reach margins leave open for costs summed over settings (the arm's and
    the tuner's sums): −∞ at the low end where the arm may miss τ anywhere; the high end with every arm
    reaching and every tuner at its dearest open outcome (∞, a saving of 1, where one may miss)."""
    if any(not p.arm_may_reach for p in parts):
        return -math.inf, -math.inf
    arm = sum(p.arm[field] for p in parts)
    cheapest = sum(p.tuner[:, field].min() if len(p.tuner) else math.inf for p in parts)
    dearest = sum(math.inf if p.tuner_may_miss else p.tuner[:, field].max() for p in parts)
    low = -math.inf if any(p.arm_may_miss for p in parts) else float(savings(np.array([arm]), np.array([cheapest]))[0])
    return low, float(savings(np.array([arm]), np.array([dearest]))[0])


# ---------------------------------------------------------------------------------------------
# The report's tables, from annotated runs


def _ci(values: np.ndarray, n: int, confidence: float, upper: float = np.inf) -> tuple[float, float]:
    """Interval of a quantity computed on the observed runs (values[0]) and per replicate (values[1:]),
    kept at or below `upper` where the quantity cannot exceed it (a saving: 1 − cost/cost ≤ 1; the
    t-type widening of `seed_interval` knows nothing of bounds)."""
    low, high = seed_interval(values[0], values[1:], n, confidence)
    return float(min(low, upper)), float(min(high, upper))


def curve_columns(runs: pd.DataFrame, fractions, keys) -> pd.DataFrame:
    """Per run, the curve point at each fraction as columns "curve@<f>/<key>" (NaN where absent).

    In: runs with the `val_curve` column (lists of points). Out: a frame on runs' index.
    """
    out = {}
    for fraction in fractions:
        for key in keys:
            values = []
            for curve in runs["val_curve"] if "val_curve" in runs.columns else [[]] * len(runs):
                match = [p.get(key, math.nan) for p in (curve or []) if math.isclose(p["fraction"], fraction, abs_tol=1e-9)]
                values.append(match[0] if match else math.nan)
            out[f"curve@{fraction:g}/{key}"] = values
    return pd.DataFrame(out, index=runs.index)


def prepare(runs: pd.DataFrame, metric: str, convention: str) -> pd.DataFrame:
    """`runs` (with charged.* columns under `convention`) plus what the tuners read: "share.<f>" (the
    run's per-run build charge: charged − own cost) and the curve columns at every SH rung."""
    own = charged_costs(runs, "per_procedure")
    shares = pd.DataFrame({f"share.{f}": (runs[f"charged.{f}"] - own[f"charged.{f}"]).fillna(0.0) for f in COST_FIELDS},
                          index=runs.index)
    rungs = sorted({f for _, _, fractions in SH_VARIANTS for f in fractions if f < 1.0})
    curves = curve_columns(runs, rungs, (validation_column(metric), *COST_FIELDS))
    return pd.concat([runs, shares, curves], axis=1)


def _builds(procedure_runs: pd.DataFrame, runs: pd.DataFrame, convention: str, all_builds: pd.DataFrame) -> np.ndarray:
    charge = procedure_builds(procedure_runs, runs, convention, all_builds)
    return np.array([charge[f] for f in COST_FIELDS])


def _seed_builds(boot: SeedBootstrap, setting: str, procedure_runs: pd.DataFrame, runs: pd.DataFrame, convention: str,
                 all_builds: pd.DataFrame) -> np.ndarray:
    """(S, C): per seed of the setting, the builds the procedure's runs at that seed used, once."""
    return np.stack([_builds(procedure_runs[procedure_runs["seed"] == s], runs, convention, all_builds)
                     for s in boot.seeds[setting]])


def _costs(boot: SeedBootstrap, runs: pd.DataFrame, ids, prefix: str) -> np.ndarray:
    """(N, S, C) per-run costs "<prefix><field>" for each of COST_FIELDS."""
    return np.stack([boot.matrix(runs, ids, f"{prefix}{f}")[0] for f in COST_FIELDS], axis=-1)


def grid_seeds(runs: pd.DataFrame, boot: SeedBootstrap, grid_runs: pd.DataFrame, metric: str, convention: str,
               all_builds: pd.DataFrame) -> tuple[list[int], GridSeeds, list[str]]:
    """A grid arm's runs as `GridSeeds` (its config ids, the arrays, why any successive-halving
    variant is unavailable). `runs` as returned by `prepare`; all_builds: shared_build_costs(runs)."""
    ids = sorted(int(c) for c in grid_runs["config_id"].unique())
    on = "validation" if has_validation(boot, runs, ids, metric) else "test"
    val, present = boot.matrix(runs, ids, validation_column(metric) if on == "validation" else metric)
    test = boot.matrix(runs, ids, metric)[0]
    setting = boot.setting(ids)
    rung_val, rung_cost, problems = {}, {}, []
    key = validation_column(metric)
    for name, _, rungs in SH_VARIANTS:
        early = [f for f in rungs if f < 1.0]
        needed = [f"curve@{f:g}/{k}" for f in early for k in (key, *COST_FIELDS)]
        if any(c not in runs.columns for c in needed) or runs.loc[grid_runs.index, needed].isna().any().any():
            problems.append(f"{name}: not every run has a val_curve point with {key}, flops and device_hours at "
                            f"{', '.join(f'{f:g}' for f in early)}")
            continue
        rung_val[rungs] = np.stack([boot.matrix(runs, ids, f"curve@{f:g}/{key}")[0] for f in early], axis=-1)
        rung_cost[rungs] = np.stack([_costs(boot, runs, ids, f"curve@{f:g}/") + _costs(boot, runs, ids, "share.")
                                     for f in early], axis=2)
    grid = GridSeeds(val, test, present, _costs(boot, runs, ids, "charged."),
                     _seed_builds(boot, setting, grid_runs, runs, convention, all_builds),
                     _builds(grid_runs, runs, convention, all_builds), rung_val, rung_cost, on)
    return ids, grid, problems


def arm_seeds(runs: pd.DataFrame, boot: SeedBootstrap, arm_runs: pd.DataFrame, metric: str, convention: str,
              all_builds: pd.DataFrame) -> tuple[list[int], ArmSeeds]:
    """A fixed arm's runs (one configuration) as `ArmSeeds`."""
    ids = sorted(int(c) for c in arm_runs["config_id"].unique())
    test, present = boot.matrix(runs, ids, metric)
    setting = boot.setting(ids)
    return ids, ArmSeeds(test[0], present[0], _costs(boot, runs, ids, "charged.")[0],
                         _seed_builds(boot, setting, arm_runs, runs, convention, all_builds),
                         _builds(arm_runs, runs, convention, all_builds))


def expected_best_table(runs: pd.DataFrame, boot: SeedBootstrap, metric: str, stat: str, convention: str,
                        confidence: float, model: str = PRACTITIONER) -> pd.DataFrame:
    """Random search over every grid arm under the tuner `model`: per (setting, arm, k), k = 1..N.

    Out: setting, trap, arm, tuner_model, selected_on, n_configs, k, expected_test (E_k: the test score of
    the val-argmax of k random configurations) + expected_test_ci_low, _ci_high, oracle (Ê_k: the best
    test score of k) + oracle_ci_low, oracle_ci_high, expected_flops, expected_device_hours (the runs
    trained + the procedure's builds). `runs` as returned by `prepare`. A grid whose configurations share
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

    `runs` as returned by `prepare`. Tables (τ = the tuned baseline's test score − tolerance; "tuner" is
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
