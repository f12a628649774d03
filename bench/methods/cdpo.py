"""Conservative DPO (cDPO; Mitchell 2023, "A note on DPO with noisy preferences and relationship to IPO").

loss = −(1−ε) log σ(βΔ) − ε log σ(−βΔ): DPO's cross-entropy against labels smoothed by ε, the assumed
probability that a preference label is flipped (docs/design.md §3). Older TRL applied this through
`loss_type="sigmoid"` + `label_smoothing`; TRL 1.16's "sigmoid" ignores `label_smoothing` and keeps the
formula only in its "aot" losses (tests/test_trl_parity.py checks against that code). Also `LabelNoiseDPO`,
the hyperparameters, needs and rewards cdpo shares with robust (bench.methods.robust). Pure tensor code.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bench.methods.base import LossOutput, Method, Needs, PairLogps
from bench.methods.common import dpo_delta, in_range, positive, reference_rewards


class LabelNoiseDPO(Method):
    """DPO's logit βΔ under labels flipped with probability ε: what cdpo and robust share (their
    hyperparameters, needs and rewards); each combines the two log-sigmoid terms its own way."""

    family = "dpo"
    swept = ("beta",)  # ε is the assumed label-flip rate, set from the data, not tuned
    needs = Needs(reference=True)

    def __init__(self, *, beta: float = 0.1, epsilon: float = 0.1) -> None:
        self.beta = positive("beta", beta)
        # ε ≥ 0.5 would mean the labels are more likely wrong than right (and robust divides by 1 − 2ε).
        self.epsilon = in_range("epsilon", epsilon, 0.0, 0.5)

    def terms(self, batch: PairLogps) -> tuple[torch.Tensor, torch.Tensor]:
        """(log σ(βΔ), log σ(−βΔ)) per pair: the likelihood of the label as given and as flipped."""
        logits = self.beta * dpo_delta(batch, self.name)
        return F.logsigmoid(logits), F.logsigmoid(-logits)

    def rewards(self, batch: PairLogps) -> dict[str, float]:
        return reference_rewards(batch, self.beta, self.name)


class CDPO(LabelNoiseDPO):
    name = "cdpo"

    def loss(self, batch: PairLogps) -> LossOutput:
        as_given, flipped = self.terms(batch)
        losses = -(1 - self.epsilon) * as_given - self.epsilon * flipped
        return LossOutput(losses, self.rewards(batch))
