"""The one interface every preference-optimization method implements.

A method is a pure tensor function of per-sequence log-probabilities: it imports no trainer, data,
model or logging code. The trainer reads `method.needs` to decide which forward passes to run and
fills a `PairLogps`; the method returns per-pair losses plus the scalars it wants logged.

Notation (docs/design.md §3): s(y) = summed response log-prob under the policy, ā(y) = s(y)/|y|;
s_ref under the frozen reference; Δ = (s(y_w) − s_ref(y_w)) − (s(y_l) − s_ref(y_l)).
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Literal

import torch

PmiSource = Literal["policy", "reference"]


@dataclass(frozen=True)
class Needs:
    """What the trainer must compute for a method. Anything not needed is never computed."""

    reference: bool = False  # s_ref(y_w), s_ref(y_l) (cached once per model+data)
    # Where log p(y | ∅) (the response scored without its prompt) comes from, if at all:
    # "policy" = an extra no-grad forward of the live policy each step (RMiPO's code);
    # "reference" = the frozen SFT model, cached with the reference log-probs (free at train time).
    marginal: PmiSource | None = None
    # How the response-only ("no prompt") context is built for log p(y | ∅):
    # "bos" = BOS + response, every response token scored (this suite's default);
    # "authors" = response alone, no BOS, first response token not scored (RMiPO's released code);
    # "chat" = RMiPO's code on a chat model: the response is the assistant turn through the chat template
    # (header included) in both passes, the pairs encoded as theirs (bench.data.encoding.ChatTurns).
    marginal_context: Literal["bos", "authors", "chat"] = "bos"
    # Under "chat", the prompt's token cap (their max_prompt_length: prompts keep their last this many
    # tokens when a pair is too long); unused otherwise.
    max_prompt_length: int | None = None
    # Unpaired examples (prompt, completion, desirable or not) instead of pairs, each with a mismatched
    # (prompt, other completion) sequence for KTO's KL estimate: the method takes an `ExampleLogps`.
    unpaired: bool = False


@dataclass
class PairLogps:
    """Log-probs for a batch of B preference pairs; every tensor has shape [B].

    Policy log-probs carry gradient; everything else is detached (the trainer guarantees it, and
    methods detach again where a signal must never carry gradient, e.g. ΔPMI).
    """

    chosen_logps: torch.Tensor  # s(y_w), summed over response tokens
    rejected_logps: torch.Tensor  # s(y_l)
    chosen_token_counts: torch.Tensor  # |y_w|: scored response tokens (float)
    rejected_token_counts: torch.Tensor  # |y_l|
    reference_chosen_logps: torch.Tensor | None = None  # s_ref(y_w)
    reference_rejected_logps: torch.Tensor | None = None  # s_ref(y_l)
    # Summed log p(y | ∅) from the model named by Needs.marginal, scaled (bench.reference) so that dividing
    # by chosen_token_counts/rejected_token_counts gives the marginal *average* ā(y | ∅) whatever tokens the
    # marginal pass scored (bench.reference.marginal_per_conditional_token).
    marginal_chosen_logps: torch.Tensor | None = None
    marginal_rejected_logps: torch.Tensor | None = None
    # optimizer step (for warm-up schedules); None after training: every schedule at its end (evaluation)
    step: int | None = 0


@dataclass
class ExampleLogps:
    """Log-probs for a batch of B unpaired examples (docs/design.md §3, KTO); every tensor has shape [B].

    Example i is (x_i, y_i, label_i); its KL sequence is (x_i, y′_i), y′_i the completion of another example
    of the same batch (bench.data.encoding.ExampleTensors), scored without gradient.
    """

    logps: torch.Tensor  # s(y | x), summed over response tokens; carries gradient
    token_counts: torch.Tensor  # |y|
    labels: torch.Tensor  # bool: True = desirable
    reference_logps: torch.Tensor | None = None  # s_ref(y | x)
    kl_logps: torch.Tensor | None = None  # s(y′ | x), no gradient
    reference_kl_logps: torch.Tensor | None = None  # s_ref(y′ | x)
    marginal_logps: torch.Tensor | None = None  # s(y | ∅), scaled as PairLogps' marginals
    step: int | None = 0


@dataclass
class LossOutput:
    """Per-pair losses [B] (the trainer takes the mean) and detached scalars to log.

    `metrics` always holds the TRL DPOTrainer names: "rewards/chosen", "rewards/rejected",
    "rewards/margins", "rewards/accuracies" (batch means of the method's implicit reward). TRL's
    "rewards/margins" is the reward *gap* r(y_w) − r(y_l); the name stays TRL's so logs compare with TRL's.
    Everywhere else a margin is what a loss subtracts from its gap: IMI methods add
    "imi/delta_pmi_mean|min|max" and "imi/effective_margin|beta|weight".
    """

    losses: torch.Tensor
    metrics: dict[str, float] = field(default_factory=dict)


FAMILIES = ("dpo", "ipo", "simpo", "kto")


class Method:
    """Base class: subclasses set `name`, `needs` and the method facts below, and implement `loss`.

    A subclass that sets `name` in its own body is a method users can pick (`method=<name>`): the
    registry (bench.methods) finds it in its module, so adding a method is its module, its
    conf/method/<name>.yaml and its test. Subclasses validate their hyperparameters in __init__ and raise
    ValueError naming the config key (e.g. "method.beta must be > 0, got -1"), so a bad config fails
    before any compute (docs/design.md §12). The constructor's keyword defaults are the published defaults.

    The method facts go into every run record as `method_info` (bench.methods.method_info), so the
    analysis reads from the records what a method is instead of keeping tables of its own.
    """

    name: str = "method"
    needs: Needs = Needs()
    # The base loss the method belongs to (one of FAMILIES): what its β means, and which grid it rivals.
    family: str = ""
    # IMI-regulated: run once at fixed defaults, never tuned — the claim under test (docs/design.md §4).
    imi: bool = False
    # The hyperparameters a tuning grid sweeps for this method (none for an IMI method).
    swept: tuple[str, ...] = ()
    # Per-step metrics whose mean over the run's logged steps the record keeps among its final metrics.
    summarised: tuple[str, ...] = ()

    @classmethod
    def defaults(cls) -> dict[str, object]:
        """The method's hyperparameters (its config keys) and their published defaults: the constructor's
        keyword-only arguments, in order."""
        parameters = inspect.signature(cls.__init__).parameters.values()
        return {p.name: p.default for p in parameters if p.kind is p.KEYWORD_ONLY}

    def loss(self, batch: PairLogps) -> LossOutput:  # pragma: no cover - interface
        raise NotImplementedError

    def __call__(self, batch: PairLogps) -> LossOutput:
        return self.loss(batch)
