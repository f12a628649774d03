"""Training throughput: the suite's PreferenceTrainer against TRL 1.16's DPOTrainer, on one CPU workload.

`python -m bench.benchmark [--steps N] [--repeats R] [--threads T ...] [--out DIR]`

Owns: building one workload (a tiny Llama from conf/model/tiny.yaml, the word tokenizer of a built-in
task, preference pairs drawn from that task's prompts and demonstrations), timing each training
variant on it with the same per-step clock, and writing the result (JSON + markdown, with provenance)
to results/throughput/. Must not: change how either trainer trains (both run as a user would run
them, only their one-off setup and warm-up steps are left out of the clock), or judge a claim from
a single run: every ratio is measured within one repeat, where the variants ran back to back, and
reported as the median and spread over repeats, because these machines are shared and noisy.

Token count (the same for both sides): non-pad tokens of the step's [2B, L] batch, i.e. of
[BOS] prompt chosen [EOS] plus [BOS] prompt rejected [EOS] for each of the B pairs. Both sides feed
the model exactly the same token sequences (checked before timing: `check_same_sequences`).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import io
import json
import operator
import platform
import random
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from bench.cost import CostMeter
from bench.data.encoding import PairTensors, encode_pairs
from bench.data.tasks import build_task
from bench.loggers import NoneLogger
from bench.logps import score_all
from bench.methods import PairLogps, build_method
from bench.models import (
    build_tiny_model,
    build_word_tokenizer,
    non_embedding_parameters,
)
from bench.provenance import now, provenance
from bench.trainer import PairCache, PreferenceTrainer, marginal_per_conditional_token

SCHEMA_VERSION = 1
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
DEFAULT_OUT = Path("results/throughput")

# What each variant does per optimizer step (written into the markdown, so a reader knows what
# was compared). The "ours" variants run bench.trainer.PreferenceTrainer with conf/method/<method>.yaml.
VARIANTS: dict[str, dict] = {
    "trl_dpo_precomputed": {
        "side": "trl",
        "per_step": "TRL DPOTrainer (loss_type sigmoid, precompute_ref_log_probs=True): HF Trainer loop; the "
                    "collator pads the pairs from the tokenized dataset; one forward+backward of the policy on "
                    "the concatenated [2B, L] chosen+rejected batch through TRL's fused LM head (log-probs, "
                    "entropy, mean logits, top-1 per token); reference log-probs read from the dataset columns; "
                    "TRL's per-step metrics (~15 .item() calls); grad clipping; AdamW (TRL's default, fused); "
                    "LR scheduler.",
    },
    "trl_dpo_ref_model": {
        "side": "trl",
        "per_step": "As trl_dpo_precomputed, but with ref_model=copy.deepcopy(model): an extra no-grad forward "
                    "of the reference model on the same [2B, L] batch every step.",
    },
    "dpo": {
        "side": "ours",
        "method": "dpo",
        "per_step": "PreferenceTrainer, method dpo: index batch from pre-padded tensors; one forward+backward "
                    "on the concatenated [2B, L] batch (logits + cross-entropy on response tokens); cached "
                    "reference log-probs looked up by pair index; loss + TRL-named metrics; grad clipping; "
                    "AdamW (torch default, not fused); LR scheduler; per-step history row (log_every=1).",
    },
    "imi_dpo": {
        "side": "ours",
        "method": "imi_dpo",
        "per_step": "As dpo, plus cached reference-side marginal log-probs looked up by pair index (pmi_source="
                    "reference) and the IMI regulator (delta_pmi -> g -> margin) with its metrics. No extra forward.",
    },
    "simpo": {
        "side": "ours",
        "method": "simpo",
        "per_step": "As dpo without the reference lookup (reference-free SimPO loss).",
    },
    "imi_simpo": {
        "side": "ours",
        "method": "imi_simpo",
        "per_step": "As simpo, plus cached reference log-probs and reference-side marginals (pmi_source="
                    "reference) and the IMI regulator. No extra forward.",
    },
    "rmipo": {
        "side": "ours",
        "method": "rmipo",
        "extra_forward": True,  # its cost is a forward pass, which loss_costs does not see
        "per_step": "As simpo, plus an extra no-grad forward of the live policy on the [2B, L'] response-only "
                    "batch ([BOS] response [EOS]) for log p(y | empty prompt) (RMiPO's code), then the IMI margin.",
    },
    "dpo_aa": {
        "side": "ours",
        "method": "dpo",
        "per_step": "Exactly dpo, run again in the same repeat (an A/A control): dpo_aa/dpo would be 1 on a quiet "
                    "machine, so its spread is the run-to-run noise of every other ratio.",
    },
}

# Ratios measured within each repeat: (name, numerator, denominator, quantity, claim threshold or None).
# tokens_per_s ratios: higher is faster. seconds_per_step ratios: the cost of a variant per step
# relative to its base, on identical batches (same seed, same data order).
RATIOS = (
    ("dpo_vs_trl_precomputed", "dpo", "trl_dpo_precomputed", "tokens_per_s", (">=", 1.5)),
    ("dpo_vs_trl_ref_model", "dpo", "trl_dpo_ref_model", "tokens_per_s", None),
    ("imi_dpo_cost_vs_dpo", "imi_dpo", "dpo", "seconds_per_step", ("<=", 1.05)),
    ("imi_simpo_cost_vs_simpo", "imi_simpo", "simpo", "seconds_per_step", ("<=", 1.05)),
    ("rmipo_cost_vs_simpo", "rmipo", "simpo", "seconds_per_step", None),
    ("noise_dpo_aa_vs_dpo", "dpo_aa", "dpo", "seconds_per_step", None),
)

EXCLUDED_FROM_TIMING = [
    "building the workload (task sampling, tokenisation of our tensors) and the models",
    "TRL: DPOTrainer construction (datasets.map tokenisation, the reference log-prob precompute pass)",
    ("ours: the reference log-prob (and reference-side marginal) cache, computed by score_all before the "
     "trainer is built, as bench.pipeline does (cached on disk there)"),
    "both: trainer construction, optimizer/accelerate preparation, and the first --warmup optimizer steps",
]


# ---------------------------------------------------------------------------------------------
# The workload


@dataclass
class Workload:
    """Everything both sides train on: the same pairs, tokenizer, model config and initial weights."""

    records: list[dict]  # {prompt, chosen, rejected} texts, as TRL takes them
    tokenizer: object
    pairs: PairTensors  # the same records encoded for our trainer
    initial_model: torch.nn.Module  # every run starts from a deep copy of these weights
    model_cfg: dict
    train_cfg: dict  # conf/config.yaml `train`, with batch_size / max_steps for this benchmark
    task: str
    seed: int

    @property
    def batch_size(self) -> int:
        return self.train_cfg["batch_size"]

    @property
    def total_steps(self) -> int:
        return self.train_cfg["max_steps"]


def sample_records(task_name: str, n_pairs: int, seed: int) -> list[dict]:
    """n_pairs {prompt, chosen, rejected} from a built-in task: two demonstrations per prompt, the one
    with the higher gold reward chosen (ties and identical texts are skipped). No SFT model is needed:
    throughput depends on the token shapes, which follow the task's own length distribution."""
    task = build_task(task_name)
    rng = random.Random(seed)
    records = []
    while len(records) < n_pairs:
        prompt = task.sample_prompt(rng)
        a, b = task.demonstration(prompt, rng), task.demonstration(prompt, rng)
        ra, rb = task.gold_reward(prompt, a), task.gold_reward(prompt, b)
        if a == b or ra == rb:
            continue
        chosen, rejected = (a, b) if ra > rb else (b, a)
        records.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return records


def build_workload(steps: int, warmup: int, batch_size: int | None = None, task: str = "sentiment",
                   seed: int = 0) -> Workload:
    """One workload with exactly one epoch of (warmup + steps) batches, so neither side wraps an epoch."""
    model_cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "tiny.yaml"))
    train_cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml").train)
    if batch_size is not None:
        train_cfg["batch_size"] = batch_size
    if train_cfg["grad_accum_steps"] != 1:
        raise ValueError("benchmark: conf/config.yaml train.grad_accum_steps must be 1 (one batch per step)")
    train_cfg["max_steps"] = warmup + steps
    records = sample_records(task, train_cfg["batch_size"] * train_cfg["max_steps"], seed)
    tokenizer = build_word_tokenizer(build_task(task).vocabulary)
    pairs, _, _ = encode_pairs(records, tokenizer, model_cfg["max_length"], f"benchmark/{task}")
    torch.manual_seed(seed)
    model = build_tiny_model(model_cfg, tokenizer).float()
    return Workload(records, tokenizer, pairs, model, model_cfg, train_cfg, task, seed)


def trl_texts(workload: Workload) -> dict[str, list[str]]:
    """The records as TRL text: '<bos> prompt ' and 'response' (TRL appends EOS itself), so TRL's
    tokenisation gives exactly our [BOS] prompt response [EOS] sequences (checked before timing)."""
    bos = workload.tokenizer.bos_token
    return {
        "prompt": [f"{bos} {r['prompt']} " for r in workload.records],
        "chosen": [r["chosen"] for r in workload.records],
        "rejected": [r["rejected"] for r in workload.records],
    }


def check_same_sequences(workload: Workload, trl_dataset) -> None:
    """Raise if any TRL training sequence differs from ours (the comparison would be unfair)."""
    ours = {"chosen": workload.pairs.chosen, "rejected": workload.pairs.rejected}
    for i, row in enumerate(trl_dataset):
        for side, seqs in ours.items():
            n = int(seqs.attention_mask[i].sum())
            mine = seqs.input_ids[i, :n].tolist()
            theirs = row["prompt_ids"] + row[f"{side}_ids"]
            if mine != theirs:
                raise RuntimeError(f"benchmark: pair {i} {side}: TRL tokenised {theirs}, ours is {mine}")
            if int(seqs.response_mask[i].sum()) != len(row[f"{side}_ids"]):
                raise RuntimeError(f"benchmark: pair {i} {side}: TRL and ours score different response tokens")


# ---------------------------------------------------------------------------------------------
# The per-step clock


class StepClock:
    """Wall (perf_counter) and process CPU time at the end of every optimizer step, and the tokens
    that step fed the model.

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
        self.tokens: list[int] = []  # non-pad tokens of each step's [2B, L] batch
        self.padded: list[int] = []  # 2B * L positions of each step's batch
        self.nograd_tokens: list[int] = []  # extra no-grad forward tokens (rmipo's marginal pass)
        self.threads: set[int] = set()

    def start_step(self, tokens, padded) -> None:
        self.tokens.append(int(tokens))
        self.padded.append(int(padded))
        self.nograd_tokens.append(0)

    def end_step(self) -> None:
        self.step_ends.append(time.perf_counter())
        self.cpu_ends.append(time.process_time())
        self.threads.add(torch.get_num_threads())
        if self.on_warmup_end is not None and len(self.step_ends) == self.warmup:
            self.on_warmup_end()

    def summary(self) -> dict:
        n, warmup = len(self.step_ends), self.warmup
        if n != len(self.tokens) or n <= warmup:
            raise RuntimeError(f"benchmark: {n} steps ended, {len(self.tokens)} started, warm-up {warmup}")
        seconds = self.step_ends[-1] - self.step_ends[warmup - 1]
        cpu_seconds = self.cpu_ends[-1] - self.cpu_ends[warmup - 1]
        step_seconds = [b - a for a, b in zip(self.step_ends[warmup - 1:], self.step_ends[warmup:])]
        tokens = self.tokens[warmup:]
        return {
            "steps_timed": n - warmup,
            "seconds": seconds,
            "cpu_seconds": cpu_seconds,
            "tokens": sum(tokens),
            "padded_tokens": sum(self.padded[warmup:]),
            "epoch_tokens": sum(self.tokens),  # every step, warm-up included: the whole workload once
            "padding_share": 1.0 - sum(tokens) / sum(self.padded[warmup:]),
            "nograd_tokens": sum(self.nograd_tokens[warmup:]),
            "tokens_per_s": sum(tokens) / seconds,
            "tokens_per_cpu_s": sum(tokens) / cpu_seconds,
            "seconds_per_step": seconds / (n - warmup),
            # per step: robust to a burst of load from other processes (median over steps)
            "median_step_tokens_per_s": statistics.median(t / s for t, s in zip(tokens, step_seconds)),
            "step_seconds": [round(s, 6) for s in step_seconds],
            "step_tokens": tokens,
            "torch_threads_seen": sorted(self.threads),
        }


class _ClockMeter(CostMeter):
    """The trainer's cost meter, also feeding the clock (the trainer calls add_train_tokens once per step)."""

    def __init__(self, clock: StepClock):
        super().__init__()
        self.clock = clock
        self.padded_next = 0

    def add_train_tokens(self, n: int) -> None:
        super().add_train_tokens(n)
        self.clock.start_step(n, self.padded_next)

    def add_nograd_tokens(self, kind: str, n: int) -> None:
        super().add_nograd_tokens(kind, n)
        self.clock.nograd_tokens[-1] += int(n)


class _ClockLogger(NoneLogger):
    """The trainer logs a row at the end of every step with log_every=1: that is the end of the step.
    Further calls for a step already logged merge into its row (the RunLogger contract), so they are
    not step ends (the trainer adds train_tokens_per_s to the last row after the loop)."""

    def __init__(self, clock: StepClock):
        self.clock = clock
        self.last_step: int | None = None

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        if step != self.last_step:
            self.clock.end_step()
            self.last_step = step


# ---------------------------------------------------------------------------------------------
# The two sides


def method_config(name: str) -> dict:
    """conf/method/<name>.yaml as a dict (the suite's published defaults, no overrides)."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "method" / f"{name}.yaml"))
    if cfg.get("pmi_source", "reference") != "reference":
        raise ValueError(f"benchmark: conf/method/{name}.yaml pmi_source must be 'reference' for this benchmark")
    return cfg


def our_pair_cache(workload: Workload, method) -> PairCache:
    """Reference log-probs (and reference-side marginals) of the train pairs, as bench.pipeline caches them."""
    needs = method.needs
    if not (needs.reference or needs.marginal == "reference"):
        return PairCache()
    reference = copy.deepcopy(workload.initial_model)
    pairs = workload.pairs
    logps, _ = score_all(reference, pairs.both())
    cache = PairCache(reference_logps=logps.view(2, -1).T.contiguous())
    if needs.marginal == "reference":
        marginal = pairs.marginal(workload.tokenizer, workload.model_cfg["max_length"], needs.marginal_context)
        sums, counts = score_all(reference, marginal)
        conditional_counts = pairs.both().scored_counts().view(2, -1).T
        cache.marginal_logps = marginal_per_conditional_token(
            sums.view(2, -1).T, counts.view(2, -1).T, conditional_counts)
    return cache


class _MeasuredPairs(PairTensors):
    """The workload's pairs, telling the meter the padded size of each batch the trainer takes."""

    def __init__(self, pairs: PairTensors, meter: _ClockMeter):
        super().__init__(pairs.chosen, pairs.rejected, pairs.responses)
        self.meter = meter

    def batch(self, index: torch.Tensor):
        seqs = super().batch(index)
        self.meter.padded_next = seqs.input_ids.numel()
        return seqs


def run_ours(workload: Workload, name: str, clock: StepClock) -> dict:
    from accelerate import Accelerator

    method = build_method(method_config(VARIANTS[name]["method"]))
    pair_cache = our_pair_cache(workload, method)
    marginal_seqs = None
    if method.needs.marginal == "policy":
        marginal_seqs = workload.pairs.marginal(workload.tokenizer, workload.model_cfg["max_length"],
                                                method.needs.marginal_context)
    meter = _ClockMeter(clock)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=1)
    model = copy.deepcopy(workload.initial_model)
    trainer = PreferenceTrainer(method, model, _MeasuredPairs(workload.pairs, meter), pair_cache, marginal_seqs,
                                {**workload.train_cfg, "log_every": 1}, accelerator, meter, _ClockLogger(clock),
                                seed=workload.seed, show_progress=False)
    history = trainer.train()
    return {"final_loss": history[-1]["loss"]}


def run_trl(workload: Workload, name: str, clock: StepClock) -> dict:
    try:
        from datasets import Dataset
        from transformers import PrinterCallback, ProgressCallback, TrainerCallback
        from trl import DPOConfig, DPOTrainer
    except ImportError as exc:  # trl is in the test extra: pip install -e .[test]
        raise ImportError(f"benchmark: TRL is needed for the {name} variant ({exc}); pip install 'trl>=1.16,<1.17'")

    class ClockedDPOTrainer(DPOTrainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            clock.start_step(inputs["attention_mask"].sum(), inputs["attention_mask"].numel())
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

    class StepEnd(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            clock.end_step()

    cfg = workload.train_cfg
    precompute = name == "trl_dpo_precomputed"
    model = copy.deepcopy(workload.initial_model)
    with tempfile.TemporaryDirectory(prefix="imi-bench-trl-") as out:
        with warnings.catch_warnings():  # transformers 5 deprecates `gradient_checkpointing`, which TRL sets
            warnings.simplefilter("ignore", FutureWarning)
            args = DPOConfig(
                output_dir=out, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
                loss_type=["sigmoid"], beta=method_config("dpo")["beta"],
                per_device_train_batch_size=cfg["batch_size"], max_steps=cfg["max_steps"],
                learning_rate=cfg["lr"], weight_decay=cfg["weight_decay"], max_grad_norm=cfg["max_grad_norm"],
                # ours: linear warm-up, then constant (bench.trainer's LambdaLR)
                lr_scheduler_type="constant_with_warmup",
                warmup_steps=max(1, int(cfg["warmup_ratio"] * cfg["max_steps"])),
                max_length=workload.model_cfg["max_length"], precompute_ref_log_probs=precompute,
                dataloader_num_workers=0, logging_strategy="no", save_strategy="no", eval_strategy="no",
                report_to="none", disable_tqdm=True, seed=workload.seed,
            )
        # TRL's reference precompute draws its own progress bar on stderr: keep it off the benchmark's.
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            trainer = ClockedDPOTrainer(
                model=model, ref_model=None if precompute else copy.deepcopy(workload.initial_model), args=args,
                train_dataset=Dataset.from_dict(trl_texts(workload)), processing_class=workload.tokenizer,
                callbacks=[StepEnd()],
            )
        check_same_sequences(workload, trainer.train_dataset)
        for callback in (PrinterCallback, ProgressCallback):  # no logging sinks, no per-step printing
            trainer.remove_callback(callback)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = trainer.train()
    return {"final_loss": result.training_loss}


def run_variant(workload: Workload, name: str, warmup: int, on_warmup_end=None) -> dict:
    """Train variant `name` on the workload; its clock's summary over the steps after `warmup`."""
    if name not in VARIANTS:
        raise ValueError(f"benchmark: unknown variant {name!r}; variants: {', '.join(VARIANTS)}")
    runner = run_trl if VARIANTS[name]["side"] == "trl" else run_ours
    clock = StepClock(warmup, on_warmup_end)
    extra = runner(workload, name, clock)
    return {**clock.summary(), **extra}


def loss_costs(workload: Workload, names: list[str], rounds: int = 5, iterations: int = 100) -> dict:
    """Each method's own per-step work, in ms (median [min–max] over `rounds`, interleaved): building
    its PairLogps from cached terms, the loss with its metrics, and the loss's backward to the log-probs.

    Everything else in a step (the model's forward/backward, the optimizer) is the same for a method
    and its IMI variant, so the difference of these times is what IMI adds per step, measured far more
    precisely than an end-to-end ratio can be on a shared machine. rmipo's extra policy forward is not
    part of it (its end-to-end ratio measures that); a stand-in tensor takes the forward's place.
    """
    methods = {name: build_method(method_config(name)) for name in names}
    caches = {name: our_pair_cache(workload, method) for name, method in methods.items()}
    index = torch.arange(workload.batch_size)
    counts = workload.pairs.both().scored_counts().view(2, -1).T[index]
    policy = -2.0 * counts  # stands in for the policy's summed log-probs (values do not change the cost)
    samples: dict[str, list[float]] = {name: [] for name in names}
    for _ in range(rounds):
        for name, method in methods.items():
            cache, times = caches[name], []
            for _ in range(iterations):
                started = time.perf_counter()
                logps = policy.clone().requires_grad_(True)
                batch = PairLogps(logps[:, 0], logps[:, 1], counts[:, 0], counts[:, 1])
                if cache.reference_logps is not None:
                    reference = cache.reference_logps[index]
                    batch.reference_chosen_logps, batch.reference_rejected_logps = reference[:, 0], reference[:, 1]
                if method.needs.marginal is not None:
                    marginal = (cache.marginal_logps[index] if method.needs.marginal == "reference"
                                else 1.5 * policy)  # the policy pass's output, detached
                    batch.marginal_chosen_logps, batch.marginal_rejected_logps = marginal[:, 0], marginal[:, 1]
                method(batch).losses.mean().backward()
                times.append(time.perf_counter() - started)
            samples[name].append(1e3 * statistics.median(times))
    return {name: _spread(values) for name, values in samples.items()}


# ---------------------------------------------------------------------------------------------
# Repeats, ratios, verdicts


def run_benchmark(steps: int, repeats: int, threads: list[int], warmup: int = 5, batch_size: int | None = None,
                  variants: list[str] | None = None, task: str = "sentiment", seed: int = 0,
                  show_progress: bool = True, command: str | None = None, checkpoint=None) -> dict:
    """Time every variant `repeats` times per thread count, interleaved: each repeat runs all variants
    back to back, in an order rotated by one per repeat so no variant always runs first or last.

    `checkpoint(results)`, if given, receives the results so far (complete=False) after every repeat,
    so that an interrupted benchmark still leaves what it measured, marked as incomplete.
    """
    variants = list(variants or VARIANTS)
    for name in variants:
        if name not in VARIANTS:
            raise ValueError(f"benchmark: unknown variant {name!r}; variants: {', '.join(VARIANTS)}")
    if min(steps, repeats, warmup) < 1 or not threads or min(threads) < 1:
        raise ValueError(f"benchmark: --steps, --repeats, --warmup and --threads must be >= 1, got {steps}, "
                         f"{repeats}, {warmup}, {threads}")
    workload = build_workload(steps, warmup, batch_size, task, seed)
    started_at, runs, load = now(), [], {"before": load_average(), "per_threads": {}}
    loss_only: dict[str, dict] = {}  # threads -> method -> ms (bench.benchmark.loss_costs)
    ours = list(dict.fromkeys(VARIANTS[name]["method"] for name in variants if VARIANTS[name]["side"] == "ours"))

    def assemble(complete: bool) -> dict:
        done = sorted({run["threads"] for run in runs}, key=threads.index)
        return {
            "schema_version": SCHEMA_VERSION,
            "complete": complete,
            "workload": describe_workload(workload, steps, warmup),
            "settings": {"steps": steps, "warmup_steps": warmup, "repeats": repeats, "threads": threads,
                         "variants": variants, "order": "rotated by one variant per repeat"},
            "variants": {name: VARIANTS[name] for name in variants},
            "excluded_from_timing": EXCLUDED_FROM_TIMING,
            "token_count": ("non-pad tokens of each step's [2B, L] batch: [BOS] prompt chosen [EOS] + [BOS] prompt "
                            "rejected [EOS] per pair (identical sequences on both sides); rmipo's extra no-grad "
                            "response-only tokens are not counted (reported as nograd_tokens)"),
            "summary": summarise(runs, done, variants, loss_only),
            "runs": runs,
            "load": {**load, "after": load_average()},
            "started_at": started_at,
            "finished_at": now(),
            "provenance": {**provenance(seed, []), "cpu_model": cpu_model(),
                           **({"command": command} if command else {})},
        }

    bar = tqdm(total=len(threads) * repeats * len(variants), desc="benchmark", disable=not show_progress)
    for n_threads in threads:
        load["per_threads"][str(n_threads)] = {"before": load_average()}
        for repeat in range(repeats):
            shift = repeat % len(variants)
            for position, name in enumerate(variants[shift:] + variants[:shift]):
                bar.set_postfix(threads=n_threads, repeat=repeat, variant=name)
                torch.set_num_threads(n_threads)
                result = run_variant(workload, name, warmup)
                if result["torch_threads_seen"] != [n_threads]:
                    raise RuntimeError(f"benchmark: {name} ran with torch threads {result['torch_threads_seen']}, "
                                       f"asked for {n_threads}")
                runs.append({"threads": n_threads, "repeat": repeat, "position": position, "variant": name, **result})
                bar.update(1)
            if checkpoint is not None:
                checkpoint(assemble(complete=False))
        if ours:
            bar.set_postfix(threads=n_threads, stage="loss-only costs")
            torch.set_num_threads(n_threads)
            loss_only[str(n_threads)] = loss_costs(workload, ours)
        load["per_threads"][str(n_threads)]["after"] = load_average()
    bar.close()
    return assemble(complete=True)


def describe_workload(workload: Workload, steps: int, warmup: int) -> dict:
    lengths = workload.pairs.both().attention_mask.sum(-1).float()
    model = workload.initial_model
    return {
        "task": workload.task,
        "n_pairs": len(workload.pairs),
        "batch_size": workload.batch_size,
        "max_length": workload.model_cfg["max_length"],
        "optimizer_steps": warmup + steps,
        "tokens_per_sequence_mean": round(float(lengths.mean()), 3),
        "tokens_per_sequence_max": int(lengths.max()),
        "model": {**workload.model_cfg, "vocab_size": len(workload.tokenizer), "dtype": str(next(model.parameters()).dtype),
                  "parameters": sum(p.numel() for p in model.parameters()),
                  "non_embedding_parameters": non_embedding_parameters(model)},
        "train": workload.train_cfg,
        "seed": workload.seed,
    }


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def summarise(runs: list[dict], threads: list[int], variants: list[str], loss_only: dict | None = None) -> dict:
    """Per thread count: each variant's throughput over repeats, each ratio measured within a repeat, and
    (given `loss_only`, threads -> loss_costs) what a variant's own loss work adds per step over its base's."""
    summary = {}
    for n_threads in threads:
        by_repeat: dict[int, dict[str, dict]] = {}
        for run in runs:
            if run["threads"] == n_threads:
                by_repeat.setdefault(run["repeat"], {})[run["variant"]] = run
        per_variant = {
            name: {key: _spread([r[name][key] for r in by_repeat.values()])
                   for key in ("tokens_per_s", "seconds_per_step", "tokens_per_cpu_s", "median_step_tokens_per_s",
                               "padding_share")}
            for name in variants
        }
        ratios = {}
        for ratio, top, bottom, quantity, claim in RATIOS:
            if top not in variants or bottom not in variants:
                continue
            views = {
                # the claim's own measure: whole timed window, wall clock
                "wall": [_ratio(r[top], r[bottom], quantity) for r in by_repeat.values()],
                # process CPU time: less disturbed by other processes on the machine
                "cpu": [_ratio(r[top], r[bottom], quantity, cpu=True) for r in by_repeat.values()],
                # median over steps: robust to bursts of load
                "median_step": [_median_step_ratio(r[top], r[bottom], quantity) for r in by_repeat.values()],
            }
            entry = {"numerator": top, "denominator": bottom, "quantity": quantity,
                     "per_repeat": views["wall"], **{view: _spread(v) for view, v in views.items()}}
            if claim is not None:
                op, threshold = claim
                holds = operator.ge if op == ">=" else operator.le
                entry["claim"] = f"{ratio} {op} {threshold}"
                entry["holds_on_median"] = holds(entry["wall"]["median"], threshold)
                entry["holds_in_every_repeat"] = all(holds(x, threshold) for x in views["wall"])
            costs = (loss_only or {}).get(str(n_threads), {})
            top_method, bottom_method = VARIANTS[top].get("method"), VARIANTS[bottom].get("method")
            if (quantity == "seconds_per_step" and top_method in costs and bottom_method in costs
                    and not VARIANTS[top].get("extra_forward")):
                # the rest of the step is the same code on the same batches, so this is the cost ratio
                # without the machine's run-to-run noise
                extra_ms = costs[top_method]["median"] - costs[bottom_method]["median"]
                step_ms = 1e3 * per_variant[bottom]["seconds_per_step"]["median"]
                entry["loss_only"] = {"numerator_ms": costs[top_method]["median"],
                                      "denominator_ms": costs[bottom_method]["median"], "extra_ms": extra_ms,
                                      "extra_share_of_step": extra_ms / step_ms,
                                      "implied_ratio": 1.0 + extra_ms / step_ms}
                if claim is not None:
                    entry["holds_by_loss_only"] = holds(entry["loss_only"]["implied_ratio"], threshold)
            ratios[ratio] = entry
        summary[f"threads={n_threads}"] = {"variants": per_variant, "ratios": ratios,
                                           "loss_only_ms": (loss_only or {}).get(str(n_threads), {})}
    return summary


def _ratio(top: dict, bottom: dict, quantity: str, cpu: bool = False) -> float:
    if quantity == "tokens_per_s":
        key = "tokens_per_cpu_s" if cpu else "tokens_per_s"
        return top[key] / bottom[key]
    key = "cpu_seconds" if cpu else "seconds"
    return (top[key] / top["steps_timed"]) / (bottom[key] / bottom["steps_timed"])


def _median_step_ratio(top: dict, bottom: dict, quantity: str) -> float:
    """tokens/s: ratio of the per-step medians. seconds/step: median of step-by-step ratios (the two
    runs train on identical batches in the same order, so step k of one pairs with step k of the other)."""
    if quantity == "tokens_per_s":
        return top["median_step_tokens_per_s"] / bottom["median_step_tokens_per_s"]
    if top["step_tokens"] != bottom["step_tokens"]:
        raise RuntimeError("benchmark: a seconds-per-step ratio needs identical batches on both sides")
    return statistics.median(a / b for a, b in zip(top["step_seconds"], bottom["step_seconds"]))


# ---------------------------------------------------------------------------------------------
# Provenance and output


def load_average() -> dict:
    """The machine's load when the benchmark started/ended (other jobs share these CPUs)."""
    import os

    one, five, fifteen = os.getloadavg()
    try:
        uptime = subprocess.run(["uptime"], check=False, capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        uptime = None
    return {"load_1m": one, "load_5m": five, "load_15m": fifteen, "uptime": uptime, "at": now()}


def cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], check=False, capture_output=True, text=True, timeout=5).stdout
    except OSError:
        out = ""
    for line in out.splitlines():
        if line.startswith("Model name:"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def write_results(results: dict, out_dir: Path) -> tuple[Path, Path]:
    """results.json (everything, per-step times included) and results.md (the tables and what was compared)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / "throughput.json", out_dir / "throughput.md"
    for path, text in ((json_path, json.dumps(results, indent=1) + "\n"), (md_path, render_markdown(results))):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)  # atomic: an interrupted run never leaves half a result
    return json_path, md_path


def _fmt(spread: dict, digits: int = 3) -> str:
    def number(x: float) -> str:
        return f"{x:.0f}" if abs(x) >= 10 ** digits else f"{x:.{digits}g}"  # 10070, not 1.007e+04

    return f"{number(spread['median'])} [{number(spread['min'])}–{number(spread['max'])}]"


def render_markdown(results: dict) -> str:
    w, s, prov = results["workload"], results["settings"], results["provenance"]
    lines = [
        "# Training throughput: imi-bench PreferenceTrainer vs TRL DPOTrainer (CPU)",
        "",
        f"Command: `{prov['command']}`  ",
        f"Date: {results['started_at']} → {results['finished_at']}; git {prov['git_commit']} (dirty: {prov['git_dirty']})  ",
        f"CPU: {prov['cpu_model']}, {prov['hardware']['cpu_count']} logical CPUs; torch threads per run: {s['threads']}  ",
        (f"Load (1/5/15 min) before: {_load(results['load']['before'])}; after: {_load(results['load']['after'])} "
         "(the machine was shared with other jobs)  "),
        "Packages: " + ", ".join(f"{k} {v}" for k, v in prov["packages"].items()),
        "",
    ]
    if not results["complete"]:
        lines += ["**INCOMPLETE: the benchmark was interrupted; these are the repeats it finished.**", ""]
    lines += [
        "## Workload (identical for every variant)",
        "",
        (f"- {w['n_pairs']} preference pairs from the built-in `{w['task']}` task (prompts and demonstrations, "
         f"the higher gold reward chosen), {w['tokens_per_sequence_mean']} tokens per sequence on average "
         f"(max {w['tokens_per_sequence_max']}), word-level tokenizer ({w['model']['vocab_size']} tokens)."),
        (f"- Tiny Llama (conf/model/tiny.yaml): hidden {w['model']['hidden_size']}, {w['model']['num_layers']} "
         f"layers, {w['model']['parameters']:,} parameters ({w['model']['non_embedding_parameters']:,} "
         f"non-embedding), {w['model']['dtype']}, same initial weights for every run."),
        (f"- Batch {w['batch_size']} pairs, max length {w['max_length']}, {w['optimizer_steps']} optimizer steps "
         f"(one epoch): {s['warmup_steps']} warm-up steps, then {s['steps']} timed steps. lr {w['train']['lr']}, "
         f"constant after {w['train']['warmup_ratio']:.0%} linear warm-up, grad clipping at "
         f"{w['train']['max_grad_norm']}."),
        f"- {s['repeats']} repeats per thread count; {s['order']}. Ratios are computed within each repeat.",
        f"- Tokens: {results['token_count']}.",
        ("- Both sides: fp32, CPU, the same torch thread count, TRL dataloader workers 0, no logging sinks, "
         "no evaluation, no checkpoints, no gradient checkpointing, no progress bars. Differences kept (each "
         "side's own behaviour): the data order (each trainer shuffles with its own sampler; tokens/s "
         "normalises for it), the optimizer implementation (TRL's default fused AdamW, ours torch's default "
         "AdamW), TRL's extra per-token outputs of its fused LM head."),
        "- Left out of the clock: " + "; ".join(results["excluded_from_timing"]) + ".",
        "",
        "## What each variant does per step",
        "",
    ]
    lines += [f"- **{name}** ({v['side']}): {v['per_step']}" for name, v in results["variants"].items()]
    for key, block in results["summary"].items():
        per_threads = results["load"]["per_threads"].get(key.removeprefix("threads="), {})
        lines += ["", f"## {key}", ""]
        if per_threads:
            lines += [f"Load (1/5/15 min) when these runs started: {_load(per_threads['before'])}"
                      + (f"; ended: {_load(per_threads['after'])}" if "after" in per_threads else ""), ""]
        lines += [("Median [min–max] over repeats. tokens/s: wall clock over the timed window; tokens/CPU-s: "
                   "process CPU time (less disturbed by other jobs); padding: share of the model's input "
                   "positions that are padding."), "",
                  "| variant | tokens/s | s/step | tokens/CPU-s | median-step tokens/s | padding |",
                  "|---|---|---|---|---|---|"]
        for name, v in block["variants"].items():
            lines.append(f"| {name} | {_fmt(v['tokens_per_s'], 4)} | {_fmt(v['seconds_per_step'])} | "
                         f"{_fmt(v['tokens_per_cpu_s'], 4)} | {_fmt(v['median_step_tokens_per_s'], 4)} | "
                         f"{v['padding_share']['median']:.1%} |")
        lines += ["", ("Ratios: wall = whole timed window; CPU = process CPU time; median step = per-step "
                       "(step-by-step for costs, on identical batches); loss-only implied = 1 + (the variant's "
                       "loss-only ms − its base's) / the base's step, free of run-to-run noise because the rest "
                       "of the step is the same code on the same batches. The A/A row (dpo run twice) shows "
                       "that noise."), "",
                  ("| ratio | claim | wall (per repeat) | wall | CPU time | median step | verdict (wall median) "
                   "| loss-only implied |"), "|---|---|---|---|---|---|---|---|"]
        for name, r in block["ratios"].items():
            per_repeat = ", ".join(f"{x:.3f}" for x in r["per_repeat"])
            verdict = "—"
            if "claim" in r:
                verdict = ("holds" if r["holds_on_median"] else "MISSED") + (
                    "" if r["holds_in_every_repeat"] == r["holds_on_median"] else " (not in every repeat)")
            implied = "—"
            if "loss_only" in r:
                implied = f"{r['loss_only']['implied_ratio']:.4f}"
                if "holds_by_loss_only" in r:
                    implied += " holds" if r["holds_by_loss_only"] else " MISSED"
            lines.append(f"| {name} ({r['quantity']}) | {r.get('claim', 'report')} | {per_repeat} | "
                         f"{_fmt(r['wall'])} | {_fmt(r['cpu'])} | {_fmt(r['median_step'])} | {verdict} | {implied} |")
        if block.get("loss_only_ms"):
            lines += ["", ("Loss-only cost per step (ms, median [min–max] over interleaved rounds): each method's "
                           "PairLogps assembly, loss, metrics and the loss's backward, on one batch; the rest of a "
                           "step is shared by a method and its IMI variant (see `loss_costs`)."), "",
                      "| method | loss-only ms |", "|---|---|"]
            lines += [f"| {name} | {_fmt(v)} |" for name, v in block["loss_only_ms"].items()]
    return "\n".join(lines) + "\n"


def _load(load: dict) -> str:
    return f"{load['load_1m']:.2f}/{load['load_5m']:.2f}/{load['load_15m']:.2f}"


def profile_variants(workload: Workload, names: list[str], warmup: int, top: int = 12) -> str:
    """Markdown: where one run of each variant spends its CPU time over the timed steps (torch.profiler
    from the end of the warm-up to the last step; top ops by self time). Answers "why" when a ratio
    misses its claim."""
    from torch.profiler import ProfilerActivity, profile

    lines = ["# Where the time goes (torch.profiler over the timed steps, one run per variant)", ""]
    for name in names:
        prof = profile(activities=[ProfilerActivity.CPU])
        result = run_variant(workload, name, warmup, on_warmup_end=prof.start)
        prof.stop()
        events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
        total = sum(e.self_cpu_time_total for e in events)
        matmul = sum(e.self_cpu_time_total for e in events if e.key in MATMUL_OPS)
        lines += [f"## {name}", "",
                  (f"{result['tokens_per_s']:.0f} tokens/s under the profiler; matrix multiplies "
                   f"({', '.join(MATMUL_OPS)}) take {matmul / total:.1%} of self CPU time; "
                   f"{result['padding_share']:.1%} of the model's input positions are padding."), "",
                  "| op | self CPU s | share | calls |", "|---|---|---|---|"]
        lines += [f"| {e.key} | {e.self_cpu_time_total / 1e6:.3f} | {e.self_cpu_time_total / total:.1%} | {e.count} |"
                  for e in events[:top]]
        lines.append("")
    return "\n".join(lines)


MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench.benchmark", description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60, help="timed optimizer steps per run (default 60)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed optimizer steps first (default 5)")
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repeats per thread count (default 5)")
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="torch thread counts, e.g. 1 2")
    parser.add_argument("--batch-size", type=int, default=None, help="pairs per step (default: conf train.batch_size)")
    parser.add_argument("--variants", nargs="+", default=None, choices=list(VARIANTS), help="default: all")
    parser.add_argument("--task", default="sentiment", help="built-in task the pairs come from")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"output directory (default {DEFAULT_OUT})")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--profile", nargs="*", metavar="VARIANT", default=None,
                        help="also profile one run of each named variant (default dpo trl_dpo_precomputed) "
                             "and write profile.md")
    args = parser.parse_args(argv)
    _quiet_libraries()
    command = shlex.join(["python", "-m", "bench.benchmark", *(sys.argv[1:] if argv is None else argv)])
    results = run_benchmark(args.steps, args.repeats, args.threads, args.warmup, args.batch_size, args.variants,
                            args.task, args.seed, show_progress=not args.no_progress, command=command,
                            checkpoint=lambda partial: write_results(partial, args.out))
    json_path, md_path = write_results(results, args.out)
    for key, block in results["summary"].items():
        for name, r in block["ratios"].items():
            print(f"{key} {name}: {_fmt(r['wall'])} (claim: {r.get('claim', 'report')})")
    print(f"wrote {json_path} and {md_path}")
    if args.profile is not None:
        torch.set_num_threads(args.threads[0])
        workload = build_workload(args.steps, args.warmup, args.batch_size, args.task, args.seed)
        names = args.profile or ["dpo", "trl_dpo_precomputed"]
        profile_path = args.out / "profile.md"
        profile_path.write_text(profile_variants(workload, names, args.warmup)
                                + f"\nThreads: {args.threads[0]}. Command: `{results['provenance']['command']}`\n")
        print(f"wrote {profile_path}")
    return results


def _quiet_libraries() -> None:
    """transformers/datasets notices and per-map progress bars would drown the benchmark's own bar."""
    import datasets
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    datasets.utils.logging.disable_progress_bar()
    datasets.utils.logging.set_verbosity_error()


if __name__ == "__main__":
    main()
