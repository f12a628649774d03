"""β-DPO (Wu et al. 2024, "β-DPO: Direct Preference Optimization with Dynamic β", arXiv 2407.08639).

DPO with a batch-level β and Gaussian-weighted pair filtering, following the authors' code
(github.com/junkangwu/beta-DPO, trainers.py: `update_and_sync_tensor_mean` and `preference_loss` with
mode_loss="beta_DPO"); the algorithm, and where the suite departs from that code, are in docs/design.md §3.
Stateful: its running statistics are saved for resumes (`state_dict` / `load_state_dict`). Pure tensor code.
"""
from __future__ import annotations

import torch

from bench.methods.base import LossOutput, Method, Needs, PairLogps
from bench.methods.common import dpo_delta, in_range, logistic_loss, non_negative, positive, reference_rewards

# β-DPO's code clamps the dynamic β here so that a very negative batch gap cannot flip the loss's sign.
MIN_BETA = 1e-3
# Floor for the Gaussian weights so multinomial sampling without replacement never runs out of
# categories with non-zero probability (it raises otherwise).
MIN_WEIGHT = 1e-12


class BetaDPO(Method):
    name = "beta_dpo"
    family = "dpo"
    swept = ("beta",)  # β₀; a and ρ stay at the paper's values
    needs = Needs(reference=True)

    def __init__(self, *, beta: float = 0.1, a: float = 0.6, rho: float = 0.2, momentum: float = 0.9) -> None:
        self.beta = positive("beta", beta)  # β₀
        self.a = non_negative("a", a)
        self.rho = in_range("rho", rho, 0.0, 1.0)  # share of each batch filtered out
        self.momentum = in_range("momentum", momentum, 0.0, 1.0)
        self.gap_mean = 0.0  # M₀
        self.gap_std = 0.0  # σ₀

    def state_dict(self) -> dict[str, float]:
        return {"gap_mean": self.gap_mean, "gap_std": self.gap_std}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.gap_mean = float(state["gap_mean"])
        self.gap_std = float(state["gap_std"])

    def _update_statistics(self, gap: torch.Tensor) -> None:
        m = self.momentum
        batch_std = gap.std().item() if gap.numel() > 1 else 0.0
        self.gap_mean = m * self.gap_mean + (1 - m) * gap.mean().item()
        self.gap_std = m * self.gap_std + (1 - m) * batch_std

    def keep_mask(self, gap: torch.Tensor) -> torch.Tensor:
        """1.0 for the pairs kept by the Gaussian-weighted draw, 0.0 for the filtered ones ([B])."""
        if self.gap_std > 0:
            weights = torch.exp(-0.5 * ((gap - self.gap_mean) / self.gap_std) ** 2)
        else:
            weights = torch.ones_like(gap)
        n_keep = max(1, int(gap.numel() * (1 - self.rho)))
        kept = torch.multinomial(weights.clamp(min=MIN_WEIGHT), n_keep, replacement=False)
        mask = torch.zeros_like(gap)
        mask[kept] = 1.0
        return mask

    def loss(self, batch: PairLogps) -> LossOutput:
        delta = dpo_delta(batch, self.name)
        gap = delta.detach()
        if torch.is_grad_enabled():
            self._update_statistics(gap)
        mask = self.keep_mask(gap)
        n_kept = mask.sum()
        batch_gap = (gap * mask).sum() / n_kept  # M̄_batch over the kept pairs
        beta = (self.beta * (1 + self.a * (batch_gap - self.gap_mean))).clamp(min=MIN_BETA)
        # Their loss is the mean over kept pairs; scaled by B / n_kept so the trainer's mean equals it.
        losses = logistic_loss(delta, beta) * mask * (gap.numel() / n_kept)
        # Rewards with the base β₀, as their code logs them.
        metrics = reference_rewards(batch, self.beta, self.name)
        metrics.update(
            {
                "beta_dpo/beta": beta.item(),
                "beta_dpo/kept_fraction": (n_kept / gap.numel()).item(),
                "beta_dpo/gap_mean": self.gap_mean,
                "beta_dpo/gap_std": self.gap_std,
                "beta_dpo/batch_gap": batch_gap.item(),
            }
        )
        return LossOutput(losses, metrics)
