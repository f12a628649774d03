"""RMiPO (arXiv 2604.24804; code github.com/liavonpenn/rmipo, scripts/rmipo_trainer.py): SimPO with a
per-pair IMI margin (docs/design.md §4).

As the authors' `simpo_loss` (loss_type "rmipo") and `concatenated_forward` do it:
- ā(y | ∅) comes from an extra no-grad forward of the *current policy* on the response alone, and
  ā(y | x) is the policy's own averaged log-prob, detached: Needs(marginal="policy");
- ΔPMI = PMI(y_w) − PMI(y_l), detached; g = g_min + (g_max − g_min)·exp(−max(0, ΔPMI)) with
  g_min = 0.3, g_max = 1.6 hard-coded there (τ = 1);
- loss = −log σ(β(ā(y_w) − ā(y_l) − g)), β = 2.0 in all released configs; the YAML's gamma_beta_ratio
  is ignored by that loss, so it is no key here. margin_units="absolute" reads g as an absolute γ
  instead: −log σ(β(ā(y_w) − ā(y_l)) − g).
- marginal_context="authors" asks the trainer for their response-only pass (no BOS, first response
  token unscored, averaged over the |y| − 1 scored tokens); "bos" (default) scores every response
  token after a BOS. Either way the trainer hands over marginal sums scaled to |y| tokens, so the
  loss code is the same.
Their label_smoothing defaults to 0 and is not exposed. This module only fixes that configuration;
the signal, the map and the margin wiring are the shared IMI code (imi.py, imi_regulated.py).
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
            marginal_context=marginal_context,
        )
