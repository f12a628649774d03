"""KTO (Ethayarajh et al. 2024, arXiv 2402.01306): preference optimization from unpaired desirable /
undesirable examples (docs/design.md §3).

Per example, r = s(y | x) − s_ref(y | x); the reference point z₀ = max(0, mean over the batch of
s(y′ | x) − s_ref(y′ | x)) on mismatched (prompt, other completion) sequences, detached; loss
λ_D(1 − σ(β(r − z₀))) for a desirable example, λ_U(1 − σ(β(z₀ − r))) for an undesirable one (the paper's
Eq. 7 and TRL's KTOTrainer, loss_type "kto"). Also the base loss the unpaired IMI regulator acts on
(bench.methods.imi_kto): it exposes the signed gap x = ±(r − z₀) and its per-example loss as a function of
(x, β, margin). Pure tensor code.
"""
from __future__ import annotations

import torch

from bench.methods.base import ExampleLogps, LossOutput, Method, Needs
from bench.methods.common import positive, required

# The paper's rule for imbalanced data (§4.3 there): λ_D·n_D / (λ_U·n_U) within [1, 4/3].
IMBALANCE_RANGE = (1.0, 4.0 / 3.0)


def check_imbalance(desirable_weight: float, undesirable_weight: float, n_desirable: float, n_undesirable: float,
                    where: str) -> None:
    """Refuse weights outside the paper's rule for these counts (or share) of desirable and undesirable
    examples, naming the keys and the weights that would satisfy it."""
    if n_desirable <= 0 or n_undesirable <= 0:
        raise ValueError(f"{where}: KTO needs desirable and undesirable examples, got {n_desirable:g} desirable and "
                         f"{n_undesirable:g} undesirable")
    ratio = desirable_weight * n_desirable / (undesirable_weight * n_undesirable)
    low, high = IMBALANCE_RANGE
    if not low - 1e-9 <= ratio <= high + 1e-9:
        fit_low = low * undesirable_weight * n_undesirable / n_desirable
        raise ValueError(
            f"{where}: method.desirable_weight·n_desirable / (method.undesirable_weight·n_undesirable) = "
            f"{desirable_weight:g}·{n_desirable:g} / ({undesirable_weight:g}·{n_undesirable:g}) = {ratio:.3g} is outside "
            f"[1, 4/3], the KTO paper's rule for imbalanced data; with method.undesirable_weight={undesirable_weight:g} "
            f"set method.desirable_weight in [{fit_low:.3g}, {fit_low * high:.3g}]")


def kl_reference_point(batch: ExampleLogps, method: str) -> torch.Tensor:
    """z₀ = max(0, mean_i s(y′_i | x_i) − s_ref(y′_i | x_i)), detached (a scalar tensor): the batch's estimate
    of KL(π ‖ π_ref), from the mismatched sequences (TRL: `kl = (KL_logps − ref_KL_logps).mean().clamp(min=0)`)."""
    why = "KTO's reference point z₀ is estimated on mismatched (prompt, completion) sequences"
    kl = required(batch, "kl_logps", method, why).detach() - required(batch, "reference_kl_logps", method, why).detach()
    return kl.mean().clamp(min=0)


def reference_logratios(batch: ExampleLogps, method: str) -> torch.Tensor:
    """r = s(y | x) − s_ref(y | x) per example; carries the policy's gradient."""
    return batch.logps - required(batch, "reference_logps", method, "KTO's reward is relative to the reference").detach()


class KTO(Method):
    name = "kto"
    family = "kto"
    swept = ("beta",)
    needs = Needs(reference=True, unpaired=True)
    # No margin inside the sigmoid: the value an IMI margin regulator blends from during warm-up.
    neutral_margin = 0.0

    def __init__(self, *, beta: float = 0.1, desirable_weight: float = 1.0, undesirable_weight: float = 1.0) -> None:
        self.beta = positive("beta", beta)
        self.desirable_weight = positive("desirable_weight", desirable_weight)
        self.undesirable_weight = positive("undesirable_weight", undesirable_weight)

    def signed_gap(self, batch: ExampleLogps) -> tuple[torch.Tensor, torch.Tensor]:
        """(x, z₀): x = r − z₀ for a desirable example and z₀ − r for an undesirable one, so that the loss is
        1 − σ(β·x) for both and a larger x is always a better-fitted example."""
        z0 = kl_reference_point(batch, self.name)
        sign = batch.labels.to(batch.logps.dtype) * 2 - 1
        return sign * (reference_logratios(batch, self.name) - z0), z0

    def example_loss(self, x: torch.Tensor, labels: torch.Tensor, beta: float | torch.Tensor,
                     margin: float | torch.Tensor) -> torch.Tensor:
        """λ·(1 − σ(β·(x − margin))) per example, λ = λ_D or λ_U by label; the margin is in the units of x."""
        weight = torch.where(labels, self.desirable_weight, self.undesirable_weight).to(x.dtype)
        return weight * (1 - torch.sigmoid(beta * (x - margin)))

    def reward_metrics(self, batch: ExampleLogps, z0: torch.Tensor) -> dict[str, float]:
        """TRL KTOTrainer's names: kl (z₀), rewards/chosen|rejected (mean β·r over desirable | undesirable
        examples), rewards/margins (their difference), logps/chosen|rejected (mean s(y | x)); a name is left
        out when the batch has no example of its kind, as TRL does."""
        rewards = self.beta * reference_logratios(batch, self.name).detach()
        logps = batch.logps.detach()
        metrics = {"kl": z0.item()}
        for name, mask in (("chosen", batch.labels), ("rejected", ~batch.labels)):
            if mask.any():
                metrics[f"rewards/{name}"] = rewards[mask].mean().item()
                metrics[f"logps/{name}"] = logps[mask].mean().item()
        if "rewards/chosen" in metrics and "rewards/rejected" in metrics:
            metrics["rewards/margins"] = metrics["rewards/chosen"] - metrics["rewards/rejected"]
        return metrics

    def loss(self, batch: ExampleLogps) -> LossOutput:
        x, z0 = self.signed_gap(batch)
        losses = self.example_loss(x, batch.labels, self.beta, self.neutral_margin)
        return LossOutput(losses, self.reward_metrics(batch, z0))
