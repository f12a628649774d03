"""What reaching τ costs and what a fixed arm saves, with the saving's interval (docs/design.md §11
"Target and savings").

A tuner's cost to reach τ is its cheapest budget whose expected test score reaches τ; a saving is
1 − cost(arm) / cost(tuner). A saving jumps where a score crosses τ, so its interval is widened to hold
every outcome the reach margins leave open (`saving_interval`), per setting and summed over settings.
Pure functions over the rows of `analysis.tuner_models`' tuners and arms.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analysis.stats import seed_interval
from analysis.tuner_models import REACH_ROUNDING, Arm, Tuner, reaches


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
