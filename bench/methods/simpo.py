"""SimPO (Meng et al. 2024, arXiv 2405.14734, Eq. 6): loss = −log σ(β(ā(y_w) − ā(y_l)) − γ), γ = β·(γ/β).

Reference-free: the implicit reward is β·ā(y), the policy's length-averaged log-prob (docs/design.md §3). The
margin is configured as `gamma_beta_ratio` = γ/β, as in the SimPO repo's configs, so the loss is
−log σ(β(x − γ/β)) with x = ā(y_w) − ā(y_l). Also a base loss for the IMI regulators (RMiPO is SimPO
with a per-pair margin). Pure tensor code.
"""
from __future__ import annotations

import torch

from bench.methods.base import LossOutput, Method, Needs, PairLogps
from bench.methods.common import average, logistic_loss, non_negative, positive, reward_metrics


class SimPO(Method):
    name = "simpo"
    family = "simpo"
    swept = ("beta", "gamma_beta_ratio")  # the SimPO paper searches both (conf/experiment/simpo_grid.yaml)
    needs = Needs()

    def __init__(self, *, beta: float = 2.0, gamma_beta_ratio: float = 0.5) -> None:
        self.beta = positive("beta", beta)
        self.gamma_beta_ratio = non_negative("gamma_beta_ratio", gamma_beta_ratio)
        # SimPO's own margin γ/β (units of x): the value an IMI margin regulator blends from.
        self.neutral_margin = self.gamma_beta_ratio

    def preference_gap(self, batch: PairLogps) -> torch.Tensor:
        """x = ā(y_w) − ā(y_l); carries the policy's gradient."""
        return average(batch.chosen_logps, batch.chosen_token_counts) - average(batch.rejected_logps, batch.rejected_token_counts)

    def pair_loss(self, x: torch.Tensor, beta: float | torch.Tensor, margin: float | torch.Tensor) -> torch.Tensor:
        # SimPO Eq. 6 written as −log σ(β(x − γ/β)): the margin is in units of x.
        return logistic_loss(x, beta, margin)

    def reward_metrics(self, batch: PairLogps) -> dict[str, float]:
        # SimPO's implicit reward β·ā(y) (the SimPO repo and TRL's CPOTrainer log the same).
        chosen = self.beta * average(batch.chosen_logps, batch.chosen_token_counts)
        rejected = self.beta * average(batch.rejected_logps, batch.rejected_token_counts)
        return reward_metrics(chosen, rejected)

    def loss(self, batch: PairLogps) -> LossOutput:
        losses = self.pair_loss(self.preference_gap(batch), self.beta, self.neutral_margin)
        return LossOutput(losses, self.reward_metrics(batch))
