"""Preference data for a built-in task, made from the task's own SFT model (docs/design.md §5).

Pairs = two temperature-1 samples per prompt from the SFT model (which plays the pretrained model),
labelled by Bradley–Terry on the task's label reward (`bench.data.labelling`), identical pairs dropped and
counted. Prompt sets, each from its own region of the task's prompt space (`bench.data.splits`, so they
never overlap): train pairs, eval pairs (for pref_acc), validation (what a tuner selects on), test (what a
report scores the selection on; docs/design.md §11a) and, where the task defines one, the composition test set.
The run seed draws all of them and the pairs, so every configuration at seed s shares seed s's data.
Cached on disk keyed by the SFT model and the seed.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Mapping

from bench.cache import DiskCache
from bench.data.labelling import label_pairs
from bench.data.splits import COMPOSITION_REGION, draw_prompts, has_composition_split, prompt_set_stats
from bench.data.validate import check_on_bad_row
from bench.generation import sample_sets

SPLIT_FILES = {"train": "train.jsonl", "eval": "eval.jsonl"}
PROMPT_FILES = {"val_prompts": "val_prompts.json", "test_prompts": "test_prompts.json",
                "composition_prompts": "composition_prompts.json"}
# The config key that sizes each prompt set, and the region it is drawn from.
PROMPT_SETS = {"train_pairs": "n_train_prompts", "eval_pairs": "n_eval_pair_prompts", "validation": "n_val_prompts",
               "test": "n_test_prompts", COMPOSITION_REGION: "n_composition_prompts"}
# Offsets of the run seed's streams, so that drawing more prompts for one set changes no other set.
STREAMS = {"train_pairs": 1, "eval_pairs": 2, "validation": 3, "test": 4, COMPOSITION_REGION: 5}


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
    for key in ("bt_temperature", *PROMPT_SETS.values()):
        value = cfg.get(key, 0 if key == PROMPT_SETS[COMPOSITION_REGION] else None)
        optional = key == PROMPT_SETS[COMPOSITION_REGION]  # 0 or absent: no composition test set
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or (value == 0 and not optional):
            raise ValueError(f"dataset.{key} must be a number {'>= 0' if optional else '> 0'}, got {value!r}")


def draw_prompt_sets(task, dataset_cfg: Mapping, seed: int) -> dict[str, list[str]]:
    """Every prompt set of the run with seed `seed`, by region name (the composition set only where the task
    holds out compositions)."""
    wants_composition = dataset_cfg.get(PROMPT_SETS[COMPOSITION_REGION], 0) > 0 and has_composition_split(task)
    names = [n for n in PROMPT_SETS if n != COMPOSITION_REGION or wants_composition]
    return {name: draw_prompts(task, name, int(dataset_cfg[PROMPT_SETS[name]]), random.Random(f"{seed}/{STREAMS[name]}"),
                               f"dataset.{PROMPT_SETS[name]}") for name in names}


def _pairs_from_model(task, model, tokenizer, prompts: list[str], cfg: Mapping, seed: int):
    # both answers of a pair in one call: one prefill of the prompts (the same samples as two calls)
    first, second = sample_sets(model, tokenizer, prompts, task.max_response_tokens, [seed, seed + 1])
    triples = [(p, a.response, b.response) for p, a, b in zip(prompts, first, second)]
    return label_pairs(task, triples, random.Random(seed), cfg["bt_temperature"], cfg["label_noise"],
                       drop_ties=cfg.get("drop_ties", False))


def build_builtin_dataset(task, dataset_cfg: Mapping, sft_model, tokenizer, sft_key: str, cache: DiskCache,
                          seed: int, sft_corpus_prompts: list[str] | None = None):
    """Returns ({"train", "eval": records; "val_prompts", "test_prompts", "composition_prompts": [str]}, stats,
    CacheEntry) for the run seed `seed`. stats["prompt_sets"] measures the sets as used (kept pairs' prompts),
    with the SFT corpus's prompts when given (docs/design.md §9)."""
    payload = {"sft": sft_key, "seed": seed, "dataset": {k: v for k, v in dataset_cfg.items() if k != "on_bad_row"}}

    def build(directory: Path) -> dict:
        prompts = draw_prompt_sets(task, dataset_cfg, seed)
        train, train_stats = _pairs_from_model(task, sft_model, tokenizer, prompts["train_pairs"], dataset_cfg, 10 * seed + 11)
        held_out, eval_stats = _pairs_from_model(task, sft_model, tokenizer, prompts["eval_pairs"], dataset_cfg, 10 * seed + 13)
        for split, records in (("train", train), ("eval", held_out)):
            with open(directory / SPLIT_FILES[split], "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in records)
        for name, region in (("val_prompts", "validation"), ("test_prompts", "test"),
                             ("composition_prompts", COMPOSITION_REGION)):
            (directory / PROMPT_FILES[name]).write_text(json.dumps(prompts.get(region, [])))
        (directory / "stats.json").write_text(json.dumps({"train": train_stats, "eval": eval_stats}, default=str))
        n_tokens = 2 * sum(len(p.split()) + task.max_response_tokens for p in prompts["train_pairs"] + prompts["eval_pairs"])
        return {"sampled_tokens_upper_bound": n_tokens}

    entry = cache.get_or_build("dataset", payload, build)
    splits = {split: _read_jsonl(entry.path / name) for split, name in SPLIT_FILES.items()}
    for name, file in PROMPT_FILES.items():
        splits[name] = json.loads((entry.path / file).read_text())
    stats = json.loads((entry.path / "stats.json").read_text())
    sets = {"train_pairs": [r["prompt"] for r in splits["train"]], "eval_pairs": [r["prompt"] for r in splits["eval"]],
            "validation": splits["val_prompts"], "test": splits["test_prompts"]}
    if splits["composition_prompts"]:
        sets[COMPOSITION_REGION] = splits["composition_prompts"]
    if sft_corpus_prompts is not None:
        sets["sft_corpus"] = sft_corpus_prompts
    stats["prompt_sets"] = prompt_set_stats(sets)
    return splits, stats, entry


def _read_jsonl(path: Path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]
