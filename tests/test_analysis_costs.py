"""Charged costs under the three shared-build conventions (analysis.costs) and the tuning tables built on
them (analysis.tuning, analysis.savings): cost to reach τ, savings against grid search, random search and successive
halving, and their sums over settings, on hand-computed examples."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.costs import charged_costs, procedure_builds, shared_build_costs
from analysis.grid import annotate
from analysis.seed_arrays import prepare
from analysis.selection import seed_bootstrap
from analysis.tuning import expected_best_table, tuning_comparison

H = 1 / 3600  # device-hours per device-second


def _three_runs() -> pd.DataFrame:
    """Run A built the SFT (100 s, 1e12 FLOPs) and reference (10 s, 5e10 FLOPs) caches inside its 130 s;
    B hit both; C (reference-free) hit the SFT cache. Entries report wall_s and flops, no device-hours."""
    return pd.DataFrame({
        "run_id": ["A", "B", "C"],
        "cost.total_s": [130.0, 30.0, 30.0], "cost.device_hours": [130 * H, 30 * H, 30 * H],
        "cost.flops": [2e12, 2e12, 2e12], "cost.device_count": [1, 1, 1], "cost.wait_s": [0.0, 50.0, 1.0],
        "cost.shared.sft.key": ["s1", "s1", "s1"], "cost.shared.sft.hit": [False, True, True],
        "cost.shared.sft.wall_s": [100.0, 100.0, 100.0], "cost.shared.sft.flops": [1e12, 1e12, 1e12],
        "cost.shared.reference.key": ["r1", "r1", None], "cost.shared.reference.hit": [False, True, None],
        "cost.shared.reference.wall_s": [10.0, 10.0, None], "cost.shared.reference.flops": [5e10, 5e10, None],
    })


def test_shared_build_costs_one_row_per_cache():
    builds = shared_build_costs(_three_runs()).set_index(["kind", "key"])
    assert builds.loc[("sft", "s1"), "n_runs"] == 3 and builds.loc[("sft", "s1"), "n_builds"] == 1
    assert builds.loc[("sft", "s1"), "device_hours"] == pytest.approx(100 * H)  # from wall_s × 1 device
    assert builds.loc[("reference", "r1"), "n_runs"] == 2


def test_amortized_costs_by_hand():
    charged = charged_costs(_three_runs(), "amortize")
    # device-hours: A's own 130 s less its two builds = 20 s; SFT 100 s / 3 runs; reference 10 s / 2 runs.
    # B's 50 s of waiting is not in its device-hours (bench keeps it out) and nothing here adds it back.
    np.testing.assert_allclose(charged["charged.device_hours"], [(20 + 100 / 3 + 5) * H, (30 + 100 / 3 + 5) * H,
                                                                (30 + 100 / 3) * H])
    assert charged["charged.device_hours"].sum() == pytest.approx(190 * H)  # every build charged once in total
    # FLOPs never contain builds in bench's accounting, so nothing is taken out of A's own FLOPs
    np.testing.assert_allclose(charged["charged.flops"], [2e12 + 1e12 / 3 + 2.5e10, 2e12 + 1e12 / 3 + 2.5e10,
                                                          2e12 + 1e12 / 3])


def test_per_run_costs_by_hand():
    charged = charged_costs(_three_runs(), "per_run")
    np.testing.assert_allclose(charged["charged.device_hours"], [130 * H, 140 * H, 130 * H])
    np.testing.assert_allclose(charged["charged.flops"], [3.05e12, 3.05e12, 3e12])


def test_per_procedure_costs_charge_each_build_once_per_procedure():
    runs = _three_runs()
    charged = charged_costs(runs, "per_procedure")
    # per run: the own cost only (A's builds taken out of its time)
    np.testing.assert_allclose(charged["charged.device_hours"], [20 * H, 30 * H, 30 * H])
    np.testing.assert_allclose(charged["charged.flops"], [2e12, 2e12, 2e12])
    # a procedure of runs A and B used SFT and reference once each; one of run C only the SFT
    ab = procedure_builds(runs.iloc[:2], runs, "per_procedure")
    assert ab["flops"] == pytest.approx(1.05e12) and ab["device_hours"] == pytest.approx(110 * H)
    assert procedure_builds(runs.iloc[2:], runs, "per_procedure")["flops"] == pytest.approx(1e12)
    assert procedure_builds(runs, runs, "amortize") == {"flops": 0.0, "device_hours": 0.0, "wall_s": 0.0}


def test_build_device_hours_scale_with_the_devices_held():
    runs = _three_runs().assign(**{"cost.device_count": [2, 2, 2]})
    assert shared_build_costs(runs).set_index(["kind", "key"]).loc[("sft", "s1"), "device_hours"] == pytest.approx(200 * H)


def test_unknown_convention_is_refused():
    with pytest.raises(ValueError, match="per_procedure"):
        charged_costs(_three_runs(), "free")


def test_runs_without_shared_entries_are_charged_their_own_cost():
    runs = pd.DataFrame({"cost.device_hours": [0.5], "cost.flops": [1.0], "cost.total_s": [1800.0]})
    assert charged_costs(runs, "amortize").iloc[0].tolist() == [1.0, 0.5, 1800.0]


def _curve(values_at: dict[float, float], flops: float) -> list[dict]:
    """A val_curve whose cumulative cost is the fraction of the run's FLOPs (device-hours = FLOPs/100)."""
    return [{"fraction": f, "val/gold_reward": values_at.get(f, 0.0), "flops": f * flops, "device_hours": f * flops / 100}
            for f in (0.25, 0.5, 0.75, 1.0)]


def _tiny_sweep(setting: str = "arith", trap: str | None = None, imi_score: float = 0.69, builds: bool = False):
    """One seed per configuration. dpo β=0.1/0.3/1: test 0.2/0.5/0.7, val 0.3/0.6/0.5, one FLOP each;
    validation picks β=0.3 (test 0.5), the oracle would pick β=1 (0.7). rmipo: test `imi_score`, 1.2 FLOPs.
    Curves at 25%: 0.1, 0.4, 0.3 (successive halving keeps β=0.3 from all three)."""
    rows = [("dpo", 0.1, 0.2, 0.3, 1.0, {0.25: 0.1}), ("dpo", 0.3, 0.5, 0.6, 1.0, {0.25: 0.4}),
            ("dpo", 1.0, 0.7, 0.5, 1.0, {0.25: 0.3}), ("rmipo", 2.0, imi_score, 0.6, 1.2, {0.25: 0.3})]
    frame = pd.DataFrame([{"method.name": m, "method.beta": b, "gold_reward": t, "val/gold_reward": v,
                           "cost.flops": c, "cost.device_hours": c / 100, "cost.total_s": 36 * c, "seed": 0,
                           "val_curve": _curve(curve, c), "dataset.name": setting, "model.name": "tiny",
                           "hardware.name": "cpu", "dataset.trap": trap} for m, b, t, v, c, curve in rows])
    if builds:  # an SFT build (10 FLOPs) used by all, a reference build (5 FLOPs) by dpo only
        frame["cost.shared.sft.key"], frame["cost.shared.sft.hit"], frame["cost.shared.sft.flops"] = "s", True, 10.0
        frame["cost.shared.sft.wall_s"] = 0.0
        frame["cost.shared.reference.key"] = ["r", "r", "r", None]
        frame["cost.shared.reference.hit"], frame["cost.shared.reference.flops"] = True, 5.0
        frame["cost.shared.reference.wall_s"] = 0.0
    return frame


def _tuning(frame: pd.DataFrame, convention: str = "per_procedure", tolerances=(0.0,)):
    runs = annotate(frame, ["method.name", "method.beta", "seed", "dataset.name", "model.name", "hardware.name",
                            "dataset.trap"])
    runs = runs.join(charged_costs(runs, convention))
    prepared = prepare(runs, "gold_reward", convention)
    boot = seed_bootstrap(prepared, 20, seed=0)
    return prepared, boot, tuning_comparison(prepared, boot, "gold_reward", "dpo", tolerances, "mean", convention, 0.95)


def test_tuners_cost_to_reach_by_hand():
    _, _, result = _tuning(_tiny_sweep())
    reach = result.reach.set_index("tuner")
    assert (reach["tau"] == 0.5).all()                      # the validation-selected β=0.3, not the oracle's 0.7
    assert reach.loc["grid search", "flops"] == 3.0 and reach.loc["grid search", "budget"] == 3
    # random search: E_1 = 1.4/3 < τ; E_2 = (0.5 + 0.7 + 0.5)/3 ≥ τ at 2 FLOPs
    assert reach.loc["random search", "budget"] == 2 and reach.loc["random search", "flops"] == 2.0
    # successive halving η=2 from n = 2: one of each pair stops at 25% (0.25 FLOPs), the other runs to
    # the end (1): E[test] = (0.5 + 0.7 + 0.5)/3 ≥ τ at 1.25 FLOPs (n = 3 costs 0.25·2 + 1 = 1.5)
    for name in ("successive halving η=2", "successive halving η=3"):
        assert reach.loc[name, "budget"] == 2 and reach.loc[name, "flops"] == pytest.approx(1.25)
        assert reach.loc[name, "device_hours"] == pytest.approx(0.0125)
    curves = result.curves.set_index(["tuner", "budget"])
    assert curves.loc[("successive halving η=2", 3), "expected_flops"] == pytest.approx(1.5)
    assert curves.loc[("random search", 1), "expected_test"] == pytest.approx(1.4 / 3)
    saved = result.savings.set_index("tuner")
    assert saved["arm_reaches"].all() and (saved["arm_flops"] == 1.2).all()
    assert saved.loc["grid search", "savings_flops"] == pytest.approx(1 - 1.2 / 3)
    assert saved.loc["random search", "savings_flops"] == pytest.approx(1 - 1.2 / 2)
    assert saved.loc["successive halving η=2", "savings_flops"] == pytest.approx(1 - 1.2 / 1.25)
    # one seed per configuration: every replicate is the data, so the interval is the point
    assert saved.loc["grid search", "savings_flops_ci_low"] == pytest.approx(1 - 1.2 / 3)


def test_a_fixed_arm_that_misses_tau_saves_nothing():
    _, _, result = _tuning(_tiny_sweep(imi_score=0.45))
    row = result.savings.set_index("tuner").loc["grid search"]
    assert not row["arm_reaches"] and row["p_reach"] == 0.0 and row["savings_flops"] == -math.inf


def test_builds_are_charged_once_per_procedure_or_per_run_share():
    _, _, result = _tuning(_tiny_sweep(builds=True), "per_procedure")
    grid = result.savings.set_index("tuner").loc["grid search"]
    # dpo's grid: 3 runs + SFT 10 + reference 5 once; rmipo: 1.2 + SFT 10 (it needs no reference)
    assert grid["tuner_flops"] == pytest.approx(18.0) and grid["arm_flops"] == pytest.approx(11.2)
    assert grid["savings_flops"] == pytest.approx(1 - 11.2 / 18)
    _, _, result = _tuning(_tiny_sweep(builds=True), "amortize")
    grid = result.savings.set_index("tuner").loc["grid search"]
    # SFT 10 over 4 runs, reference 5 over the 3 dpo runs
    assert grid["tuner_flops"] == pytest.approx(3 * (1 + 2.5 + 5 / 3)) and grid["arm_flops"] == pytest.approx(3.7)


def test_savings_summed_over_settings_with_traps_apart():
    frame = pd.concat([_tiny_sweep("a"), _tiny_sweep("b", imi_score=0.45), _tiny_sweep("c", trap="label noise")],
                      ignore_index=True)
    _, _, result = _tuning(frame, tolerances=(0.0, 0.3))
    summary = result.summary.set_index(["scope", "tolerance", "tuner"])
    clean = summary.loc[("clean", 0.0, "grid search")]
    assert clean["n_settings"] == 2 and clean["n_reached"] == 1 and clean["savings_flops"] == -math.inf
    assert clean["tuner_flops"] == pytest.approx(6.0) and math.isinf(clean["arm_flops"])
    loose = summary.loc[("clean", 0.3, "random search")]   # τ = 0.2: k = 1 reaches it (E_1 = 0.467)
    assert loose["n_reached"] == 2 and loose["savings_flops"] == pytest.approx(1 - 2.4 / 2.0)
    trap = summary.loc[("trap", 0.0, "grid search")]
    assert trap["n_settings"] == 1 and trap["savings_flops"] == pytest.approx(1 - 1.2 / 3)


def test_tuners_without_validation_curves_are_reported_unavailable():
    frame = _tiny_sweep()
    frame["val_curve"] = [[] for _ in range(len(frame))]
    _, _, result = _tuning(frame)
    assert set(result.reach["tuner"]) == {"grid search", "random search"}
    assert any("successive halving η=2" in n and "val_curve" in n for n in result.notes)


def test_expected_best_table_by_hand():
    prepared, boot, _ = _tuning(_tiny_sweep())
    table = expected_best_table(prepared, boot, "gold_reward", "mean", "per_procedure", 0.95).set_index("k")
    np.testing.assert_allclose(table["expected_test"], [1.4 / 3, 1.7 / 3, 0.5])   # selected on validation
    np.testing.assert_allclose(table["oracle"], [1.4 / 3, 1.9 / 3, 0.7])          # Ê_k: best test of k
    np.testing.assert_allclose(table["expected_flops"], [1.0, 2.0, 3.0])
    assert set(table["selected_on"]) == {"validation"}


def test_a_saving_interval_never_goes_above_one():
    """A saving is 1 − cost/cost ≤ 1; replicates that jump between 1 (the tuner misses τ) and a low saving
    would widen a t-type interval past 1 (the committed beta_sensitivity report showed [−0.40, 2.40])."""
    from analysis.stats import seed_interval
    from analysis.tuning import _ci

    values = np.array([0.3] + [1.0, 0.1] * 200)
    assert seed_interval(values[0], values[1:], 5)[1] > 1.0  # the unbounded interval does go past 1
    low, high = _ci(values, 5, 0.95, upper=1.0)
    assert high == 1.0 and low < 0.3


def _two_seed_sweep() -> pd.DataFrame:
    """_tiny_sweep at seeds 0 and 1 (the same scores), each seed with its own SFT build (10 FLOPs, every
    run) and reference build (5 FLOPs, dpo's runs), as bench keys them by seed."""
    frames = []
    for seed in (0, 1):
        frame = _tiny_sweep().assign(seed=seed)
        frame["cost.shared.sft.key"], frame["cost.shared.sft.hit"] = f"s{seed}", True
        frame["cost.shared.sft.flops"], frame["cost.shared.sft.wall_s"] = 10.0, 0.0
        frame["cost.shared.reference.key"] = [f"r{seed}"] * 3 + [None]
        frame["cost.shared.reference.hit"], frame["cost.shared.reference.flops"] = True, 5.0
        frame["cost.shared.reference.wall_s"] = 0.0
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def test_the_practitioner_pays_one_seeds_builds_and_the_idealised_tuner_every_seeds():
    runs = annotate(_two_seed_sweep(), ["method.name", "method.beta", "seed", "dataset.name", "model.name",
                                        "hardware.name", "dataset.trap"])
    runs = prepare(runs.join(charged_costs(runs, "per_procedure")), "gold_reward", "per_procedure")
    boot = seed_bootstrap(runs, 20, seed=0)
    practitioner = tuning_comparison(runs, boot, "gold_reward", "dpo", (0.0,), "mean", "per_procedure", 0.95)
    grid = practitioner.savings.set_index("tuner").loc["grid search"]
    # one seed's procedure: three runs (1 FLOP each) + that seed's SFT (10) and reference (5) builds
    assert grid["tuner_flops"] == pytest.approx(18.0) and grid["arm_flops"] == pytest.approx(1.2 + 10.0)
    assert grid["tuner_model"] == "practitioner"
    idealised = tuning_comparison(runs, boot, "gold_reward", "dpo", (0.0,), "mean", "per_procedure", 0.95,
                                  model="idealised")
    grid = idealised.savings.set_index("tuner").loc["grid search (idealised)"]
    # three mean runs + every build its runs used (both seeds'), as the report charged before
    assert grid["tuner_flops"] == pytest.approx(3.0 + 30.0) and grid["arm_flops"] == pytest.approx(1.2 + 20.0)
    reach = practitioner.reach.set_index("tuner")
    # both seeds pick β=0.3 (test 0.5 = τ): every procedure reaches τ; the interval is Wilson's at n = 2
    assert reach.loc["grid search", "p_reach"] == 1.0 and reach.loc["grid search", "p_reach_budget"] == 3
    assert reach.loc["grid search", "p_reach_ci_low"] == pytest.approx(1 / (1 + 1.959964 ** 2 / 2), abs=1e-6)
    assert reach.loc["random search", "expected_test"] == pytest.approx(1.7 / 3)   # k = 2, the cheapest to reach τ
