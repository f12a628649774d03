"""Conservative DPO (cDPO; Mitchell 2023, "A note on DPO with noisy preferences and relationship to IPO").

loss = −(1−ε) log σ(βΔ) − ε log σ(−βΔ): DPO's cross-entropy against labels smoothed by ε, the assumed
probability that a preference label is flipped (DESIGN §3). Older TRL applied this through
`loss_type="sigmoid"` + `label_smoothing`; TRL 1.16's "sigmoid" ignores `label_smoothing` and keeps the
formula only in its "aot" losses (tests/test_trl_parity.py checks against that code). Pure tensor code.
"""
from __future__ import annotations

import torch.nn.functional as F

from bench.methods.base import LossOutput, Method, Needs, PairLogps
from bench.methods.common import dpo_delta, in_range, positive, reference_rewards


class CDPO(Method):
    name = "cdpo"
    family = "dpo"
    swept = ("beta",)  # ε is the assumed label-flip rate, set from the data, not tuned
    needs = Needs(reference=True)

    def __init__(self, *, beta: float = 0.1, epsilon: float = 0.1) -> None:
        self.beta = positive("beta", beta)
        # ε ≥ 0.5 would mean the labels are more likely wrong than right.
        self.epsilon = in_range("epsilon", epsilon, 0.0, 0.5)

    def loss(self, batch: PairLogps) -> LossOutput:
        logits = self.beta * dpo_delta(batch, self.name)
        eps = self.epsilon
        losses = -(1 - eps) * F.logsigmoid(logits) - eps * F.logsigmoid(-logits)
        return LossOutput(losses, reference_rewards(batch, self.beta, self.name))
