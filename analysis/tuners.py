"""Tuners replayed over a baseline's configurations on a setting, and what reaching τ costs (DESIGN §11).

Per configuration j of the baseline's grid on a setting (N configurations, in config_id order):
    V_j  validation statistic: `stat` over seeds of the final validation score "val/<metric>"
    T_j  test statistic: `stat` over seeds of the test score "<metric>"
    c_j  the mean charged cost of one run (FLOPs, device-hours; `costs.charged_costs`)
    U_j(f), C_j(f)  at a fraction f of the run's steps, from `val_curve`: `stat` over seeds of the
         curve's validation score (a smaller validation sample, comparable along the curve) and the
         mean cumulative cost of training + curve evaluations up to f, plus the run's share of the
         builds where the convention charges them per run
    P    the procedure's shared builds, charged once (`costs.procedure_builds`; 0 unless
         "per_procedure")
A trial is one run of one configuration; its validation outcome is the configuration's statistic
(the expected score of one run), which idealises the tuner (it selects without seed noise) and so
makes savings against it conservative. Ties in validation go to the first configuration.

Tuners (each reports its expected selected TEST score, its expected cost and its trials per budget):
    grid search        all N configurations, full runs; selects argmax_j V_j.
                       test = T_sel, cost = Σ_j c_j + P, trials = N.
    random search (k)  k of the N configurations, drawn uniformly without replacement, full runs;
                       selects the val-argmax among them. Exact expectation over all C(N, k)
                       subsets: with the configurations ranked r_j = 1..N by V ascending (ties: the
                       later config ranks lower, since the first one wins), the val-argmax of a
                       subset is j with probability C(r_j − 1, k − 1) / C(N, k), so
                       E_k = Σ_j T_j · C(r_j − 1, k − 1) / C(N, k)   (Ê_k of DESIGN §11 when V = T);
                       cost = k · mean_j c_j + P, trials = k.
    successive halving (n, η, rungs f_1 < … < f_L = 1)  n configurations drawn uniformly (all C(N, n)
                       subsets when there are at most MAX_SUBSETS of them, else MAX_SUBSETS fixed
                       random ones) start; at each rung f_i < 1 the m survivors are ranked by U_j(f_i)
                       and the top max(1, ⌊m/η⌋) continue (once one is left it runs to the end); the
                       survivors of the last rung run to 100% and the val-argmax of V among them is
                       selected. cost = Σ over the n of C_j(f) at the rung f where j stopped, or c_j
                       when it ran to the end, + P; trials = n. Expectations are means over subsets.
Cost to reach τ of a tuner: among its budgets (k, or n) whose expected selected test score ≥ τ (up to
1e-12 of rounding), the one with the smallest expected FLOPs, and its expected cost; ∞ when no budget
reaches τ. τ = T of the baseline's validation-selected configuration − tolerance (the grid search's
outcome), recomputed in every bootstrap replicate. A fixed arm (an IMI method at its defaults) is one
run: it reaches τ when its test statistic ≥ τ, and costs c + P of its own runs.
Savings of an arm against a tuner = 1 − cost_arm / cost_tuner(τ): −∞ when the arm misses τ, 1 when it
reaches τ and the tuner cannot. Across settings, costs are summed over the settings both ran on.
Intervals: every quantity is recomputed in each replicate of the seed bootstrap (selection included,
`analysis.selection`); `stats.seed_interval` with n = the smallest seed count involved.
Pure functions over arrays (leading axis: the observed runs first, then the replicates); no I/O.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.costs import COST_FIELDS
from analysis.metrics import expected_max_weights
from analysis.selection import SeedBootstrap, first_argmax, validation_column

MAX_SUBSETS = 256
# (name, η, rungs): η = 2 halves at 25% and 50%; η = 3 keeps a third at 25%, 50% and 75%.
SH_VARIANTS = (("successive halving η=2", 2, (0.25, 0.5, 1.0)), ("successive halving η=3", 3, (0.25, 0.5, 0.75, 1.0)))
GRID, RANDOM = "grid search", "random search"
REACH_ROUNDING = 1e-12


def val_selected_expectation(val: np.ndarray, test: np.ndarray) -> np.ndarray:
    """E_k for k = 1..N: the expected test score of the val-argmax of a random k-subset.

    Shapes: val, test (..., N) -> (..., N), entry k−1 is E_k (see the module docstring).
    """
    val, test = np.asarray(val, dtype=float), np.asarray(test, dtype=float)
    n = val.shape[-1]
    # ascending by val; a stable sort of the reversed configurations puts the later one of a tie
    # first, i.e. ranks the first configuration (the one first_argmax picks) higher
    order = n - 1 - np.argsort(val[..., ::-1], axis=-1, kind="stable")
    ranked_test = np.take_along_axis(test, order, axis=-1)
    weights = np.stack([expected_max_weights(n, k) for k in range(1, n + 1)])  # (k, rank)
    return ranked_test @ weights.T


def grid_search(val: np.ndarray, test: np.ndarray, cost: np.ndarray, builds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Shapes: val, test (..., N); cost (..., N, C); builds (C,) -> (test (...), cost (..., C))."""
    selected = first_argmax(val)
    return np.take_along_axis(test, selected[..., None], axis=-1)[..., 0], cost.sum(axis=-2) + builds


def random_search(val: np.ndarray, test: np.ndarray, cost: np.ndarray, builds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per k = 1..N: (expected test (..., N), expected cost (..., N, C))."""
    n = val.shape[-1]
    k = np.arange(1, n + 1, dtype=float)
    return val_selected_expectation(val, test), k[:, None] * cost.mean(axis=-2)[..., None, :] + builds


def subsets(n_configs: int, size: int, rng: np.random.Generator, max_subsets: int = MAX_SUBSETS) -> np.ndarray:
    """The size-`size` subsets of range(n_configs) a tuner averages over, (S, size), each sorted:
    all of them when there are at most `max_subsets`, else `max_subsets` distinct random ones."""
    if math.comb(n_configs, size) <= max_subsets:
        return np.array(list(itertools.combinations(range(n_configs), size)), dtype=int).reshape(-1, size)
    drawn: set[tuple[int, ...]] = set()
    while len(drawn) < max_subsets:
        drawn.add(tuple(sorted(rng.choice(n_configs, size=size, replace=False).tolist())))
    return np.array(sorted(drawn), dtype=int)


def successive_halving(val: np.ndarray, test: np.ndarray, cost: np.ndarray, rung_val: np.ndarray,
                       rung_cost: np.ndarray, builds: np.ndarray, chosen: np.ndarray, eta: int,
                       chunk: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Expected (test, cost) of successive halving started from each row of `chosen`.

    Shapes: val, test (R, N); cost (R, N, C); rung_val (R, N, L) and rung_cost (R, N, L, C) at the
    rungs before 100%; builds (C,); chosen (S, n) subsets of configurations. -> ((R,), (R, C)).
    """
    n_rungs = rung_val.shape[-1]
    size = chosen.shape[1]
    test_sum = np.zeros(val.shape[0])
    cost_sum = np.zeros((val.shape[0], cost.shape[-1]))
    for start in range(0, len(chosen), chunk):
        block = chosen[start:start + chunk]                                   # (S_c, n)
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
        selected = first_argmax(np.where(alive, val[:, block], -np.inf))      # (R, S_c)
        test_sum += np.take_along_axis(test[:, block], selected[..., None], axis=-1)[..., 0].sum(axis=1)
        cost_sum += spent.sum(axis=1)
    return test_sum / len(chosen), cost_sum / len(chosen) + builds


def cost_to_reach(test: np.ndarray, cost: np.ndarray, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheapest budget (by the primary cost, column 0) whose expected test score reaches τ.

    Shapes: test (R, K) per budget, cost (R, K, C), tau (R,) -> (budget position (R,), -1 where no
    budget reaches τ; its cost (R, C), ∞ where none does).
    """
    reach = test >= tau[:, None] - REACH_ROUNDING
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
# From runs to the arrays above


def with_point(point: np.ndarray, replicates: np.ndarray) -> np.ndarray:
    """Stack the observed value (row 0) on top of the replicates: (…), (B, …) -> (1 + B, …)."""
    return np.concatenate([np.asarray(point)[None], replicates], axis=0)


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


@dataclass
class GridArrays:
    """A baseline grid's per-configuration quantities, observed (row 0) and per replicate (rows 1..B)."""

    val: np.ndarray        # (R, N)
    test: np.ndarray       # (R, N)
    cost: np.ndarray       # (R, N, C)
    builds: np.ndarray     # (C,)
    n_seeds: int
    selected_on: str       # "validation" or "test"


def grid_arrays(boot: SeedBootstrap, runs: pd.DataFrame, config_ids, metric: str, stat: str,
                builds: dict[str, float], selected_on: str) -> GridArrays:
    """Collect V, T, c of a grid's configurations (selection on "test" = the oracle fallback)."""
    select_column = validation_column(metric) if selected_on == "validation" else metric
    val = with_point(*boot.stat(runs, config_ids, select_column, stat))
    test = with_point(*boot.stat(runs, config_ids, metric, stat))
    cost = np.stack([with_point(*boot.stat(runs, config_ids, f"charged.{f}", "mean")) for f in COST_FIELDS], axis=-1)
    return GridArrays(val, test, cost, np.array([builds[f] for f in COST_FIELDS]), boot.min_seeds(config_ids), selected_on)


def rung_arrays(boot: SeedBootstrap, runs: pd.DataFrame, config_ids, metric: str, stat: str,
                rungs) -> tuple[np.ndarray, np.ndarray] | str:
    """U_j(f) (R, N, L) and C_j(f) (R, N, L, C) at the rungs before 100%, or why they are unavailable.

    `runs` must hold the curve_columns of these rungs for the keys "val/<metric>" and COST_FIELDS,
    and the per-run build share "share.<field>" (charged − own cost; 0 under per_procedure).
    """
    key = validation_column(metric)
    early = [f for f in rungs if f < 1.0]
    needed = [f"curve@{f:g}/{k}" for f in early for k in (key, *COST_FIELDS)]
    rows = np.concatenate([boot.rows[int(c)] for c in config_ids])
    if any(c not in runs.columns for c in needed) or runs.loc[rows, needed].isna().any().any():
        return f"not every run has a val_curve point with {key}, flops and device_hours at {', '.join(f'{f:g}' for f in early)}"
    val = np.stack([with_point(*boot.stat(runs, config_ids, f"curve@{f:g}/{key}", stat)) for f in early], axis=-1)
    cost = np.stack([np.stack([with_point(*boot.stat(runs, config_ids, f"curve@{f:g}/{c}", "mean"))
                               + with_point(*boot.stat(runs, config_ids, f"share.{c}", "mean")) for c in COST_FIELDS],
                              axis=-1) for f in early], axis=-2)
    return val, cost
