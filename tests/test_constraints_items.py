"""The constraints task's lm-eval items and prompt sets (docs/design.md §13): >= 200 distinct items whose choices
are natural answers of similar length differing in one requirement each, prompt sets disjoint at 256 train + 64
validation + 128 test prompts, and (slow, needs the model) SmolLM2-135M-Instruct's accuracy strictly between
chance and 1."""
from __future__ import annotations

import collections
import os
import random
from pathlib import Path

import pytest

from bench.data.builtin import draw_prompt_sets
from bench.data.splits import prompt_set_stats, region_of, restricted_to
from bench.data.tasks.constraints import ConstraintsTask, repeated_share, words_in
from helpers import dataset_config


def test_at_least_200_distinct_items_each_breaking_one_requirement():
    task = ConstraintsTask()
    items = restricted_to(task, "test").multiple_choice_items(random.Random(0), 200)
    assert len({item["query"] for item in items}) == 200
    broken = collections.Counter()
    for item in items:
        prompt, choices = item["query"], item["choices"]
        assert region_of(task, prompt) == "test"
        assert len(choices) == 3  # the compliant answer, one breaking an instruction, one off topic: chance 1/3
        golds = [task.gold_reward(prompt, c) for c in choices]
        assert golds[item["gold"]] == 1.0 and sorted(golds).count(1.0) == 1
        lengths = [len(words_in(c)) for c in choices]
        assert max(lengths) - min(lengths) <= 10, choices  # similar length: one sentence more or fewer at most
        for choice in choices:
            assert all(v == 1.0 for v in task.guards(prompt, choice).values()), choice  # natural: no guard fires
            assert repeated_share(words_in(choice)) == 0.0
            failed = [k for k, v in task.criteria(prompt, choice).items() if v < 1.0]
            assert len(failed) == (0 if choice == choices[item["gold"]] else 1), (choice, failed)
            broken.update(failed)
    assert broken["on_topic"] == 200 and set(broken) == {"on_topic", "no_commas", "lowercase", "keywords", "end_mark",
                                                         "quotes", "start_word", "sentences", "bullets"}


def test_prompt_sets_are_disjoint_at_256_64_128():
    cfg = {**dataset_config("constraints"), "n_train_prompts": 256}
    assert (cfg["n_val_prompts"], cfg["n_test_prompts"]) == (64, 128)
    task = ConstraintsTask(**cfg["task_kwargs"])
    assert task.prompt_space_size() == 818_208  # 15% per evaluation region: ~123k prompts each
    for seed in (0, 1):
        sets = draw_prompt_sets(task, cfg, seed)
        stats = prompt_set_stats(sets)
        assert set(stats["overlaps"].values()) == {0}, stats["overlaps"]
        assert {n: len(p) for n, p in sets.items()} == {"train_pairs": 256, "eval_pairs": cfg["n_eval_pair_prompts"],
                                                       "validation": 64, "test": 128}
        # sets are draws from the distribution, so a prompt may repeat within a set, rarely
        assert stats["sets"]["validation"]["distinct"] >= 60 and stats["sets"]["test"]["distinct"] >= 120


@pytest.mark.slow
@pytest.mark.extra("smollm2")
def test_instruct_model_accuracy_is_between_chance_and_one(shared_cache, tmp_path, monkeypatch):
    """200 items as a run writes them (test region, seed 0), scored by the suite's run_lm_eval."""
    import torch
    import yaml

    from bench.cache import DiskCache
    from bench.lm_eval_harness import run_lm_eval, write_local_tasks
    from bench.models import load_hf_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_cfg = yaml.safe_load((Path(__file__).parents[1] / "conf/model/smollm2.yaml").read_text())
    model, tokenizer = load_hf_model(model_cfg, cache=DiskCache(os.environ.get("IMI_BENCH_CACHE") or shared_cache))
    task = ConstraintsTask()
    task.bind_tokenizer(tokenizer)
    names = write_local_tasks(restricted_to(task, "test"), tmp_path, 200, seed=0)
    with torch.no_grad():
        metrics = run_lm_eval(model, tokenizer, names, include_path=tmp_path, batch_size=16)
    chance = 1 / 3  # 3 choices per item; measured: acc 0.59, acc_norm 0.475
    for metric in ("acc", "acc_norm"):
        assert chance < metrics[f"lm_eval/imibench_constraints/{metric}"] < 1.0, metrics
