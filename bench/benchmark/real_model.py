"""The real-model workload (`--workload smollm2`): SmolLM2-135M-Instruct on pairs from the constraints task.

Loads the model exactly as `model=smollm2` does and builds fixed preference pairs from the task's own prompts
and composed answers, whose token shapes are what a run trains on (why fixed rather than sampled:
docs/architecture.md, "The throughput benchmark"). Must not time or train.
"""
from __future__ import annotations

import random
from pathlib import Path

from omegaconf import OmegaConf

from bench.benchmark.workload import CONF_DIR, Workload, benchmark_train_config
from bench.cache import DiskCache
from bench.data.encoding import boundary_token_id, encode_pairs, encode_text
from bench.data.tasks import build_task
from bench.models import load_hf_model, pretrained_path

TASK = "constraints"


def load_smollm2(cache_root: str | Path):
    """(model, tokenizer, model config) as `model=smollm2` loads them; the first use converts the GGUF
    into `cache_root` (docs/design.md §13), later ones read the converted directory."""
    model_cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "model" / "smollm2.yaml"))
    name, _ = pretrained_path(model_cfg, DiskCache(cache_root))
    model, tokenizer = load_hf_model({**model_cfg, "pretrained": name, "gguf": None})
    return model.float(), tokenizer, model_cfg


def constraints_records(task, n_pairs: int, seed: int) -> list[dict]:
    """n_pairs {prompt, chosen, rejected}: a prompt of the task (rendered as the task renders it, with
    the chat template once the tokenizer is bound), its compliant composed answer chosen, and in turn
    the instruction-ignoring, the off-topic and the repeating one rejected. Deterministic in `seed`;
    a pair whose chosen answer does not score higher (a rare failed composition) is skipped."""
    rng = random.Random(seed)
    records = []
    while len(records) < n_pairs:
        prompt = task.sample_prompt(rng)
        good, *bad = task.candidate_responses(prompt, rng)
        rejected = bad[len(records) % len(bad)]
        if good == rejected or task.gold_reward(prompt, good) <= task.gold_reward(prompt, rejected):
            continue
        records.append({"prompt": prompt, "chosen": good, "rejected": rejected})
    return records


def trl_columns(records: list[dict], tokenizer) -> dict[str, list[str]]:
    """TRL's text columns for these records. TRL tokenises prompt + response as one text and appends
    the EOS text itself, adding no BOS; our encoding adds the boundary token unless the prompt starts
    with it (SmolLM2's chat template does: <|im_start|>), so the prompt text gets it only otherwise."""
    start = boundary_token_id(tokenizer)
    start_text = tokenizer.convert_ids_to_tokens(start)
    prompts = [r["prompt"] if encode_text(tokenizer, r["prompt"])[:1] == [start] else start_text + r["prompt"]
               for r in records]
    return {"prompt": prompts, "chosen": [r["chosen"] for r in records], "rejected": [r["rejected"] for r in records]}


def build_smollm2_workload(steps: int, warmup: int, batch_size: int, seed: int, cache_root: str | Path) -> Workload:
    """One epoch of (warmup + steps) batches of constraints pairs for SmolLM2-135M-Instruct."""
    model, tokenizer, model_cfg = load_smollm2(cache_root)
    dataset_cfg = OmegaConf.to_container(OmegaConf.load(CONF_DIR / "dataset" / f"{TASK}.yaml"))
    task = build_task(TASK, **dataset_cfg["task_kwargs"])
    task.bind_tokenizer(tokenizer)  # prompts rendered with the chat template, as a suite run renders them
    train_cfg = benchmark_train_config(steps, warmup, batch_size)
    records = constraints_records(task, train_cfg["batch_size"] * train_cfg["max_steps"], seed)
    pairs, _, _ = encode_pairs(records, tokenizer, model_cfg["max_length"], f"benchmark/{TASK}")
    return Workload(records, tokenizer, pairs, model, model_cfg, train_cfg, TASK, seed,
                    trl_columns(records, tokenizer), name="smollm2")
