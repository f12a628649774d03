"""Robust DPO (rDPO; Chowdhury et al. 2024, "Provably Robust DPO", arXiv 2403.00409).

loss = [−(1−ε) log σ(βΔ) + ε log σ(−βΔ)] / (1 − 2ε): an unbiased estimate of the clean-label DPO loss
when each label is flipped with probability ε (DESIGN §3; TRL's `loss_type="robust"` with
`label_smoothing=ε`). Pure tensor code.
"""
from __future__ import annotations

import torch.nn.functional as F

from bench.methods.base import LossOutput, Method, Needs, PairLogps
from bench.methods.common import dpo_delta, in_range, positive, reference_rewards


class RobustDPO(Method):
    name = "robust"
    family = "dpo"
    swept = ("beta",)  # ε is the assumed label-flip rate, set from the data, not tuned
    needs = Needs(reference=True)

    def __init__(self, *, beta: float = 0.1, epsilon: float = 0.1) -> None:
        self.beta = positive("beta", beta)
        # The estimator divides by 1 − 2ε: ε must stay below 0.5 (TRL warns outside [0, 0.5)).
        self.epsilon = in_range("epsilon", epsilon, 0.0, 0.5)

    def loss(self, batch: PairLogps) -> LossOutput:
        logits = self.beta * dpo_delta(batch, self.name)
        eps = self.epsilon
        losses = (-(1 - eps) * F.logsigmoid(logits) + eps * F.logsigmoid(-logits)) / (1 - 2 * eps)
        return LossOutput(losses, reference_rewards(batch, self.beta, self.name))
