"""Charged costs under the two shared-cost conventions, cost to reach τ and savings (analysis.costs),
on hand-computed examples."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.costs import charged_costs, cost_to_reach_table, savings_summary, shared_build_costs
from analysis.grid import annotate

H = 1 / 3600  # device-hours per device-second


def _three_runs() -> pd.DataFrame:
    """Run A built the SFT (100 s, 1e12 FLOPs) and reference (10 s, 5e10 FLOPs) caches inside its 130 s;
    B hit both; C (reference-free) hit the SFT cache. Entries report wall_s and flops, no device-hours."""
    return pd.DataFrame({
        "run_id": ["A", "B", "C"],
        "cost.total_s": [130.0, 30.0, 30.0], "cost.device_hours": [130 * H, 30 * H, 30 * H],
        "cost.flops": [2e12, 2e12, 2e12], "cost.device_count": [1, 1, 1],
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
    # device-hours: A's own 130 s less its two builds = 20 s; SFT 100 s / 3 runs; reference 10 s / 2 runs
    np.testing.assert_allclose(charged["charged.device_hours"], [(20 + 100 / 3 + 5) * H, (30 + 100 / 3 + 5) * H,
                                                                (30 + 100 / 3) * H])
    # the sweep's actual device time is conserved: every build charged exactly once in total
    assert charged["charged.device_hours"].sum() == pytest.approx(190 * H)
    # FLOPs never contain builds in bench's accounting, so nothing is taken out of A's own FLOPs
    np.testing.assert_allclose(charged["charged.flops"], [2e12 + 1e12 / 3 + 2.5e10, 2e12 + 1e12 / 3 + 2.5e10,
                                                          2e12 + 1e12 / 3])
    np.testing.assert_allclose(charged["charged.wall_s"], [20 + 100 / 3 + 5, 30 + 100 / 3 + 5, 30 + 100 / 3])


def test_per_run_costs_by_hand():
    charged = charged_costs(_three_runs(), "per_run")
    np.testing.assert_allclose(charged["charged.device_hours"], [130 * H, 140 * H, 130 * H])
    np.testing.assert_allclose(charged["charged.flops"], [3.05e12, 3.05e12, 3e12])


def test_build_device_hours_scale_with_the_devices_held():
    runs = _three_runs().assign(**{"cost.device_count": [2, 2, 2]})
    builds = shared_build_costs(runs).set_index(["kind", "key"])
    assert builds.loc[("sft", "s1"), "device_hours"] == pytest.approx(200 * H)


def test_unknown_convention_is_refused():
    with pytest.raises(ValueError, match="amortize"):
        charged_costs(_three_runs(), "free")


def test_runs_without_shared_entries_are_charged_their_own_cost():
    runs = pd.DataFrame({"cost.device_hours": [0.5], "cost.flops": [1.0], "cost.total_s": [1800.0]})
    charged = charged_costs(runs, "amortize")
    assert charged.iloc[0].tolist() == [0.5, 1.0, 1800.0]


def _grid_and_imi(setting: str = "arith", imi_score: float = 0.69) -> pd.DataFrame:
    rows = [("dpo", 0.1, 0.2, 1.0), ("dpo", 0.3, 0.5, 1.0), ("dpo", 1.0, 0.7, 1.0), ("rmipo", 2.0, imi_score, 1.2)]
    frame = pd.DataFrame(rows, columns=["method.name", "method.beta", "gold_reward", "charged.device_hours"])
    frame["charged.flops"] = frame["charged.device_hours"] * 1e15
    frame["seed"], frame["dataset.name"], frame["model.name"], frame["hardware.name"] = 0, setting, "tiny", "cpu"
    return annotate(frame, ["method.name", "method.beta", "seed", "dataset.name", "model.name", "hardware.name"])


def test_cost_to_reach_table_by_hand():
    table = cost_to_reach_table(_grid_and_imi(), "gold_reward", "dpo", [0.0, 0.05], n_boot=50, seed=0)
    rows = table.set_index(["arm", "tolerance"])
    # τ = 0.65: one of three DPO configurations reaches it -> E[trials] = 4/2 = 2, E[cost] = (1+1)/2 + 1 = 2
    dpo = rows.loc[("dpo", 0.05)]
    assert dpo["tau"] == pytest.approx(0.65)
    assert dpo["expected_trials"] == pytest.approx(2.0) and dpo["expected_device_hours"] == pytest.approx(2.0)
    assert dpo["savings_device_hours"] == 0.0
    imi = rows.loc[("rmipo", 0.05)]
    assert bool(imi["reaches"]) and imi["p_reach"] == 1.0
    assert imi["expected_trials"] == 1.0 and imi["expected_device_hours"] == pytest.approx(1.2)
    assert imi["savings_device_hours"] == pytest.approx(1 - 1.2 / 2)
    assert imi["savings_flops"] == pytest.approx(1 - 1.2 / 2)
    assert imi["savings_trials"] == pytest.approx(0.5)
    assert imi["savings_vs_full_grid_device_hours"] == pytest.approx(1 - 1.2 / 3)
    assert imi["baseline_full_grid_device_hours"] == pytest.approx(3.0)
    # one seed per configuration: every bootstrap replicate is the data itself
    assert imi["savings_device_hours_ci_low"] == pytest.approx(imi["savings_device_hours"])
    # τ = 0.7 (tolerance 0): the IMI run's 0.69 misses it
    missed = rows.loc[("rmipo", 0.0)]
    assert not missed["reaches"] and missed["p_reach"] == 0.0
    assert math.isinf(missed["expected_device_hours"]) and missed["savings_device_hours"] == -math.inf


def test_savings_summary_sums_over_settings():
    runs = pd.concat([_grid_and_imi("a", 0.69), _grid_and_imi("b", 0.69)], ignore_index=True)
    runs = annotate(runs.drop(columns=["setting", "config_id", "config_label", "arm", "arm_kind", "is_default"]),
                    ["method.name", "method.beta", "seed", "dataset.name", "model.name", "hardware.name"])
    summary = savings_summary(cost_to_reach_table(runs, "gold_reward", "dpo", [0.0, 0.05], n_boot=20), "dpo")
    rows = summary.set_index(["tolerance", "arm"])
    reached = rows.loc[(0.05, "rmipo")]
    assert reached["n_settings"] == 2 and reached["n_reached"] == 2
    assert reached["total_device_hours"] == pytest.approx(2.4)
    assert reached["baseline_total_device_hours"] == pytest.approx(4.0)
    assert reached["savings_device_hours"] == pytest.approx(0.4)
    assert rows.loc[(0.0, "rmipo"), "n_reached"] == 0 and rows.loc[(0.0, "rmipo"), "savings_device_hours"] == -math.inf
