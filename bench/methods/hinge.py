"""Hinge loss on the DPO logit (SLiC-HF calibration loss; Zhao et al. 2023, arXiv 2305.10425).

loss = max(0, 1 − βΔ) (docs/design.md §3; TRL's `loss_type="hinge"`, where 1/β plays the role of the margin).
Pure tensor code.
"""
from __future__ import annotations

import torch

from bench.methods.base import LossOutput, Method, Needs, PairLogps
from bench.methods.common import dpo_delta, positive, reference_rewards


class Hinge(Method):
    name = "hinge"
    family = "dpo"
    swept = ("beta",)
    needs = Needs(reference=True)

    def __init__(self, *, beta: float = 0.1) -> None:
        self.beta = positive("beta", beta)

    def loss(self, batch: PairLogps) -> LossOutput:
        losses = torch.relu(1 - self.beta * dpo_delta(batch, self.name))
        return LossOutput(losses, reference_rewards(batch, self.beta, self.name))
