"""Tuning estimators (analysis.metrics, analysis.costs.expected_cost_to_reach, analysis.grid) on tiny
hand-computed examples and against brute-force enumeration."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from analysis.costs import expected_cost_to_reach
from analysis.grid import annotate, configuration_columns
from analysis.metrics import (best_of_grid, default_regret, expected_best_table, expected_max, expected_max_curve,
                              expected_max_weights, seed_summary)


def brute_force_expected_max(scores, k):
    """Mean over every size-k subset of the subset's maximum."""
    subsets = list(itertools.combinations(scores, k))
    return sum(max(s) for s in subsets) / len(subsets)


def test_expected_max_hand_computed():
    # subsets of size 2 of {1, 2, 3}: max 2, 3, 3 -> 8/3
    assert expected_max([3.0, 1.0, 2.0], 2) == pytest.approx(8 / 3)
    # weights C(j-1, k-1)/C(N, k) for N=4, k=2: 0, 1/6, 2/6, 3/6
    np.testing.assert_allclose(expected_max_weights(4, 2), [0, 1 / 6, 2 / 6, 3 / 6])


@pytest.mark.parametrize("scores", [
    [0.3, 0.1, 0.7, 0.5, 0.2],
    [1.0, 1.0, 1.0, 2.0, 0.0, 2.0],            # ties
    [0.5, 0.5, 0.5],                            # all tied
    [-0.9, -0.85, 0.62, 0.7, 0.7, 0.64, 0.1],   # bimodal, with a tie at the top
    list(np.random.default_rng(3).integers(0, 4, size=9).astype(float)),  # many ties
])
def test_expected_max_matches_brute_force_for_every_k(scores):
    n = len(scores)
    curve = expected_max_curve(scores)
    for k in range(1, n + 1):
        assert expected_max(scores, k) == pytest.approx(brute_force_expected_max(scores, k), abs=1e-12)
        assert curve[k - 1] == pytest.approx(brute_force_expected_max(scores, k), abs=1e-12)
    assert curve[0] == pytest.approx(np.mean(scores))   # Ê_1 = mean
    assert curve[-1] == pytest.approx(np.max(scores))   # Ê_N = max
    assert np.all(np.diff(curve) >= -1e-12)              # more trials never lower the expected best


def test_expected_max_batched_rows_are_independent():
    rows = np.array([[0.1, 0.5, 0.2], [3.0, 1.0, 2.0]])
    np.testing.assert_allclose(expected_max_curve(rows)[1], expected_max_curve(rows[1]))
    np.testing.assert_allclose(expected_max(rows, 2), [brute_force_expected_max(r, 2) for r in rows])


def test_expected_max_rejects_bad_k():
    with pytest.raises(ValueError, match="1 <= k <= n"):
        expected_max([1.0, 2.0], 3)


def brute_force_cost_to_reach(scores, costs, tau):
    """Mean over every order of the grid of (trials, cost) until the first score >= tau."""
    trials, spent = [], []
    for order in itertools.permutations(range(len(scores))):
        total = 0.0
        for i, j in enumerate(order, start=1):
            total += costs[j]
            if scores[j] >= tau:
                trials.append(i)
                spent.append(total)
                break
    return np.mean(trials), np.mean(spent)


def test_cost_to_reach_hand_computed():
    # scores 0.1, 0.5, 0.9 with costs 1, 2, 4 and tau 0.5: two reach it.
    # E[trials] = (3+1)/(2+1) = 4/3; E[cost] = 1/3 + (2+4)/2 = 10/3 (orders: 3, 5, 2, 2, 4, 4 -> 20/6)
    trials, cost = expected_cost_to_reach([0.1, 0.5, 0.9], [1.0, 2.0, 4.0], 0.5)
    assert trials == pytest.approx(4 / 3)
    assert cost == pytest.approx(10 / 3)


@pytest.mark.parametrize("tau", [-1.0, 0.2, 0.45, 0.5, 0.8, 0.95])
def test_cost_to_reach_matches_brute_force(tau):
    scores = [0.2, 0.5, 0.45, 0.8, 0.5]
    costs = [1.0, 3.0, 0.5, 2.0, 1.5]
    trials, cost = expected_cost_to_reach(scores, costs, tau)
    if tau > max(scores):
        assert math.isinf(trials) and math.isinf(cost)
    else:
        assert (trials, cost) == pytest.approx(brute_force_cost_to_reach(scores, costs, tau))


def test_cost_to_reach_batched_with_per_row_tau():
    scores = np.array([[0.1, 0.9], [0.1, 0.2]])
    trials, cost = expected_cost_to_reach(scores, np.array([[1.0, 2.0], [1.0, 2.0]]), np.array([0.5, 0.5]))
    assert trials[0] == pytest.approx(1.5) and cost[0] == pytest.approx(0.5 + 2.0)
    assert math.isinf(trials[1]) and math.isinf(cost[1])


def _runs(rows):
    """A runs frame from (method, beta, seed, score, collapsed) tuples on one setting."""
    frame = pd.DataFrame(rows, columns=["method.name", "method.beta", "seed", "gold_reward", "collapsed"])
    frame["dataset.name"], frame["model.name"], frame["hardware.name"] = "arith", "tiny", "cpu"
    return annotate(frame, ["method.name", "method.beta", "seed", "dataset.name", "model.name", "hardware.name"])


def test_seed_summary_best_of_grid_and_default_regret_by_hand():
    runs = _runs([
        ("dpo", 0.1, 0, 0.2, 0), ("dpo", 0.1, 1, 0.4, 0), ("dpo", 0.1, 2, 0.9, 1),
        ("dpo", 1.0, 0, 0.6, 0), ("dpo", 1.0, 1, 0.7, 0), ("dpo", 1.0, 2, 0.8, 0),
        ("rmipo", 2.0, 0, 0.75, 0), ("rmipo", 2.0, 1, -0.9, 1),
    ])
    summary = seed_summary(runs, "gold_reward")
    low = summary[(summary["method.name"] == "dpo") & (summary["method.beta"] == 0.1)].iloc[0]
    assert low["n_runs"] == 3
    assert low["mean"] == pytest.approx(0.5)
    assert low["median"] == pytest.approx(0.4)
    assert low["q25"] == pytest.approx(0.3) and low["q75"] == pytest.approx(0.65)  # linear quantiles
    assert low["std"] == pytest.approx(math.sqrt(0.13))
    assert low["collapse_rate"] == pytest.approx(1 / 3)
    assert bool(low["is_default"]) and low["config_label"] == "β=0.1"
    imi = summary[summary["method.name"] == "rmipo"].iloc[0]
    assert imi["arm_kind"] == "fixed" and imi["collapse_rate"] == pytest.approx(0.5)

    best = best_of_grid(summary, "mean")
    assert list(best["method.name"]) == ["dpo"]  # IMI arms are not grids
    assert best.iloc[0]["best_beta"] == 1.0 and best.iloc[0]["best"] == pytest.approx(0.7)
    # by the median, β=1 (0.7) still beats β=0.1 (0.4)
    assert best_of_grid(summary, "median").iloc[0]["best"] == pytest.approx(0.7)

    regret = default_regret(summary, "mean").iloc[0]
    assert regret["default_beta"] == 0.1
    assert regret["default_score"] == pytest.approx(0.5)
    assert regret["regret"] == pytest.approx(0.2)


def test_default_regret_when_default_is_off_grid():
    runs = _runs([("dpo", 0.3, 0, 0.5, 0), ("dpo", 1.0, 0, 0.6, 0)])
    row = default_regret(seed_summary(runs, "gold_reward")).iloc[0]
    assert math.isnan(row["regret"]) and "not on the grid" in row["note"]


def test_best_of_grid_ties_go_to_the_smallest_beta():
    runs = _runs([("dpo", 0.1, 0, 0.5, 0), ("dpo", 1.0, 0, 0.5, 0), ("dpo", 0.3, 0, 0.4, 0)])
    assert best_of_grid(seed_summary(runs, "gold_reward")).iloc[0]["best_beta"] == 0.1


def test_expected_best_table_point_estimates_and_intervals():
    runs = _runs([
        ("dpo", 0.1, 0, 0.1, 0), ("dpo", 0.1, 1, 0.3, 0),
        ("dpo", 0.3, 0, 0.5, 0), ("dpo", 0.3, 1, 0.5, 0),
        ("dpo", 1.0, 0, 0.8, 0), ("dpo", 1.0, 1, 0.6, 0),
        ("rmipo", 2.0, 0, 0.6, 0), ("rmipo", 2.0, 1, 0.8, 0),
    ])
    runs["charged.device_hours"] = 0.01
    table = expected_best_table(runs, "gold_reward", ["charged.device_hours"], n_boot=300, seed=1)
    dpo = table[table["arm"] == "dpo"].set_index("k")
    # configuration means 0.2, 0.5, 0.7: Ê_1 = 0.4667, Ê_2 = (0.5 + 0.7 + 0.7)/3, Ê_3 = 0.7
    np.testing.assert_allclose(dpo["expected_best"], [1.4 / 3, 1.9 / 3, 0.7])
    np.testing.assert_allclose(dpo["expected_charged.device_hours"], [0.01, 0.02, 0.03])
    assert (dpo["ci_low"] <= dpo["expected_best"]).all() and (dpo["expected_best"] <= dpo["ci_high"]).all()
    # β=0.3 has no seed spread, the others do: the interval is strictly wider than a point
    assert (dpo["ci_high"] - dpo["ci_low"]).min() > 0
    imi = table[table["arm"] == "rmipo"]
    assert list(imi["k"]) == [1] and imi["expected_best"].iloc[0] == pytest.approx(0.7)


def test_configuration_columns_split_real_ablations_from_seed_copies():
    base = {"dataset.name": "arith", "model.name": "tiny", "hardware.name": "cpu", "method.name": "dpo", "method.beta": 0.1}
    rows = []
    for lr in (1e-4, 5e-4):
        for seed in (0, 1, 2):
            rows.append({**base, "seed": seed, "train.lr": lr, "dataset.seed": seed, "logger.name": "none",
                         "paths.runs_root": f"/runs/{seed}-{lr}"})
    frame = pd.DataFrame(rows)
    columns = configuration_columns(frame, list(frame.columns))
    assert "train.lr" in columns            # an lr ablation with the same seeds: a configuration key
    assert "dataset.seed" not in columns    # a copy of the seed is not
    assert "paths.runs_root" not in columns and "logger.name" not in columns  # never result-determining
    # the same ablation run with fresh seeds per lr is still detected
    fresh = frame.assign(seed=range(6), **{"dataset.seed": range(6)})
    assert "train.lr" in configuration_columns(fresh, list(fresh.columns))


def test_annotate_labels_imi_ablation_variants_as_separate_arms():
    frame = pd.DataFrame([
        {"method.name": "imi_dpo", "method.beta": 0.1, "method.regulator": reg, "seed": s, "dataset.name": "arith",
         "model.name": "tiny", "hardware.name": "cpu"} for reg in ("margin", "beta") for s in (0, 1)])
    runs = annotate(frame, list(frame.columns))
    assert sorted(runs["arm"].unique()) == ["imi_dpo (β=0.1, regulator=beta)", "imi_dpo (β=0.1, regulator=margin)"]
    assert set(runs["arm_kind"]) == {"fixed"} and runs["is_default"].all()
    assert runs.groupby("arm")["config_id"].nunique().eq(1).all()
