"""Pieces every method shares: hyperparameter checks, the quantities of docs/design.md §3, and logged rewards.

Owns: validating a hyperparameter and naming its config key (`method.<key>`, docs/design.md §12); reading a
tensor a method needs from a `PairLogps` with a clear error when the trainer left it out; the
policy-vs-reference gap Δ, length averaging ā = s/|y|, the logistic loss shared by DPO, SimPO and
their IMI variants; the TRL-named reward metrics. Pure tensor code: imports nothing from the trainer,
data, model or logging side.
"""
from __future__ import annotations

import math
from numbers import Real

import torch
import torch.nn.functional as F

from bench.methods.base import ExampleLogps, PairLogps

# ---------------------------------------------------------------------------------------------
# Hyperparameter checks. Each raises ValueError naming the key as it appears in the Hydra config.


def number(key: str, value: object) -> float:
    """`value` as a finite float; bools and strings are config mistakes, not numbers."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)):
        raise ValueError(f"method.{key} must be a finite number, got {value!r}")
    return float(value)


def positive(key: str, value: object) -> float:
    x = number(key, value)
    if x <= 0:
        raise ValueError(f"method.{key} must be > 0, got {x}")
    return x


def non_negative(key: str, value: object) -> float:
    x = number(key, value)
    if x < 0:
        raise ValueError(f"method.{key} must be >= 0, got {x}")
    return x


def in_range(key: str, value: object, low: float, high: float, *, high_open: bool = True) -> float:
    """low <= value < high (or <= high when high_open is False)."""
    x = number(key, value)
    inside = low <= x < high if high_open else low <= x <= high
    if not inside:
        bracket = ")" if high_open else "]"
        raise ValueError(f"method.{key} must lie in [{low}, {high}{bracket}, got {x}")
    return x


def non_negative_int(key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"method.{key} must be an integer >= 0, got {value!r}")
    return int(value)


def flag(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"method.{key} must be true or false, got {value!r}")
    return value


def choice(key: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"method.{key} must be one of {list(allowed)}, got {value!r}")
    return str(value)


# ---------------------------------------------------------------------------------------------
# Reading the batch.


def required(batch: PairLogps | ExampleLogps, field: str, method: str, why: str) -> torch.Tensor:
    """batch.<field>, or a ValueError saying which method needs it and why (a trainer wiring bug)."""
    value = getattr(batch, field)
    if value is None:
        raise ValueError(f"method {method!r} needs {type(batch).__name__}.{field} ({why}), but the batch has none")
    return value


def chosen_rejected_logratios(batch: PairLogps, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(s(y_w) − s_ref(y_w), s(y_l) − s_ref(y_l)): the per-response log-ratios of DPO's implicit reward."""
    why = "Needs.reference"
    ref_chosen = required(batch, "reference_chosen_logps", method, why)
    ref_rejected = required(batch, "reference_rejected_logps", method, why)
    return batch.chosen_logps - ref_chosen.detach(), batch.rejected_logps - ref_rejected.detach()


def dpo_delta(batch: PairLogps, method: str) -> torch.Tensor:
    """Δ = (s(y_w) − s_ref(y_w)) − (s(y_l) − s_ref(y_l)) (docs/design.md §3; DPO paper Eq. 7's logit / β)."""
    chosen, rejected = chosen_rejected_logratios(batch, method)
    return chosen - rejected


def average(logps: torch.Tensor, token_counts: torch.Tensor) -> torch.Tensor:
    """ā = s / |y|, |y| = the scored-token count. Counts are clamped at 1 as TRL does (`clamp(min=1.0)`), so an empty response
    cannot divide by zero; the data layer rejects empty responses before they get here."""
    return logps / token_counts.detach().to(logps.dtype).clamp(min=1.0)


def logistic_loss(x: torch.Tensor, beta: float | torch.Tensor, margin: float | torch.Tensor = 0.0) -> torch.Tensor:
    """−log σ(β·(x − margin)) per pair: DPO (Rafailov et al. 2023, Eq. 7) with margin 0 on x = Δ;
    SimPO (Meng et al. 2024, Eq. 6) with margin γ/β on x = ā(y_w) − ā(y_l). `beta` and `margin` may be
    per-pair tensors (IMI regulators); the margin is in the units of x."""
    return -F.logsigmoid(beta * (x - margin))


# ---------------------------------------------------------------------------------------------
# Logged scalars.


def reward_metrics(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> dict[str, float]:
    """TRL DPOTrainer's reward logs: batch means of r(y_w), r(y_l), r(y_w) − r(y_l), 1[r(y_w) > r(y_l)]."""
    chosen = chosen_rewards.detach()
    rejected = rejected_rewards.detach()
    return {
        "rewards/chosen": chosen.mean().item(),
        "rewards/rejected": rejected.mean().item(),
        "rewards/margins": (chosen - rejected).mean().item(),
        "rewards/accuracies": (chosen > rejected).float().mean().item(),
    }


def reference_rewards(batch: PairLogps, beta: float, method: str) -> dict[str, float]:
    """Reward metrics for reference-based methods: r(y) = β·(s(y) − s_ref(y)) (TRL's definition)."""
    chosen, rejected = chosen_rejected_logratios(batch, method)
    return reward_metrics(beta * chosen, beta * rejected)


def summary(prefix: str, values: torch.Tensor) -> dict[str, float]:
    """{prefix_mean, prefix_min, prefix_max} of a detached [B] tensor."""
    v = values.detach()
    return {f"{prefix}_mean": v.mean().item(), f"{prefix}_min": v.min().item(), f"{prefix}_max": v.max().item()}
