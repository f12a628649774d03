"""Preference data for a built-in task, made from the task's own SFT model (DESIGN §5).

Pairs = two temperature-1 samples per prompt from the SFT model, labelled by Bradley–Terry on the
task's label reward (`bench.data.labelling`), identical pairs dropped and counted. Four prompt sets:
train pairs, held-out eval pairs (for pref_acc), and two held-out prompt sets for gold reward, win rate
and KL — *validation* (what a tuner selects on, and the intermediate evaluations) and *test* (what a
report scores the selected configuration on; DESIGN §11a). Validation and test prompts are disjoint
where the task's prompt space allows it (arithmetic has ~9k prompts; sentiment has 15, so there the two
sets are independent draws, scored with independent samples). Deterministic given the seed; cached on
disk keyed by the SFT model too.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Mapping

from bench.cache import DiskCache
from bench.data.labelling import label_pairs
from bench.data.validate import check_on_bad_row
from bench.generation import sample_responses

SPLIT_FILES = {"train": "train.jsonl", "eval": "eval.jsonl"}
PROMPT_FILES = {"val_prompts": "val_prompts.json", "test_prompts": "test_prompts.json"}
# Consecutive draws that all land in the excluded set before we accept that the task's prompt space is
# exhausted and allow overlap (only tasks with a handful of distinct prompts get there).
MAX_REJECTIONS = 200


def check_builtin_config(cfg: Mapping) -> None:
    """The `dataset` group's checker for a built-in task (bench.config runs it before any compute; real
    datasets have bench.data.adapters.check_dataset_config). Errors name `dataset.<key>`."""
    from bench.data.tasks import available_tasks

    check_on_bad_row(cfg.get("on_bad_row", "error"))
    if cfg.get("task") not in available_tasks():
        raise ValueError(f"dataset.task: unknown task {cfg.get('task')!r}; available: {', '.join(available_tasks())}")
    noise = cfg.get("label_noise")
    if isinstance(noise, bool) or not isinstance(noise, (int, float)) or not 0.0 <= noise <= 0.5:
        raise ValueError(f"dataset.label_noise must be in [0, 0.5] (a flip rate above 0.5 inverts the labels), "
                         f"got {noise!r}")
    if not isinstance(cfg.get("drop_ties", False), bool):
        raise ValueError(f"dataset.drop_ties must be true or false, got {cfg.get('drop_ties')!r}")
    for key in ("bt_temperature", "n_train_prompts", "n_eval_pair_prompts", "n_val_prompts", "n_test_prompts"):
        value = cfg.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"dataset.{key} must be a number > 0, got {value!r}")


def _prompts(task, n: int, rng: random.Random, exclude: frozenset[str] = frozenset()) -> list[str]:
    """n prompts from the task's distribution, avoiding `exclude` while the prompt space allows it."""
    out, rejected = [], 0
    while len(out) < n:
        prompt = task.sample_prompt(rng)
        if prompt in exclude and rejected < MAX_REJECTIONS:
            rejected += 1
            continue
        out.append(prompt)
        rejected = 0
    return out


def _pairs_from_model(task, model, tokenizer, prompts: list[str], cfg: Mapping, seed: int):
    first = sample_responses(model, tokenizer, prompts, task.max_response_tokens, seed=seed)
    second = sample_responses(model, tokenizer, prompts, task.max_response_tokens, seed=seed + 1)
    triples = [(p, a.response, b.response) for p, a, b in zip(prompts, first, second)]
    return label_pairs(task, triples, random.Random(seed), cfg["bt_temperature"], cfg["label_noise"],
                       drop_ties=cfg.get("drop_ties", False))


def build_builtin_dataset(task, dataset_cfg: Mapping, sft_model, tokenizer, sft_key: str, cache: DiskCache):
    """Returns ({"train": records, "eval": records, "val_prompts": [str], "test_prompts": [str]}, stats, CacheEntry)."""
    seed = dataset_cfg["seed"]
    payload = {"sft": sft_key, "dataset": {k: v for k, v in dataset_cfg.items() if k != "on_bad_row"}}

    def build(directory: Path) -> dict:
        rng = random.Random(seed)
        # one draw of all prompts, then split, so the three sets never overlap by construction of the rng stream
        train_prompts = _prompts(task, dataset_cfg["n_train_prompts"], rng)
        eval_pair_prompts = _prompts(task, dataset_cfg["n_eval_pair_prompts"], rng)
        test_prompts = _prompts(task, dataset_cfg["n_test_prompts"], rng)
        val_prompts = _prompts(task, dataset_cfg["n_val_prompts"], rng, exclude=frozenset(test_prompts))
        train, train_stats = _pairs_from_model(task, sft_model, tokenizer, train_prompts, dataset_cfg, seed + 11)
        held_out, eval_stats = _pairs_from_model(task, sft_model, tokenizer, eval_pair_prompts, dataset_cfg, seed + 13)
        for split, records in (("train", train), ("eval", held_out)):
            with open(directory / SPLIT_FILES[split], "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
        for name, prompts in (("val_prompts", val_prompts), ("test_prompts", test_prompts)):
            (directory / PROMPT_FILES[name]).write_text(json.dumps(prompts))
        (directory / "stats.json").write_text(json.dumps({"train": train_stats, "eval": eval_stats}, default=str))
        n_tokens = 2 * sum(len(p.split()) + task.max_response_tokens for p in train_prompts + eval_pair_prompts)
        return {"sampled_tokens_upper_bound": n_tokens}

    entry = cache.get_or_build("dataset", payload, build)
    splits = {split: _read_jsonl(entry.path / name) for split, name in SPLIT_FILES.items()}
    for name, file in PROMPT_FILES.items():
        splits[name] = json.loads((entry.path / file).read_text())
    stats = json.loads((entry.path / "stats.json").read_text())
    return splits, stats, entry


def _read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
