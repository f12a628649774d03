"""RMiPO (arXiv 2604.24804; code github.com/liavonpenn/rmipo, scripts/rmipo_trainer.py): SimPO with a
per-pair IMI margin (docs/design.md §4).

Fixes the configuration of the authors' `simpo_loss` (loss_type "rmipo") and `concatenated_forward`: PMI from an
extra no-grad forward of the live policy on the response alone, g ∈ [0.3, 1.6] with τ = 1, the margin in ratio
units, β = 2. The signal, the map and the margin wiring are the shared IMI code (imi.py, imi_regulated.py).
"""
from __future__ import annotations

from bench.methods.imi_regulated import ImiRegulated
from bench.methods.simpo import SimPO


class RMiPO(ImiRegulated):
    name = "rmipo"
    family = "simpo"

    def __init__(
        self,
        *,
        beta: float = 2.0,
        g_min: float = 0.3,
        g_max: float = 1.6,
        margin_units: str = "ratio",
        marginal_context: str = "bos",
        max_prompt_length: int | None = None,
        signal: str = "pmi",
    ) -> None:
        super().__init__(
            # SimPO's own γ/β never applies: with no warm-up the margin is g on every step.
            SimPO(beta=beta, gamma_beta_ratio=0.0),
            regulator="margin",
            g_min=g_min,
            g_max=g_max,
            tau=1.0,  # exp(−max(0, ΔPMI)) in their code: no temperature
            margin_units=margin_units,
            pmi_source="policy",
            warmup_steps=0,
            signal=signal,
            marginal_context=marginal_context,
            max_prompt_length=max_prompt_length,
        )
