"""The intrinsic-mutual-information (IMI) signal and the regulator map of docs/design.md §4.

Pure functions of tensors: `pmi` and `delta_pmi` (always detached: the signal modulates the loss and is never
trained), `batch_delta_pmi` for a `pmi_source`, the signal controls that replace ΔPMI to test what it is
(`regulator_signal`, docs/design.md §4 "Signal controls") and their diagnostics, `regulator_g` (RMiPO's map)
and the warm-up schedule (`warmup_fraction`, `blend`). How g enters each base loss is bench.methods.imi_regulated's.
Imports no trainer, data, model or logging code.
"""
from __future__ import annotations

import torch

from bench.methods.base import PairLogps, PmiSource
from bench.methods.common import average, required


def pmi(conditional_logps: torch.Tensor, marginal_logps: torch.Tensor, token_counts: torch.Tensor) -> torch.Tensor:
    """PMI(y; x) = ā(y | x) − ā(y | ∅) per pair [B], detached (docs/design.md §4).

    `conditional_logps` = s(y | x) and `marginal_logps` = s(y | ∅) are summed log-probs, both averaged
    over `token_counts`, the number of response tokens scored in the conditional pass. When the marginal
    pass scores a different number of tokens (RMiPO's released context leaves the first response token
    unscored), its sum is rescaled to that count first (bench.reference's
    `marginal_per_conditional_token`), so that marginal_logps / token_counts is still ā(y | ∅).
    """
    return average(conditional_logps.detach(), token_counts) - average(marginal_logps.detach(), token_counts)


def delta_pmi(
    chosen_conditional_logps: torch.Tensor,
    rejected_conditional_logps: torch.Tensor,
    chosen_marginal_logps: torch.Tensor,
    rejected_marginal_logps: torch.Tensor,
    chosen_token_counts: torch.Tensor,
    rejected_token_counts: torch.Tensor,
) -> torch.Tensor:
    """ΔPMI = PMI(y_w; x) − PMI(y_l; x) per pair [B], always detached (docs/design.md §4; RMiPO computes it
    under torch.no_grad())."""
    chosen = pmi(chosen_conditional_logps, chosen_marginal_logps, chosen_token_counts)
    rejected = pmi(rejected_conditional_logps, rejected_marginal_logps, rejected_token_counts)
    return (chosen - rejected).detach()


def conditional_logps(batch: PairLogps, pmi_source: PmiSource, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """s(y_w | x), s(y_l | x) from the model the PMI comes from: the live policy's (detached) or the reference's."""
    if pmi_source == "policy":
        return batch.chosen_logps.detach(), batch.rejected_logps.detach()
    why = "pmi_source='reference' takes ā(y | x) from the reference"
    return (required(batch, "reference_chosen_logps", method, why),
            required(batch, "reference_rejected_logps", method, why))


def batch_delta_pmi(batch: PairLogps, pmi_source: PmiSource, method: str) -> torch.Tensor:
    """ΔPMI for a batch, with both PMI terms from one model.

    pmi_source="policy": ā(y | x) from the live policy's log-probs (detached) and ā(y | ∅) from the
    trainer's extra no-grad policy pass (RMiPO's code). pmi_source="reference": both from the frozen
    reference, so the signal is fixed per pair and costs nothing at train time once cached. The
    marginal context (Needs.marginal_context) only changes how the trainer builds the marginal pass.
    """
    why = f"Needs.marginal={pmi_source!r}"
    marginal_chosen = required(batch, "marginal_chosen_logps", method, why)
    marginal_rejected = required(batch, "marginal_rejected_logps", method, why)
    conditional_chosen, conditional_rejected = conditional_logps(batch, pmi_source, method)
    return delta_pmi(
        conditional_chosen,
        conditional_rejected,
        marginal_chosen,
        marginal_rejected,
        batch.chosen_token_counts,
        batch.rejected_token_counts,
    )


# --- signal controls (docs/design.md §4): what the regulator would do with something other than ΔPMI ------------

SIGNALS = ("pmi", "length", "shuffled", "constant", "pmi_residual")
# The shuffle's permutation at optimizer step t comes from a generator seeded with SHUFFLE_SEED + 1 + t (after
# training, SHUFFLE_SEED): a function of the step alone, so a resumed run draws what an uninterrupted one drew,
# and the batch it permutes is already the run seed's.
SHUFFLE_SEED = 20_240_402


def length_statistic(chosen_token_counts: torch.Tensor, rejected_token_counts: torch.Tensor) -> torch.Tensor:
    """1/|y_w| − 1/|y_l| per pair [B] (float64, detached): the length prior ΔPMI is suspected to carry. A mean
    log-prob over |y| tokens has a 1/|y| term (the first token, the end of the sequence), which ΔPMI inherits."""
    chosen = chosen_token_counts.detach().double().clamp(min=1.0)
    rejected = rejected_token_counts.detach().double().clamp(min=1.0)
    return 1.0 / chosen - 1.0 / rejected


def _moments(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch mean and population standard deviation (dividing by B: a batch is the whole population here)."""
    mean = values.mean()
    return mean, (values - mean).pow(2).mean().sqrt()


def length_matched(delta_pmi: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """The length statistic standardised within the batch, then given ΔPMI's batch mean and spread, so the
    regulator sees the same range and only the ordering of the pairs changes. Equal lengths everywhere (no
    spread to standardise) give ΔPMI's mean for every pair."""
    target_mean, target_sd = _moments(delta_pmi.double())
    mean, sd = _moments(length)
    if sd <= 0:
        return torch.full_like(delta_pmi, target_mean.item())
    return (target_mean + target_sd * (length - mean) / sd).to(delta_pmi.dtype)


def shuffled(delta_pmi: torch.Tensor, step: int | None) -> torch.Tensor:
    """ΔPMI moved along a random cycle through the batch: pair order[i] gets the value of pair order[i + 1]. The
    same multiset of values, and (for B ≥ 2) no pair keeps its own, so the signal keeps its distribution and loses
    its pairing."""
    generator = torch.Generator().manual_seed(SHUFFLE_SEED if step is None else SHUFFLE_SEED + 1 + step)
    order = torch.randperm(delta_pmi.numel(), generator=generator).to(delta_pmi.device)
    out = torch.empty_like(delta_pmi)
    out[order] = delta_pmi[order.roll(-1)]
    return out


def length_residual(delta_pmi: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """ΔPMI less its least-squares linear fit on the length statistic within the batch, plus its batch mean: what
    PMI says beyond length, at the same level. No spread in length leaves ΔPMI as it is."""
    values = delta_pmi.double()
    mean, sd = _moments(length)
    if sd <= 0:
        return delta_pmi.clone()
    slope = ((length - mean) * (values - values.mean())).mean() / sd.pow(2)
    return (values - slope * (length - mean)).to(delta_pmi.dtype)


def regulator_signal(signal: str, delta_pmi: torch.Tensor, length: torch.Tensor, step: int | None) -> torch.Tensor:
    """What the regulator map reads (docs/design.md §4): ΔPMI itself ("pmi"), or one of the controls, each
    detached and built from the batch's ΔPMI and length statistic."""
    if signal == "pmi":
        return delta_pmi
    if signal == "length":
        return length_matched(delta_pmi, length)
    if signal == "shuffled":
        return shuffled(delta_pmi, step)
    if signal == "constant":
        return torch.full_like(delta_pmi, delta_pmi.mean().item())
    if signal == "pmi_residual":
        return length_residual(delta_pmi, length)
    raise ValueError(f"method.signal must be one of {SIGNALS}, got {signal!r}")


def correlation(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Pearson correlation of two [B] tensors; None when it is undefined (B < 2 or either has no spread)."""
    a, b = a.detach().double(), b.detach().double()
    if a.numel() < 2:
        return None
    (mean_a, sd_a), (mean_b, sd_b) = _moments(a), _moments(b)
    if sd_a <= 0 or sd_b <= 0:
        return None
    return (((a - mean_a) * (b - mean_b)).mean() / (sd_a * sd_b)).item()


def regulator_g(delta_pmi: torch.Tensor, g_min: float, g_max: float, tau: float) -> torch.Tensor:
    """g = g_min + (g_max − g_min)·exp(−max(0, ΔPMI)/τ) per pair (docs/design.md §4; the design's lo and hi).

    ΔPMI ≤ 0 (the chosen response is no more prompt-specific than the rejected one) gives g = g_max;
    g decays towards g_min as ΔPMI grows. RMiPO's code: g_min = 0.3, g_max = 1.6, τ = 1 (hard-coded there).
    """
    rectified = torch.clamp(delta_pmi.detach(), min=0.0)
    return g_min + (g_max - g_min) * torch.exp(-rectified / tau)


def warmup_fraction(step: int | None, warmup_steps: int) -> float:
    """Share of full regulation at optimizer step `step`: step / warmup_steps, capped at 1; 1 with no
    warm-up. Step 0 is fully neutral, step ≥ warmup_steps fully regulated; step None (after training,
    PairLogps.step) fully regulated."""
    if warmup_steps <= 0 or step is None:
        return 1.0
    return min(1.0, max(0, step) / warmup_steps)


def blend(neutral: float | torch.Tensor, regulated: torch.Tensor, fraction: float) -> torch.Tensor:
    """neutral + fraction·(regulated − neutral): linear warm-up from the unregulated value."""
    return neutral + fraction * (regulated - neutral)


# A pair counts as regulated when the regulator changes its loss gradient by at least this share (relative to
# the larger of the two gradients): 10% is well above float noise and below what a tuned β changes, so a run
# whose regulator reaches few pairs at this threshold is, in effect, its base at the same β (docs/design.md §4).
ACTING_CHANGE = 0.1


def gradient_change(loss_fn, x: torch.Tensor, regulated: tuple, neutral: tuple) -> torch.Tensor:
    """Per item, how much the regulator changes the loss gradient in the base's gap x, in [0, 2]:
    |∂ℓ_reg/∂x − ∂ℓ_base/∂x| / max(|∂ℓ_reg/∂x|, |∂ℓ_base/∂x|), 0 where both are 0.

    `loss_fn(x, beta, margin)` gives per-item base losses; `regulated` and `neutral` are (beta, margin, weight)
    with the regulated (per-item) and the unregulated values. Every base's item loss depends on its own x only
    (KTO's z₀ is detached), so one backward gives every item's derivative. The gradient in x is what the
    regulator changes (a margin shifts where the sigmoid sits, β its slope, a weight its scale), whatever the base.
    """
    with torch.enable_grad():  # also called from evaluation, which runs under no_grad
        gap = x.detach().double().requires_grad_(True)
        grads = []
        for beta, margin, weight in (regulated, neutral):
            beta = beta.detach().double() if torch.is_tensor(beta) else beta
            margin = margin.detach().double() if torch.is_tensor(margin) else margin
            weight = weight.detach().double() if torch.is_tensor(weight) else weight
            (grad,) = torch.autograd.grad((loss_fn(gap, beta, margin) * weight).sum(), gap)
            grads.append(grad)
    change, scale = (grads[0] - grads[1]).abs(), torch.maximum(grads[0].abs(), grads[1].abs())
    return torch.where(scale > 0, change / scale.clamp(min=torch.finfo(scale.dtype).tiny), torch.zeros_like(change))


def quantiles(prefix: str, values: torch.Tensor) -> dict[str, float]:
    """{prefix_p10, prefix_p50, prefix_p90} of a [B] tensor: the batch's spread, beside summary()'s min/mean/max."""
    q = torch.quantile(values.detach().double().flatten(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {f"{prefix}_p10": q[0].item(), f"{prefix}_p50": q[1].item(), f"{prefix}_p90": q[2].item()}
