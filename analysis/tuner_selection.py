"""Tuners as selection probabilities over a grid's configurations (docs/design.md §11 "Tuners").

Grid search, random search (exact over every k-subset) and successive halving (over start subsets):
for each budget, the probability π(j) that the tuner ends with configuration j, and its expected cost.
Pure functions over arrays, no DataFrame, so that `analysis.coverage` runs them on simulated data;
which seeds' scores they see is `analysis.tuner_models`' business.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from analysis.metrics import expected_max_weights
from analysis.selection import first_argmax

# idealised successive halving: subsets averaged per start size (each costs a pass over every replicate)
MAX_SUBSETS = 256
# practitioner's successive halving: one pass per seed, so every subset up to this many (C(12, 6) = 924)
MAX_EXACT_SUBSETS = 5000
# (name, η, rungs): η = 2 halves at 25% and 50%; η = 3 keeps a third at 25%, 50% and 75%.
SH_VARIANTS = (("successive halving η=2", 2, (0.25, 0.5, 1.0)), ("successive halving η=3", 3, (0.25, 0.5, 0.75, 1.0)))
GRID, RANDOM = "grid search", "random search"


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
