"""IMI-regulated base losses (docs/design.md §4): imi_dpo, imi_ipo, imi_simpo (and the machinery RMiPO uses).

Owns the wiring of g = regulator_g(ΔPMI) into a base loss (a margin on the base's gap, a per-pair β or a pair
weight, blended in over `warmup_steps`; the formulas per regulator and base are in docs/design.md §4), the IMI
metrics, and `RegulatedBase`: a base loss plus the regulator's hyperparameters (IMI_DEFAULTS), so the three
methods are three declarations. The signal is in `imi.py`, the base losses in their own modules. Pure tensor code.
"""
from __future__ import annotations

from typing import Callable, Protocol

import torch

from bench.methods.base import LossOutput, Method, Needs, PairLogps
from bench.methods.common import average, choice, non_negative, non_negative_int, number, positive, summary
from bench.methods.dpo import DPO
from bench.methods.imi import (ACTING_CHANGE, SIGNALS, batch_delta_pmi, blend, conditional_logps, correlation,
                               gradient_change, length_statistic, quantiles, regulator_g, regulator_signal,
                               warmup_fraction)
from bench.methods.ipo import IPO
from bench.methods.simpo import SimPO

REGULATORS = ("margin", "beta", "weight")
MARGIN_UNITS = ("ratio", "absolute")
PMI_SOURCES = ("policy", "reference")
MARGINAL_CONTEXTS = ("bos", "authors", "chat")  # bench.data.encoding.marginal_sequence builds each
ACTION_KEYS = tuple(f"imi/{name}_{q}" for name in ("effective_margin", "effective_beta", "effective_weight",
                                                    "gradient_change") for q in ("p10", "p50", "p90")) + ("imi/acting_share",)


# The regulator's hyperparameters and their fixed defaults (conf/method/imi_*.yaml). g ∈ [0.3, 1.6] and
# τ = 1: RMiPO's hard-coded gamma_min, gamma_max and exp(−max(0, ΔPMI)); margin: the only regulator
# RMiPO's code has; PMI from the frozen reference: cached, so free at train time; no warm-up, as RMiPO; the
# signal is ΔPMI itself (the others are controls, docs/design.md §4).
IMI_DEFAULTS = {"regulator": "margin", "g_min": 0.3, "g_max": 1.6, "tau": 1.0, "margin_units": "ratio",
                "pmi_source": "reference", "warmup_steps": 0, "signal": "pmi"}


class RegulatableBase(Protocol):
    """What a base loss exposes so a regulator can act on it (DPO, IPO and SimPO implement it)."""

    name: str
    needs: Needs
    beta: float
    neutral_margin: float

    def preference_gap(self, batch: PairLogps) -> torch.Tensor: ...

    def pair_loss(self, x: torch.Tensor, beta: float | torch.Tensor, margin: float | torch.Tensor) -> torch.Tensor: ...

    def reward_metrics(self, batch: PairLogps) -> dict[str, float]: ...


class ImiRegulated(Method):
    """A base loss with an IMI regulator. Subclasses fix the base and the config keys."""

    imi = True  # run at fixed defaults, never tuned: nothing is swept
    # Run means in the record (docs/design.md §4): what the signal resembles, and how much the regulator acts —
    # the effective value's spread (the key of this run's regulator; the others are absent) and the gradient change.
    summarised = ("imi/corr_length", "imi/corr_margin", *ACTION_KEYS)

    def __init__(
        self,
        base: RegulatableBase,
        *,
        regulator: str,
        g_min: float,
        g_max: float,
        tau: float,
        margin_units: str,
        pmi_source: str,
        warmup_steps: int,
        signal: str,
        marginal_context: str = "bos",
        max_prompt_length: int | None = None,
    ) -> None:
        self.base = base
        self.regulator = choice("regulator", regulator, REGULATORS)
        self.signal = choice("signal", signal, SIGNALS)
        self.margin_units = choice("margin_units", margin_units, MARGIN_UNITS)
        self.pmi_source = choice("pmi_source", pmi_source, PMI_SOURCES)
        self.marginal_context = choice("marginal_context", marginal_context, MARGINAL_CONTEXTS)
        self.max_prompt_length = None if max_prompt_length is None else non_negative_int("max_prompt_length", max_prompt_length)
        if self.marginal_context == "chat" and not self.max_prompt_length:
            raise ValueError("method.max_prompt_length must be a positive integer with method.marginal_context=chat "
                             f"(the prompt's token cap when a pair is too long), got {max_prompt_length!r}")
        self.warmup_steps = non_negative_int("warmup_steps", warmup_steps)
        self.tau = positive("tau", tau)
        # A β scale or a pair weight of 0 would switch pairs off, so those regulators need g_min > 0.
        check_g_min = non_negative if self.regulator == "margin" else positive
        self.g_min = check_g_min("g_min", g_min)
        self.g_max = number("g_max", g_max)
        if self.g_min > self.g_max:
            raise ValueError(
                f"method.g_min must be <= method.g_max (g decreases from g_max to g_min as ΔPMI grows), "
                f"got g_min={self.g_min} > g_max={self.g_max}"
            )
        self.needs = Needs(
            reference=base.needs.reference or self.pmi_source == "reference",
            marginal=self.pmi_source,  # type: ignore[arg-type]
            marginal_context=self.marginal_context,  # type: ignore[arg-type]
            max_prompt_length=self.max_prompt_length if self.marginal_context == "chat" else None,
            unpaired=base.needs.unpaired,
        )

    def loss(self, batch: PairLogps) -> LossOutput:
        base = self.base
        x = base.preference_gap(batch)
        delta_pmi = batch_delta_pmi(batch, self.pmi_source, self.name)  # type: ignore[arg-type]
        length = length_statistic(batch.chosen_token_counts, batch.rejected_token_counts)
        signal = regulator_signal(self.signal, delta_pmi, length, batch.step)
        g = regulator_g(signal, self.g_min, self.g_max, self.tau)
        fraction = warmup_fraction(batch.step, self.warmup_steps)

        metrics = base.reward_metrics(batch)
        metrics.update(summary("imi/delta_pmi", delta_pmi))
        metrics.update(summary("imi/signal", signal))  # what g reads: ΔPMI itself unless a control replaces it
        metrics.update(self._diagnostics(batch, delta_pmi, length))
        metrics.update(summary("imi/g", g))
        metrics["imi/warmup_fraction"] = fraction

        losses = self.regulated_losses(g, fraction, x, base.pair_loss, metrics)
        return LossOutput(losses, metrics)

    def regulated_losses(self, g: torch.Tensor, fraction: float, x: torch.Tensor,
                         base_loss: Callable[[torch.Tensor, float | torch.Tensor, float | torch.Tensor], torch.Tensor],
                         metrics: dict[str, float]) -> torch.Tensor:
        """The base's per-item losses (`base_loss(x, beta, margin)`) under the regulator at warm-up `fraction`,
        logging into `metrics` the effective margin, β or weight (min/mean/max and p10/p50/p90 over the batch)
        and how far the regulator moves each item's gradient from the unregulated base's at the same β
        ("imi/gradient_change_*", "imi/acting_share": the share moved by ≥ ACTING_CHANGE)."""
        base = self.base
        beta, margin, weight = base.beta, base.neutral_margin, 1.0
        if self.regulator == "margin":
            # Margin in units of x: g itself ("ratio") or g/β so that β·m = g ("absolute").
            regulated = g if self.margin_units == "ratio" else g / base.beta
            margin = blend(base.neutral_margin, regulated, fraction)
            effective = ("imi/effective_margin", margin)  # units of x (γ/β for simpo)
        elif self.regulator == "beta":
            beta = base.beta * blend(1.0, g, fraction)
            effective = ("imi/effective_beta", beta)
        else:
            # Normalised to mean 1 so the regulator reshapes the batch's loss, not its scale (or the LR).
            weight = blend(1.0, g / g.mean(), fraction)
            effective = ("imi/effective_weight", weight)
        metrics.update(summary(*effective))
        metrics.update(quantiles(*effective))
        change = gradient_change(base_loss, x, (beta, margin, weight), (base.beta, base.neutral_margin, 1.0))
        metrics.update(quantiles("imi/gradient_change", change))
        metrics["imi/acting_share"] = (change >= ACTING_CHANGE).double().mean().item()
        return base_loss(x, beta, margin) * weight

    def _diagnostics(self, batch: PairLogps, delta_pmi: torch.Tensor, length: torch.Tensor) -> dict[str, float]:
        """ΔPMI's within-batch correlation with the length statistic ("imi/corr_length") and with the margin
        ā(y_w | x) − ā(y_l | x) of the model the PMI comes from ("imi/corr_margin": the reference's for
        pmi_source=reference, the policy's for policy), whatever the signal; a correlation that is undefined
        on a batch (no spread) is left out. The regulator acts within a batch, so that is where they are taken."""
        chosen, rejected = conditional_logps(batch, self.pmi_source, self.name)  # type: ignore[arg-type]
        margin = average(chosen, batch.chosen_token_counts) - average(rejected, batch.rejected_token_counts)
        values = {"imi/corr_length": correlation(delta_pmi, length), "imi/corr_margin": correlation(delta_pmi, margin)}
        return {key: value for key, value in values.items() if value is not None}


class RegulatedBase(ImiRegulated):
    """`base_class` with the IMI regulator: its hyperparameters are the base loss's, then IMI_DEFAULTS'."""

    base_class: type[Method]

    @classmethod
    def defaults(cls) -> dict:
        return {**cls.base_class.defaults(), **IMI_DEFAULTS}

    def __init__(self, **hyperparameters) -> None:
        values = {**self.defaults(), **hyperparameters}
        unknown = sorted(set(values) - set(self.defaults()))
        if unknown:
            raise ValueError(f"method.{unknown[0]} is not a key of method {self.name!r}")
        base = self.base_class(**{key: values[key] for key in self.base_class.defaults()})
        super().__init__(base, **{key: values[key] for key in IMI_DEFAULTS})


class ImiDPO(RegulatedBase):
    name = "imi_dpo"
    family = "dpo"
    base_class = DPO


class ImiIPO(RegulatedBase):
    name = "imi_ipo"
    family = "ipo"
    base_class = IPO


class ImiSimPO(RegulatedBase):
    name = "imi_simpo"
    family = "simpo"
    base_class = SimPO
