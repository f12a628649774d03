"""How much an IMI regulator acts (docs/design.md §4, "Does the regulator act?"): the per-item gradient change
against the unregulated base at the same β, the share of items it moves by ≥ 10%, and the effective value's
spread — against values worked out by hand with math.exp on a three-pair batch."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import yaml

from bench.methods import PairLogps, build_method
from bench.methods.imi import ACTING_CHANGE, gradient_change, quantiles


CONF = Path(__file__).resolve().parents[1] / "conf" / "method"


def method_from_yaml(name: str, **overrides):
    """The shipped defaults with overrides, as users get them."""
    return build_method({**yaml.safe_load((CONF / f"{name}.yaml").read_text()), **overrides})


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# Three pairs whose DPO gap x = Δ is [2, 1.5, −3] and whose reference ΔPMI is [1, −0.5, 2] (as in test_methods).
BATCH = dict(chosen_logps=t([-10.0, -12.0, -8.0]), rejected_logps=t([-14.0, -11.0, -9.0]),
             chosen_token_counts=t([4.0, 5.0, 2.0]), rejected_token_counts=t([2.0, 3.0, 6.0]),
             reference_chosen_logps=t([-11.0, -12.5, -6.0]), reference_rejected_logps=t([-13.0, -10.0, -10.0]),
             marginal_chosen_logps=t([-15.0, -12.5, -10.0]), marginal_rejected_logps=t([-13.0, -11.5, -10.0]))
X = [2.0, 1.5, -3.0]
DPMI = [1.0, -0.5, 2.0]


def g_of(dpmi: float) -> float:
    return 0.3 + 1.3 * math.exp(-max(0.0, dpmi))


def dpo_margin_change(beta: float, x: float, m: float) -> float:
    """DPO's ∂/∂x of −log σ(β(x − m)) is −β σ(−β(x − m)): the change against m = 0, relative to the larger."""
    regulated, neutral = sigmoid(-beta * (x - m)), sigmoid(-beta * x)
    return abs(regulated - neutral) / max(regulated, neutral)


def test_gradient_change_by_hand_for_each_regulator_kind():
    dpo = lambda x, beta, margin: -torch.nn.functional.logsigmoid(beta * (x - margin))  # noqa: E731
    x = t([0.0, 0.0, 0.0])
    # margin 1 at β 1: σ(1) vs σ(0); β 2 vs 1: 2σ(0) vs σ(0); weight 1.2: 1.2σ(0) vs σ(0)
    assert gradient_change(dpo, x, (1.0, t([1.0, 0.0, 0.0]), 1.0), (1.0, 0.0, 1.0)).tolist() == pytest.approx(
        [(sigmoid(1) - 0.5) / sigmoid(1), 0.0, 0.0], abs=1e-12)
    assert gradient_change(dpo, x, (t([2.0, 1.0, 1.0]), 0.0, 1.0), (1.0, 0.0, 1.0)).tolist() == pytest.approx(
        [0.5, 0.0, 0.0], abs=1e-12)
    assert gradient_change(dpo, x, (1.0, 0.0, t([1.2, 1.0, 0.8])), (1.0, 0.0, 1.0)).tolist() == pytest.approx(
        [0.2 / 1.2, 0.0, 0.2], abs=1e-12)
    # IPO-like quadratic whose base gradient is 0 at x = 1 and the regulated one too: no change, not NaN
    ipo = lambda x, beta, margin: (x - margin - 1 / (2 * beta)) ** 2  # noqa: E731
    assert gradient_change(ipo, t([1.0]), (0.5, 0.0, 1.0), (0.5, 0.0, 1.0)).tolist() == [0.0]
    # runs under no_grad (evaluation) and leaves the input's graph alone
    leaf = t([1.0, 2.0]).requires_grad_(True)
    with torch.no_grad():
        change = gradient_change(dpo, leaf * 1, (1.0, 0.5, 1.0), (1.0, 0.0, 1.0))
    assert change.shape == (2,) and not change.requires_grad


def test_quantiles_match_torch_on_a_known_batch():
    assert quantiles("q", t([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0])) == pytest.approx(
        {"q_p10": 1.0, "q_p50": 5.0, "q_p90": 9.0})


@pytest.mark.parametrize("beta", [0.1, 2.0])
def test_imi_dpo_reports_how_far_its_margin_moves_each_pair(beta):
    method = method_from_yaml("imi_dpo", beta=beta)
    out = method.loss(PairLogps(**BATCH))
    margins = [g_of(d) for d in DPMI]
    changes = [dpo_margin_change(beta, x, m) for x, m in zip(X, margins)]
    assert out.metrics["imi/acting_share"] == pytest.approx(sum(c >= ACTING_CHANGE for c in changes) / 3)
    assert out.metrics["imi/gradient_change_p50"] == pytest.approx(sorted(changes)[1], abs=1e-12)
    assert out.metrics["imi/effective_margin_p50"] == pytest.approx(sorted(margins)[1], abs=1e-12)
    # numpy-style linear interpolation: p10 of three values is 20% of the way from the first to the second
    low, mid, _ = sorted(margins)
    assert out.metrics["imi/effective_margin_p10"] == pytest.approx(low + 0.2 * (mid - low), abs=1e-12)
    if beta == 0.1:  # β·g ≤ 0.16 logits: no pair's gradient moves by 10% — the regulator does not act
        assert out.metrics["imi/acting_share"] == 0.0 and max(changes) < 0.08
    else:  # β·g up to 3.2 logits: the two unsaturated pairs move by 77% and 91%; the third (βx = −6) by 0.2%
        assert out.metrics["imi/acting_share"] == pytest.approx(2 / 3) and changes[2] < 0.002


def test_a_regulator_at_its_neutral_value_never_acts():
    # g_min = g_max = 0: the margin is DPO's own 0 on every pair
    method = method_from_yaml("imi_dpo", g_min=0.0, g_max=0.0)
    out = method.loss(PairLogps(**BATCH))
    assert out.metrics["imi/acting_share"] == 0.0 and out.metrics["imi/gradient_change_p90"] == 0.0


def test_the_run_summary_names_the_action_keys_it_logs():
    for name, regulator, key in (("imi_dpo", "margin", "effective_margin"), ("imi_ipo", "beta", "effective_beta"),
                                 ("imi_simpo", "weight", "effective_weight"), ("rmipo", None, "effective_margin")):
        method = method_from_yaml(name) if regulator is None else method_from_yaml(name, regulator=regulator)
        batch = dict(BATCH)
        if name == "rmipo":  # policy-side PMI: the marginals are the policy's
            batch.update(reference_chosen_logps=None, reference_rejected_logps=None)
        metrics = method.loss(PairLogps(**batch)).metrics
        logged = {k for k in metrics if k.startswith("imi/") and k in method.summarised}
        assert {f"imi/{key}_p10", f"imi/{key}_p50", f"imi/{key}_p90", "imi/acting_share",
                "imi/gradient_change_p50"} <= logged


# ---------------------------------------------------------------------------------------------- the report's table

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from analysis.grid import annotate  # noqa: E402
from analysis.imi_action import base_config, imi_action_table  # noqa: E402
from analysis.selection import seed_bootstrap  # noqa: E402
from analysis.stats import seed_interval  # noqa: E402


def _runs(configs: list[dict]) -> pd.DataFrame:
    """An annotated frame of one setting: each config dict has method keys, per-seed `scores` and `acting`."""
    rows = []
    for config in configs:
        scores, acting = config.pop("scores"), config.pop("acting", None)
        for seed, score in enumerate(scores):
            row = {"dataset.name": "constraints", "model.name": "smollm2", "hardware.name": "cpu", "seed": seed,
                   "gold_reward": score, "method_info.imi": config["method.name"] in ("imi_dpo", "rmipo"), **config}
            if acting is not None:
                row.update({"imi/acting_share": acting[seed], "imi/effective_margin_p10": 0.4,
                            "imi/effective_margin_p50": 0.8 + 0.1 * seed, "imi/effective_margin_p90": 1.5})
            rows.append(row)
    frame = pd.DataFrame(rows)
    columns = ["dataset.name", "model.name", "hardware.name"] + sorted(c for c in frame.columns if c.startswith("method."))
    return annotate(frame, columns)


def test_the_action_table_pairs_each_imi_run_with_its_base_at_the_same_beta():
    dpo = {0.1: [0.10, 0.12, 0.08, 0.11], 1.0: [0.05, 0.06, 0.04, 0.05]}
    imi = [0.20, 0.21, 0.19, 0.22]
    runs = _runs([{"method.name": "dpo", "method.beta": 0.1, "scores": dpo[0.1]},
                  {"method.name": "dpo", "method.beta": 1.0, "scores": dpo[1.0]},
                  {"method.name": "imi_dpo", "method.beta": 0.1, "method.regulator": "margin", "scores": imi,
                   "acting": [0.5, 0.6, 0.7, 0.8]},
                  {"method.name": "rmipo", "method.beta": 2.0, "scores": [0.1, 0.1, 0.1, 0.1], "acting": [1, 1, 1, 1]}])
    boot = seed_bootstrap(runs, n_boot=400, seed=1)
    table = imi_action_table(runs, boot, "gold_reward", 0.95).set_index("method")
    row = table.loc["imi_dpo"]
    assert row["base"] == "dpo (β=0.1)" and row["regulator"] == "margin"
    assert row["acting_share"] == pytest.approx(0.65) and row["effective_p50"] == pytest.approx(0.95)
    assert row["delta"] == pytest.approx(np.mean(np.subtract(imi, dpo[0.1])))
    counts = boot.counts["constraints"]  # the setting label of a one-model, one-dataset frame
    diffs = np.subtract(imi, dpo[0.1])
    low, high = seed_interval(diffs.mean(), counts @ diffs / counts.sum(axis=1), 4, 0.95)
    assert (row["delta_ci_low"], row["delta_ci_high"]) == pytest.approx((float(low), float(high)))
    assert row["verdict"] == "differs from its base"  # +0.10 on every seed
    # RMiPO's base is SimPO at β = 2 with γ/β = 0: not in these runs
    assert table.loc["rmipo", "verdict"] == "no base at this β" and table.loc["rmipo", "base"] == ""


def test_an_imi_run_within_its_base_seed_spread_and_the_base_keys_rmipo_fixes():
    simpo0 = [0.30, 0.10, 0.25, 0.05]
    runs = _runs([{"method.name": "simpo", "method.beta": 2.0, "method.gamma_beta_ratio": 0.5, "scores": [0.0] * 4},
                  {"method.name": "simpo", "method.beta": 2.0, "method.gamma_beta_ratio": 0.0, "scores": simpo0},
                  {"method.name": "rmipo", "method.beta": 2.0, "scores": [0.28, 0.12, 0.20, 0.09],
                   "acting": [0.9] * 4}])
    table = imi_action_table(runs, seed_bootstrap(runs, n_boot=400, seed=0), "gold_reward", 0.95)
    assert table.loc[0, "base"] == "simpo (β=2, gamma_beta_ratio=0)"
    assert table.loc[0, "verdict"] == "within the seed spread of its base"
    imi_row = runs[runs["method.name"] == "rmipo"].iloc[0]
    base_id = base_config(runs, imi_row)
    assert runs.loc[runs["config_id"] == base_id, "method.gamma_beta_ratio"].iloc[0] == 0.0


def test_a_warmup_as_long_as_training_is_refused_naming_the_key(make_config):
    from bench import records
    from bench.pipeline import run

    # the fast test budget trains 3 optimizer steps
    result = run(make_config("method=imi_dpo", "method.warmup_steps=3"))
    record = records.read_record(result.directory)
    assert record["status"] == "failed" and "method.warmup_steps=3 is not shorter than training" in record["error"]
    assert records.read_record(run(make_config("method=imi_dpo", "method.warmup_steps=2")).directory)["status"] == "completed"


def test_the_difference_pairs_only_the_seeds_both_configurations_have():
    # the base has seeds 0-3, the IMI configuration 0-1: the difference is over seeds 0 and 1 only
    runs = _runs([{"method.name": "dpo", "method.beta": 0.1, "scores": [0.10, 0.20, 0.90, 0.90]},
                  {"method.name": "imi_dpo", "method.beta": 0.1, "scores": [0.15, 0.25], "acting": [0.5, 0.5]}])
    row = imi_action_table(runs, seed_bootstrap(runs, n_boot=200, seed=0), "gold_reward", 0.95).iloc[0]
    assert (row["n_seeds"], row["score"], row["base_score"]) == (2, pytest.approx(0.20), pytest.approx(0.15))
    assert row["delta"] == pytest.approx(0.05)
    one = _runs([{"method.name": "dpo", "method.beta": 0.1, "scores": [0.10, 0.20]},
                 {"method.name": "imi_dpo", "method.beta": 0.1, "scores": [0.15], "acting": [0.5]}])
    row = imi_action_table(one, seed_bootstrap(one, n_boot=200, seed=0), "gold_reward", 0.95).iloc[0]
    assert row["n_seeds"] == 1 and np.isnan(row["delta_ci_low"])  # one shared seed: no interval
    assert row["verdict"] == "no interval: fewer than 2 shared seeds"
