"""The interface of a built-in task with a known gold reward r*(x, y) (docs/design.md §5).

Two kinds: synthetic tasks (`Task`), whose texts are words of `vocabulary` (one token each under the suite's
word-level tokenizer) and whose demonstrations train the tiny model's SFT warm start; and tasks for a pretrained
model (`PretrainedModelTask`, docs/design.md §13), free text in that model's tokenizer, with no SFT corpus. A task
knows nothing of models or methods: bench.data.builtin samples its prompts and pairs and labels them.
"""
from __future__ import annotations

import random
from abc import ABC, abstractmethod


class Task(ABC):
    """A prompt distribution, an imperfect SFT corpus, and a gold reward."""

    name: str = "task"
    # Generation cap in tokens (EOS excluded). A sample that hits it is "truncated" (no EOS):
    # it is still scored by gold_reward, never dropped.
    max_response_tokens: int = 16
    # Constructor arguments that change only label_reward / gold_reward, never prompts or
    # demonstrations: left out of the SFT cache key, so varying them reuses the SFT model.
    label_only_params: tuple[str, ...] = ()
    # True for tasks written for a pretrained model's tokenizer (model=hf/smollm2, never model=tiny).
    requires_pretrained_model: bool = False
    # What joins a query and a choice in the task's lm-eval items: one space between words.
    choice_delimiter: str = " "

    @property
    @abstractmethod
    def vocabulary(self) -> list[str]:
        """Every word a prompt or response may contain (deterministic order)."""

    @abstractmethod
    def sample_prompt(self, rng: random.Random) -> str:
        """One prompt from the task's prompt distribution."""

    @abstractmethod
    def demonstration(self, prompt: str, rng: random.Random) -> str:
        """One SFT target for `prompt`: diverse and imperfect (so preference learning has room)."""

    @abstractmethod
    def gold_reward(self, prompt: str, response: str) -> float:
        """r*(x, y). Must accept any word sequence, including truncated or degenerate ones."""

    def composition_key(self, prompt: str) -> str | None:
        """The combination of prompt parts that the composition test set holds out (docs/design.md §5).

        A share of these keys, chosen by a hash, never reaches training, evaluation pairs, validation
        or test: the composition test scores combinations of parts that training never saw together,
        while each part on its own was seen with other partners. None: the task has no composition split.
        """
        return None

    def prompt_space_size(self) -> int | None:
        """How many distinct prompts `sample_prompt` can return (None where unknown): the built-in tasks
        keep it >= 5,000 so that disjoint prompt sets of the configured sizes exist (docs/design.md §5)."""
        return None

    def bind_tokenizer(self, tokenizer) -> None:
        """Called by the pipeline with the run's tokenizer before any prompt is drawn. Synthetic tasks
        need nothing from it; a task for a pretrained model renders its prompts with it."""

    def label_reward(self, prompt: str, response: str) -> float:
        """The reward the simulated annotator uses (defaults to the gold reward).

        A task whose annotators are biased (e.g. towards longer answers) overrides this, so the
        labels and the gold reward disagree in a controlled way.
        """
        return self.gold_reward(prompt, response)

    def multiple_choice_items(self, rng: random.Random, n: int) -> list[dict]:
        """Items for the task's local lm-eval task: {"query", "choices": [str], "gold": int}."""
        raise NotImplementedError(f"task {self.name!r} has no lm-eval items")


class PretrainedModelTask(Task):
    """A task for a pretrained model: free text in the model's own tokenizer, no SFT corpus."""

    requires_pretrained_model = True

    @property
    def vocabulary(self) -> list[str]:
        raise ValueError(
            f"task {self.name!r} is free text for a pretrained model's own tokenizer and has no word "
            "vocabulary: run it with model=smollm2 (or model=hf), not model=tiny")

    def demonstration(self, prompt: str, rng: random.Random) -> str:
        raise ValueError(
            f"task {self.name!r} has no SFT corpus: the pretrained (instruct) model is the reference as it "
            "is (sft.steps=0)")
