"""The signal controls of the IMI regulators (docs/design.md §4, "Signal controls"): each control's values on a
hand-built batch, the regulator's indifference to where its signal came from, the shuffle's invariants, and the
diagnostics every IMI run logs."""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from analysis.grid import annotate
from analysis.selection import seed_bootstrap
from analysis.signal_controls import has_signal_controls, signal_control_table, signal_verdicts
from analysis.stats import seed_interval
from bench.methods import PairLogps, build_method
from bench.methods.imi import (SIGNALS, correlation, length_matched, length_residual, length_statistic,
                               regulator_signal, shuffled)
from bench.pipeline import _run_means
from helpers import CONF_DIR


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# Four pairs. Response lengths |y_w|, |y_l| and per-token averages: a = ā_ref(y | x), b = ā_ref(y | ∅), so
# PMI = a − b and ΔPMI = (a_w − b_w) − (a_l − b_l) = [1, −0.5, 2, 0.5]; the reference margin a_w − a_l is
# [1, −0.5, 2, 1]; the length statistic 1/|y_w| − 1/|y_l| is [0.25, −0.25, 0.1, −0.1].
LEN_W, LEN_L = [2.0, 4.0, 5.0, 10.0], [4.0, 2.0, 10.0, 5.0]
A_W, B_W = [1.0, 0.0, 2.0, 1.0], [0.0, 0.0, 0.0, 0.5]
A_L, B_L = [0.0, 0.5, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]
DPMI = [1.0, -0.5, 2.0, 0.5]
LENGTH = [0.25, -0.25, 0.1, -0.1]
# By hand: ΔPMI has mean 0.75 and population SD √(3.25/4) = √0.8125; the length statistic mean 0 and SD
# √(0.145/4) = √0.03625; their covariance (0.0625 + 0.3125 + 0.125 + 0.025)/4 = 0.13125.
DPMI_MEAN, DPMI_SD, LENGTH_SD, COV = 0.75, math.sqrt(0.8125), math.sqrt(0.03625), 0.13125
EXPECTED = {
    "pmi": DPMI,
    # 0.75 + √0.8125 · L / √0.03625
    "length": [1.933580, -0.433580, 1.223432, 0.276568],
    "constant": [0.75] * 4,
    # ΔPMI − (0.13125 / 0.03625)·L: slope 3.620690
    "pmi_residual": [0.094828, 0.405172, 1.637931, 0.862069],
}


def hand_batch(signal_dpmi: list[float] | None = None, step: int | None = 0) -> PairLogps:
    """The batch above; with `signal_dpmi`, the chosen marginals are moved so that ΔPMI equals it and nothing
    else changes (policy and reference log-probs, lengths)."""
    b_w = B_W if signal_dpmi is None else [aw - (al - bl) - s for aw, al, bl, s in zip(A_W, A_L, B_L, signal_dpmi)]
    policy_w, policy_l = [-3.0, -6.0, -4.0, -12.0], [-5.0, -2.5, -9.0, -4.0]
    return PairLogps(
        chosen_logps=t(policy_w), rejected_logps=t(policy_l),
        chosen_token_counts=t(LEN_W), rejected_token_counts=t(LEN_L),
        reference_chosen_logps=t([a * n for a, n in zip(A_W, LEN_W)]),
        reference_rejected_logps=t([a * n for a, n in zip(A_L, LEN_L)]),
        marginal_chosen_logps=t([b * n for b, n in zip(b_w, LEN_W)]),
        marginal_rejected_logps=t([b * n for b, n in zip(B_L, LEN_L)]),
        step=step,
    )


def method(name: str, **overrides):
    values = yaml.safe_load((CONF_DIR / "method" / f"{name}.yaml").read_text())
    return build_method({**values, **overrides})


def test_the_hand_numbers_are_what_the_comments_say():
    length = length_statistic(t(LEN_W), t(LEN_L))
    torch.testing.assert_close(length, t(LENGTH))
    assert 0.75 + DPMI_SD * 0.25 / LENGTH_SD == pytest.approx(EXPECTED["length"][0], abs=1e-6)
    assert 1.0 - COV / LENGTH_SD**2 * 0.25 == pytest.approx(EXPECTED["pmi_residual"][0], abs=1e-6)


@pytest.mark.parametrize("signal", sorted(EXPECTED))
def test_each_control_on_the_hand_batch(signal):
    out = regulator_signal(signal, t(DPMI), t(LENGTH), step=0)
    torch.testing.assert_close(out, t(EXPECTED[signal]), atol=1e-6, rtol=0)


def test_length_is_matched_to_the_pmi_level_and_spread_and_ordered_by_length():
    out = length_matched(t(DPMI), t(LENGTH))
    assert out.mean().item() == pytest.approx(DPMI_MEAN)
    assert (out - out.mean()).pow(2).mean().sqrt().item() == pytest.approx(DPMI_SD)
    assert correlation(out, t(LENGTH)) == pytest.approx(1.0)
    # equal lengths: nothing to order by, every pair gets ΔPMI's mean
    torch.testing.assert_close(length_matched(t(DPMI), t([0.1] * 4)), t([DPMI_MEAN] * 4))


def test_the_residual_keeps_the_level_and_drops_the_length_component():
    out = length_residual(t(DPMI), t(LENGTH))
    assert out.mean().item() == pytest.approx(DPMI_MEAN)
    assert abs(correlation(out, t(LENGTH))) < 1e-9
    # ΔPMI exactly linear in length: nothing is left beyond length but its level
    linear = 0.3 + 2.0 * t(LENGTH)
    torch.testing.assert_close(length_residual(linear, t(LENGTH)), torch.full((4,), linear.mean().item(),
                                                                                dtype=torch.float64))
    # no spread in length: ΔPMI unchanged
    torch.testing.assert_close(length_residual(t(DPMI), t([0.2] * 4)), t(DPMI))


@pytest.mark.parametrize("size", [2, 3, 8, 32])
def test_shuffled_keeps_the_multiset_moves_every_pair_and_depends_on_the_step_alone(size):
    values = torch.randn(size, generator=torch.Generator().manual_seed(size), dtype=torch.float64)
    draws = []
    for step in [None, *range(20)]:
        out = shuffled(values, step)
        torch.testing.assert_close(out.sort().values, values.sort().values, atol=0, rtol=0)
        assert not (out == values).any(), f"a pair kept its own value at step {step}"
        torch.testing.assert_close(shuffled(values, step), out, atol=0, rtol=0)  # resumable: the step decides
        draws.append(tuple(out.tolist()))
    if size > 2:
        assert len(set(draws)) > 1, "the permutation never changes between steps"


def test_shuffled_leaves_a_single_pair_alone():
    torch.testing.assert_close(shuffled(t([1.5]), 3), t([1.5]))


def test_correlation_by_hand_and_undefined_without_spread():
    assert correlation(t(DPMI), t(LENGTH)) == pytest.approx(COV / (DPMI_SD * LENGTH_SD))  # 0.764775
    assert correlation(t(DPMI), t([1.0, -0.5, 2.0, 1.0])) == pytest.approx(0.970920, abs=1e-6)
    assert correlation(t(DPMI), t([2.0] * 4)) is None
    assert correlation(t([1.0]), t([2.0])) is None


@pytest.mark.parametrize("name", ["imi_dpo", "imi_ipo"])
@pytest.mark.parametrize("regulator", ["margin", "beta", "weight"])
@pytest.mark.parametrize("signal", [s for s in SIGNALS if s != "pmi"])
def test_the_regulator_does_not_care_where_its_signal_came_from(name, regulator, signal):
    """A control gives the loss, g and effective modulation that ΔPMI itself would give if it had the control's
    values: only the signal differs between a control run and a pmi run."""
    control = method(name, regulator=regulator, signal=signal)(hand_batch())
    values = regulator_signal(signal, t(DPMI), t(LENGTH), step=0).tolist()
    as_pmi = method(name, regulator=regulator, signal="pmi")(hand_batch(signal_dpmi=values))
    torch.testing.assert_close(control.losses, as_pmi.losses, atol=1e-9, rtol=0)
    for key in ("imi/g_mean", "imi/g_min", "imi/g_max", "imi/signal_mean", "imi/signal_min", "imi/signal_max"):
        assert control.metrics[key] == pytest.approx(as_pmi.metrics[key], abs=1e-9), key
    # what the run logs as ΔPMI stays the real one, whatever the regulator read
    assert control.metrics["imi/delta_pmi_mean"] == pytest.approx(DPMI_MEAN)


@pytest.mark.parametrize("signal", SIGNALS)
def test_diagnostics_are_logged_whatever_the_signal(signal):
    out = method("imi_dpo", signal=signal)(hand_batch())
    assert out.metrics["imi/corr_length"] == pytest.approx(0.764775, abs=1e-6)
    assert out.metrics["imi/corr_margin"] == pytest.approx(0.970920, abs=1e-6)  # the reference's ā margin
    # every control keeps ΔPMI's batch mean: only how it is spread over the pairs changes
    assert out.metrics["imi/signal_mean"] == pytest.approx(DPMI_MEAN)


def test_rmipo_takes_a_signal_and_correlates_with_the_policy_margin():
    batch = hand_batch()
    batch.marginal_chosen_logps, batch.marginal_rejected_logps = t([-4.0, -8.0, -10.0, -20.0]), t([-4.0] * 4)
    out = method("rmipo", signal="constant")(batch)
    policy_margin = (batch.chosen_logps / t(LEN_W) - batch.rejected_logps / t(LEN_L))
    dpmi = policy_margin - (batch.marginal_chosen_logps / t(LEN_W) - batch.marginal_rejected_logps / t(LEN_L))
    assert out.metrics["imi/corr_margin"] == pytest.approx(correlation(dpmi, policy_margin))
    assert out.metrics["imi/signal_min"] == pytest.approx(out.metrics["imi/signal_max"])
    assert out.metrics["imi/signal_mean"] == pytest.approx(dpmi.mean().item())


def test_a_signal_that_does_not_exist_is_refused_by_key():
    with pytest.raises(ValueError, match=r"method\.signal must be one of"):
        method("imi_dpo", signal="random")
    with pytest.raises(ValueError, match=r"method\.signal must be one of"):
        method("rmipo", signal="lengths")


def test_run_means_average_over_the_steps_that_logged_the_key():
    history = [{"step": 0, "imi/corr_length": 0.5}, {"step": 1}, {"step": 2, "imi/corr_length": 0.1}]
    assert _run_means(history, ("imi/corr_length", "imi/corr_margin")) == {"imi/corr_length": pytest.approx(0.3)}


# --- the report's signal-control table (analysis/signal_controls.py) ---------------------------------------------------

def _ablation_runs(scores: dict[tuple[str, str], list[float]]) -> pd.DataFrame:
    """An annotated runs frame of one setting: imi_dpo on each signal of `scores` ({(method, signal): per-seed
    scores}), one run per seed, with ΔPMI's correlation with length in each pmi run."""
    rows = []
    for (name, signal), values in scores.items():
        for seed, score in enumerate(values):
            rows.append({"dataset.name": "arithmetic", "model.name": "tiny", "hardware.name": "cpu", "method.name": name,
                         "method.beta": 0.1, "method.signal": signal, "method_info.imi": True, "seed": seed,
                         "gold_reward": score, "imi/corr_length": 0.5 + 0.1 * seed if signal == "pmi" else 0.0})
    columns = ["dataset.name", "model.name", "hardware.name", "method.name", "method.beta", "method.signal", "seed"]
    return annotate(pd.DataFrame(rows), columns)


def test_the_signal_table_pairs_by_seed_and_matches_brute_force():
    pmi = [0.50, 0.40, 0.62, 0.55]
    length = [0.40, 0.32, 0.50, 0.46]
    constant = [0.52, 0.38, 0.64, 0.56]
    runs = _ablation_runs({("imi_dpo", "pmi"): pmi, ("imi_dpo", "length"): length, ("imi_dpo", "constant"): constant})
    boot = seed_bootstrap(runs, n_boot=400, seed=3)
    table = signal_control_table(runs, boot, "gold_reward", 0.95).set_index("control")
    assert list(table.index) == ["length", "constant"]  # the design's order, only those present
    assert table.loc["length", "delta"] == pytest.approx(np.mean(np.subtract(pmi, length)))
    assert table.loc["length", "corr_length"] == pytest.approx(np.mean([0.5, 0.6, 0.7, 0.8]))
    # the replicates by brute force: each draws seeds with replacement ONCE for both configurations
    counts = boot.counts["arithmetic"]
    for control, values in (("length", length), ("constant", constant)):
        diffs = np.subtract(pmi, values)
        replicates = counts @ diffs / counts.sum(axis=1)
        low, high = seed_interval(diffs.mean(), replicates, 4, 0.95)
        assert table.loc[control, "delta_ci_low"] == pytest.approx(float(low))
        assert table.loc[control, "delta_ci_high"] == pytest.approx(float(high))
    # pmi is above length on every seed by 0.08-0.12: the interval excludes 0; constant is within ±0.02 either way
    assert table.loc["length", "verdict"] == "pmi better"
    assert table.loc["constant", "verdict"] == "no difference shown"


@pytest.mark.parametrize("scores, beats, keeps, reading", [
    # pmi no better than shuffled or constant: nothing per pair is shown to matter
    ({"shuffled": -0.001, "constant": 0.0, "length": 0.05, "pmi_residual": 0.0}, "length", True,
     "per-pair values not shown to matter here"),
    # pmi beats the constant and shuffled controls, not length
    ({"shuffled": 0.1, "constant": 0.1, "length": 0.0, "pmi_residual": 0.1}, "shuffled, constant", False,
     "not shown to be more than a length prior here"),
    # pmi beats every control and the length-free residual does as well
    ({"shuffled": 0.1, "constant": 0.1, "length": 0.1, "pmi_residual": 0.0}, "length, shuffled, constant", True,
     "more than a length prior here"),
    ({"shuffled": 0.1, "constant": 0.1, "length": 0.1, "pmi_residual": 0.1}, "length, shuffled, constant", False,
     "more than length, but not its length-free part alone"),
])
def test_the_signal_verdicts(scores, beats, keeps, reading):
    base = [0.50, 0.40, 0.62, 0.55, 0.47]
    wobble = [0.004, -0.003, 0.002, -0.004, 0.001]  # seed-to-seed noise in each difference
    runs = _ablation_runs({("imi_dpo", "pmi"): base,
                           **{("imi_dpo", control): [b - gain + w for b, w in zip(base, wobble)]
                              for control, gain in scores.items()}})
    table = signal_control_table(runs, seed_bootstrap(runs, n_boot=400, seed=0), "gold_reward", 0.95)
    verdict = signal_verdicts(table).iloc[0]
    assert (verdict["beats"], verdict["residual_keeps"], verdict["reading"]) == (beats, keeps, reading)


def test_runs_without_controls_give_no_signal_table():
    runs = _ablation_runs({("imi_dpo", "pmi"): [0.5, 0.4]})
    assert not has_signal_controls(runs)
    assert signal_control_table(runs, seed_bootstrap(runs, 50), "gold_reward", 0.95).empty
