"""Entries per setting (analysis.entries), aggregates across settings (analysis.aggregate) and the
citability checks (analysis.protocol) on hand-made runs with hand-computed answers."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.aggregate import improvement_table, iqm_table, normalizers, per_setting_table
from analysis.entries import build_entries, comparison_table, grid_table, moves_the_model, practitioners_testbed
from analysis.grid import annotate
from analysis.protocol import citability, prompt_sets_text
from analysis.sft_level import add_delta, sft_levels
from analysis.selection import seed_bootstrap
from analysis.stats import seed_interval

CONFIG = ["method.name", "method.beta", "seed", "dataset.name", "model.name", "hardware.name", "dataset.trap"]


OVERLAP = "data.prompt_sets.overlaps."


def _runs(spec: dict[str, dict], seeds=range(4), val_shift: float = 0.0, trap: dict | None = None) -> pd.DataFrame:
    """spec[setting][(method, beta)] = test score of every seed. Validation = test + val_shift, except that
    dpo β=0.1 has a validation score of -9 (so validation always picks β=1). SFT level 0 everywhere. Every
    run's records measure its prompt sets as sharing no prompt."""
    rows = []
    for setting, arms in spec.items():
        for (method, beta), score in arms.items():
            for seed in seeds:
                val = -9.0 if (method, beta) == ("dpo", 0.1) else score + val_shift
                rows.append({"method.name": method, "method.beta": beta, "seed": seed, "gold_reward": score,
                             "val/gold_reward": val, "reference_gold_reward": 0.0, "collapsed": float(score < -1),
                             "dataset.name": setting, "model.name": "tiny", "hardware.name": "cpu",
                             "dataset.trap": (trap or {}).get(setting), f"{OVERLAP}validation|test": 0,
                             f"{OVERLAP}train_pairs|test": 0})
    return add_delta(annotate(pd.DataFrame(rows), CONFIG), "gold_reward")


def _setup(runs: pd.DataFrame, n_boot: int = 50):
    boot = seed_bootstrap(runs, n_boot, seed=0)
    entries = build_entries(runs, boot, "gold_reward", "mean")
    sft = sft_levels(runs, "gold_reward", boot, 0.95)
    comparison = comparison_table(entries, runs, boot, "gold_reward", "mean", "dpo", sft, 0.95)
    return boot, entries, comparison


# four settings: dpo tuned (β=1) scores 1; rmipo 1.2 on a, b, c and collapses to -3 on d
SPEC = {s: {("dpo", 0.1): 2.0, ("dpo", 1.0): 1.0, ("rmipo", 2.0): (-3.0 if s == "d" else 1.2)} for s in "abcd"}


def test_entries_and_the_comparison_table_by_hand():
    runs = _runs(SPEC)
    boot, entries, comparison = _setup(runs)
    names = {e.name for e in entries if e.setting == "a"}
    assert names == {"dpo (tuned)", "dpo (oracle)", "dpo (default)", "rmipo"}
    table = comparison[comparison["setting"] == "a"].set_index("entry")
    assert list(table.index[:2]) == ["SFT (reference)", "dpo (tuned)"]   # SFT first, then the tuned baseline
    assert table.loc["SFT (reference)", "score"] == 0.0 and table.loc["SFT (reference)", "kind"] == "sft"
    tuned = table.loc["dpo (tuned)"]
    assert tuned["config"] == "β=1" and tuned["score"] == 1.0 and tuned["selected_on"] == "validation"
    assert table.loc["dpo (oracle)", "config"] == "β=0.1" and table.loc["dpo (oracle)", "score"] == 2.0
    assert table.loc["dpo (default)", "score"] == 2.0                     # the published β = 0.1
    rmipo = table.loc["rmipo"]
    assert rmipo["delta_sft"] == pytest.approx(1.2) and rmipo["delta_tuned"] == pytest.approx(0.2)
    assert rmipo["delta_tuned_ci_low"] == pytest.approx(0.2)             # constant seeds: the interval is the point
    grid = grid_table(entries, runs, boot, "gold_reward", "mean", 0.95).set_index("setting").loc["a"]
    assert grid["tuned"] == 1.0 and grid["oracle"] == 2.0 and grid["regret"] == pytest.approx(-1.0)


def test_one_collapsed_setting_is_not_trimmed_away_silently():
    runs = _runs(SPEC)
    boot, entries, comparison = _setup(runs)
    norms = normalizers(comparison, "dpo")
    assert norms["usable"].all() and (norms["sft"] == 0).all() and (norms["tuned"] == 1).all()
    table = iqm_table(entries, runs, boot, "gold_reward", norms, list("abcd"), 0.95).set_index("entry")
    rmipo = table.loc["rmipo"]
    # 16 runs with equal weights: 4 × (-3) and 12 × 1.2; the middle half is all 1.2
    assert rmipo["iqm"] == pytest.approx(1.2)
    assert rmipo["trimmed"] == "d"                                      # the collapse is named, not hidden
    assert rmipo["mean"] == pytest.approx((3 * 1.2 - 3.0) / 4)         # and the mean over settings shows it
    assert table.loc["dpo (tuned)", "iqm"] == pytest.approx(1.0) and "dpo (oracle)" not in table.index
    per_setting = per_setting_table(entries, runs, boot, "gold_reward", norms, 0.95)
    rmipo = per_setting[per_setting["entry"] == "rmipo"].set_index("setting")["mean_normalized"]
    assert rmipo.to_dict() == pytest.approx({"a": 1.2, "b": 1.2, "c": 1.2, "d": -3.0})


def test_settings_count_equally_whatever_their_seed_counts():
    # setting a has 8 runs of rmipo at 2.0, setting b 2 runs at 0.0: equal weight -> the mixture is
    # half 2.0, half 0.0, so IQM = mean = 1.0 (pooling the 10 runs naively would give 2.0 and 1.6)
    a = _runs({"a": {("dpo", 0.1): 0.5, ("dpo", 1.0): 1.0, ("rmipo", 2.0): 2.0}}, seeds=range(8))
    b = _runs({"b": {("dpo", 0.1): 0.5, ("dpo", 1.0): 1.0, ("rmipo", 2.0): 0.0}}, seeds=range(2))
    runs = add_delta(annotate(pd.concat([a, b], ignore_index=True)[a.columns[:12]], CONFIG), "gold_reward")
    boot, entries, comparison = _setup(runs)
    table = iqm_table(entries, runs, boot, "gold_reward", normalizers(comparison, "dpo"), ["a", "b"], 0.95)
    rmipo = table.set_index("entry").loc["rmipo"]
    assert rmipo["iqm"] == pytest.approx(1.0) and rmipo["mean"] == pytest.approx(1.0) and rmipo["n_seeds"] == 2


def test_probability_of_improvement_over_the_tuned_baseline_by_hand():
    runs = _runs(SPEC)
    boot, entries, _ = _setup(runs)
    table = improvement_table(entries, runs, boot, "gold_reward", "dpo", list("abcd"), 0.95).set_index("entry")
    assert table.loc["rmipo", "probability"] == pytest.approx(0.75)     # wins on a, b, c; loses on d
    assert table.loc["dpo (default)", "probability"] == pytest.approx(1.0)
    assert "dpo (tuned)" not in table.index and "dpo (oracle)" not in table.index


def test_normalizers_and_the_testbed_check_name_what_fails():
    spec = {"moves": SPEC["a"], "flat": {("dpo", 0.1): -1.0, ("dpo", 1.0): 0.0, ("rmipo", 2.0): 0.5},
            "noisy": {("dpo", 0.1): -1.0, ("dpo", 1.0): 0.0, ("rmipo", 2.0): 0.5}}
    runs = _runs(spec, trap={"noisy": "label noise"})
    _, _, comparison = _setup(runs)
    norms = normalizers(comparison, "dpo").set_index("setting")
    assert norms.loc["moves", "usable"] and not norms.loc["flat", "usable"]
    assert "does not score above SFT" in norms.loc["flat", "reason"]
    check = moves_the_model(comparison, "dpo").set_index("setting")["verdict"]
    assert check.to_dict() == {"moves": "yes: the interval excludes 0", "flat": "no: the interval includes 0"}


def test_one_grid_search_at_one_seed_against_that_seeds_sft_by_hand():
    """The practitioner's testbed check: at each seed the validation-best run of that seed, minus that seed's
    SFT score; not the configuration with the best 3-seed mean validation (β = 0.1 here, whose mean Δ vs SFT
    is 0.267, against the practitioner's 0.333)."""
    # seed: (val, test) of β = 0.1, (val, test) of β = 1, SFT score
    table = {0: ((1.0, 0.5), (0.0, 0.9), 0.0), 1: ((0.0, 0.2), (2.0, 0.4), 0.1), 2: ((3.0, 0.1), (1.0, 0.8), -0.1)}
    rows = [{"method.name": "dpo", "method.beta": beta, "seed": seed, "gold_reward": cell[1], "val/gold_reward": cell[0],
             "reference_gold_reward": sft, "dataset.name": "a", "model.name": "tiny", "hardware.name": "cpu",
             "dataset.trap": None}
            for seed, (low, high, sft) in table.items() for beta, cell in ((0.1, low), (1.0, high))]
    runs = add_delta(annotate(pd.DataFrame(rows), CONFIG), "gold_reward")
    boot, entries, comparison = _setup(runs, n_boot=200)
    d = np.array([0.5 - 0.0, 0.4 - 0.1, 0.1 + 0.1])  # seed 0 keeps β = 0.1, seed 1 β = 1, seed 2 β = 0.1
    out = practitioners_testbed(entries, runs, boot, "gold_reward", "dpo", 0.95).set_index("setting").loc["a"]
    assert out["practitioner_delta_sft"] == pytest.approx(d.mean()) and out["n_seeds"] == 3
    counts = boot.counts["a"]
    brute = np.array([np.repeat(d, c).mean() for c in counts])  # each replicate's drawn seeds, one by one
    low, high = seed_interval(d.mean(), brute, 3, 0.95)
    assert (out["practitioner_delta_sft_ci_low"], out["practitioner_delta_sft_ci_high"]) == pytest.approx((low, high))
    assert comparison.set_index("entry").loc["dpo (tuned)", "delta_sft"] == pytest.approx((0.5 + 0.2 + 0.1) / 3)
    assert out["practitioner_verdict"] == ("yes: the interval excludes 0" if low > 0 else "no: the interval includes 0")


def test_a_noisy_configuration_loses_stability_and_widens_the_tuned_interval():
    rng = np.random.default_rng(0)
    rows = [{"method.name": "dpo", "method.beta": beta, "seed": s, "gold_reward": test + 0.3 * rng.standard_normal(),
             "val/gold_reward": test + 0.3 * rng.standard_normal(), "reference_gold_reward": 0.0,
             "dataset.name": "a", "model.name": "tiny", "hardware.name": "cpu", "dataset.trap": None}
            for beta, test in ((0.1, 0.5), (1.0, 0.55)) for s in range(5)]
    runs = add_delta(annotate(pd.DataFrame(rows), CONFIG), "gold_reward")
    boot, entries, comparison = _setup(runs, n_boot=400)
    tuned = comparison.set_index("entry").loc["dpo (tuned)"]
    # recomputed from the replicates' seed counts: both configurations see the same draws
    frame = pd.DataFrame(rows)
    val = frame.pivot(index="method.beta", columns="seed", values="val/gold_reward").to_numpy()
    test = frame.pivot(index="method.beta", columns="seed", values="gold_reward").to_numpy()
    counts = boot.counts["a"]
    picked = np.argmax(counts @ val.T, axis=1)                         # no ties: continuous scores
    observed = int(np.argmax(val.mean(axis=1)))
    assert tuned["stability"] == pytest.approx(np.mean(picked == observed))
    assert 0.3 < tuned["stability"] < 1.0                               # the choice flips between replicates
    replicates = (counts @ test.T / 5)[np.arange(400), picked]
    assert (tuned["score_ci_low"], tuned["score_ci_high"]) == pytest.approx(
        seed_interval(test[observed].mean(), replicates, 5))


def test_citability_labels():
    runs = _runs({"a": SPEC["a"]}, seeds=range(3))
    boot, entries, _ = _setup(runs)
    verdict = citability(runs, entries, "gold_reward", 50)
    assert verdict.labels == ["not citable: 3 seeds"] and not verdict.citable
    assert any("4000" in d for d in verdict.details)
    five = _runs({"a": SPEC["a"]}, seeds=range(5))
    boot, entries, _ = _setup(five)
    assert citability(five, entries, "gold_reward", 4000).citable
    smoke = five.assign(budget="fast")
    assert citability(smoke, entries, "gold_reward", 4000).labels == ["smoke test, not citable"]
    no_val = five.assign(**{"val/gold_reward": np.nan})
    boot, entries, _ = _setup(no_val)
    tuned = next(e for e in entries if e.kind == "tuned")
    assert tuned.choice.selected_on == "test" and tuned.choice.config_id == next(
        e for e in entries if e.kind == "oracle").choice.config_id
    verdict = citability(no_val, entries, "gold_reward", 4000)
    assert verdict.labels == ["selection on test data: not citable"]
    assert "dpo (tuned) on a" in verdict.details[0]


def test_citability_needs_prompt_sets_measured_disjoint():
    five = _runs({"a": SPEC["a"]}, seeds=range(5))
    _, entries, _ = _setup(five)
    shared = five.copy()
    shared.loc[shared.index[:3], f"{OVERLAP}validation|test"] = [2, 0, 7]
    verdict = citability(shared, entries, "gold_reward", 4000)
    assert verdict.labels == ["prompt sets overlap: not citable"]
    assert verdict.details == ["The records count prompts shared between two prompt sets of a run: a: validation and "
                               "test share up to 7 prompts (2 of 15 runs)."]
    older = five.drop(columns=[f"{OVERLAP}validation|test", f"{OVERLAP}train_pairs|test"])
    verdict = citability(older, entries, "gold_reward", 4000)
    assert verdict.labels == ["prompt-set overlap not measured: not citable"]
    assert verdict.details[0].startswith("15 of 15 runs carry no `data.prompt_sets`")
    partly = five.assign(**{f"{OVERLAP}validation|test": [0] * 10 + [None] * 5,
                            f"{OVERLAP}train_pairs|test": [0] * 10 + [None] * 5})
    assert citability(partly, entries, "gold_reward", 4000).labels == ["prompt-set overlap not measured: not citable"]



def test_unmeasured_runs_are_counted_and_their_settings_named():
    two = _runs({"a": SPEC["a"], "b": SPEC["b"]}, seeds=range(5))
    _, entries, _ = _setup(two)
    assert prompt_sets_text(two) == ("a prompt set disjoint from the test prompts (the records count 0 shared prompts "
                                     "for every pair of prompt sets they measure: `train_pairs|test`, "
                                     "`validation|test`), so test scores are held-out")
    in_b = two["setting"].str.startswith("b")
    partly = two.copy()
    partly.loc[in_b, [f"{OVERLAP}validation|test", f"{OVERLAP}train_pairs|test"]] = None
    verdict = citability(partly, entries, "gold_reward", 4000)
    assert verdict.details == [f"15 of 30 runs carry no `data.prompt_sets` (records older than the prompt-set "
                               f"overlap count; on {two.loc[in_b, 'setting'].iloc[0]}), so whether their prompt sets "
                               "share prompts is not measured."]
    assert prompt_sets_text(partly) == ("a separate prompt set; whether it shares prompts with the test set is not "
                                        "measured (see the verdict)")
    shared = two.copy()
    shared.loc[shared.index[0], f"{OVERLAP}validation|test"] = 3
    assert prompt_sets_text(shared).startswith("a separate prompt set, but the records count prompts shared")

def test_citability_refuses_records_of_mixed_code():
    five = _runs({"a": SPEC["a"]}, seeds=range(5))
    _, entries, _ = _setup(five)
    one = five.assign(**{"provenance.code_fingerprint": "f" * 16})
    assert citability(one, entries, "gold_reward", 4000).citable
    mixed = one.copy()
    mixed.loc[mixed.index[:2], "provenance.code_fingerprint"] = "e" * 16
    mixed.loc[mixed.index[2], "provenance.code_fingerprint"] = None
    verdict = citability(mixed, entries, "gold_reward", 4000)
    assert verdict.labels == ["records of 3 code versions: not citable"]
    assert verdict.details == [f"Runs of one setting were made by different code (provenance.code_fingerprint): a: "
                               f"{'e' * 16} (2 runs), {'f' * 16} (12 runs), not recorded (1 runs). Re-run them with one "
                               "checkout (a sweep re-runs records made by other code)."]
