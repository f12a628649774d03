"""Evaluation: one flat `metrics` dict per run (docs/design.md §7).

`pref_acc` and the method's own loss and rewards on held-out pairs; with a gold reward, gold metrics of sampled
answers on the test prompts (bare names) and the validation prompts ("val/…"), each from its own sampling seeds,
with the reference's samples a shared build that every method's run of a seed reads (`cached_reference_samples`);
and `ValidationCurve`, a trainer step callback that scores validation prompts with the cost spent so far at a few
fractions of training, so that early-stopping tuners can be replayed from records (docs/design.md §11).
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Mapping, Sequence

import torch

from bench.cache import CacheEntry, DiskCache
from bench.data.encoding import PairTensors, SequenceTensors, _pad, encode_text, with_boundary
from bench.data.examples import ExampleTensors
from bench.generation import Sample, sample_responses, sample_sets
from bench.logps import score_all
from bench.models import non_embedding_parameters
from bench.methods.base import Method
from bench.reference import ReferenceTerms, example_logps, pair_logps

COLLAPSE_RULE = (
    "collapsed = 1 when no_eos_rate >= eval.collapse_no_eos_rate: the policy stopped ending its answers "
    "(end-of-sequence collapse, the dominant failure of small-beta DPO on these testbeds)"
)


def preference_metrics(model, terms: ReferenceTerms, method: Method, pairs: PairTensors | ExampleTensors,
                       marginal_seqs: SequenceTensors | None, device) -> dict[str, float]:
    """pref_acc and the method's native reward metrics on held-out pairs (no gradient); for unpaired
    examples, the method's loss and metrics only.

    `terms` holds the reference log-probs of these pairs (and the reference's marginals when the method
    takes PMI from it); `marginal_seqs` the response-only sequences when it takes PMI from the policy.
    """
    if isinstance(pairs, ExampleTensors):
        return _example_metrics(model, terms, method, pairs, marginal_seqs, device)
    logps, token_counts = score_all(model, pairs.both(), device=device)
    n = len(pairs)
    metrics: dict[str, float] = {}
    if terms.reference_logps is not None:
        ref = terms.reference_logps
        delta = (logps[:n] - ref[:, 0]) - (logps[n:] - ref[:, 1])
        metrics["pref_acc"] = (delta > 0).float().mean().item()
    # step=None: the trained model is scored with every schedule at its end (warm-ups done)
    batch = pair_logps(logps, token_counts, method.needs, terms, step=None,
                       policy_marginal=lambda: score_all(model, marginal_seqs, device=device))
    # a copy: stateful methods (beta_dpo's running mean) must not learn from held-out data
    out = copy.deepcopy(method)(batch)
    metrics["eval/loss"] = out.losses.mean().item()
    metrics.update({f"eval/{k}": v for k, v in out.metrics.items() if k.startswith("rewards/")})
    return metrics


def _example_metrics(model, terms: ReferenceTerms, method: Method, examples: ExampleTensors,
                     marginal_seqs: SequenceTensors | None, device) -> dict[str, float]:
    """The method's loss and TRL-named metrics on held-out unpaired examples (no pairs: no pref_acc)."""
    logps, token_counts = score_all(model, examples.both(), device=device)
    n = len(examples)
    batch = example_logps(logps[:n], token_counts[:n], logps[n:], examples.labels, method.needs, terms, step=None,
                          policy_marginal=lambda: tuple(t[:n] for t in score_all(model, marginal_seqs, device=device)))
    out = copy.deepcopy(method)(batch)
    metrics = {"eval/loss": out.losses.mean().item()}
    metrics.update({f"eval/{k}": v for k, v in out.metrics.items() if k.startswith(("rewards/", "logps/")) or k == "kl"})
    return metrics


def _sample_sequences(tokenizer, samples, max_length: int) -> SequenceTensors:
    """[BOS] + prompt + sampled ids (+ EOS only if the sample emitted it), response tokens scored."""
    rows, masks = [], []
    for s in samples:
        prefix = with_boundary(tokenizer, encode_text(tokenizer, s.prompt))
        response = s.response_ids + ([] if s.truncated else [tokenizer.eos_token_id])
        seq = (prefix + response)[:max_length]
        rows.append(seq)
        masks.append([0] * len(prefix) + [1] * (len(seq) - len(prefix)))
    return _pad(rows, masks, tokenizer.pad_token_id)


# Offsets of the sampling streams of one run: each evaluation draws its samples from its own seed, so
# test, validation and curve samples are independent of each other and of other training seeds' streams.
SAMPLING_STREAMS = {"test": (1, 2), "val": (3, 4), "curve": (5, 6), "composition": (7, 8)}


def sampling_seeds(seed: int, stream: str) -> tuple[int, int]:
    """(policy seed, reference seed) of one evaluation stream of the run with training seed `seed`."""
    policy, reference = SAMPLING_STREAMS[stream]
    return 1000 * seed + policy, 1000 * seed + reference


def mean_gold(task, samples) -> float:
    return sum(task.gold_reward(s.prompt, s.response) for s in samples) / len(samples)


def gold_metrics(model, reference_model, tokenizer, task, prompts: list[str], eval_cfg: Mapping,
                 max_length: int, seeds: tuple[int, int], device, meter,
                 reference_samples: list[Sample] | None = None) -> dict[str, float]:
    """Gold-reward metrics on `prompts` (docs/design.md §7); seeds = (policy, reference) sampling seeds.
    `reference_samples`: the reference's samples of `prompts` with seeds[1] when already drawn (the shared
    `cached_reference_samples`); None samples them here."""
    cap = task.max_response_tokens
    # the policy's sample and greedy answer share one prefill (bench.generation.sample_sets)
    policy, greedy = sample_sets(model, tokenizer, prompts, cap, [seeds[0], None], device=device)
    sampled_here = policy + greedy
    if reference_samples is None:
        reference_samples = sample_responses(reference_model, tokenizer, prompts, cap, seed=seeds[1], device=device)
        sampled_here = sampled_here + reference_samples
    elif [s.prompt for s in reference_samples] != list(prompts):
        raise ValueError("gold_metrics: reference_samples are not samples of these prompts, in this order")
    ref = reference_samples
    gold = torch.tensor([task.gold_reward(s.prompt, s.response) for s in policy])
    gold_ref = torch.tensor([task.gold_reward(s.prompt, s.response) for s in ref])
    gold_greedy = torch.tensor([task.gold_reward(s.prompt, s.response) for s in greedy])
    win = (gold > gold_ref).float() + 0.5 * (gold == gold_ref).float()
    seqs = _sample_sequences(tokenizer, policy, max_length)
    policy_logps, _ = score_all(model, seqs, device=device)
    reference_logps, _ = score_all(reference_model, seqs, device=device)
    # reference samples read from the cache are the shared build's tokens (its build_cost), not this run's
    meter.add_nograd_tokens("eval", 2 * int(seqs.attention_mask.sum()) + sum(len(s.response_ids) for s in sampled_here))
    no_eos_rate = sum(s.truncated for s in policy) / len(policy)
    return {
        "gold_reward": gold.mean().item(),
        "gold_reward_median": gold.median().item(),
        "gold_reward_greedy": gold_greedy.mean().item(),
        "reference_gold_reward": gold_ref.mean().item(),
        "win_rate": win.mean().item(),
        "kl": (policy_logps - reference_logps).mean().item(),
        "length": sum(len(s.response_ids) for s in policy) / len(policy),
        "no_eos_rate": no_eos_rate,
        "collapsed": float(no_eos_rate >= eval_cfg["collapse_no_eos_rate"]),
    }


REFERENCE_SAMPLES_FILE = "samples.json"


def cached_reference_samples(cache: DiskCache, reference_key: str, reference_model, tokenizer,
                             sets: Mapping[str, tuple[list[str], int]], max_new_tokens: int, n_params: int,
                             device) -> tuple[dict[str, list[Sample]], CacheEntry]:
    """The reference model's samples of each evaluation set, {name: (prompts, seed)}, built once per
    (reference model, prompts, seeds, cap) in the disk cache: they do not depend on the method, so every
    run of a seed shares them (docs/design.md §7). Gold rewards are not stored: they are recomputed from
    the text, so a change to a task's gold reward never meets stale scores. The entry's build cost counts
    the sampled tokens and 2·N FLOPs per token (N = `n_params`), as the reference terms do."""
    payload = {"model": reference_key, "max_new_tokens": max_new_tokens,
               "sets": {name: {"seed": seed, "n_prompts": len(prompts), "prompts_sha256": _digest(prompts)}
                        for name, (prompts, seed) in sets.items()}}

    def build(directory: Path) -> dict:
        stored, tokens = {}, 0
        for name, (prompts, seed) in sets.items():
            samples = sample_responses(reference_model, tokenizer, prompts, max_new_tokens, seed=seed, device=device)
            stored[name] = [asdict(s) for s in samples]
            tokens += sum(len(s.response_ids) for s in samples)
        (directory / REFERENCE_SAMPLES_FILE).write_text(json.dumps(stored))
        return {"tokens": tokens, "flops": 2.0 * n_params * tokens}

    entry = cache.get_or_build("reference_samples", payload, build)
    path = entry.path / REFERENCE_SAMPLES_FILE
    stored = json.loads(path.read_text())
    out = {}
    for name, (prompts, _) in sets.items():
        samples = [Sample(**row) for row in stored.get(name, [])]
        if [s.prompt for s in samples] != list(prompts):
            raise ValueError(f"{path}: set {name!r} holds samples of other prompts than its key says; "
                             "delete the entry to rebuild it")
        out[name] = samples
    return out, entry


def shared_reference_samples(cache: DiskCache, reference_key: str, reference_model, tokenizer, task,
                             prompt_sets: Mapping[str, list[str]], seed: int, device, meter) -> dict[str, list[Sample]]:
    """`cached_reference_samples` of a run's evaluation sets, {stream: prompts} (SAMPLING_STREAMS), each with
    its stream's reference seed; the entry goes into the run's cost as the shared build `reference_samples`
    (docs/design.md §8), and time blocked on its lock is eval-phase waiting."""
    sets = {stream: (list(prompts), sampling_seeds(seed, stream)[1]) for stream, prompts in prompt_sets.items()}
    samples, entry = cached_reference_samples(cache, reference_key, reference_model, tokenizer, sets,
                                              task.max_response_tokens, non_embedding_parameters(reference_model),
                                              device)
    meter.add_shared("reference_samples", entry.key, entry.hit, entry.build_cost)
    meter.shared["reference_samples"]["wait_s"] = round(float(entry.wait_s), 4)
    meter.add_wait(entry.wait_s, "eval")
    return samples


def _digest(texts: list[str]) -> str:
    return hashlib.sha256(json.dumps(list(texts)).encode()).hexdigest()


class ValidationCurve:
    """Trainer step callback: validation gold reward at `fractions` of training, with the cost so far.

    `points` (written to the record as `val_curve`): one dict per fraction, {fraction, step (optimizer
    steps done), n_prompts, val/gold_reward, flops, device_hours, train_s}; flops, device_hours and
    train_s are cumulative for this run from the start of training up to and including this point's
    evaluation (shared builds and the final evaluation are not included). Every point scores the same
    prompts with the same sampling seed, so differences along the curve are not sampling noise of the
    prompt draw. Only the main process evaluates (other ranks wait at their next gradient sync).
    """

    def __init__(self, task, tokenizer, prompts: list[str], fractions: Sequence[float], seed: int, meter, device):
        self.task, self.tokenizer, self.prompts = task, tokenizer, list(prompts)
        self.fractions = sorted(float(f) for f in fractions)
        self.seed, self.meter, self.device = seed, meter, device
        self.points: list[dict] = []
        self._due: dict[int, float] | None = None
        self._started = time.perf_counter()

    def state_dict(self) -> dict:
        """The points so far and the time they cover, for a checkpoint (bench.checkpoint)."""
        return {"points": [dict(p) for p in self.points], "elapsed": time.perf_counter() - self._started}

    def load_state_dict(self, state: dict) -> None:
        self.points = [dict(p) for p in state["points"]]
        self._started = time.perf_counter() - state["elapsed"]  # train_s goes on counting from there

    def on_step_end(self, trainer, step: int, row: dict | None) -> None:
        if self._due is None:  # total_steps is known once the trainer exists
            self._due = {}
            for f in self.fractions:  # on a very short run two fractions can share a step: keep the first
                self._due.setdefault(max(1, round(f * trainer.total_steps)), f)
        done = step + 1
        if done not in self._due or not self.prompts or not trainer.accelerator.is_main_process:
            return
        model = trainer.accelerator.unwrap_model(trainer.model)
        try:
            samples = sample_responses(model, self.tokenizer, self.prompts, self.task.max_response_tokens,
                                       seed=self.seed, device=self.device)
        except RuntimeError:
            if _gives_finite_logits(model, self.tokenizer, self.prompts[0], self.device):
                raise
            # a diverged model: the trainer fails the run at its next loss, with the step and stats
            samples = None
        if samples is not None:
            self.meter.add_nograd_tokens("curve", sum(len(s.response_ids) for s in samples))
        gold = mean_gold(self.task, samples) if samples is not None else math.nan
        elapsed = time.perf_counter() - self._started
        self.points.append({
            "fraction": self._due[done], "step": done, "n_prompts": len(self.prompts),
            "val/gold_reward": gold,
            "flops": self.meter.total_flops(),  # the frozen trunk's saving included, as the record's total
            "device_hours": elapsed * self.meter.device_count / 3600.0, "train_s": elapsed,
        })


@torch.no_grad()
def _gives_finite_logits(model, tokenizer, prompt: str, device) -> bool:
    ids = torch.tensor([with_boundary(tokenizer, encode_text(tokenizer, prompt))], device=device)
    return bool(torch.isfinite(model(input_ids=ids, use_cache=False).logits).all())
