"""The intrinsic-mutual-information (IMI) signal and the regulator map of docs/design.md §4.

Pure functions of tensors: `pmi` and `delta_pmi` (always detached: the signal modulates the loss and is never
trained), `batch_delta_pmi` for a `pmi_source`, `regulator_g` (RMiPO's map) and the warm-up schedule
(`warmup_fraction`, `blend`). How g enters each base loss is bench.methods.imi_regulated's. Imports no trainer,
data, model or logging code.
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
    if pmi_source == "policy":
        conditional_chosen, conditional_rejected = batch.chosen_logps, batch.rejected_logps
    else:
        why = "pmi_source='reference' takes ā(y | x) from the reference"
        conditional_chosen = required(batch, "reference_chosen_logps", method, why)
        conditional_rejected = required(batch, "reference_rejected_logps", method, why)
    return delta_pmi(
        conditional_chosen,
        conditional_rejected,
        marginal_chosen,
        marginal_rejected,
        batch.chosen_token_counts,
        batch.rejected_token_counts,
    )


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
