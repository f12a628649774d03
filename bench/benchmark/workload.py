"""The one workload every variant trains on: the same pairs, tokenizer, model config and initial weights.

Owns: sampling preference pairs from a built-in task, encoding them for our trainer, the text form TRL
takes (checked to tokenise to the very same sequences), and the reference terms our trainer caches.
Must not: time anything (bench.benchmark.clock) or train (bench.benchmark.runners).
"""
from __future__ import annotations

import copy
import random
from dataclasses import dataclass

import torch
from omegaconf import OmegaConf

from bench import conf_dir
from bench.data.encoding import PairTensors, encode_pairs
from bench.data.tasks import build_task
from bench.models import build_tiny_model, build_word_tokenizer, non_embedding_parameters
from bench.reference import ReferenceTerms, needs_reference_terms, score_reference_terms

CONF_DIR = conf_dir()


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
    marginal = None
    if needs.marginal == "reference":
        marginal = workload.pairs.marginal(workload.tokenizer, workload.model_cfg["max_length"], needs.marginal_context)
    return score_reference_terms(copy.deepcopy(workload.initial_model), workload.pairs, marginal=marginal)
