"""Estimators on tiny hand-computed examples and against brute-force enumeration: Ê_k and the
validation-selected E_k, the tuners' selection probabilities (grid search, random search, successive
halving), the practitioner's and the idealised tuner models, cost to reach τ (analysis.metrics,
analysis.tuner_selection, analysis.tuner_models, analysis.savings), the paired seed bootstrap and the
selection protocol (analysis.selection), and the arms (analysis.grid)."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

from analysis.grid import annotate, configuration_columns
from analysis.metrics import expected_max, expected_max_curve, expected_max_weights, seed_summary
from analysis.sft_level import add_delta
from analysis.stats import seed_interval
from analysis.selection import (SeedBootstrap, choose, chosen_runs, chosen_stat, draw_counts, first_argmax,
                                seed_bootstrap, seed_stat, weighted_reduce)
from analysis.savings import cost_to_reach, savings
from analysis.seed_arrays import ArmSeeds, GridSeeds
from analysis.tuner_models import IDEALISED, PRACTITIONER, arm_outcome, grid_tuners, tau_rows
from analysis.tuner_selection import (GRID, RANDOM, grid_selection, halving_selection, random_search_selection, subsets,
                                      tuner_selections, val_selected_expectation)

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


def test_grid_and_random_search_selection_by_hand():
    val = np.array([0.2, 0.9, 0.5])
    np.testing.assert_array_equal(grid_selection(val), [0.0, 1.0, 0.0])   # validation picks config 1
    # ranks by val ascending: config 0 → 1, config 2 → 2, config 1 → 3; π_k(j) = C(r_j − 1, k − 1)/C(3, k)
    np.testing.assert_allclose(random_search_selection(val), [[1 / 3, 1 / 3, 1 / 3], [0, 2 / 3, 1 / 3], [0, 1, 0]])
    cost = np.array([[[1.0, 10.0], [2.0, 20.0], [3.0, 30.0]]])    # (L=1, N, C): FLOPs, device-hours
    grid, rand = tuner_selections(val[None], cost, np.array([100.0, 1000.0]), {}, {}, np.random.default_rng(0), 10)
    assert grid.name == GRID and rand.name == RANDOM and grid.trials.tolist() == [3] and rand.trials.tolist() == [1, 2, 3]
    np.testing.assert_allclose(grid.cost[0, 0], [106.0, 1060.0])
    np.testing.assert_allclose(rand.cost[0, :, 0], [102.0, 104.0, 106.0])             # k · mean cost + builds
    test = np.array([0.1, 0.6, 0.8])
    np.testing.assert_allclose(rand.selection[0] @ test, [1.5 / 3, (0.6 + 0.8 + 0.6) / 3, 0.6])
    assert first_argmax(np.array([1.0, np.nan, 1.0])) == 0 and first_argmax(np.array([np.nan, np.nan])) == 0
    # a NaN validation score never wins, at any budget
    np.testing.assert_allclose(random_search_selection(np.array([np.nan, 0.1]))[1], [0.0, 1.0])


def brute_force_halving(val, cost, rung_val, rung_cost, size, eta):
    """Successive halving replayed one subset at a time with Python sorts (ties: the first config):
    (how often each configuration is chosen, as a share of the subsets; mean cost)."""
    chosen, spent_all = np.zeros(len(val)), []
    subsets_ = list(itertools.combinations(range(len(val)), size))
    for subset in subsets_:
        alive, spent = list(subset), 0.0
        for rung in range(len(rung_val[0])):
            if len(alive) == 1:
                break
            keep = max(1, len(alive) // eta)
            ranked = sorted(alive, key=lambda j: (-rung_val[j][rung], j))
            spent += sum(rung_cost[j][rung] for j in ranked[keep:])
            alive = sorted(ranked[:keep])
        spent += sum(cost[j] for j in alive)
        chosen[max(alive, key=lambda j: (val[j], -j))] += 1
        spent_all.append(spent)
    return chosen / len(subsets_), float(np.mean(spent_all))


def test_successive_halving_hand_computed():
    # 4 configurations, η = 2, rungs 25% and 50%: 4 -> 2 (by the 25% curve) -> 1 (by the 50% curve) -> 100%
    val = np.array([[0.1, 0.2, 0.3, 0.4]])
    cost = np.array([[[10.0], [10.0], [10.0], [10.0]]])
    rung_val = np.array([[[0.9, 0.1], [0.8, 0.9], [0.1, 0.1], [0.2, 0.2]]])
    rung_cost = np.array([[[[1.0], [2.0]]] * 4])  # (L, N, Q, C)
    chosen, spent = halving_selection(val, cost, rung_val, rung_cost, np.array([[0, 1, 2, 3]]), 2)
    # 25%: configs 0, 1 survive (2, 3 stop: 1 + 1); 50%: config 1 beats 0 (0 stops: 2); 1 runs on: 10
    np.testing.assert_array_equal(chosen[0], [0.0, 1.0, 0.0, 0.0])
    assert spent[0, 0] == pytest.approx(1 + 1 + 2 + 10)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("eta, n_rungs", [(2, 2), (3, 3)])
def test_successive_halving_matches_brute_force(seed, eta, n_rungs):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 7))
    rows = 3
    val = rng.integers(0, 3, (rows, n)).astype(float)
    cost = rng.uniform(5, 10, (rows, n, 1))
    rung_val = rng.integers(0, 3, (rows, n, n_rungs)).astype(float)   # ties at the rungs too
    rung_cost = np.sort(rng.uniform(0, 5, (rows, n, n_rungs, 1)), axis=2)
    for size in range(1, n + 1):
        got, spent = halving_selection(val, cost, rung_val, rung_cost, subsets(n, size, rng), eta, chunk=3)
        for r in range(rows):
            want, want_cost = brute_force_halving(val[r], cost[r, :, 0], rung_val[r], rung_cost[r, :, :, 0], size, eta)
            np.testing.assert_allclose(got[r], want)
            assert spent[r, 0] == pytest.approx(want_cost)
    # every configuration started and nothing stopped early = grid search
    full, spent = halving_selection(val, cost, rung_val[:, :, :0], rung_cost[:, :, :0], subsets(n, n, rng), eta)
    np.testing.assert_allclose(full, grid_selection(val))
    np.testing.assert_allclose(spent, cost.sum(axis=1))


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


# --- the practitioner's tuner: one run per configuration, at one seed --------------------------------------
# configuration × seed: validation, test, FLOPs; the builds each seed's runs used
V = np.array([[0.2, 0.6], [0.5, 0.1], [0.4, 0.3]])
T = np.array([[0.3, 0.7], [0.6, 0.2], [0.5, 0.4]])
C = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
BUILDS = np.array([10.0, 20.0])


def _grid(val=V, test=T, cost=C, builds=BUILDS, present=None) -> GridSeeds:
    present = np.ones(val.shape, dtype=bool) if present is None else present
    return GridSeeds(val, test, present, cost[..., None], builds[:, None], np.array([builds.sum()]))


def brute_force_practitioner(val, test, cost, builds, k, tau):
    """Every seed s and every size-k subset of configurations: train each once at s, keep the
    validation-best (first on ties), score its test run; (E[test], P(test ≥ τ), E[cost]) over both."""
    outcomes = []
    for s in range(val.shape[1]):
        for subset in itertools.combinations(range(val.shape[0]), k):
            best = max(subset, key=lambda j: (val[j, s], -j))
            outcomes.append((test[best, s], test[best, s] >= tau, sum(cost[j, s] for j in subset) + builds[s], s))
    per_seed = pd.DataFrame(outcomes, columns=["test", "hit", "cost", "seed"]).groupby("seed").mean()
    return tuple(per_seed.mean())   # each seed counts once, whatever its number of subsets


def test_the_practitioners_tuner_by_hand():
    # seed 0 ranks configurations 1 > 2 > 0 by validation, seed 1 ranks 0 > 2 > 1
    tuners = {t.name: t for t in grid_tuners(_grid(), np.ones((1, 2)), "mean", PRACTITIONER, np.random.default_rng(0))}
    grid, rand = tuners[GRID], tuners[RANDOM]
    assert grid.expected_test[0, 0] == pytest.approx((0.6 + 0.7) / 2)          # config 1 at seed 0, config 0 at seed 1
    assert grid.expected_cost[0, 0, 0] == pytest.approx(((1 + 3 + 5) + 10 + (2 + 4 + 6) + 20) / 2)
    np.testing.assert_allclose(rand.expected_test[0], [2.7 / 6, (1.7 / 3 + 1.8 / 3) / 2, 0.65])
    np.testing.assert_allclose(rand.expected_cost[0, :, 0], [(3 + 10 + 4 + 20) / 2, (6 + 10 + 8 + 20) / 2, 25.5])
    np.testing.assert_allclose(grid.p_reach(np.array([0.55]))[0], [1.0])       # 0.6 and 0.7 both reach 0.55
    np.testing.assert_allclose(rand.p_reach(np.array([0.55]))[0], [2 / 6, 2 / 3, 1.0])
    # the idealised tuner sees the means over seeds (0.4, 0.3, 0.35): it picks config 0, whose runs score 0.3, 0.7
    ideal = {t.name: t for t in grid_tuners(_grid(), np.ones((1, 2)), "mean", IDEALISED, np.random.default_rng(0))}
    assert ideal[GRID].expected_test[0, 0] == pytest.approx(0.5) and ideal[GRID].label == "grid search (idealised)"
    assert ideal[GRID].expected_cost[0, 0, 0] == pytest.approx(1.5 + 3.5 + 5.5 + 30.0)   # mean runs + every build
    assert ideal[GRID].p_reach(np.array([0.55]))[0, 0] == pytest.approx(0.5)
    assert grid.label == "grid search"


@pytest.mark.parametrize("seed", range(4))
def test_the_practitioners_tuner_matches_brute_force_enumeration(seed):
    rng = np.random.default_rng(seed)
    n, s = int(rng.integers(2, 6)), int(rng.integers(1, 5))
    val = rng.integers(0, 3, (n, s)).astype(float)          # ties: the first configuration must win them
    test, cost, builds = rng.normal(size=(n, s)), rng.uniform(1, 2, (n, s)), rng.uniform(0, 3, s)
    tau = float(np.median(test))
    tuners = {t.name: t for t in grid_tuners(_grid(val, test, cost, builds), np.ones((1, s)), "mean", PRACTITIONER, rng)}
    for k in range(1, n + 1):
        want = brute_force_practitioner(val, test, cost, builds, k, tau)
        got = (tuners[RANDOM].expected_test[0, k - 1], tuners[RANDOM].p_reach(np.array([tau]))[0, k - 1],
               tuners[RANDOM].expected_cost[0, k - 1, 0])
        np.testing.assert_allclose(got, want)
    want = brute_force_practitioner(val, test, cost, builds, n, tau)
    np.testing.assert_allclose((tuners[GRID].expected_test[0, 0], tuners[GRID].p_reach(np.array([tau]))[0, 0],
                                tuners[GRID].expected_cost[0, 0, 0]), want)


def test_successive_halving_in_the_practitioners_model_is_per_seed_brute_force():
    rng = np.random.default_rng(3)
    n, s, rungs = 4, 3, (0.25, 0.5, 1.0)
    val, test, cost = rng.normal(size=(n, s)), rng.normal(size=(n, s)), rng.uniform(5, 10, (n, s))
    rung_val, rung_cost = rng.normal(size=(n, s, 2)), np.sort(rng.uniform(0, 5, (n, s, 2)), axis=2)
    grid = GridSeeds(val, test, np.ones((n, s), dtype=bool), cost[..., None], np.zeros((s, 1)), np.zeros(1),
                     {rungs: rung_val}, {rungs: rung_cost[..., None]})
    tuner = next(t for t in grid_tuners(grid, np.ones((1, s)), "mean", PRACTITIONER, rng) if t.name.endswith("η=2"))
    for size in range(1, n + 1):
        per_seed = [brute_force_halving(val[:, j], cost[:, j], rung_val[:, j], rung_cost[:, j], size, 2) for j in range(s)]
        assert tuner.expected_test[0, size - 1] == pytest.approx(np.mean([p @ test[:, j] for j, (p, _) in enumerate(per_seed)]))
        assert tuner.expected_cost[0, size - 1, 0] == pytest.approx(np.mean([c for _, c in per_seed]))


def test_tuner_replicates_weigh_the_seeds_as_drawn():
    weights = np.array([[1.0, 1.0], [2.0, 0.0], [0.0, 2.0], [1.0, 1.0]])   # observed, then three replicates
    tuners = {t.name: t for t in grid_tuners(_grid(), weights, "mean", PRACTITIONER, np.random.default_rng(0))}
    np.testing.assert_allclose(tuners[GRID].expected_test[:, 0], [0.65, 0.6, 0.7, 0.65])
    np.testing.assert_allclose(tuners[GRID].expected_cost[:, 0, 0], [25.5, 19.0, 32.0, 25.5])
    # τ per replicate: the tuned (validation-selected) configuration's mean test over the drawn seeds
    # (seed 0 alone: config 1, 0.6; seed 1 alone: config 0, 0.7; both: config 0 (0.4 > 0.35 > 0.3), 0.5)
    np.testing.assert_allclose(tau_rows(_grid(), weights, "mean", 0.0), [0.5, 0.6, 0.7, 0.5])
    np.testing.assert_allclose(tuners[GRID].p_reach(np.array([0.65] * 4))[:, 0], [0.5, 0.0, 1.0, 0.5])


def test_a_fixed_arm_is_one_run_with_its_seeds_builds():
    arm = ArmSeeds(np.array([0.4, 0.8]), np.ones(2, dtype=bool), np.array([[2.0], [4.0]]), np.array([[10.0], [20.0]]),
                   np.array([30.0]))
    weights = np.array([[1.0, 1.0], [2.0, 0.0]])
    practitioner = arm_outcome(arm, weights, "mean", PRACTITIONER)
    np.testing.assert_allclose(practitioner.score, [0.6, 0.4])
    np.testing.assert_allclose(practitioner.cost[:, 0], [(12 + 24) / 2, 12.0])    # one run + that seed's builds
    np.testing.assert_allclose(practitioner.p_reach(np.array([0.5, 0.5])), [0.5, 0.0])
    idealised = arm_outcome(arm, weights, "mean", IDEALISED)
    np.testing.assert_allclose(idealised.cost[:, 0], [3.0 + 30.0, 2.0 + 30.0])     # mean run + every build


def test_the_practitioners_tuner_uses_the_seeds_every_configuration_ran():
    present = np.array([[True, True], [True, False], [True, True]])
    grid = _grid(present=present, val=np.where(present, V, np.nan), test=np.where(present, T, np.nan))
    tuner = next(t for t in grid_tuners(grid, np.ones((1, 2)), "mean", PRACTITIONER, np.random.default_rng(0))
                 if t.name == GRID)
    assert tuner.expected_test[0, 0] == pytest.approx(0.6)          # seed 0 only: config 1 wins there
    with pytest.raises(ValueError, match="every configuration of the grid ran"):
        grid_tuners(grid, np.array([[0.0, 2.0]]), "mean", PRACTITIONER, np.random.default_rng(0))


def _runs(rows):
    """An annotated runs frame from (method, beta, seed, test, val, reference, collapsed) on one setting."""
    frame = pd.DataFrame(rows, columns=["method.name", "method.beta", "seed", "gold_reward", "val/gold_reward",
                                        "reference_gold_reward", "collapsed"])
    for key, value in SETTING.items():
        frame[key] = value
    return add_delta(annotate(frame, CONFIG), "gold_reward")


# --- the paired seed bootstrap ----------------------------------------------------------------------------

def test_weighted_reduce_is_the_statistic_of_the_drawn_runs_for_every_draw():
    """Brute force: every way of drawing 4 seeds from 4 (with repeats), mean and median of the expanded
    multiset; a missing run (NaN at weight 0) takes no part, a NaN that is drawn poisons the result."""
    values = np.array([0.3, -0.1, 0.3, 2.0])
    for draw in itertools.product(range(4), repeat=4):
        counts = np.bincount(draw, minlength=4).astype(float)
        drawn = values[list(draw)]
        assert weighted_reduce(values, counts, "mean") == pytest.approx(drawn.mean())
        assert weighted_reduce(values, counts, "median") == pytest.approx(np.median(drawn))
    missing = np.array([0.3, np.nan, 0.5])
    assert weighted_reduce(missing, np.array([1.0, 0.0, 3.0]), "median") == 0.5
    assert weighted_reduce(missing, np.array([1.0, 0.0, 1.0]), "mean") == pytest.approx(0.4)
    assert math.isnan(weighted_reduce(missing, np.array([1.0, 1.0, 1.0]), "mean"))
    assert math.isnan(weighted_reduce(missing, np.zeros(3), "mean"))
    batched = weighted_reduce(values[None], np.array([[1, 1, 1, 1], [4, 0, 0, 0]]), "median")
    np.testing.assert_allclose(batched, [np.median(values), 0.3])


def _two_configs(shared: np.ndarray, offset: float = 0.1):
    """dpo β=0.1 scores `shared` at seeds 0..S−1, β=1 scores shared + offset: a seed effect both share."""
    rows = [("dpo", beta, s, v + (offset if beta == 1.0 else 0.0), v, 0.0, 0) for beta in (0.1, 1.0)
            for s, v in enumerate(shared)]
    return _runs(rows)


def test_the_seed_is_drawn_jointly_for_every_configuration_of_a_setting():
    runs = _two_configs(np.array([0.0, 1.0, -2.0, 5.0]))
    other = _runs([("dpo", 0.1, s, 0.1 * s, 0.1, 0.0, 0) for s in range(3)]).assign(**{"dataset.name": "other"})
    both = annotate(pd.concat([runs, other], ignore_index=True)[list(runs.columns[:10])], CONFIG)
    boot = seed_bootstrap(both, 200, seed=3)
    assert set(boot.counts) == {"arith", "other"} and boot.counts["arith"].shape == (200, 4)
    assert (boot.counts["arith"].sum(axis=1) == 4).all() and (boot.counts["other"].sum(axis=1) == 3).all()
    ids = sorted(both.loc[both["dataset.name"] == "arith", "config_id"].unique())
    np.testing.assert_array_equal(boot.weights(ids[0]), boot.weights(ids[1]))      # paired: the same draws
    again = seed_bootstrap(both, 200, seed=3)
    assert all((again.counts[s] == boot.counts[s]).all() for s in boot.counts)     # reproducible
    # a constant difference over a shared seed effect is the same in every replicate: its interval is a point
    choice = choose(boot, both, [ids[0]], "gold_reward", "mean", "fixed")
    other_choice = choose(boot, both, [ids[1]], "gold_reward", "mean", "fixed")
    a, a_rep = chosen_stat(boot, both, choice, "gold_reward", "mean")
    b, b_rep = chosen_stat(boot, both, other_choice, "gold_reward", "mean")
    np.testing.assert_allclose(b_rep - a_rep, 0.1)
    assert b - a == pytest.approx(0.1) and np.ptp(a_rep) > 1.0                    # while each alone varies a lot


def test_the_bootstrap_distribution_is_the_exact_one_over_all_seed_draws():
    """Brute force: with 3 seeds there are 27 equally likely ordered draws; the frequency of each value of
    the mean difference between two configurations over 27,000 replicates matches its exact probability."""
    a, b = np.array([0.1, 0.4, 0.9]), np.array([0.3, 0.2, 1.4])
    runs = _runs([("dpo", 0.1, s, v, 0.0, 0.0, 0) for s, v in enumerate(a)]
                 + [("dpo", 1.0, s, v, 0.0, 0.0, 0) for s, v in enumerate(b)])
    boot = seed_bootstrap(runs, 27_000, seed=1)
    point, replicates = boot.stat(runs, [0, 1], "gold_reward", "mean")
    got = pd.Series(np.round(replicates[:, 1] - replicates[:, 0], 9)).value_counts(normalize=True)
    exact = pd.Series([round(float(np.mean(b[list(d)] - a[list(d)])), 9) for d in itertools.product(range(3), repeat=3)])
    exact = exact.value_counts(normalize=True)
    assert set(got.index) == set(exact.index)
    for value, probability in exact.items():
        se = math.sqrt(probability * (1 - probability) / 27_000)
        assert abs(got[value] - probability) < 4 * se, (value, got[value], probability)
    np.testing.assert_allclose(point, [a.mean(), b.mean()])


def test_a_configuration_missing_a_seed_takes_the_drawn_seeds_it_has():
    runs = _runs([("dpo", 0.1, s, v, 0.0, 0.0, 0) for s, v in ((0, 1.0), (1, 2.0), (2, 4.0))]
                 + [("dpo", 1.0, s, v, 0.0, 0.0, 0) for s, v in ((0, 10.0), (1, 20.0))])
    boot = seed_bootstrap(runs, 2000, seed=0)
    values, present = boot.matrix(runs, [0, 1], "gold_reward")
    np.testing.assert_array_equal(present, [[True, True, True], [True, True, False]])
    # configuration 1 has no run at seed 2: no replicate may draw seed 2 alone (it would leave it empty)
    counts = boot.counts["arith"]
    assert (counts[:, :2].sum(axis=1) > 0).all() and (counts[:, 2] == 3).sum() == 0
    boot.counts["arith"] = np.array([[1, 1, 1], [2, 0, 1], [0, 1, 2]])
    _, replicates = boot.stat(runs, [0, 1], "gold_reward", "mean")
    np.testing.assert_allclose(replicates, [[7 / 3, 15.0], [6 / 3, 10.0], [10 / 3, 20.0]])
    # the valid replicates keep their multinomial proportions: "each seed once" is 6 of the 27 ordered draws,
    # so 6 of the 26 left when "seed 2 three times" is redrawn (SE of the share over 24,000 draws: 0.0027)
    many = draw_counts(present, 24_000, np.random.default_rng(5))
    assert abs(((many == 1).all(axis=1)).mean() - 6 / 26) < 0.008


def test_two_runs_of_one_configuration_with_one_seed_are_refused():
    runs = _runs([("dpo", 0.1, 0, 0.5, 0.5, 0.0, 0), ("dpo", 0.1, 0, 0.6, 0.5, 0.0, 0)])
    with pytest.raises(ValueError, match="share seed 0; the seed is the unit"):
        seed_bootstrap(runs, 10)


def test_validation_selection_reports_the_test_score_and_rechooses_in_each_replicate():
    runs = _runs([
        ("dpo", 0.1, 0, 0.50, 0.9, 0.3, 0), ("dpo", 0.1, 1, 0.60, 0.1, 0.3, 0),
        ("dpo", 1.0, 0, 0.80, 0.4, 0.3, 0), ("dpo", 1.0, 1, 0.70, 0.4, 0.3, 0),
    ])
    boot = seed_bootstrap(runs, 4, seed=0)
    # replicate 0 draws seed 0 twice (β=0.1 validates at 0.9 > 0.4), replicate 1 seed 1 twice (0.1 < 0.4),
    # replicates 2 and 3 each seed once (0.5 > 0.4); both configurations see the same draws
    boot.counts["arith"] = np.array([[2, 0], [0, 2], [1, 1], [1, 1]])
    choice = choose(boot, runs, [0, 1], "gold_reward", "mean", "validation")
    assert choice.selected_on == "validation" and choice.point == 0      # val means 0.5 vs 0.4
    assert choice.replicates.tolist() == [0, 1, 0, 0]
    point, replicates = chosen_stat(boot, runs, choice, "gold_reward", "mean")
    assert point == pytest.approx(0.55)                                  # the TEST mean of β=0.1
    np.testing.assert_allclose(replicates, [0.50, 0.70, 0.55, 0.55])      # test of the re-chosen configuration
    oracle = choose(boot, runs, [0, 1], "gold_reward", "mean", "test")
    assert oracle.point == 1 and chosen_stat(boot, runs, oracle, "gold_reward", "mean")[0] == pytest.approx(0.75)
    assert choice.stability() == 0.75
    values, picked, weights = chosen_runs(boot, runs, choice, "delta_sft/gold_reward")
    np.testing.assert_allclose(values, [0.2, 0.3])
    np.testing.assert_allclose(picked[1], [0.5, 0.4])                    # β=1's runs, seed-aligned
    np.testing.assert_array_equal(weights, [[2, 0], [0, 2], [1, 1], [1, 1]])


def test_chosen_runs_weigh_out_the_seeds_a_configuration_lacks():
    runs = _runs([("dpo", 0.1, 0, 0.5, 0.9, 0.3, 0), ("dpo", 1.0, 0, 0.8, 0.1, 0.3, 0), ("dpo", 1.0, 1, 0.7, 0.2, 0.3, 0)])
    boot = seed_bootstrap(runs, 3, seed=0)
    boot.counts["arith"] = np.array([[1, 1], [2, 0], [1, 1]])
    choice = choose(boot, runs, [0, 1], "gold_reward", "mean", "test")       # β=1 (0.75 > 0.5) wherever it is drawn
    _, picked, weights = chosen_runs(boot, runs, choice, "gold_reward")
    np.testing.assert_allclose(picked, [[0.8, 0.7], [0.8, 0.7], [0.8, 0.7]])
    fixed = choose(boot, runs, [0], "gold_reward", "mean", "fixed")
    _, picked, weights = chosen_runs(boot, runs, fixed, "gold_reward")
    np.testing.assert_array_equal(weights, [[1, 0], [2, 0], [1, 0]])         # β=0.1 has no run at seed 1
    np.testing.assert_allclose(picked[:, 0], 0.5)
    assert boot.min_seeds([0, 1]) == 1
    with pytest.raises(ValueError, match="exactly one"):
        choose(boot, runs, [0, 1], "gold_reward", "mean", "fixed")


def test_seed_summary_by_hand():
    runs = _runs([
        ("dpo", 0.1, 0, 0.2, 0.25, 0.1, 0), ("dpo", 0.1, 1, 0.4, 0.35, 0.2, 0), ("dpo", 0.1, 2, 0.9, 0.85, 0.3, 1),
        ("rmipo", 2.0, 0, 0.75, 0.7, 0.1, 0), ("rmipo", 2.0, 1, -0.9, -0.8, 0.2, 1),
    ])
    boot = seed_bootstrap(runs, 500, seed=1)
    summary = seed_summary(runs, "gold_reward", boot).set_index("method.name")
    dpo = summary.loc["dpo"]
    assert dpo["n_runs"] == 3 and dpo["score"] == pytest.approx(0.5) and dpo["median"] == pytest.approx(0.4)
    assert dpo["q25"] == pytest.approx(0.3) and dpo["q75"] == pytest.approx(0.65)   # linear quantiles
    assert dpo["std"] == pytest.approx(math.sqrt(0.13)) and dpo["collapse_rate"] == pytest.approx(1 / 3)
    assert dpo["val_score"] == pytest.approx(1.45 / 3) and dpo["delta_sft"] == pytest.approx(0.3)
    # the interval from the replicates' own seed counts, recomputed here: counts @ values / 3
    counts = boot.counts["arith"]
    want = seed_interval(0.5, counts @ np.array([0.2, 0.4, 0.9]) / 3, 3)
    assert (dpo["score_ci_low"], dpo["score_ci_high"]) == pytest.approx(want)
    want = seed_interval(0.3, counts @ np.array([0.1, 0.2, 0.6]) / 3, 3)
    assert (dpo["delta_sft_ci_low"], dpo["delta_sft_ci_high"]) == pytest.approx(want)
    # rmipo ran seeds 0 and 1 of the three: its replicates weigh those two as drawn
    rmipo = summary.loc["rmipo"]
    weights = counts[:, :2]
    want = seed_interval(-0.075, weights @ np.array([0.75, -0.9]) / weights.sum(axis=1), 2)
    assert (rmipo["mean_ci_low"], rmipo["mean_ci_high"]) == pytest.approx(want)
    assert dpo["arm_kind"] == "fixed" and rmipo["collapse_rate"] == pytest.approx(0.5)


def test_seed_stat_batches_configurations_and_replicates():
    values = np.array([[1.0, 2.0, np.nan], [3.0, 5.0, 7.0]])
    present = np.array([[True, True, False], [True, True, True]])
    np.testing.assert_allclose(seed_stat(values, present, None, "mean"), [1.5, 5.0])
    counts = np.array([[0, 1, 2], [3, 0, 0]])
    np.testing.assert_allclose(seed_stat(values, present, counts, "mean"), [[2.0, 19 / 3], [1.0, 3.0]])
    np.testing.assert_allclose(seed_stat(values, present, counts, "median"), [[2.0, 7.0], [1.0, 3.0]])


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


def test_seed_bootstrap_counts_runs_per_configuration():
    runs = _runs([("dpo", 0.1, s, 0.1 * s, 0.1, 0.0, 0) for s in range(3)] + [("dpo", 1.0, 0, 0.5, 0.1, 0.0, 0)])
    boot = seed_bootstrap(runs, 50, seed=3)
    assert isinstance(boot, SeedBootstrap) and boot.n_runs([0, 1]).tolist() == [3, 1]
    assert boot.weights(0).shape == (50, 3) and boot.weights(1).shape == (50, 1)
    assert (boot.weights(1) > 0).all()          # its one seed is in every replicate (else it would be redrawn)
