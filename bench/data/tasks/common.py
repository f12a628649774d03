"""Helpers shared by the built-in task families: constructor-argument checks and lm-eval items.

Owns: the error format for bad task arguments (they come from the config key
`dataset.task_kwargs.<key>`, so the message names that key) and the recipe that turns a task's
candidate responses into a multiple-choice item. Must not know any particular task's rules.
"""
from __future__ import annotations

import random
from collections.abc import Callable

TASK_KWARGS_KEY = "dataset.task_kwargs"


def require(condition: bool, key: str, message: str) -> None:
    """Raise a ValueError naming `dataset.task_kwargs.<key>` unless `condition` holds."""
    if not condition:
        raise ValueError(f"{TASK_KWARGS_KEY}.{key}: {message}")


def require_probability(value: float, key: str) -> None:
    ok = isinstance(value, (int, float)) and 0.0 <= value <= 1.0
    require(ok, key, f"must be in [0, 1], got {value!r}")


def require_nonnegative(value: float, key: str) -> None:
    ok = isinstance(value, (int, float)) and 0.0 <= value < float("inf")
    require(ok, key, f"must be a finite number >= 0, got {value!r}")


def require_int(value: int, key: str, low: int, high: int | None = None, why: str = "") -> None:
    """`value` must be an int in [low, high] (high=None: no upper bound); `why` explains the bound."""
    is_int = isinstance(value, int) and not isinstance(value, bool)
    ok = is_int and low <= value and (high is None or value <= high)
    bounds = f">= {low}" if high is None else f"in [{low}, {high}]"
    require(ok, key, f"must be an int {bounds}{f' ({why})' if why else ''}, got {value!r}")


def exact(reward: float) -> float:
    """A reward rounded to 6 decimals, so sums of weights like 0.35 + 0.3 − 0.3 compare equal to
    0.35: the labeller and the statistics treat equal gold rewards as ties, not as 1e-16 gaps."""
    return round(reward, 6) + 0.0  # + 0.0 turns -0.0 into 0.0


def words_of(text: str) -> list[str]:
    """Texts are space-separated words; any run of whitespace separates (as WhitespaceSplit does)."""
    return text.split()


def multiple_choice_items(
    gold_reward: Callable[[str, str], float],
    sample_prompt: Callable[[random.Random], str],
    candidates: Callable[[str, random.Random], list[str]],
    rng: random.Random,
    n: int,
    max_tries: int = 100,
) -> list[dict]:
    """`n` items {"query", "choices", "gold"}: gold is the index of the one best-gold-reward choice.

    `candidates(prompt, rng)` proposes responses; duplicates are removed and an item is kept only if
    its best choice is strictly better than the rest (an item with a tied best has no right answer).
    Choices are shuffled so the gold index carries no information.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    items: list[dict] = []
    for _ in range(n):
        for _ in range(max_tries):
            prompt = sample_prompt(rng)
            choices = list(dict.fromkeys(candidates(prompt, rng)))  # dedupe, keep order
            rng.shuffle(choices)
            rewards = [gold_reward(prompt, c) for c in choices]
            best = max(rewards)
            if len(choices) >= 2 and rewards.count(best) == 1:
                items.append({"query": prompt, "choices": choices, "gold": rewards.index(best)})
                break
        else:
            raise RuntimeError(f"no item with a unique best choice after {max_tries} prompts")
    return items
