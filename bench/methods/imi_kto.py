"""IMI-KTO: the IMI regulator on unpaired feedback (docs/design.md §4, "Unpaired feedback").

With no partner response there is no ΔPMI. The signal is the example's PMI(y; x) relative to the batch's mean
PMI (a detached reference point, as z₀ is for the reward), signed by the label: u = +(PMI − mean) for a
desirable example, −(PMI − mean) for an undesirable one. A large u marks an example the model already treats
as the label says (a desirable completion specific to its prompt, an undesirable one that is not), and the
map g(u) of docs/design.md §4 regulates it down: a smaller margin on KTO's signed gap, a smaller β, or a
smaller weight. Defaults are IMI_DEFAULTS on KTO's own defaults, never tuned. Pure tensor code.
"""
from __future__ import annotations

import torch

from bench.methods.base import ExampleLogps, LossOutput
from bench.methods.common import summary
from bench.methods.imi import correlation, pmi, regulator_g, regulator_signal, warmup_fraction
from bench.methods.imi_regulated import ACTION_KEYS, RegulatedBase
from bench.methods.kto import KTO


def example_pmi(batch: ExampleLogps, pmi_source: str, method: str) -> torch.Tensor:
    """PMI(y; x) = ā(y | x) − ā(y | ∅) per example [B], detached, both terms from the `pmi_source` model."""
    if batch.marginal_logps is None:
        raise ValueError(f"method {method!r} needs ExampleLogps.marginal_logps (Needs.marginal={pmi_source!r}), "
                         "but the batch has none")
    if pmi_source == "policy":
        conditional = batch.logps.detach()
    elif batch.reference_logps is None:
        raise ValueError(f"method {method!r} needs ExampleLogps.reference_logps (pmi_source='reference' takes "
                         "ā(y | x) from the reference), but the batch has none")
    else:
        conditional = batch.reference_logps
    return pmi(conditional, batch.marginal_logps, batch.token_counts)


def signed_centred(values: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """±(v − mean(v)) per example: + for a desirable example, − for an undesirable one (detached)."""
    sign = labels.to(values.dtype) * 2 - 1
    return (sign * (values - values.mean())).detach()


class ImiKTO(RegulatedBase):
    name = "imi_kto"
    family = "kto"
    base_class = KTO
    summarised = ("imi/corr_length", *ACTION_KEYS)  # ΔPMI's margin has no unpaired analogue: no partner response

    def loss(self, batch: ExampleLogps) -> LossOutput:
        base = self.base
        x, z0 = base.signed_gap(batch)
        signed_pmi = signed_centred(example_pmi(batch, self.pmi_source, self.name), batch.labels)
        # the length statistic's unpaired analogue: 1/|y| relative to the batch, signed the same way
        length = signed_centred(1.0 / batch.token_counts.detach().double().clamp(min=1.0), batch.labels)
        signal = regulator_signal(self.signal, signed_pmi, length, batch.step)
        g = regulator_g(signal, self.g_min, self.g_max, self.tau)
        fraction = warmup_fraction(batch.step, self.warmup_steps)

        metrics = base.reward_metrics(batch, z0)
        metrics.update(summary("imi/signed_pmi", signed_pmi))
        metrics.update(summary("imi/signal", signal))
        corr = correlation(signed_pmi, length)
        if corr is not None:
            metrics["imi/corr_length"] = corr
        metrics.update(summary("imi/g", g))
        metrics["imi/warmup_fraction"] = fraction

        # the margin on the signed gap: a desirable example must clear z₀ + m, an undesirable one z₀ − m
        def example_loss(gap, beta, margin):
            return base.example_loss(gap, batch.labels, beta, margin)

        losses = self.regulated_losses(g, fraction, x, example_loss, metrics)
        return LossOutput(losses, metrics)
