"""Robust DPO (rDPO; Chowdhury et al. 2024, "Provably Robust DPO", arXiv 2403.00409).

loss = [−(1−ε) log σ(βΔ) + ε log σ(−βΔ)] / (1 − 2ε): an unbiased estimate of the clean-label DPO loss
when each label is flipped with probability ε (docs/design.md §3; TRL's `loss_type="robust"` with
`label_smoothing=ε`). Pure tensor code.
"""
from __future__ import annotations

from bench.methods.base import LossOutput, PairLogps
from bench.methods.cdpo import LabelNoiseDPO


class RobustDPO(LabelNoiseDPO):
    name = "robust"

    def loss(self, batch: PairLogps) -> LossOutput:
        as_given, flipped = self.terms(batch)
        eps = self.epsilon
        losses = (-(1 - eps) * as_given + eps * flipped) / (1 - 2 * eps)
        return LossOutput(losses, self.rewards(batch))
