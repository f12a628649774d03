"""The one workload every variant trains on: the same pairs, tokenizer, model config and initial weights.

Owns: the `Workload` both sides take, the built-in workload (a tiny Llama on pairs sampled from a
built-in task; the real-model one is bench.benchmark.real_model), encoding pairs for our trainer, the
text form TRL takes (checked to tokenise to the very same sequences), the parameters that train (checked
to be the same set on both sides), and the reference terms our trainer caches.
Must not: time anything (bench.benchmark.clock) or train (bench.benchmark.runners).
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass, field

import torch
from omegaconf import OmegaConf

from bench import conf_dir
from bench.data.encoding import PairTensors, encode_pairs
from bench.data.tasks import build_task
from bench.models import build_tiny_model, build_word_tokenizer, flop_parameters, non_embedding_parameters
from bench.reference import ReferenceTerms, needs_reference_terms, score_reference_terms

CONF_DIR = conf_dir()
WORKLOADS = ("builtin", "smollm2")  # --workload: the tiny model on a built-in task, or the real model


@dataclass
class Workload:
    """Everything both sides train on: the same pairs, tokenizer, model config and initial weights."""

    records: list[dict]  # {prompt, chosen, rejected} texts
    tokenizer: object
    pairs: PairTensors  # the same records encoded for our trainer
    initial_model: torch.nn.Module  # every run starts from a deep copy of these weights (requires_grad included)
    model_cfg: dict
    train_cfg: dict  # conf/config.yaml `train`, with batch_size / max_steps for this benchmark
    task: str
    seed: int
    trl_columns: dict[str, list[str]]  # the records as TRL's text columns (see trl_texts)
    name: str = "builtin"  # which of WORKLOADS
    # our reference terms per method Needs: the same numbers for every run, so computed once (bench.pipeline
    # caches them on disk; either way they are outside the clock)
    reference_terms: dict = field(default_factory=dict, repr=False)

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
    train_cfg = benchmark_train_config(steps, warmup, batch_size)
    records = sample_records(task, train_cfg["batch_size"] * train_cfg["max_steps"], seed)
    tokenizer = build_word_tokenizer(build_task(task).vocabulary)
    pairs, _, _ = encode_pairs(records, tokenizer, model_cfg["max_length"], f"benchmark/{task}")
    torch.manual_seed(seed)
    model = build_tiny_model(model_cfg, tokenizer).float()
    # the word tokenizer splits on whitespace and adds no BOS of its own: '<bos> prompt ' and 'response'
    # (TRL appends EOS itself) tokenise to our [BOS] prompt response [EOS]
    bos = tokenizer.bos_token
    trl_columns = {"prompt": [f"{bos} {r['prompt']} " for r in records],
                   "chosen": [r["chosen"] for r in records], "rejected": [r["rejected"] for r in records]}
    return Workload(records, tokenizer, pairs, model, model_cfg, train_cfg, task, seed, trl_columns)


def benchmark_train_config(steps: int, warmup: int, batch_size: int | None) -> dict:
    """conf/config.yaml `train` for exactly one epoch of (warmup + steps) batches, so neither side wraps."""
    train_cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "config.yaml").train)
    if batch_size is not None:
        train_cfg["batch_size"] = batch_size
    if train_cfg["grad_accum_steps"] != 1:
        raise ValueError("benchmark: conf/config.yaml train.grad_accum_steps must be 1 (one batch per step)")
    train_cfg["max_steps"] = warmup + steps
    return train_cfg


def describe_workload(workload: Workload, steps: int, warmup: int) -> dict:
    lengths = workload.pairs.both().attention_mask.sum(-1).float()
    model = workload.initial_model
    counts = flop_parameters(model)
    config = model.config
    return {
        "name": workload.name,
        "task": workload.task,
        "n_pairs": len(workload.pairs),
        "batch_size": workload.batch_size,
        "max_length": workload.model_cfg["max_length"],
        "optimizer_steps": warmup + steps,
        "tokens_per_sequence_mean": round(float(lengths.mean()), 3),
        "tokens_per_sequence_max": int(lengths.max()),
        "model": {**workload.model_cfg, "hidden_size": config.hidden_size,
                  "intermediate_size": config.intermediate_size, "num_layers": config.num_hidden_layers,
                  "vocab_size": len(workload.tokenizer),
                  "dtype": str(next(model.parameters()).dtype),
                  "parameters": sum(p.numel() for p in model.parameters()),
                  "non_embedding_parameters": non_embedding_parameters(model),
                  "backprop_parameters": counts["n_backprop"], "trainable_parameters": counts["n_trainable"],
                  "trainable_tensors": len(trainable_names(model))},
        "train": workload.train_cfg,
        "seed": workload.seed,
    }


def trl_texts(workload: Workload) -> dict[str, list[str]]:
    """The records as TRL's text columns (prompt, chosen, rejected), written so that TRL's own
    tokenisation gives exactly our [BOS] prompt response [EOS] sequences (checked before timing)."""
    return workload.trl_columns


def check_same_sequences(workload: Workload, trl_dataset) -> None:
    """Raise if any TRL training sequence differs from ours (the comparison would be unfair).

    TRL's dataset holds untruncated prompt/response ids; its collator cuts prompt + response to
    max_length from the end (truncation_mode keep_start), as our encoding does, so that cut is applied
    here before comparing."""
    ours = {"chosen": workload.pairs.chosen, "rejected": workload.pairs.rejected}
    max_length = workload.model_cfg["max_length"]
    for i, row in enumerate(trl_dataset):
        for side, seqs in ours.items():
            n = int(seqs.attention_mask[i].sum())
            mine = seqs.input_ids[i, :n].tolist()
            theirs = (row["prompt_ids"] + row[f"{side}_ids"])[:max_length]
            if mine != theirs:
                raise RuntimeError(f"benchmark: pair {i} {side}: TRL tokenised {theirs}, ours is {mine}")
            if int(seqs.response_mask[i].sum()) != len(theirs) - len(row["prompt_ids"]):
                raise RuntimeError(f"benchmark: pair {i} {side}: TRL and ours score different response tokens")


def trainable_names(model: torch.nn.Module) -> list[str]:
    """Names of the parameters that train (requires_grad): what either trainer's optimizer updates."""
    return [name for name, parameter in model.named_parameters() if parameter.requires_grad]


def check_same_trainable(workload: Workload, model: torch.nn.Module, side: str) -> None:
    """Raise unless `model` (the copy a trainer is about to train) trains exactly the workload's parameters."""
    expected, seen = trainable_names(workload.initial_model), trainable_names(model)
    if seen != expected:
        missing, extra = sorted(set(expected) - set(seen)), sorted(set(seen) - set(expected))
        raise RuntimeError(f"benchmark: {side} would train a different parameter set than the workload's "
                           f"(missing {missing[:5]}, extra {extra[:5]}, {len(seen)} vs {len(expected)} tensors)")


@torch.no_grad()
def check_frozen_unchanged(workload: Workload, model: torch.nn.Module, side: str) -> None:
    """Raise if a trainer changed a parameter the workload freezes (after training: the frozen set was
    not only declared the same on both sides, it stayed frozen)."""
    initial = dict(workload.initial_model.named_parameters())
    for name, parameter in model.named_parameters():
        if not initial[name].requires_grad and not torch.equal(parameter, initial[name]):
            raise RuntimeError(f"benchmark: {side} changed the frozen parameter {name}")


def method_config(name: str) -> dict:
    """conf/method/<name>.yaml as a dict (the suite's published defaults, no overrides)."""
    cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "method" / f"{name}.yaml"))
    if cfg.get("pmi_source", "reference") != "reference":
        raise ValueError(f"benchmark: conf/method/{name}.yaml pmi_source must be 'reference' for this benchmark")
    return cfg


def our_reference_terms(workload: Workload, method) -> ReferenceTerms:
    """The reference terms of the train pairs our trainer reads for `method`, computed as bench.pipeline
    computes them (there cached on disk); the reference is the initial weights."""
    needs = method.needs
    if not needs_reference_terms(needs):
        return ReferenceTerms()
    if needs not in workload.reference_terms:
        marginal = None
        if needs.marginal == "reference":
            marginal = workload.pairs.marginal(workload.tokenizer, workload.model_cfg["max_length"],
                                               needs.marginal_context)
        workload.reference_terms[needs] = score_reference_terms(copy.deepcopy(workload.initial_model),
                                                                workload.pairs, marginal=marginal)
    return workload.reference_terms[needs]
