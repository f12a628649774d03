"""Optuna's tuners replayed against recorded runs (analysis.optuna_replay, analysis.tuner_benchmark) and time
to τ (analysis.time_to_target): the random sampler's replay against an exact enumeration, a seeded TPE
replay repeated, what a pruned trial is charged, and time to τ on hand-computed curves."""
from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("optuna")

from analysis.costs import charged_costs  # noqa: E402
from analysis.grid import annotate  # noqa: E402
from analysis.optuna_replay import (SeedGrid, TunerSpec, random_with_replacement, replay, replay_study,  # noqa: E402
                                    val_ranks)
from analysis.savings import PlausibleCosts  # noqa: E402
from analysis.seed_arrays import prepare  # noqa: E402
from analysis.selection import first_argmax, seed_bootstrap  # noqa: E402
from analysis.time_to_target import at_point, first_reach, time_to_target  # noqa: E402
from analysis.tuner_benchmark import best_of, tuner_benchmark  # noqa: E402

RANDOM = TunerSpec("random", "random")
TPE = TunerSpec("TPE", "tpe")


def _grid(n: int = 4, seed: int = 0) -> SeedGrid:
    """n configurations, no ties; the curve rises with the configuration at its first point, so a pruner
    comparing there keeps the later ones; costs distinct so every charge can be told apart."""
    rng = np.random.default_rng(seed)
    val = rng.permutation(n) / n + 0.1
    curve = np.stack([np.arange(n) / 10 + 0.01 * q for q in range(3)], axis=1)          # (n, 3)
    cost = np.stack([100.0 + np.arange(n), 1.0 + np.arange(n)], axis=1)                # (n, 2)
    curve_cost = np.stack([(q + 1) * 10.0 + np.arange(n)[:, None] * np.array([1.0, 0.01]) for q in range(3)], axis=1)
    return SeedGrid(tuple(float(b) for b in np.logspace(-2, 1, n)), val, rng.normal(size=n), cost, curve, curve_cost)


def test_random_with_replacement_equals_an_enumeration_of_every_draw():
    val = np.array([0.3, 0.7, 0.7, 0.1])     # a tie: the first of the two 0.7s is the one chosen
    test = np.array([0.2, 0.9, 0.4, 0.5])
    cost = np.array([[1.0, 10.0], [2.0, 20.0], [4.0, 40.0], [8.0, 80.0]])
    expected_test, expected_cost = random_with_replacement(val, test, cost, 4)
    for k in range(1, 5):
        draws = list(itertools.product(range(4), repeat=k))
        chosen = [first_argmax(np.where(np.isin(np.arange(4), d), val, -np.inf)) for d in draws]
        paid = [cost[sorted(set(d))].sum(axis=0) for d in draws]   # a repeat is answered from its record
        np.testing.assert_allclose(expected_test[k - 1], np.mean(test[chosen]))
        np.testing.assert_allclose(expected_cost[k - 1], np.mean(paid, axis=0))
    np.testing.assert_array_equal(val_ranks(val), [2, 4, 3, 1])


def test_the_random_sampler_replay_matches_the_exact_expectation():
    grid = _grid(4)
    reps = replay(RANDOM, [grid], n_replicates=400, n_trials=6, seed=11)
    exact_test, exact_cost = random_with_replacement(grid.val, grid.test, grid.cost, 6)
    se = reps.chosen_test.std(axis=0, ddof=1) / math.sqrt(400)
    assert np.all(np.abs(reps.chosen_test.mean(axis=0) - exact_test) < 4 * se + 1e-12)
    se_cost = reps.cost[..., 0].std(axis=0, ddof=1) / math.sqrt(400)
    assert np.all(np.abs(reps.cost[..., 0].mean(axis=0) - exact_cost[:, 0]) < 4 * se_cost + 1e-12)
    # one trial: every configuration equally likely, as a categorical drawn at random should be
    shares = np.bincount(reps.chosen[:, 0], minlength=4) / 400
    assert np.all(np.abs(shares - 0.25) < 4 * math.sqrt(0.25 * 0.75 / 400))


def test_a_seeded_tpe_replay_is_deterministic():
    grids = [_grid(5, seed=0), _grid(5, seed=1)]
    first = replay(TPE, grids, n_replicates=4, n_trials=14, seed=5)   # trials 11-14 are TPE's own (10 random first)
    again = replay(TPE, grids, n_replicates=4, n_trials=14, seed=5)
    for name in ("seed_position", "chosen", "chosen_test", "cost", "finished", "stopped"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    other = replay(TPE, grids, n_replicates=4, n_trials=14, seed=6)
    assert not np.array_equal(first.chosen, other.chosen) or not np.array_equal(first.cost, other.cost)
    np.testing.assert_array_equal(first.seed_position, [0, 1, 0, 1])


@pytest.mark.parametrize("pruner", ["successive_halving", "hyperband"])
def test_a_pruned_trial_is_charged_its_curve_up_to_the_stop(pruner):
    grid = _grid(5)
    spec = TunerSpec("pruned", "random", pruner)
    stops = 0
    for sampler_seed in range(6):
        trace = replay_study(spec, grid, 12, sampler_seed)
        charged = np.diff(trace.cost, axis=0, prepend=np.zeros((1, 2)))
        finished = set()
        for t, (j, stop) in enumerate(zip(trace.config, trace.stopped)):
            if stop >= 0:
                assert j not in finished          # a finished configuration is answered from its record
                np.testing.assert_allclose(charged[t], grid.curve_cost[j, stop])
                stops += 1
            elif j in finished:
                np.testing.assert_allclose(charged[t], 0.0)
            else:
                np.testing.assert_allclose(charged[t], grid.cost[j])
                finished.add(j)
            assert trace.chosen[t] in finished and trace.finished[t] == len(finished)
        if pruner == "successive_halving":
            # η = 4: of two trials at the first rung only the better one goes on, so a second configuration
            # that is worse at the first curve point than the first trial's stops there
            second = next((t for t in range(1, 12) if trace.config[t] != trace.config[0]), None)
            if second is not None and trace.config[second] < trace.config[0]:
                assert trace.stopped[second] == 0
    assert stops > 0


def test_replay_grids_refuse_a_missing_value_and_qmc_a_categorical():
    grid = _grid(3)
    with pytest.raises(ValueError, match="'curve_val'"):
        SeedGrid(grid.choices, grid.val, grid.test, grid.cost, np.where(np.eye(3) > 0, np.nan, grid.curve_val),
                 grid.curve_cost)
    with pytest.raises(ValueError, match="ordinal"):
        TunerSpec("qmc", "qmc")


def test_best_of_tuners_keeps_the_outcomes_the_cheapest_may_have():
    arm = np.array([5.0, 1.0])
    sure = PlausibleCosts(np.array([[8.0, 2.0], [12.0, 3.0]]), False, arm, True, False)
    loose = PlausibleCosts(np.array([[10.0, 2.5], [20.0, 4.0]]), True, arm, True, False)
    best = best_of([sure, loose])
    np.testing.assert_allclose(best.tuner, [[8.0, 2.0], [12.0, 3.0], [10.0, 2.5]])   # ≤ 12, the sure one's dearest
    assert not best.tuner_may_miss
    assert best.savings_range(0) == (1 - 5 / 8, 1 - 5 / 12)


# ---------------------------------------------------------------------------------------------
# Time to τ and the benchmark on records


def _points(values, run_flops):
    return [{"fraction": f, "step": 40 * f, "val/gold_reward": v, "flops": f * run_flops, "device_hours": f * run_flops / 100}
            for f, v in zip((0.25, 0.5, 0.75, 1.0), values)]


def _records():
    """Two seeds. dpo β=0.1 (val 0.5, the one validation picks), β=1 (val 0.4); imi_dpo at 120 FLOPs a run.
    Curves: dpo β=0.1 [.1 .2 .3 .4] and [.1 .2 .4 .6] (mean .1 .2 .35 .5); imi_dpo [.2 .5 .5 .5] and
    [.2 .4 .6 .5] (mean .2 .45 .55 .5)."""
    curves = {("dpo", 0.1): ([.1, .2, .3, .4], [.1, .2, .4, .6]), ("dpo", 1.0): ([.1, .1, .1, .2], [.1, .1, .2, .2]),
              ("imi_dpo", 0.1): ([.2, .5, .5, .5], [.2, .4, .6, .5])}
    rows = []
    for (method, beta), per_seed in curves.items():
        flops = 120.0 if method == "imi_dpo" else 100.0
        for seed, values in enumerate(per_seed):
            rows.append({"method.name": method, "method.beta": beta, "seed": seed, "dataset.name": "arith",
                         "model.name": "tiny", "hardware.name": "cpu", "dataset.trap": None,
                         "gold_reward": {0.1: 0.5, 1.0: 0.45}[beta] + 0.01 * seed + (0.02 if method == "imi_dpo" else 0),
                         "val/gold_reward": 0.5 if beta == 0.1 else 0.4, "cost.flops": flops,
                         "cost.device_hours": flops / 100, "cost.total_s": 1.0, "val_curve": _points(values, flops)})
    frame = pd.DataFrame(rows)
    runs = annotate(frame, ["method.name", "method.beta", "seed", "dataset.name", "model.name", "hardware.name"])
    return runs.join(charged_costs(runs, "per_procedure"))


def test_first_reach_on_a_tiny_curve():
    curve = np.array([[0.1, 0.3, 0.5, 0.4], [0.1, 0.3, 0.5, 0.4]])
    index = first_reach(curve, np.array([0.35, 0.6]))
    np.testing.assert_array_equal(index, [2, -1])
    np.testing.assert_array_equal(at_point(np.array([[10.0, 20, 30, 40]] * 2), index), [30.0, math.inf])


def test_time_to_target_by_hand():
    runs = _records()
    boot = seed_bootstrap(runs, 20, seed=0)
    table, curves, notes = time_to_target(runs, boot, "gold_reward", "dpo", (0.0, 0.05, 0.2), "mean", 0.95)
    assert not notes
    t = table.set_index(["tolerance", "entry"])
    np.testing.assert_allclose(t.loc[(0.0, "dpo (tuned)"), "tau"], 0.5)
    # τ = 0.5: dpo reaches it at the end (100 FLOPs, 40 steps), imi_dpo at 75% (0.75 × 120 = 90 FLOPs, 30 steps)
    assert t.loc[(0.0, "dpo (tuned)"), ["flops", "steps"]].tolist() == pytest.approx([100.0, 40.0])
    assert t.loc[(0.0, "imi_dpo"), ["flops", "steps", "flops_ratio"]].tolist() == pytest.approx([90.0, 30.0, 0.9])
    # τ = 0.45: imi_dpo's mean 0.45 at 50% reaches it (60 FLOPs), dpo only at the end: ratio 0.6
    assert t.loc[(0.05, "imi_dpo"), ["flops", "flops_ratio", "fraction"]].tolist() == pytest.approx([60.0, 0.6, 0.5])
    # τ = 0.3: dpo at 75% (mean 0.35), imi_dpo at 50%
    assert t.loc[(0.2, "dpo (tuned)"), "flops"] == pytest.approx(75.0)
    # runs reaching τ = 0.5 by the end: dpo's seed 1 only; both imi_dpo runs
    assert t.loc[(0.0, "dpo (tuned)"), "p_runs_reach"] == pytest.approx(0.5)
    assert t.loc[(0.0, "imi_dpo"), "p_runs_reach"] == pytest.approx(1.0)
    assert t.loc[(0.0, "dpo (default)"), "flops"] == pytest.approx(100.0)   # the default β = 0.1 is the tuned one
    assert set(curves["entry"]) == {"dpo (tuned)", "dpo (default)", "imi_dpo"}


def test_the_benchmark_leads_with_the_cheapest_tuner():
    runs = _records()
    prepared = prepare(runs, "gold_reward", "per_procedure")
    boot = seed_bootstrap(prepared, 30, seed=0)
    specs = (RANDOM, TunerSpec("TPE + halving", "tpe", "successive_halving"))
    result = tuner_benchmark(prepared, boot, "gold_reward", "dpo", (0.05,), "mean", "per_procedure", 0.95, specs,
                             n_replicates=20, n_trials=4, seed=0)
    reach = result.reach.set_index("tuner")
    assert {"grid search", "random search", "random", "TPE + halving"} <= set(reach.index)
    best = result.savings[(result.savings["tuner"] == "best tuner")].iloc[0]
    assert best["tuner_flops"] == pytest.approx(reach["flops"].min())
    assert best["best_tuner"] == reach["flops"].idxmin()
    assert best["savings_flops"] == pytest.approx(1 - best["arm_flops"] / best["tuner_flops"])
    # τ = 0.505 − 0.05 = 0.455; one random trial scores (0.5 + 0.45)/2 and (0.51 + 0.46)/2 at the two seeds:
    # 0.48 ≥ τ at 100 FLOPs (one run, no builds); grid search pays both runs
    assert reach.loc["random search", ["budget", "flops", "expected_test"]].tolist() == pytest.approx([1, 100.0, 0.48])
    assert reach.loc["grid search", "flops"] == pytest.approx(200.0)
    assert set(result.agreement["check"]) == {"with replacement, k trials", "without replacement, m configurations"}


def test_the_command_writes_its_lead_table_and_figures(tmp_path):
    import argparse

    from analysis.plots import save_figure
    from analysis.tuner_report import tuners_figure, tuners_markdown

    runs = _records()
    prepared = prepare(runs, "gold_reward", "per_procedure")
    boot = seed_bootstrap(prepared, 20, seed=0)
    result = tuner_benchmark(prepared, boot, "gold_reward", "dpo", (0.05,), "mean", "per_procedure", 0.95, (RANDOM,),
                             n_replicates=4, n_trials=3, seed=0)
    table, _, _ = time_to_target(runs, boot, "gold_reward", "dpo", (0.05,), "mean", 0.95)
    args = argparse.Namespace(runs_dir=tmp_path, baseline="dpo", tolerance=[0.05], stat="mean", replicates=4, trials=3,
                              confidence=0.95, n_boot=20)
    text = tuners_markdown(result, table, "gold_reward", args, 1.0, [], False)
    best = result.savings[result.savings["tuner"] == "best tuner"].iloc[0]
    assert f"| arith | 0.05 | 0.455 | {best['best_tuner']} |" in text
    assert "| imi_dpo |" in text and "## Time to τ" in text
    paths = save_figure(tuners_figure(result.curves, result.savings), tmp_path, "tuner_replay")
    assert all(p.stat().st_size > 0 for p in paths)


def test_a_live_study_trial_leaves_the_replayed_grid_and_its_seeds_alone():
    from analysis.load import LoadedRuns
    from analysis.tuner_report import replayable_runs

    columns = ["method.name", "method.beta", "seed", "dataset.name", "model.name", "hardware.name"]
    grid = _records()[columns + ["dataset.trap", "gold_reward", "val/gold_reward", "cost.flops", "cost.device_hours",
                                 "cost.total_s", "val_curve"]]
    trial = grid.iloc[[0]].assign(**{"method.beta": 0.37, "tuning.study": "dpo-arith-s0", "tuning.trial": 0})
    loaded = LoadedRuns(pd.concat([grid, trial], ignore_index=True), pd.DataFrame(), tuple(columns))

    def benchmark(runs):
        prepared = prepare(runs, "gold_reward", "per_procedure")
        return tuner_benchmark(prepared, seed_bootstrap(prepared, 20, seed=0), "gold_reward", "dpo", (0.05,), "mean",
                               "per_procedure", 0.95, (RANDOM,), n_replicates=4, n_trials=3, seed=0)

    kept = replayable_runs(loaded, "gold_reward", "per_procedure")
    assert len(kept) == len(grid) and 0.37 not in set(kept["method.beta"])
    assert set(benchmark(kept).curves["n_seeds"]) == {2}
    # read as a grid configuration, the trial (seed 0 only) would leave one seed with the whole grid: said aloud
    taken_in = annotate(loaded.runs, columns).join(charged_costs(annotate(loaded.runs, columns), "per_procedure"))
    result = benchmark(taken_in)
    assert set(result.curves["n_seeds"]) == {1}
    assert any("1 of 2 seeds used" in note for note in result.notes)


def test_a_time_to_target_interval_never_reaches_below_zero():
    # two seeds whose curves reach τ at the first and the last point: the t-type widening of the FLOPs and
    # ratio intervals would run below 0; a cost cannot
    runs = _records()
    boot = seed_bootstrap(runs, 200, seed=0)
    table, _, _ = time_to_target(runs, boot, "gold_reward", "dpo", (0.0, 0.05, 0.2, 0.35), "mean", 0.95)
    lows = table[["flops_ci_low", "flops_ratio_ci_low"]].to_numpy(dtype=float)
    assert (lows[np.isfinite(lows)] >= 0).all()


def test_the_tuners_figure_draws_each_imi_method_at_its_declared_defaults():
    from analysis.tuner_report import figure_arms

    rows = []
    for seed in (0, 1):
        for method, beta, signal, imi in (("dpo", 0.1, None, False), ("dpo", 1.0, None, False),
                                          ("rmipo", 2.0, "pmi", True), ("rmipo", 2.0, "length", True),
                                          ("beta_dpo", 0.1, None, False), ("cdpo", 0.1, None, False)):
            rows.append({"method.name": method, "method.beta": beta, "method.signal": signal, "seed": seed,
                         "dataset.name": "arith", "model.name": "tiny", "hardware.name": "cpu", "dataset.trap": None,
                         "gold_reward": 0.5, "val/gold_reward": 0.5, "method_info.imi": imi,
                         "method_info.defaults.beta": 2.0 if imi else 0.1,
                         "method_info.defaults.signal": "pmi" if imi else None})
    runs = annotate(pd.DataFrame(rows), ["method.name", "method.beta", "method.signal", "seed", "dataset.name",
                                         "model.name", "hardware.name"])
    shown = figure_arms(runs)
    # rmipo at its declared defaults under its method's name, β-DPO beside it; its length control and cDPO
    # stay in the tables
    assert sorted(shown.values()) == ["beta_dpo", "rmipo"]
    assert all(setting == "arith" for setting, _ in shown)
    assert [arm for (_, arm), label in shown.items() if label == "rmipo"] == ["rmipo (β=2, signal=pmi)"]


def test_the_time_to_target_figure_draws_the_baseline_and_the_arms_shown():
    from analysis.time_to_target import time_to_target_figure

    runs = _records()
    table, curves, _ = time_to_target(runs, seed_bootstrap(runs, 20, seed=0), "gold_reward", "dpo", (0.05,), "mean",
                                      0.95)
    every = time_to_target_figure(curves, table)
    assert [t.get_text() for t in every.legends[0].get_texts()][:3] == ["dpo (tuned)", "dpo (default)", "imi_dpo"]
    none_shown = time_to_target_figure(curves, table, shown={})
    assert "imi_dpo" not in [t.get_text() for t in none_shown.legends[0].get_texts()]
    renamed = time_to_target_figure(curves, table, shown={("arith", "imi_dpo"): "IMI-DPO"})
    assert "IMI-DPO" in [t.get_text() for t in renamed.legends[0].get_texts()]
