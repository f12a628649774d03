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
import copy
import json
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
from bench.methods import build_method
from bench.models import build_tiny_model, build_word_tokenizer, non_embedding_parameters
from bench.provenance import now, provenance
from bench.trainer import PairCache, PreferenceTrainer, marginal_per_conditional_token

SCHEMA_VERSION = 1
CONF_DIR = Path(__file__).resolve().parents[1] / "conf"
DEFAULT_OUT = Path("results/throughput")

# What each variant does per optimizer step (written into the markdown, so a reader knows what
# was compared). The "ours" variants run bench.trainer.PreferenceTrainer with conf/method/<name>.yaml.
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
        "per_step": "PreferenceTrainer, method dpo: index batch from pre-padded tensors; one forward+backward "
                    "on the concatenated [2B, L] batch (logits + cross-entropy on response tokens); cached "
                    "reference log-probs looked up by pair index; loss + TRL-named metrics; grad clipping; "
                    "AdamW (torch default, not fused); LR scheduler; per-step history row (log_every=1).",
    },
    "imi_dpo": {
        "side": "ours",
        "per_step": "As dpo, plus cached reference-side marginal log-probs looked up by pair index (pmi_source="
                    "reference) and the IMI regulator (delta_pmi -> g -> margin) with its metrics. No extra forward.",
    },
    "simpo": {
        "side": "ours",
        "per_step": "As dpo without the reference lookup (reference-free SimPO loss).",
    },
    "imi_simpo": {
        "side": "ours",
        "per_step": "As simpo, plus cached reference log-probs and reference-side marginals (pmi_source="
                    "reference) and the IMI regulator. No extra forward.",
    },
    "rmipo": {
        "side": "ours",
        "per_step": "As simpo, plus an extra no-grad forward of the live policy on the [2B, L'] response-only "
                    "batch ([BOS] response [EOS]) for log p(y | empty prompt) (RMiPO's code), then the IMI margin.",
    },
}
OUR_METHODS = tuple(name for name, v in VARIANTS.items() if v["side"] == "ours")

# Ratios measured within each repeat: (name, numerator, denominator, quantity, claim threshold or None).
# tokens_per_s ratios: higher is faster. seconds_per_step ratios: the cost of a variant per step
# relative to its base, on identical batches (same seed, same data order).
RATIOS = (
    ("dpo_vs_trl_precomputed", "dpo", "trl_dpo_precomputed", "tokens_per_s", (">=", 1.5)),
    ("dpo_vs_trl_ref_model", "dpo", "trl_dpo_ref_model", "tokens_per_s", None),
    ("imi_dpo_cost_vs_dpo", "imi_dpo", "dpo", "seconds_per_step", ("<=", 1.05)),
    ("imi_simpo_cost_vs_simpo", "imi_simpo", "simpo", "seconds_per_step", ("<=", 1.05)),
    ("rmipo_cost_vs_simpo", "rmipo", "simpo", "seconds_per_step", None),
)

EXCLUDED_FROM_TIMING = [
    "building the workload (task sampling, tokenisation of our tensors) and the models",
    "TRL: DPOTrainer construction (datasets.map tokenisation, the reference log-prob precompute pass)",
    "ours: the reference log-prob (and reference-side marginal) cache, computed by score_all before the "
    "trainer is built, as bench.pipeline does (cached on disk there)",
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
    """perf_counter at the end of every optimizer step, and the tokens that step fed the model.

    The timed window runs from the end of the last warm-up step to the end of the last step, so it
    holds whole steps (batch fetch, forward, backward, optimizer, logging) and nothing before them.
    """

    def __init__(self):
        self.step_ends: list[float] = []
        self.tokens: list[int] = []  # non-pad tokens of each step's [2B, L] batch
        self.padded: list[int] = []  # 2B * L positions of each step's batch
        self.nograd_tokens: list[int] = []  # extra no-grad forward tokens (rmipo's marginal pass)
        self.threads: list[int] = []

    def start_step(self, tokens: int, padded: int) -> None:
        self.tokens.append(int(tokens))
        self.padded.append(int(padded))
        self.nograd_tokens.append(0)

    def end_step(self) -> None:
        self.step_ends.append(time.perf_counter())
        self.threads.append(torch.get_num_threads())

    def summary(self, warmup: int) -> dict:
        n = len(self.step_ends)
        if n != len(self.tokens) or n <= warmup:
            raise RuntimeError(f"benchmark: {n} steps ended, {len(self.tokens)} started, warm-up {warmup}")
        seconds = self.step_ends[-1] - self.step_ends[warmup - 1] if warmup else None
        if seconds is None:
            raise ValueError("benchmark: --warmup must be >= 1 (the first step's start is not on the clock)")
        timed = slice(warmup, n)
        tokens = sum(self.tokens[timed])
        return {
            "steps_timed": n - warmup,
            "seconds": seconds,
            "tokens": tokens,
            "padded_tokens": sum(self.padded[timed]),
            "nograd_tokens": sum(self.nograd_tokens[timed]),
            "tokens_per_s": tokens / seconds,
            "seconds_per_step": seconds / (n - warmup),
            "torch_threads_seen": sorted(set(self.threads)),
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
    """The trainer logs one row per step with log_every=1: the end of the step."""

    def __init__(self, clock: StepClock):
        self.clock = clock

    def log_step(self, step: int, metrics: dict[str, float]) -> None:
        self.clock.end_step()


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


def run_ours(workload: Workload, name: str, warmup: int) -> dict:
    from accelerate import Accelerator

    method = build_method(method_config(name))
    pair_cache = our_pair_cache(workload, method)
    marginal_seqs = None
    if method.needs.marginal == "policy":
        marginal_seqs = workload.pairs.marginal(workload.tokenizer, workload.model_cfg["max_length"],
                                                method.needs.marginal_context)
    clock = StepClock()
    meter = _ClockMeter(clock)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=1)
    model = copy.deepcopy(workload.initial_model)
    trainer = PreferenceTrainer(method, model, _MeasuredPairs(workload.pairs, meter), pair_cache, marginal_seqs,
                                {**workload.train_cfg, "log_every": 1}, accelerator, meter, _ClockLogger(clock),
                                seed=workload.seed, show_progress=False)
    history = trainer.train()
    return {**clock.summary(warmup), "final_loss": history[-1]["loss"]}


def run_trl(workload: Workload, name: str, warmup: int) -> dict:
    try:
        from datasets import Dataset
        from transformers import TrainerCallback
        from trl import DPOConfig, DPOTrainer
    except ImportError as exc:  # trl is in the test extra: pip install -e .[test]
        raise ImportError(f"benchmark: TRL is needed for the {name} variant ({exc}); pip install 'trl>=1.16,<1.17'")

    clock = StepClock()

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
        args = DPOConfig(
            output_dir=out, use_cpu=True, bf16=False, fp16=False, gradient_checkpointing=False,
            loss_type=["sigmoid"], beta=method_config("dpo")["beta"],
            per_device_train_batch_size=cfg["batch_size"], max_steps=cfg["max_steps"],
            learning_rate=cfg["lr"], weight_decay=cfg["weight_decay"], max_grad_norm=cfg["max_grad_norm"],
            lr_scheduler_type="constant_with_warmup", warmup_steps=max(1, int(cfg["warmup_ratio"] * cfg["max_steps"])),
            max_length=workload.model_cfg["max_length"], precompute_ref_log_probs=precompute,
            dataloader_num_workers=0, logging_strategy="no", save_strategy="no", eval_strategy="no",
            report_to="none", disable_tqdm=True, seed=workload.seed,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            trainer = ClockedDPOTrainer(
                model=model, ref_model=None if precompute else copy.deepcopy(workload.initial_model), args=args,
                train_dataset=Dataset.from_dict(trl_texts(workload)), processing_class=workload.tokenizer,
                callbacks=[StepEnd()],
            )
            check_same_sequences(workload, trainer.train_dataset)
            result = trainer.train()
    return {**clock.summary(warmup), "final_loss": result.training_loss}


def run_variant(workload: Workload, name: str, warmup: int) -> dict:
    if name not in VARIANTS:
        raise ValueError(f"benchmark: unknown variant {name!r}; variants: {', '.join(VARIANTS)}")
    runner = run_trl if VARIANTS[name]["side"] == "trl" else run_ours
    return runner(workload, name, warmup)
