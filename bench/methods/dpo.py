"""DPO (Rafailov et al. 2023, arXiv 2305.18290): loss = −log σ(β Δ) per pair (docs/design.md §3).

Owns the DPO loss and its hyperparameter check. Also one of the three base losses the IMI regulators
act on (see `bench.methods.imi_regulated`): it exposes its preference gap x = Δ, its neutral margin
(0) and its per-pair loss as a function of (x, β, margin). Pure tensor code.
"""
from __future__ import annotations

import torch

from bench.methods.base import LossOutput, Method, Needs, PairLogps
from bench.methods.common import dpo_delta, logistic_loss, positive, reference_rewards


class DPO(Method):
    name = "dpo"
    family = "dpo"
    swept = ("beta",)
    needs = Needs(reference=True)
    # No margin inside the sigmoid: the value an IMI margin regulator blends from during warm-up.
    neutral_margin = 0.0

    def __init__(self, *, beta: float = 0.1) -> None:
        self.beta = positive("beta", beta)

    def preference_gap(self, batch: PairLogps) -> torch.Tensor:
        """x = Δ = (s(y_w) − s_ref(y_w)) − (s(y_l) − s_ref(y_l)); carries the policy's gradient."""
        return dpo_delta(batch, self.name)

    def pair_loss(self, x: torch.Tensor, beta: float | torch.Tensor, margin: float | torch.Tensor) -> torch.Tensor:
        # DPO paper Eq. 7: −log σ(β Δ); the margin (0 for plain DPO) is in units of Δ.
        return logistic_loss(x, beta, margin)

    def reward_metrics(self, batch: PairLogps) -> dict[str, float]:
        return reference_rewards(batch, self.beta, self.name)

    def loss(self, batch: PairLogps) -> LossOutput:
        losses = self.pair_loss(self.preference_gap(batch), self.beta, self.neutral_margin)
        return LossOutput(losses, self.reward_metrics(batch))
