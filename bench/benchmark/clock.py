"""The per-step clock both sides are timed with, and how each side reports a step's end to it.

Owns: wall and CPU time at the end of every optimizer step, the tokens and input positions of each
step, and the adapters that feed it: a `PreferenceTrainer` step callback (ours) and a transformers
`TrainerCallback` (TRL). Must not: change what a trainer does in a step. Counting is deferred to
`summary()` (each step leaves a zero-argument function), so no counting runs inside the timed window.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable

import torch

from bench.logps import layout_positions

# (tokens, input positions) of one step: non-pad tokens, and every position the model computed
StepCounts = Callable[[], tuple[int, int]]


class StepClock:
    """Wall (perf_counter) and process CPU time at the end of every optimizer step, and what that
    step fed the model.

    The timed window runs from the end of the last warm-up step to the end of the last step, so it
    holds whole steps (batch fetch, forward, backward, optimizer, logging) and nothing before them.
    CPU time is a second view that other processes on a shared machine disturb less than wall time.
    """

    def __init__(self, warmup: int, on_warmup_end=None):
        if warmup < 1:
            raise ValueError(f"benchmark: --warmup must be >= 1 (the window starts at the end of a warm-up step), "
                             f"got {warmup}")
        self.warmup = warmup
        self.on_warmup_end = on_warmup_end  # called once, when the last warm-up step ends (starts a profiler)
        self.step_ends: list[float] = []
        self.cpu_ends: list[float] = []
        self.counts: list[StepCounts] = []
        # extra no-grad forward tokens (rmipo's marginal pass, KTO's KL sequences), or functions counting them
        self.nograd_tokens: list[int | Callable[[], int]] = []
        self.threads: set[int] = set()

    def end_step(self, counts: StepCounts, nograd_tokens: int | Callable[[], int] = 0) -> None:
        """`nograd_tokens`: the step's extra no-grad forward tokens, or a function counting them later."""
        self.step_ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())
        self.counts.append(counts)
        self.nograd_tokens.append(nograd_tokens)
        self.threads.add(torch.get_num_threads())
        if self.on_warmup_end is not None and len(self.step_ends) == self.warmup:
            self.on_warmup_end()

    def summary(self) -> dict:
        n, warmup = len(self.step_ends), self.warmup
        if n <= warmup:
            raise RuntimeError(f"benchmark: {n} steps ended, but the warm-up alone is {warmup}")
        seconds = self.step_ends[-1] - self.step_ends[warmup - 1]
        cpu_seconds = self.cpu_ends[-1] - self.cpu_ends[warmup - 1]
        step_seconds = [b - a for a, b in zip(self.step_ends[warmup - 1:], self.step_ends[warmup:])]
        counted = [counts() for counts in self.counts]
        nograd = [int(n() if callable(n) else n) for n in self.nograd_tokens]
        tokens = [t for t, _ in counted[warmup:]]
        positions = [p for _, p in counted[warmup:]]
        return {
            "steps_timed": n - warmup,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "tokens": sum(tokens),
            "positions": sum(positions),
            "epoch_tokens": sum(t for t, _ in counted),  # every step, warm-up included: the whole workload once
            "padding_share": 1.0 - sum(tokens) / sum(positions),
            "nograd_tokens": sum(nograd[warmup:]),
            "tokens_per_s": sum(tokens) / seconds,
            "tokens_per_cpu_s": sum(tokens) / cpu_seconds,
            "seconds_per_step": seconds / (n - warmup),
            # per step: robust to a burst of load from other processes (median over steps)
            "median_step_tokens_per_s": statistics.median(t / s for t, s in zip(tokens, step_seconds)),
            "step_seconds": [round(s, 6) for s in step_seconds],
            "step_tokens": tokens,
            "torch_threads_seen": sorted(self.threads),
        }


class TrainerClock:
    """A `PreferenceTrainer` step callback: ends a clock step after every optimizer step, with the
    step's policy batch and layout kept for counting later, and the no-grad tokens the meter added."""

    def __init__(self, clock: StepClock):
        self.clock = clock
        self.nograd_seen = 0

    def on_step_end(self, trainer, step: int, row: dict | None) -> None:
        nograd = sum(trainer.meter.nograd_tokens.values())
        batch, layout = trainer.last_batch, trainer.layout
        self.clock.end_step(lambda: (int(batch.attention_mask.sum()), layout_positions(batch, layout)),
                            nograd - self.nograd_seen)
        self.nograd_seen = nograd


def trl_step_end(clock: StepClock, nograd_mask: str | None = None, fed: list | None = None):
    """(trainer subclass hook, TrainerCallback) for TRL: the collated batch is kept at compute_loss, and
    the step ends at the callback's on_step_end, counting the batch's attention_mask (and, given
    `nograd_mask`, that mask of the batch as its no-grad tokens: KTOTrainer's KL sequences). Given `fed`,
    each step's batch is appended to it, for checking after training what each step trained on."""
    from transformers import TrainerCallback

    pending: list[dict] = []

    def saw_batch(inputs: dict) -> None:
        pending.append(inputs)

    class StepEnd(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            inputs = pending.pop()
            if pending:
                raise RuntimeError("benchmark: TRL ran more than one batch in an optimizer step")
            mask = inputs["attention_mask"]
            nograd = (lambda: int(inputs[nograd_mask].sum())) if nograd_mask else 0
            clock.end_step(lambda: (int(mask.sum()), mask.numel()), nograd)
            if fed is not None:
                fed.append(inputs)

    return saw_batch, StepEnd()
