"""Every preference-optimization method against values worked out by hand (docs/design.md §3–§4).

The expected numbers are written as plain arithmetic with math.log/exp on three pairs, never by
calling the code under test. Also: config validation, Needs declarations, the YAML files, and that
ΔPMI, reference and marginal log-probs carry no gradient.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml

from bench.methods import Method, Needs, PairLogps, available_methods, build_method, method_info, method_keys
from bench.methods.imi import delta_pmi, pmi, regulator_g, warmup_fraction

CONF = Path(__file__).resolve().parents[1] / "conf" / "method"


def softplus(z: float) -> float:
    """−log σ(−z) = log(1 + e^z); so −log σ(z) = softplus(−z)."""
    return math.log1p(math.exp(z))


def nll_sigmoid(z: float) -> float:
    """−log σ(z)."""
    return softplus(-z)


def t(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


# ---------------------------------------------------------------------------------------------
# The hand batch: three pairs. Summed log-probs s, lengths |y|, reference s_ref, marginal s(y | ∅).
S_W, S_L = [-10.0, -12.0, -8.0], [-14.0, -11.0, -9.0]
LEN_W, LEN_L = [4.0, 5.0, 2.0], [2.0, 3.0, 6.0]
REF_W, REF_L = [-11.0, -12.5, -6.0], [-13.0, -10.0, -10.0]
# Reference marginals (pmi_source=reference): chosen PMI_ref = [1, 0, 2], rejected PMI_ref = [0, 0.5, 0]
MARG_REF_W, MARG_REF_L = [-15.0, -12.5, -10.0], [-13.0, -11.5, -10.0]
# Policy marginals (pmi_source=policy): chosen PMI = (s − m)/|y| = [0.5, −0.2, 1.0]; rejected [0, 1/3, 0.5]
MARG_POL_W, MARG_POL_L = [-12.0, -11.0, -10.0], [-14.0, -12.0, -12.0]

# Δ = (s_w − ref_w) − (s_l − ref_l) by hand
DELTA = [(-10 + 11) - (-14 + 13), (-12 + 12.5) - (-11 + 10), (-8 + 6) - (-9 + 10)]  # [2, 1.5, -3]
# Δ̄ from length-averaged log-ratios
DELTA_BAR = [1 / 4 - (-1) / 2, 0.5 / 5 - (-1) / 3, -2 / 2 - 1 / 6]
# SimPO's x = ā_w − ā_l
X_SIMPO = [-10 / 4 - (-14 / 2), -12 / 5 - (-11 / 3), -8 / 2 - (-9 / 6)]
# ΔPMI with pmi_source=reference: (ref_w/|y_w| − m_w/|y_w|) − (ref_l/|y_l| − m_l/|y_l|)
DPMI_REF = [
    (-11 / 4 + 15 / 4) - (-13 / 2 + 13 / 2),  # 1.0
    (-12.5 / 5 + 12.5 / 5) - (-10 / 3 + 11.5 / 3),  # -0.5
    (-6 / 2 + 10 / 2) - (-10 / 6 + 10 / 6),  # 2.0
]
# ΔPMI with pmi_source=policy: (s_w − m_w)/|y_w| − (s_l − m_l)/|y_l|
DPMI_POL = [(-10 + 12) / 4 - (-14 + 14) / 2, (-12 + 11) / 5 - (-11 + 12) / 3, (-8 + 10) / 2 - (-9 + 12) / 6]


def g_of(dpmi: float, g_min: float = 0.3, g_max: float = 1.6, tau: float = 1.0) -> float:
    return g_min + (g_max - g_min) * math.exp(-max(0.0, dpmi) / tau)


def hand_batch(step: int = 0, requires_grad: bool = False, marginal: str | None = "reference") -> PairLogps:
    marg_w, marg_l = (MARG_REF_W, MARG_REF_L) if marginal == "reference" else (MARG_POL_W, MARG_POL_L)
    tensors = [t(v).requires_grad_(requires_grad) for v in (S_W, S_L)]
    return PairLogps(
        chosen_logps=tensors[0],
        rejected_logps=tensors[1],
        chosen_token_counts=t(LEN_W),
        rejected_token_counts=t(LEN_L),
        reference_chosen_logps=t(REF_W),
        reference_rejected_logps=t(REF_L),
        marginal_chosen_logps=t(marg_w) if marginal else None,
        marginal_rejected_logps=t(marg_l) if marginal else None,
        step=step,
    )


def assert_losses(out, expected: list[float]) -> None:
    torch.testing.assert_close(out.losses, t(expected), atol=1e-12, rtol=0)


def cfg(name: str, **overrides) -> dict:
    """The shipped YAML for `name` with overrides: tests use the same defaults users get."""
    values = yaml.safe_load((CONF / f"{name}.yaml").read_text())
    values.update(overrides)
    return values


def test_hand_quantities_are_what_the_comments_say():
    assert DELTA == [2.0, 1.5, -3.0]
    assert DPMI_REF == [1.0, -0.5, 2.0]
    assert DPMI_POL == pytest.approx([0.5, -0.2 - 1 / 3, 1.0 - 0.5])


# ---------------------------------------------------------------------------------------------
# Base losses


def test_dpo_loss_and_rewards():
    out = build_method(cfg("dpo"))(hand_batch(marginal=None))
    assert_losses(out, [nll_sigmoid(0.1 * 2.0), nll_sigmoid(0.1 * 1.5), nll_sigmoid(0.1 * -3.0)])
    # TRL rewards: β(s − s_ref); chosen [0.1, 0.05, -0.2], rejected [-0.1, -0.1, 0.1]
    assert out.metrics["rewards/chosen"] == pytest.approx((0.1 + 0.05 - 0.2) / 3)
    assert out.metrics["rewards/rejected"] == pytest.approx((-0.1 - 0.1 + 0.1) / 3)
    assert out.metrics["rewards/margins"] == pytest.approx(0.1 * (2.0 + 1.5 - 3.0) / 3)
    assert out.metrics["rewards/accuracies"] == pytest.approx(2 / 3)


def test_cdpo_loss():
    eps, beta = 0.1, 0.1
    out = build_method(cfg("cdpo"))(hand_batch(marginal=None))
    expected = [(1 - eps) * nll_sigmoid(beta * d) + eps * nll_sigmoid(-beta * d) for d in (2.0, 1.5, -3.0)]
    assert_losses(out, expected)
    assert expected[0] == pytest.approx(0.9 * math.log1p(math.exp(-0.2)) + 0.1 * math.log1p(math.exp(0.2)))


def test_robust_loss():
    eps = 0.2
    out = build_method(cfg("robust", epsilon=eps))(hand_batch(marginal=None))
    # [−(1−ε) log σ(βΔ) + ε log σ(−βΔ)] / (1 − 2ε)
    expected = [
        ((1 - eps) * nll_sigmoid(0.1 * d) - eps * nll_sigmoid(-0.1 * d)) / (1 - 2 * eps) for d in (2.0, 1.5, -3.0)
    ]
    assert_losses(out, expected)
    assert expected[2] == pytest.approx((0.8 * math.log1p(math.exp(0.3)) - 0.2 * math.log1p(math.exp(-0.3))) / 0.6)


def test_hinge_loss_both_regions():
    out = build_method(cfg("hinge", beta=0.5))(hand_batch(marginal=None))
    # max(0, 1 − 0.5·Δ) for Δ = 2, 1.5, −3
    assert_losses(out, [0.0, 0.25, 2.5])


def test_ipo_averaged_and_summed():
    out = build_method(cfg("ipo"))(hand_batch(marginal=None))
    # Δ̄ = [0.75, 0.1 + 1/3, −1 − 1/6]; target 1/(2·0.1) = 5
    assert DELTA_BAR == pytest.approx([0.75, 0.1 + 1 / 3, -1 - 1 / 6])
    assert_losses(out, [(0.75 - 5) ** 2, (0.1 + 1 / 3 - 5) ** 2, (-1 - 1 / 6 - 5) ** 2])
    summed = build_method(cfg("ipo", average_logps=False))(hand_batch(marginal=None))
    assert_losses(summed, [(2 - 5) ** 2, (1.5 - 5) ** 2, (-3 - 5) ** 2])
    # rewards stay TRL's β(s − s_ref), summed
    assert out.metrics["rewards/margins"] == pytest.approx(0.1 * 0.5 / 3)


def test_simpo_loss_and_rewards():
    out = build_method(cfg("simpo"))(hand_batch(marginal=None))
    # x = ā_w − ā_l = [4.5, 19/15, −2.5]; loss −log σ(2(x − 0.5)) = −log σ(2x − 1)
    assert X_SIMPO == pytest.approx([4.5, 19 / 15, -2.5])
    assert_losses(out, [nll_sigmoid(2 * 4.5 - 1), nll_sigmoid(2 * 19 / 15 - 1), nll_sigmoid(2 * -2.5 - 1)])
    # SimPO's reward β·ā: chosen 2·[−2.5, −2.4, −4], rejected 2·[−7, −11/3, −1.5]
    assert out.metrics["rewards/chosen"] == pytest.approx(2 * (-2.5 - 2.4 - 4) / 3)
    assert out.metrics["rewards/rejected"] == pytest.approx(2 * (-7 - 11 / 3 - 1.5) / 3)
    assert out.metrics["rewards/accuracies"] == pytest.approx(2 / 3)


# ---------------------------------------------------------------------------------------------
# The IMI signal


def test_pmi_and_delta_pmi_from_known_logps():
    # ā(y|x) = −10/4 = −2.5, ā(y|∅) = −14/4 = −3.5 → PMI 1.0
    assert pmi(t([-10.0]), t([-14.0]), t([4.0])).item() == pytest.approx(1.0)
    # rejected: ā(y|x) = −6/3, ā(y|∅) = −5/3 → PMI −1/3; ΔPMI = 1 + 1/3
    d = delta_pmi(t([-10.0]), t([-6.0]), t([-14.0]), t([-5.0]), t([4.0]), t([3.0]))
    assert d.item() == pytest.approx(1 + 1 / 3)
    # swapping chosen and rejected flips the sign
    assert delta_pmi(t([-6.0]), t([-10.0]), t([-5.0]), t([-14.0]), t([3.0]), t([4.0])).item() == pytest.approx(-4 / 3)


def test_delta_pmi_is_detached_even_from_grad_inputs():
    inputs = [t([-10.0]).requires_grad_() for _ in range(4)]
    d = delta_pmi(*inputs, t([4.0]), t([3.0]))
    assert not d.requires_grad
    assert not pmi(inputs[0], inputs[1], t([2.0])).requires_grad


def test_regulator_g_endpoints_and_shape():
    g = regulator_g(t([-3.0, 0.0, 1.0, 50.0]), 0.3, 1.6, 1.0)
    assert g[0].item() == 1.6 and g[1].item() == 1.6  # ΔPMI ≤ 0 → g_max exactly
    assert g[2].item() == pytest.approx(0.3 + 1.3 * math.exp(-1.0))
    assert g[3].item() == pytest.approx(0.3, abs=1e-15)  # large ΔPMI → lo
    assert regulator_g(t([1.0]), 0.3, 1.6, 2.0).item() == pytest.approx(0.3 + 1.3 * math.exp(-0.5))
    # monotone non-increasing in ΔPMI
    grid = regulator_g(torch.linspace(-2, 10, 50, dtype=torch.float64), 0.3, 1.6, 1.0)
    assert (grid[1:] <= grid[:-1]).all()


def test_warmup_fraction():
    assert warmup_fraction(0, 0) == 1.0 and warmup_fraction(7, 0) == 1.0
    assert [warmup_fraction(s, 4) for s in (0, 1, 2, 4, 9)] == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert warmup_fraction(None, 4) == 1.0  # after training (evaluation): fully regulated


# ---------------------------------------------------------------------------------------------
# IMI-regulated losses

G_REF = [g_of(d) for d in DPMI_REF]  # [0.3 + 1.3e^-1, 1.6, 0.3 + 1.3e^-2]


def test_imi_dpo_margin_ratio_and_absolute():
    out = build_method(cfg("imi_dpo"))(hand_batch())
    # ratio: −log σ(β(Δ − g))
    assert_losses(out, [nll_sigmoid(0.1 * (d - g)) for d, g in zip(DELTA, G_REF)])
    assert out.metrics["imi/delta_pmi_mean"] == pytest.approx((1.0 - 0.5 + 2.0) / 3)
    assert out.metrics["imi/delta_pmi_min"] == pytest.approx(-0.5)
    assert out.metrics["imi/delta_pmi_max"] == pytest.approx(2.0)
    assert out.metrics["imi/effective_margin_max"] == pytest.approx(1.6)
    assert out.metrics["imi/effective_margin_min"] == pytest.approx(0.3 + 1.3 * math.exp(-2.0))
    absolute = build_method(cfg("imi_dpo", margin_units="absolute"))(hand_batch())
    # absolute: −log σ(βΔ − g)
    assert_losses(absolute, [nll_sigmoid(0.1 * d - g) for d, g in zip(DELTA, G_REF)])


def test_imi_dpo_beta_regulator():
    out = build_method(cfg("imi_dpo", regulator="beta"))(hand_batch())
    assert_losses(out, [nll_sigmoid(0.1 * g * d) for d, g in zip(DELTA, G_REF)])
    assert out.metrics["imi/effective_beta_max"] == pytest.approx(0.16)


def test_imi_dpo_weight_regulator_has_mean_one():
    out = build_method(cfg("imi_dpo", regulator="weight"))(hand_batch())
    g_mean = sum(G_REF) / 3
    assert_losses(out, [nll_sigmoid(0.1 * d) * g / g_mean for d, g in zip(DELTA, G_REF)])
    assert out.metrics["imi/effective_weight_mean"] == pytest.approx(1.0)
    assert out.metrics["imi/effective_weight_max"] == pytest.approx(1.6 / g_mean)


@pytest.mark.parametrize("regulator", ["margin", "beta", "weight"])
def test_warmup_blends_from_the_unregulated_loss(regulator):
    method = build_method(cfg("imi_dpo", regulator=regulator, warmup_steps=4))
    dpo = build_method(cfg("dpo"))
    # step 0: exactly DPO
    torch.testing.assert_close(method(hand_batch(step=0)).losses, dpo(hand_batch(marginal=None)).losses)
    # step 1 of 4: a quarter of the way to full regulation
    g_mean = sum(G_REF) / 3
    if regulator == "margin":
        expected = [nll_sigmoid(0.1 * (d - 0.25 * g)) for d, g in zip(DELTA, G_REF)]
    elif regulator == "beta":
        expected = [nll_sigmoid(0.1 * (0.75 + 0.25 * g) * d) for d, g in zip(DELTA, G_REF)]
    else:
        expected = [nll_sigmoid(0.1 * d) * (0.75 + 0.25 * g / g_mean) for d, g in zip(DELTA, G_REF)]
    out = method(hand_batch(step=1))
    assert_losses(out, expected)
    assert out.metrics["imi/warmup_fraction"] == 0.25
    # at and after warmup_steps: full regulation
    full = build_method(cfg("imi_dpo", regulator=regulator))(hand_batch())
    torch.testing.assert_close(method(hand_batch(step=4)).losses, full.losses)
    torch.testing.assert_close(method(hand_batch(step=40)).losses, full.losses)


def test_imi_ipo_margin_shifts_the_target():
    out = build_method(cfg("imi_ipo"))(hand_batch())
    # (Δ̄ − g − 1/(2β))² with g in units of Δ̄
    assert_losses(out, [(db - g - 5) ** 2 for db, g in zip(DELTA_BAR, G_REF)])
    absolute = build_method(cfg("imi_ipo", margin_units="absolute"))(hand_batch())
    # absolute: g is in logit units, so it shifts Δ̄ by g/β
    assert_losses(absolute, [(db - g / 0.1 - 5) ** 2 for db, g in zip(DELTA_BAR, G_REF)])
    beta = build_method(cfg("imi_ipo", regulator="beta"))(hand_batch())
    assert_losses(beta, [(db - 1 / (2 * 0.1 * g)) ** 2 for db, g in zip(DELTA_BAR, G_REF)])


def test_imi_simpo_regulators_and_warmup():
    out = build_method(cfg("imi_simpo"))(hand_batch())
    assert_losses(out, [nll_sigmoid(2 * (x - g)) for x, g in zip(X_SIMPO, G_REF)])
    # beta regulator keeps γ/β = 0.5: −log σ(2g(x − 0.5))
    beta = build_method(cfg("imi_simpo", regulator="beta"))(hand_batch())
    assert_losses(beta, [nll_sigmoid(2 * g * (x - 0.5)) for x, g in zip(X_SIMPO, G_REF)])
    # warm-up starts from SimPO's own γ/β = 0.5 and is half-way at step 5 of 10
    warm = build_method(cfg("imi_simpo", warmup_steps=10))
    torch.testing.assert_close(warm(hand_batch(step=0)).losses, build_method(cfg("simpo"))(hand_batch()).losses)
    half_way = [nll_sigmoid(2 * (x - (0.5 * 0.5 + 0.5 * g))) for x, g in zip(X_SIMPO, G_REF)]
    assert_losses(warm(hand_batch(step=5)), half_way)


def test_imi_policy_source_uses_detached_policy_logps():
    out = build_method(cfg("imi_simpo", pmi_source="policy"))(hand_batch(marginal="policy"))
    g_pol = [g_of(d) for d in DPMI_POL]
    assert_losses(out, [nll_sigmoid(2 * (x - g)) for x, g in zip(X_SIMPO, g_pol)])
    assert out.metrics["imi/delta_pmi_max"] == pytest.approx(0.5)


# ---------------------------------------------------------------------------------------------
# RMiPO


def test_rmipo_margin_in_both_units():
    g_pol = [g_of(d) for d in DPMI_POL]  # ΔPMI = [0.5, −8/15, 0.5]
    assert g_pol[1] == 1.6
    out = build_method(cfg("rmipo"))(hand_batch(marginal="policy"))
    # ratio (their code): −log σ(β(ā_w − ā_l − g)), β = 2
    assert_losses(out, [nll_sigmoid(2 * (x - g)) for x, g in zip(X_SIMPO, g_pol)])
    assert out.metrics["imi/effective_margin_mean"] == pytest.approx(sum(g_pol) / 3)
    absolute = build_method(cfg("rmipo", margin_units="absolute"))(hand_batch(marginal="policy"))
    # absolute: −log σ(β(ā_w − ā_l) − g)
    assert_losses(absolute, [nll_sigmoid(2 * x - g) for x, g in zip(X_SIMPO, g_pol)])
    # first pair by hand: x = 4.5, ΔPMI = 0.5 → g = 0.3 + 1.3·e^−0.5
    assert absolute.losses[0].item() == pytest.approx(math.log1p(math.exp(-(9.0 - 0.3 - 1.3 * math.exp(-0.5)))))
    # SimPO-style rewards β·ā
    assert out.metrics["rewards/chosen"] == pytest.approx(2 * (-2.5 - 2.4 - 4) / 3)


def test_rmipo_custom_range_and_authors_context():
    out = build_method(cfg("rmipo", g_min=0.5, g_max=1.0))(hand_batch(marginal="policy"))
    g = [0.5 + 0.5 * math.exp(-max(0.0, d)) for d in DPMI_POL]
    assert_losses(out, [nll_sigmoid(2 * (x - gi)) for x, gi in zip(X_SIMPO, g)])
    # "authors" changes only the marginal pass the trainer runs (tests/test_marginal.py checks that
    # pass and its rescaling): here, that the method asks the trainer for it
    assert build_method(cfg("rmipo")).needs.marginal_context == "bos"
    authors = build_method(cfg("rmipo", marginal_context="authors"))
    assert authors.needs == Needs(reference=False, marginal="policy", marginal_context="authors")


def test_rmipo_and_imi_simpo_with_policy_source_both_give_the_design_loss():
    """docs/design.md §4 on two fresh pairs, each number by hand: ā = s/|y|, PMI = (s − s(y | ∅))/|y|,
    g = 0.3 + 1.3·exp(−max(0, ΔPMI)), loss = −log σ(2(ā_w − ā_l − g)). Both methods must give it, not
    merely agree with each other (they share one class)."""
    # pair 1: ā_w = −6/3 = −2, ā_l = −12/4 = −3; PMI_w = (−6 + 9)/3 = 1, PMI_l = (−12 + 12)/4 = 0
    #         ΔPMI = 1 → g = 0.3 + 1.3/e; z = 2(1 − g)
    # pair 2: ā_w = −10/5 = −2, ā_l = −3/2; PMI_w = (−10 + 5)/5 = −1, PMI_l = (−3 + 4)/2 = 0.5
    #         ΔPMI = −1.5 → g = 1.6 (g_max); z = 2(−0.5 − 1.6) = −4.2
    expected = [math.log1p(math.exp(-2 * (1 - (0.3 + 1.3 / math.e)))), math.log1p(math.exp(4.2))]
    assert expected[1] == pytest.approx(4.2149, abs=1e-4)
    zeros = t([0.0, 0.0])
    for config in (cfg("rmipo"), cfg("imi_simpo", pmi_source="policy")):
        batch = PairLogps(t([-6.0, -10.0]), t([-12.0, -3.0]), t([3.0, 5.0]), t([4.0, 2.0]), zeros, zeros,
                          marginal_chosen_logps=t([-9.0, -5.0]), marginal_rejected_logps=t([-12.0, -4.0]))
        out = build_method(config)(batch)
        assert_losses(out, expected)
        assert out.metrics["imi/delta_pmi_mean"] == pytest.approx((1 - 1.5) / 2), config["name"]


# ---------------------------------------------------------------------------------------------
# β-DPO


def _beta_dpo_batch(delta: list[float]) -> PairLogps:
    """Pairs whose Δ is `delta`: s_w = Δ, everything else 0."""
    zeros = t([0.0] * len(delta))
    ones = t([1.0] * len(delta))
    return PairLogps(t(delta), zeros, ones, ones, zeros, zeros)


def test_beta_dpo_running_mean_and_beta_over_two_steps():
    method = build_method(cfg("beta_dpo", rho=0.0))  # keep every pair: no randomness
    # step 1: Δ = [2, 1.5, −3]; mean 1/6, unbiased std sqrt(Σ(Δ − 1/6)² / 2)
    m1 = (2 + 1.5 - 3) / 3
    sd1 = math.sqrt(((2 - m1) ** 2 + (1.5 - m1) ** 2 + (-3 - m1) ** 2) / 2)
    M0, S0 = 0.1 * m1, 0.1 * sd1  # 0.9·0 + 0.1·batch
    beta1 = 0.1 * (1 + 0.6 * (m1 - M0))
    out = method(_beta_dpo_batch([2.0, 1.5, -3.0]))
    assert method.gap_mean == pytest.approx(M0) and method.gap_std == pytest.approx(S0)
    assert out.metrics["beta_dpo/beta"] == pytest.approx(beta1)
    assert out.metrics["beta_dpo/kept_fraction"] == 1.0
    assert_losses(out, [nll_sigmoid(beta1 * d) for d in (2.0, 1.5, -3.0)])
    # step 2: Δ = [4, 0, 1]; mean 5/3, std sqrt(((4−5/3)² + (5/3)² + (2/3)²)/2)
    m2 = 5 / 3
    sd2 = math.sqrt(((4 - m2) ** 2 + m2**2 + (1 - m2) ** 2) / 2)
    M0, S0 = 0.9 * M0 + 0.1 * m2, 0.9 * S0 + 0.1 * sd2
    beta2 = 0.1 * (1 + 0.6 * (m2 - M0))
    out = method(_beta_dpo_batch([4.0, 0.0, 1.0]))
    assert method.gap_mean == pytest.approx(M0) and method.gap_std == pytest.approx(S0)
    assert out.metrics["beta_dpo/beta"] == pytest.approx(beta2)
    assert_losses(out, [nll_sigmoid(beta2 * d) for d in (4.0, 0.0, 1.0)])


def test_beta_dpo_filters_the_outlier_and_averages_over_kept_pairs():
    torch.manual_seed(0)
    method = build_method(cfg("beta_dpo", a=0.2))  # ρ = 0.2: keep ⌊5 · 0.8⌋ = 4 of 5
    delta = [0.1, 0.0, -0.1, 0.05, 100.0]
    out = method(_beta_dpo_batch(delta))
    # M₀ = 0.1·20.01 = 2.001, σ₀ = 0.1·std ≈ 4.47: the outlier sits ~22σ₀ away, weight ≈ e^-240 → floor
    assert out.metrics["beta_dpo/kept_fraction"] == pytest.approx(0.8)
    kept = [0.1, 0.0, -0.1, 0.05]
    batch_gap = sum(kept) / 4
    beta = 0.1 * (1 + 0.2 * (batch_gap - 0.1 * sum(delta) / 5))  # 0.1·(1 + 0.2·(0.0125 − 2.001)) > 1e-3
    assert out.metrics["beta_dpo/batch_gap"] == pytest.approx(batch_gap)
    assert out.metrics["beta_dpo/beta"] == pytest.approx(beta)
    # per-pair losses scaled by B / kept so the trainer's mean is the mean over kept pairs
    assert_losses(out, [nll_sigmoid(beta * d) * 5 / 4 for d in kept] + [0.0])
    assert out.losses.mean().item() == pytest.approx(sum(nll_sigmoid(beta * d) for d in kept) / 4)


def test_beta_dpo_clamps_beta_and_freezes_state_without_grad():
    method = build_method(cfg("beta_dpo", rho=0.0, a=100.0))
    out = method(_beta_dpo_batch([-5.0, -4.0]))  # β₀(1 + 100·(−4.5 + 0.45)) < 0 → clamp
    assert out.metrics["beta_dpo/beta"] == pytest.approx(1e-3)
    state = method.state_dict()
    with torch.no_grad():
        method(_beta_dpo_batch([50.0, 60.0]))
    assert method.state_dict() == state
    fresh = build_method(cfg("beta_dpo"))
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state


# ---------------------------------------------------------------------------------------------
# Config: YAML files, registry, validation


def test_every_method_has_a_yaml_whose_keys_and_values_are_the_code_defaults():
    yaml_names = sorted(p.stem for p in CONF.glob("*.yaml"))
    assert yaml_names == available_methods()
    for name in available_methods():
        values = cfg(name)
        assert values.pop("name") == name
        assert list(values) == method_keys(name), name
        # the published defaults (the constructors' keyword defaults) are the documented YAML values
        assert values == method_info(name)["defaults"], name
        assert isinstance(build_method(cfg(name)), Method)


def test_method_info_is_what_a_record_stores_about_a_method():
    assert method_info("dpo") == {"family": "dpo", "imi": False, "defaults": {"beta": 0.1}, "swept": ["beta"]}
    assert method_info("simpo")["swept"] == ["beta", "gamma_beta_ratio"]
    # the IMI variants keep their base loss's family and hyperparameters, then the regulator's
    imi_ipo = method_info("imi_ipo")
    assert (imi_ipo["family"], imi_ipo["imi"], imi_ipo["swept"]) == ("ipo", True, [])
    assert list(imi_ipo["defaults"])[:2] == ["beta", "average_logps"] and imi_ipo["defaults"]["g_max"] == 1.6
    assert method_info("rmipo")["family"] == "simpo"
    for name in available_methods():
        info = method_info(name)
        assert json.loads(json.dumps(info)) == info, f"{name}: method_info must be plain JSON for the record"
        assert info["imi"] == (info["swept"] == []), f"{name}: IMI methods are never tuned, baselines are"
        assert set(info["swept"]) <= set(info["defaults"]), name


def test_the_registry_finds_a_new_method_in_its_module_and_ignores_other_subclasses():
    # a Method subclass outside bench.methods (like this one) is not a method users can pick
    class Outsider(Method):
        name = "outsider"
        family = "dpo"

    assert "outsider" not in available_methods()
    with pytest.raises(ValueError, match="not a known method"):
        method_info("outsider")


def test_every_yaml_key_is_commented():
    for path in CONF.glob("*.yaml"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            if line and not line.startswith("#") and not line.startswith("name:"):
                # a key carries a comment directly above it, or shares one with the key above it
                j = i - 1
                while j >= 0 and not lines[j].startswith("#") and ":" in lines[j] and not lines[j].startswith("name:"):
                    j -= 1
                assert j >= 0 and lines[j].startswith("#"), f"{path.name}: {line!r} has no comment"


@pytest.mark.parametrize(
    "config, message",
    [
        ({"name": "dpo", "beta": -1.0}, r"method\.beta must be > 0, got -1\.0"),
        ({"name": "dpo", "beta": 0}, r"method\.beta must be > 0"),
        ({"name": "dpo", "beta": "0.1"}, r"method\.beta must be a finite number"),
        ({"name": "dpo", "beta": True}, r"method\.beta must be a finite number"),
        ({"name": "dpo", "beta": float("nan")}, r"method\.beta must be a finite number"),
        ({"name": "dpo", "beta": 0.1, "gamma": 1.0}, r"method\.gamma is not a key of method 'dpo'"),
        ({"name": "cdpo", "beta": 0.1}, r"method\.epsilon is missing"),
        ({"name": "robust", "beta": 0.1, "epsilon": 0.5}, r"method\.epsilon must lie in \[0\.0, 0\.5\)"),
        ({"name": "ipo", "beta": 0.1, "average_logps": "yes"}, r"method\.average_logps must be true or false"),
        ({"name": "simpo", "beta": 2.0, "gamma_beta_ratio": -0.1}, r"method\.gamma_beta_ratio must be >= 0"),
        ({"name": "beta_dpo", "beta": 0.1, "a": 0.6, "rho": 1.0, "momentum": 0.9}, r"method\.rho must lie in"),
        ({"name": "nope"}, r"method\.name='nope' is not a known method; available methods: \[.*'dpo'.*\]"),
        ({"beta": 0.1}, r"method\.name is missing"),
    ],
)
def test_config_errors_name_the_key(config, message):
    with pytest.raises(ValueError, match=message):
        build_method(config)


@pytest.mark.parametrize(
    "name, overrides, message",
    [
        ("rmipo", {"g_min": 2.0, "g_max": 1.0}, r"method\.g_min must be <= method\.g_max.*g_min=2\.0 > g_max=1\.0"),
        ("rmipo", {"g_min": -0.1}, r"method\.g_min must be >= 0"),
        ("rmipo", {"beta": -2.0}, r"method\.beta must be > 0"),
        ("rmipo", {"margin_units": "logit"}, r"method\.margin_units must be one of \['ratio', 'absolute'\]"),
        ("rmipo", {"marginal_context": "none"}, r"method\.marginal_context must be one of"),
        ("imi_dpo", {"g_min": 2.0}, r"method\.g_min must be <= method\.g_max"),
        ("imi_dpo", {"lo": 0.3}, r"method\.lo is not a key of method 'imi_dpo'"),
        ("imi_dpo", {"tau": 0.0}, r"method\.tau must be > 0"),
        ("imi_dpo", {"regulator": "scale"}, r"method\.regulator must be one of \['margin', 'beta', 'weight'\]"),
        ("imi_dpo", {"regulator": "beta", "g_min": 0.0}, r"method\.g_min must be > 0"),
        ("imi_ipo", {"pmi_source": "sft"}, r"method\.pmi_source must be one of \['policy', 'reference'\]"),
        ("imi_simpo", {"warmup_steps": -1}, r"method\.warmup_steps must be an integer >= 0"),
        ("imi_simpo", {"warmup_steps": 2.5}, r"method\.warmup_steps must be an integer >= 0"),
    ],
)
def test_imi_config_errors_name_the_key(name, overrides, message):
    with pytest.raises(ValueError, match=message):
        build_method(cfg(name, **overrides))


def test_build_method_accepts_omegaconf():
    from omegaconf import OmegaConf

    method = build_method(OmegaConf.create(cfg("imi_ipo")))
    assert method.name == "imi_ipo" and method.base.beta == 0.1


# ---------------------------------------------------------------------------------------------
# Needs: the trainer computes only what a method declares


@pytest.mark.parametrize(
    "config, needs",
    [
        (cfg("dpo"), Needs(reference=True)),
        (cfg("cdpo"), Needs(reference=True)),
        (cfg("robust"), Needs(reference=True)),
        (cfg("ipo"), Needs(reference=True)),
        (cfg("hinge"), Needs(reference=True)),
        (cfg("beta_dpo"), Needs(reference=True)),
        (cfg("simpo"), Needs()),
        (cfg("rmipo"), Needs(reference=False, marginal="policy", marginal_context="bos")),
        (cfg("rmipo", marginal_context="authors"), Needs(marginal="policy", marginal_context="authors")),
        (cfg("imi_dpo"), Needs(reference=True, marginal="reference")),
        (cfg("imi_dpo", pmi_source="policy"), Needs(reference=True, marginal="policy")),
        (cfg("imi_ipo"), Needs(reference=True, marginal="reference")),
        (cfg("imi_simpo"), Needs(reference=True, marginal="reference")),
        (cfg("imi_simpo", pmi_source="policy"), Needs(reference=False, marginal="policy")),
    ],
    ids=lambda v: str(v),
)
def test_needs(config, needs):
    assert build_method(config).needs == needs


@pytest.mark.parametrize(
    "config, batch_kwargs, field",
    [
        (cfg("dpo"), {"marginal": None}, "reference_chosen_logps"),
        (cfg("rmipo"), {"marginal": None}, "marginal_chosen_logps"),
        (cfg("imi_simpo"), {"marginal": None}, "marginal_chosen_logps"),
    ],
)
def test_missing_tensor_names_the_field(config, batch_kwargs, field):
    batch = hand_batch(**batch_kwargs)
    if field == "reference_chosen_logps":
        batch.reference_chosen_logps = None
    with pytest.raises(ValueError, match=rf"needs PairLogps\.{field}"):
        build_method(config)(batch)


def test_simpo_style_reference_source_needs_reference_logps():
    batch = hand_batch()
    batch.reference_chosen_logps = batch.reference_rejected_logps = None
    build_method(cfg("imi_simpo", pmi_source="policy"))(hand_batch(marginal="policy"))  # fine without
    with pytest.raises(ValueError, match=r"reference_chosen_logps.*pmi_source='reference'"):
        build_method(cfg("imi_simpo"))(batch)


# ---------------------------------------------------------------------------------------------
# Gradients: only the policy's chosen/rejected log-probs are trained


# the paired methods (KTO's unpaired batches: tests/test_kto.py)
ALL_CONFIGS = [cfg(name) for name in available_methods() if not build_method(cfg(name)).needs.unpaired] + [
    cfg(base, regulator=reg, pmi_source=src, warmup_steps=2)
    for base in ("imi_dpo", "imi_ipo", "imi_simpo")
    for reg in ("margin", "beta", "weight")
    for src in ("policy", "reference")
] + [cfg("rmipo", margin_units="absolute", marginal_context="authors")]


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda c: "-".join(str(v) for v in c.values()))
def test_gradient_reaches_only_policy_logps_and_metrics_are_floats(config):
    method = build_method(config)
    marginal = method.needs.marginal
    batch = hand_batch(step=1, marginal=marginal or "reference")
    frozen = [
        batch.reference_chosen_logps,
        batch.reference_rejected_logps,
        batch.marginal_chosen_logps,
        batch.marginal_rejected_logps,
        batch.chosen_token_counts,
        batch.rejected_token_counts,
    ]
    for tensor in [batch.chosen_logps, batch.rejected_logps, *frozen]:
        tensor.requires_grad_(True)
    out = method(batch)
    assert out.losses.shape == (3,)
    out.losses.sum().backward()
    assert batch.chosen_logps.grad is not None and batch.chosen_logps.grad.abs().sum() > 0
    assert batch.rejected_logps.grad is not None and batch.rejected_logps.grad.abs().sum() > 0
    for tensor in frozen:
        assert tensor.grad is None
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert key in out.metrics
    assert all(type(v) is float for v in out.metrics.values()), out.metrics


def test_policy_source_delta_pmi_carries_no_gradient():
    """With pmi_source=policy, ΔPMI is built from the trained log-probs; its gradient must still be
    the SimPO gradient with g held fixed: ∂/∂s_w −log σ(β(ā_w − ā_l − g)) = −β(1 − σ(z))/|y_w|."""
    batch = hand_batch(marginal="policy", requires_grad=True)
    build_method(cfg("rmipo"))(batch).losses.sum().backward()
    g_pol = [g_of(d) for d in DPMI_POL]
    z = [2 * (x - g) for x, g in zip(X_SIMPO, g_pol)]
    sig = [1 / (1 + math.exp(-zi)) for zi in z]
    expected_w = [-2 * (1 - s) / n for s, n in zip(sig, LEN_W)]
    expected_l = [2 * (1 - s) / n for s, n in zip(sig, LEN_L)]
    torch.testing.assert_close(batch.chosen_logps.grad, t(expected_w), atol=1e-12, rtol=0)
    torch.testing.assert_close(batch.rejected_logps.grad, t(expected_l), atol=1e-12, rtol=0)


def test_beta_dpo_beta_carries_no_gradient():
    """β is built from Δ but detached: the gradient is DPO's at that fixed β, −β(1 − σ(βΔ))."""
    method = build_method(cfg("beta_dpo", rho=0.0))
    batch = _beta_dpo_batch([2.0, 1.5, -3.0])
    batch.chosen_logps.requires_grad_(True)
    out = method(batch)
    out.losses.sum().backward()
    # first step from M0 = 0: batch mean m = 1/6, M0 ← 0.1·m, β = β₀(1 + a(m − M0)) = 0.1(1 + 0.6·0.9/6)
    beta = 0.1 * (1 + 0.6 * 0.9 / 6)
    assert out.metrics["beta_dpo/beta"] == pytest.approx(beta)
    expected = [-beta * (1 - 1 / (1 + math.exp(-beta * d))) for d in (2.0, 1.5, -3.0)]
    torch.testing.assert_close(batch.chosen_logps.grad, t(expected), atol=1e-12, rtol=0)
