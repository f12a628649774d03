"""Tuners replayed over a baseline's grid on a setting, and what reaching τ costs (docs/design.md §11).

Per configuration j of the baseline's grid on a setting (N configurations, config_id order) and seed s
(the setting's seeds, S of them; the paired bootstrap of `analysis.selection` weighs them):
    V_js, T_js   the run's final validation score "val/<metric>" (its test score on older records, which
                 the report flags) and test score "<metric>"
    c_js         the run's charged cost (FLOPs, device-hours; `costs.charged_costs`)
    U_js(f), C_js(f)  at a fraction f of the run's steps, from its `val_curve`: the validation score (on a
                 smaller prompt sample) and the cumulative cost of training + curve evaluations up to f,
                 plus the run's share of the builds where the convention charges them per run
    P_s          the shared builds the grid's runs at seed s used, charged once (`costs.procedure_builds`;
                 0 unless "per_procedure"); P: every build the grid's runs used, once

A tuner is described by its *selection probabilities* π_k(j): the probability that budget k ends with
configuration j chosen (over the random subsets it may draw), and its expected cost. Two models of
what a trial shows the tuner:

practitioner (the default): with budget k the procedure trains k configurations ONCE each, all at one
    seed s, picks by those runs' validation scores V_·s and is scored by the chosen run's test score;
    its cost is what it trained. Per seed s, π_ks from V_·s, and over seeds (the seeds at which every
    configuration of the grid ran, each weighted by how often the replicate drew it):
        E[test]       = mean_s Σ_j π_ks(j)·T_js
        P(reach τ)    = mean_s Σ_j π_ks(j)·1[T_js ≥ τ]      (one tuning procedure reaches τ)
        E[cost]       = mean_s (E over subsets of Σ of the trained runs' c_js (or C_js(f) where stopped) + P_s)
    Exact: every seed, and every subset (a closed form for random search; successive halving enumerates
    up to MAX_EXACT_SUBSETS subsets per start size, more than any committed grid needs).
idealised (an option, labelled "idealised" wherever it is shown): a trial shows its configuration's
    statistic over ALL seeds, V̄_j and T̄_j (`stat`), and Ū_j(f): π_k from V̄, E[test] = Σ_j π_k(j)·T̄_j,
    P(reach τ) = Σ_j π_k(j)·(share of j's seeds with T_js ≥ τ), and each trial costs one run of mean
    cost c̄_j (C̄_j(f)), + P. It selects on n seeds' information while being charged one run per
    configuration, so it flatters the tuner.

Tuners (π and the runs trained, per budget):
    grid search        all N configurations, full runs; π = 1 at argmax_j V_j (first on ties); Σ_j c_j.
    random search (k)  k of the N drawn uniformly without replacement, full runs, the val-argmax among
                       them. With the configurations ranked r_j = 1..N by V ascending (ties: the later
                       configuration ranks lower, since the first one wins) π_k(j) = C(r_j − 1, k − 1)/C(N, k)
                       (Ê_k of docs/design.md §11 when V = T); expected cost k·mean_j c_j.
    successive halving (n, η, rungs f_1 < … < f_L = 1)  n configurations drawn uniformly (all C(N, n)
                       subsets up to the model's limit, else that many fixed random ones) start; at each
                       rung f_i < 1 the m survivors are ranked by U_j(f_i) and the top max(1, ⌊m/η⌋)
                       continue (once one is left it runs to the end); the survivors of the last rung run
                       to 100% and the val-argmax of V among them is chosen. A stopped configuration costs
                       C_j(f) at its rung, a finished one c_j; π_n and the cost are means over subsets.
Cost to reach τ of a tuner: among its budgets whose expected test score ≥ τ (up to REACH_ROUNDING), the
one with the smallest expected primary cost (FLOPs), and its expected cost; ∞ when none reaches τ.
τ = T̄ of the baseline's validation-selected configuration − tolerance (`stat` over seeds, the "tuned"
entry of the report), recomputed in every replicate. A fixed arm (an IMI method at its defaults) is one
run: it reaches τ when its `stat` over seeds ≥ τ; P(reach τ) = the share of its seeds whose run does;
its cost is one run + its builds (practitioner: mean_s (c_s + P_s); idealised: mean c + P).
Savings of an arm against a tuner = 1 − cost_arm / cost_tuner(τ): −∞ when the arm misses τ, 1 when it
reaches τ and the tuner cannot. Across settings, costs are summed over the settings both ran on.
Pure functions over arrays (rows: the observed runs first, then the replicates); no I/O.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace

import numpy as np

from analysis.metrics import expected_max_weights
from analysis.selection import STATS, first_argmax, seed_stat
from analysis.stats import seed_interval

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
