"""IPO (Azar et al. 2023, arXiv 2310.12036, Eq. 17): loss = (Δ̄ − 1/(2β))² per pair (docs/design.md §3).

Δ̄ is built from length-averaged log-ratios, ā-style:
Δ̄ = (s(y_w) − s_ref(y_w))/|y_w| − (s(y_l) − s_ref(y_l))/|y_l|, as TRL 1.16 does (its comment: the IPO
authors confirmed their reported results use this normalisation). `average_logps: false` uses the
summed Δ instead. β here is IPO's regularisation τ. Also a base loss for the IMI regulators: an IMI
margin m shifts the regression target, (Δ̄ − m − 1/(2β))², with m in the units of Δ̄. Pure tensor code.
"""
from __future__ import annotations

import torch

from bench.methods.base import LossOutput, Method, Needs, PairLogps
from bench.methods.common import average, chosen_rejected_logratios, flag, positive, reference_rewards


class IPO(Method):
    name = "ipo"
    family = "ipo"
    swept = ("beta",)
    needs = Needs(reference=True)
    neutral_margin = 0.0

    def __init__(self, *, beta: float = 0.1, average_logps: bool = True) -> None:
        self.beta = positive("beta", beta)
        self.average_logps = flag("average_logps", average_logps)

    def preference_gap(self, batch: PairLogps) -> torch.Tensor:
        """x = Δ̄ (averaged log-ratios) or Δ (summed), per `average_logps`."""
        chosen, rejected = chosen_rejected_logratios(batch, self.name)
        if self.average_logps:
            chosen = average(chosen, batch.chosen_token_counts)
            rejected = average(rejected, batch.rejected_token_counts)
        return chosen - rejected

    def pair_loss(self, x: torch.Tensor, beta: float | torch.Tensor, margin: float | torch.Tensor) -> torch.Tensor:
        # IPO Eq. 17: regress the log-ratio gap onto 1/(2τ); a margin raises the target by m.
        return (x - margin - 1 / (2 * beta)) ** 2

    def reward_metrics(self, batch: PairLogps) -> dict[str, float]:
        # TRL logs β·(s − s_ref) (summed) for every loss type, IPO included.
        return reference_rewards(batch, self.beta, self.name)

    def loss(self, batch: PairLogps) -> LossOutput:
        losses = self.pair_loss(self.preference_gap(batch), self.beta, self.neutral_margin)
        return LossOutput(losses, self.reward_metrics(batch))
