"""Estimators on tiny hand-computed examples and against brute-force enumeration: Ê_k and the
validation-selected E_k, grid search, random search, successive halving, cost to reach τ (analysis.
metrics, analysis.tuners), the selection protocol (analysis.selection) and the arms (analysis.grid)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from analysis.grid import annotate, configuration_columns
from analysis.metrics import expected_max, expected_max_curve, expected_max_weights, seed_summary
from analysis.reference import add_delta
from analysis.selection import SeedBootstrap, choose, chosen_runs, chosen_stat, first_argmax, seed_bootstrap
from analysis.tuners import (cost_to_reach, grid_search, random_search, savings, subsets, successive_halving,
                             val_selected_expectation)

SETTING = {"dataset.name": "arith", "model.name": "tiny", "hardware.name": "cpu"}
CONFIG = ["method.name", "method.beta", "seed", "dataset.name", "model.name", "hardware.name"]


def brute_force_expected_max(scores, k):
    """Mean over every size-k subset of the subset's maximum."""
    subsets_ = list(itertools.combinations(scores, k))
    return sum(max(s) for s in subsets_) / len(subsets_)


def brute_force_val_selected(val, test, k):
    """Mean over every size-k subset of the test score of its first validation-argmax."""
    chosen = [test[max(s, key=lambda j: (val[j], -j))] for s in itertools.combinations(range(len(val)), k)]
    return sum(chosen) / len(chosen)


def test_expected_max_hand_computed():
    # subsets of size 2 of {1, 2, 3}: max 2, 3, 3 -> 8/3
    assert expected_max([3.0, 1.0, 2.0], 2) == pytest.approx(8 / 3)
    # weights C(j-1, k-1)/C(N, k) for N=4, k=2: 0, 1/6, 2/6, 3/6
    np.testing.assert_allclose(expected_max_weights(4, 2), [0, 1 / 6, 2 / 6, 3 / 6])
    with pytest.raises(ValueError, match="1 <= k <= n"):
        expected_max([1.0, 2.0], 3)


@pytest.mark.parametrize("scores", [
    [0.3, 0.1, 0.7, 0.5, 0.2],
    [1.0, 1.0, 1.0, 2.0, 0.0, 2.0],            # ties
    [-0.9, -0.85, 0.62, 0.7, 0.7, 0.64, 0.1],   # bimodal, with a tie at the top
])
def test_expected_max_matches_brute_force_for_every_k(scores):
    curve = expected_max_curve(scores)
    for k in range(1, len(scores) + 1):
        assert curve[k - 1] == pytest.approx(brute_force_expected_max(scores, k), abs=1e-12)
    assert curve[0] == pytest.approx(np.mean(scores)) and curve[-1] == pytest.approx(np.max(scores))


def test_val_selected_expectation_hand_computed():
    # val 0.1, 0.3, 0.2 -> ranks 1, 3, 2; test 5, 1, 7. k = 2: subsets {0,1} -> 1, {0,2} -> 7, {1,2} -> 1
    np.testing.assert_allclose(val_selected_expectation([0.1, 0.3, 0.2], [5.0, 1.0, 7.0]), [13 / 3, 3.0, 1.0])


@pytest.mark.parametrize("seed", range(6))
def test_val_selected_expectation_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 8))
    val = rng.integers(0, 3, n).astype(float)   # many ties: the first configuration must win them
    test = rng.normal(size=n)
    got = val_selected_expectation(val, test)
    for k in range(1, n + 1):
        assert got[k - 1] == pytest.approx(brute_force_val_selected(val, test, k), abs=1e-12)
    # selecting on the test scores themselves is Ê_k
    np.testing.assert_allclose(val_selected_expectation(test, test), expected_max_curve(test))
    # batched rows are independent
    both = val_selected_expectation(np.stack([val, -val]), np.stack([test, test]))
    np.testing.assert_allclose(both[0], got)


def test_grid_and_random_search_by_hand():
    val, test = np.array([0.2, 0.9, 0.5]), np.array([0.1, 0.6, 0.8])
    cost = np.array([[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]])   # (N, C): FLOPs, device-hours
    builds = np.array([100.0, 1000.0])
    selected_test, total = grid_search(val, test, cost, builds)
    assert selected_test == 0.6 and list(total) == [106.0, 1060.0]   # validation picks config 1, not the test-best 2
    expected_test, expected_cost = random_search(val, test, cost, builds)
    np.testing.assert_allclose(expected_test, [1.5 / 3, (0.6 + 0.8 + 0.6) / 3, 0.6])
    np.testing.assert_allclose(expected_cost[:, 0], [102.0, 104.0, 106.0])  # k · mean cost + builds
    assert first_argmax(np.array([1.0, np.nan, 1.0])) == 0 and first_argmax(np.array([np.nan, np.nan])) == 0


def brute_force_halving(val, test, cost, rung_val, rung_cost, builds, size, eta):
    """Successive halving replayed one subset at a time with Python sorts (ties: the first config)."""
    outcomes = []
    for subset in itertools.combinations(range(len(val)), size):
        alive, spent = list(subset), 0.0
        for rung in range(len(rung_val[0])):
            if len(alive) == 1:
                break
            keep = max(1, len(alive) // eta)
            ranked = sorted(alive, key=lambda j: (-rung_val[j][rung], j))
            spent += sum(rung_cost[j][rung] for j in ranked[keep:])
            alive = sorted(ranked[:keep])
        spent += sum(cost[j] for j in alive)
        outcomes.append((test[max(alive, key=lambda j: (val[j], -j))], spent))
    return np.mean([o[0] for o in outcomes]), np.mean([o[1] for o in outcomes]) + builds


def test_successive_halving_hand_computed():
    # 4 configurations, η = 2, rungs 25% and 50%: 4 -> 2 (by the 25% curve) -> 1 (by the 50% curve) -> 100%
    val = np.array([[0.1, 0.2, 0.3, 0.4]])
    test = np.array([[1.0, 2.0, 3.0, 4.0]])
    cost = np.array([[[10.0], [10.0], [10.0], [10.0]]])
    rung_val = np.array([[[0.9, 0.1], [0.8, 0.9], [0.1, 0.1], [0.2, 0.2]]])
    rung_cost = np.array([[[[1.0], [2.0]]] * 4])  # (R, N, L, C)
    chosen = np.array([[0, 1, 2, 3]])
    expected_test, expected_cost = successive_halving(val, test, cost, rung_val, rung_cost, np.array([5.0]), chosen, 2)
    # 25%: configs 0, 1 survive (2, 3 stop: 1 + 1); 50%: config 1 beats 0 (0 stops: 2); 1 runs on: 10
    assert expected_test[0] == 2.0 and expected_cost[0, 0] == pytest.approx(1 + 1 + 2 + 10 + 5)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("eta, n_rungs", [(2, 2), (3, 3)])
def test_successive_halving_matches_brute_force(seed, eta, n_rungs):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 7))
    rows = 3
    val = rng.integers(0, 3, (rows, n)).astype(float)
    test = rng.normal(size=(rows, n))
    cost = rng.uniform(5, 10, (rows, n, 1))
    rung_val = rng.integers(0, 3, (rows, n, n_rungs)).astype(float)   # ties at the rungs too
    rung_cost = np.sort(rng.uniform(0, 5, (rows, n, n_rungs, 1)), axis=2)
    for size in range(1, n + 1):
        got_test, got_cost = successive_halving(val, test, cost, rung_val, rung_cost, np.array([0.5]),
                                                subsets(n, size, rng), eta, chunk=3)
        for r in range(rows):
            want_test, want_cost = brute_force_halving(val[r], test[r], cost[r, :, 0], rung_val[r], rung_cost[r, :, :, 0],
                                                       0.5, size, eta)
            assert got_test[r] == pytest.approx(want_test) and got_cost[r, 0] == pytest.approx(want_cost)
    # every configuration started and nothing stopped early = grid search
    full = successive_halving(val, test, cost, rung_val[:, :, :0], rung_cost[:, :, :0], np.array([0.5]),
                              subsets(n, n, rng), eta)
    grid = grid_search(val, test, cost, np.array([0.5]))
    np.testing.assert_allclose(full[0], grid[0]) and np.testing.assert_allclose(full[1], grid[1])


def test_subsets_are_exact_when_few_and_sampled_when_many():
    rng = np.random.default_rng(0)
    assert subsets(4, 2, rng).tolist() == [[0, 1], [0, 2], [0, 3], [1, 2], [1, 3], [2, 3]]
    drawn = subsets(20, 10, rng, max_subsets=50)
    assert drawn.shape == (50, 10) and len({tuple(r) for r in drawn}) == 50
    assert (np.diff(drawn, axis=1) > 0).all()


def test_cost_to_reach_by_hand():
    test = np.array([[0.5, 0.7, 0.9], [0.5, 0.6, 0.6]])
    cost = np.array([[[1.0], [2.0], [3.0]], [[1.0], [2.0], [3.0]]])
    budget, spent = cost_to_reach(test, cost, np.array([0.65, 0.65]))
    assert budget.tolist() == [1, -1] and spent[0, 0] == 2.0 and math.isinf(spent[1, 0])
    # not monotone in the budget: the cheapest budget that reaches τ is taken
    budget, spent = cost_to_reach(np.array([[0.7, 0.6, 0.8]]), np.array([[[5.0], [1.0], [9.0]]]), np.array([0.65]))
    assert budget.tolist() == [0] and spent[0, 0] == 5.0
    np.testing.assert_allclose(savings(np.array([1.0, np.inf, 1.0]), np.array([4.0, 4.0, np.inf])), [0.75, -np.inf, 1.0])


def _runs(rows):
    """An annotated runs frame from (method, beta, seed, test, val, reference, collapsed) on one setting."""
    frame = pd.DataFrame(rows, columns=["method.name", "method.beta", "seed", "gold_reward", "val/gold_reward",
                                        "reference_gold_reward", "collapsed"])
    for key, value in SETTING.items():
        frame[key] = value
    return add_delta(annotate(frame, CONFIG), "gold_reward")


def test_validation_selection_reports_the_test_score_and_rechooses_in_each_replicate():
    runs = _runs([
        ("dpo", 0.1, 0, 0.50, 0.9, 0.3, 0), ("dpo", 0.1, 1, 0.60, 0.1, 0.3, 0),
        ("dpo", 1.0, 0, 0.80, 0.4, 0.3, 0), ("dpo", 1.0, 1, 0.70, 0.4, 0.3, 0),
    ])
    boot = seed_bootstrap(runs, 4, seed=0)
    # replicate 0: β=0.1 resamples its val-0.9 run twice (mean 0.9 > 0.4); replicate 1: its val-0.1 run twice
    boot.indices = {0: np.array([[0, 0], [1, 1], [0, 1], [1, 0]]), 1: np.array([[0, 0], [0, 1], [1, 1], [0, 0]])}
    choice = choose(boot, runs, [0, 1], "gold_reward", "mean", "validation")
    assert choice.selected_on == "validation" and choice.point == 0      # val means 0.5 vs 0.4
    assert choice.replicates.tolist() == [0, 1, 0, 0]
    point, replicates = chosen_stat(boot, runs, choice, "gold_reward", "mean")
    assert point == pytest.approx(0.55)                                  # the TEST mean of β=0.1
    np.testing.assert_allclose(replicates, [0.50, 0.75, 0.55, 0.55])      # test of the re-chosen configuration
    oracle = choose(boot, runs, [0, 1], "gold_reward", "mean", "test")
    assert oracle.point == 1 and chosen_stat(boot, runs, oracle, "gold_reward", "mean")[0] == pytest.approx(0.75)
    assert choice.stability() == 0.75
    values, resampled, mask = chosen_runs(boot, runs, choice, "delta_sft/gold_reward")
    np.testing.assert_allclose(values, [0.2, 0.3])
    np.testing.assert_allclose(resampled[1], [0.5, 0.4]) and mask.all()


def test_chosen_runs_pads_configurations_with_fewer_seeds():
    runs = _runs([("dpo", 0.1, 0, 0.5, 0.9, 0.3, 0), ("dpo", 1.0, 0, 0.8, 0.1, 0.3, 0), ("dpo", 1.0, 1, 0.7, 0.2, 0.3, 0)])
    boot = seed_bootstrap(runs, 3, seed=0)
    boot.indices = {0: np.array([[0], [0], [0]]), 1: np.array([[0, 1], [1, 1], [0, 0]])}
    choice = choose(boot, runs, [0, 1], "gold_reward", "mean", "test")
    _, resampled, mask = chosen_runs(boot, runs, choice, "gold_reward")
    assert resampled.shape == (3, 2) and mask.tolist() == [[True, True]] * 3
    fixed = choose(boot, runs, [0], "gold_reward", "mean", "fixed")
    _, resampled, mask = chosen_runs(boot, runs, fixed, "gold_reward")
    assert mask.tolist() == [[True]] * 3 and boot.min_seeds([0, 1]) == 1
    with pytest.raises(ValueError, match="exactly one"):
        choose(boot, runs, [0, 1], "gold_reward", "mean", "fixed")


def test_seed_summary_by_hand():
    runs = _runs([
        ("dpo", 0.1, 0, 0.2, 0.25, 0.1, 0), ("dpo", 0.1, 1, 0.4, 0.35, 0.2, 0), ("dpo", 0.1, 2, 0.9, 0.85, 0.3, 1),
        ("rmipo", 2.0, 0, 0.75, 0.7, 0.1, 0), ("rmipo", 2.0, 1, -0.9, -0.8, 0.2, 1),
    ])
    summary = seed_summary(runs, "gold_reward", seed_bootstrap(runs, 500, seed=1)).set_index("method.name")
    dpo = summary.loc["dpo"]
    assert dpo["n_runs"] == 3 and dpo["score"] == pytest.approx(0.5) and dpo["median"] == pytest.approx(0.4)
    assert dpo["q25"] == pytest.approx(0.3) and dpo["q75"] == pytest.approx(0.65)   # linear quantiles
    assert dpo["std"] == pytest.approx(math.sqrt(0.13)) and dpo["collapse_rate"] == pytest.approx(1 / 3)
    assert dpo["val_score"] == pytest.approx(1.45 / 3) and dpo["delta_sft"] == pytest.approx(0.3)
    assert dpo["score_ci_low"] < 0.5 < dpo["score_ci_high"] and dpo["delta_sft_ci_low"] < 0.3 < dpo["delta_sft_ci_high"]
    assert dpo["arm_kind"] == "fixed" and summary.loc["rmipo", "collapse_rate"] == pytest.approx(0.5)


def test_configuration_columns_split_real_ablations_from_seed_copies():
    rows = [{**SETTING, "method.name": "dpo", "method.beta": 0.1, "seed": seed, "train.lr": lr, "dataset.seed": seed,
             "logger.name": "none", "paths.runs_root": f"/runs/{seed}-{lr}"} for lr in (1e-4, 5e-4) for seed in (0, 1, 2)]
    frame = pd.DataFrame(rows)
    columns = configuration_columns(frame, list(frame.columns))
    assert "train.lr" in columns and "dataset.seed" not in columns
    assert "paths.runs_root" not in columns and "logger.name" not in columns
    fresh = frame.assign(seed=range(6), **{"dataset.seed": range(6)})
    assert "train.lr" in configuration_columns(fresh, list(fresh.columns))


def test_arms_are_tuned_only_with_two_configurations():
    rows = [{**SETTING, "method.name": "simpo", "method.beta": 2.0, "method.gamma_beta_ratio": 0.5, "seed": s}
            for s in (0, 1)]
    rows += [{**SETTING, "method.name": "dpo", "method.beta": b, "seed": s} for b in (0.1, 1.0) for s in (0, 1)]
    rows += [{**SETTING, "dataset.name": "other", "method.name": "simpo", "method.beta": 2.0,
              "method.gamma_beta_ratio": g, "seed": s} for g in (0.5, 1.0) for s in (0, 1)]
    rows += [{**SETTING, "method.name": "ipo", "method.beta": 1.0, "seed": 0}]
    frame = pd.DataFrame(rows)
    runs = annotate(frame, list(frame.columns))
    arms = runs.drop_duplicates(["setting", "arm"]).set_index(["setting", "arm"])["arm_kind"].to_dict()
    assert arms[("arith", "simpo (default)")] == "fixed"          # a one-point grid is never "tuned"
    assert arms[("arith", "ipo (β=1)")] == "fixed"                # one configuration, not at the defaults
    assert arms[("arith", "dpo")] == "grid" and arms[("other", "simpo")] == "grid"   # a γ/β grid at one β
    other = runs[runs["setting"] == "other"].drop_duplicates("config_id").set_index("config_label")["is_default"]
    assert other.to_dict() == {"β=2, gamma_beta_ratio=0.5": True, "β=2, gamma_beta_ratio=1": False}


def test_method_facts_come_from_the_records_and_older_records_from_the_legacy_table():
    rows = (("newloss", True, 0.5), ("newbase", False, 0.5), ("dpo", None, None), ("rmipo", None, None))
    frame = pd.DataFrame([{**SETTING, "method.name": name, "method.beta": 0.5, "seed": s, "method_info.imi": imi,
                           "method_info.defaults.beta": default} for name, imi, default in rows for s in (0, 1)])
    runs = annotate(frame, list(frame.columns)).drop_duplicates("arm").set_index("method.name")
    assert bool(runs.loc["newloss", "is_imi"]) and runs.loc["newloss", "arm"] == "newloss"
    # a method no table knows: its record says it is a baseline at its default β = 0.5
    assert not bool(runs.loc["newbase", "is_imi"]) and runs.loc["newbase", "arm"] == "newbase (default)"
    assert not bool(runs.loc["dpo", "is_imi"])                     # no method_info: LEGACY_METHOD_INFO
    assert runs.loc["dpo", "arm"] == "dpo (β=0.5)"                 # legacy default β = 0.1: not at it
    assert bool(runs.loc["rmipo", "is_imi"])


def test_a_records_method_info_beats_the_legacy_table():
    frame = pd.DataFrame([{**SETTING, "method.name": "dpo", "method.beta": 0.5, "seed": s, "method_info.imi": False,
                           "method_info.defaults.beta": 0.5} for s in (0, 1)])
    assert annotate(frame, list(frame.columns))["arm"].unique().tolist() == ["dpo (default)"]


def test_trap_settings_are_marked_on_every_run_of_the_setting():
    frame = pd.DataFrame([{**SETTING, "dataset.name": d, "method.name": "dpo", "method.beta": 0.1, "seed": s,
                           "dataset.trap": trap if s == 0 else None}
                          for d, trap in (("clean", None), ("noisy", "label noise 20%")) for s in (0, 1)])
    runs = annotate(frame, list(frame.columns))
    assert runs.groupby("setting")["trap"].agg(set).to_dict() == {"clean": {""}, "noisy": {"label noise 20%"}}


def test_seed_bootstrap_is_reproducible_and_per_configuration():
    runs = _runs([("dpo", 0.1, s, 0.1 * s, 0.1, 0.0, 0) for s in range(3)] + [("dpo", 1.0, 0, 0.5, 0.1, 0.0, 0)])
    a, b = seed_bootstrap(runs, 50, seed=3), seed_bootstrap(runs, 50, seed=3)
    assert isinstance(a, SeedBootstrap) and all((a.indices[c] == b.indices[c]).all() for c in a.indices)
    assert a.indices[0].shape == (50, 3) and a.indices[1].shape == (50, 1) and a.n_runs([0, 1]).tolist() == [3, 1]
