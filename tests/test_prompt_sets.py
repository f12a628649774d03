"""Prompt sets disjoint by construction (bench.data.splits, docs/design.md §5): regions by hash, sets drawn by the run
seed, the composition test set, the measured statistics every record carries, and clear errors."""
from __future__ import annotations

import json
import random

import pytest
from omegaconf import OmegaConf

from bench.data.adapters import load_preference_records
from bench.data.builtin import PROMPT_SETS, draw_prompt_sets
from bench.data.splits import (COMPOSITION_REGION, REGION_SHARES, REGIONS, draw_prompts, prompt_set_stats, region_of,
                               restricted_to, unit_hash)
from bench.data.tasks import build_task
from bench.data.tasks.sentiment import SentimentTask
from bench.pipeline import run
from helpers import CONF_DIR

BUILTIN = ("arithmetic", "sentiment", "verbosity")


def _dataset_cfg(name: str) -> dict:
    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / "dataset" / f"{name}.yaml"))


class TopicHeldOut(SentimentTask):
    """Sentiment with a composition key (topic × aspect), for the composition split's own tests."""

    name = "sentiment_composition_test"

    def composition_key(self, prompt: str) -> str:
        topic, aspect = self.parse_prompt(prompt)
        return f"{topic}|{aspect}"


def test_unit_hash_is_fixed_and_uniform():
    assert unit_hash("a", "b") == unit_hash("a", "b") != unit_hash("a", "c")
    assert unit_hash("sentiment", "prompt", "review food taste") == pytest.approx(
        int.from_bytes(__import__("hashlib").sha256("sentiment\x1fprompt\x1freview food taste".encode()).digest()[:8],
                       "big") / 2 ** 64)
    draws = [unit_hash(str(i)) for i in range(20_000)]
    assert min(draws) >= 0 and max(draws) < 1
    assert abs(sum(u < 0.55 for u in draws) / len(draws) - 0.55) < 0.015  # 3 binomial SEs


@pytest.mark.parametrize("name", BUILTIN)
def test_default_sets_never_share_a_prompt(name):
    """Measured at the default sizes of conf/dataset/<name>.yaml, for two seeds: every overlap is 0 and every
    prompt lies in its set's region."""
    cfg = _dataset_cfg(name)
    task = build_task(cfg["task"], **cfg.get("task_kwargs", {}))
    for seed in (0, 1):
        sets = draw_prompt_sets(task, cfg, seed)
        stats = prompt_set_stats(sets)
        assert stats["overlaps"] and set(stats["overlaps"].values()) == {0}, stats["overlaps"]
        for region, prompts in sets.items():
            assert len(prompts) == cfg[PROMPT_SETS[region]]
            assert {region_of(task, p) for p in prompts} == {region}


def test_a_seed_draws_its_own_sets_from_the_same_regions():
    cfg = _dataset_cfg("arithmetic")
    task = build_task(cfg["task"], **cfg["task_kwargs"])
    first, again, other = (draw_prompt_sets(task, cfg, seed) for seed in (0, 0, 1))
    assert first == again
    assert first["test"] != other["test"] and first["train_pairs"] != other["train_pairs"]
    # sets of different seeds still never cross regions: seed 1's test prompts are no seed-0 training prompt
    assert not set(other["test"]) & set(first["train_pairs"])


def test_asking_for_more_of_one_set_changes_no_other_set():
    cfg = _dataset_cfg("verbosity")
    task = build_task(cfg["task"], **cfg["task_kwargs"])
    more = {**cfg, "n_test_prompts": cfg["n_test_prompts"] + 50}
    base, bigger = draw_prompt_sets(task, cfg, 3), draw_prompt_sets(task, more, 3)
    assert bigger["test"][:cfg["n_test_prompts"]] == base["test"]
    assert all(bigger[name] == base[name] for name in base if name != "test")


def test_held_out_compositions_are_in_no_other_set():
    task = TopicHeldOut()
    keys = {task.composition_key(p): region_of(task, p) for p in
            (f"review {t} {a}" for t, aspects in __import__("bench.data.tasks.sentiment", fromlist=["TOPICS"]).TOPICS.items()
             for a in aspects)}
    held = {k for k, region in keys.items() if region == COMPOSITION_REGION}
    assert held and len(held) < len(keys)  # some keys held out, most not
    composition = draw_prompts(task, COMPOSITION_REGION, 50, random.Random(0))
    others = [p for region in REGION_SHARES for p in draw_prompts(task, region, 200, random.Random(1))]
    assert {task.composition_key(p) for p in composition} <= held
    assert not {task.composition_key(p) for p in others} & held


def test_a_region_too_small_for_the_request_names_the_key():
    class Three(SentimentTask):
        name = "three_prompts"

        def sample_prompt(self, rng):
            return rng.choice(["review food taste", "review film plot", "review hotel room"])

        def prompt_space_size(self):
            return 3

    task = Three()
    empty = next(r for r in REGION_SHARES if r not in {region_of(task, p) for p in
                                                         ("review food taste", "review film plot", "review hotel room")})
    with pytest.raises(ValueError, match=rf"dataset.n_test_prompts: the task 'three_prompts' gave only 0 of 4 prompts "
                                         rf"of its '{empty}' region .* \(prompt space: 3 prompts\)"):
        draw_prompts(task, empty, 4, random.Random(0), "dataset.n_test_prompts")
    with pytest.raises(ValueError, match="unknown prompt region 'tset'"):
        draw_prompts(task, "tset", 1, random.Random(0))


def test_restricted_view_draws_only_its_region_and_leaves_the_task_alone():
    task = build_task("verbosity")
    view = restricted_to(task, "test")
    rng = random.Random(0)
    assert {region_of(task, view.sample_prompt(rng)) for _ in range(100)} == {"test"}
    assert "sample_prompt" not in vars(task)
    items = view.multiple_choice_items(random.Random(0), 5)
    assert {region_of(task, item["query"]) for item in items} == {"test"}


def test_prompt_set_stats_counts_by_hand():
    stats = prompt_set_stats({"train_pairs": ["a", "b", "b"], "sft_corpus": ["a", "c"], "test": ["b", "d", "d"],
                              "validation": ["e"]})
    assert stats["sets"] == {"train_pairs": {"size": 3, "distinct": 2}, "sft_corpus": {"size": 2, "distinct": 2},
                             "test": {"size": 3, "distinct": 2}, "validation": {"size": 1, "distinct": 1}}
    # the two training sets share a region by design: that pair is not an overlap
    assert stats["overlaps"] == {"sft_corpus|test": 0, "sft_corpus|validation": 0, "test|train_pairs": 1,
                                 "test|validation": 0, "train_pairs|validation": 0}


def test_a_real_dataset_prompt_in_both_splits_is_counted(tmp_path):
    rows = [{"prompt": "same question", "chosen": "a", "rejected": "b"},
            {"prompt": "train only", "chosen": "c", "rejected": "d"}]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "test.jsonl").write_text(json.dumps({"prompt": "same question", "chosen": "x", "rejected": "y"}) + "\n")
    cfg = _dataset_cfg("local_file")
    cfg["data_files"] = {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl")}
    train, _ = load_preference_records(cfg, "train")
    held_out, _ = load_preference_records(cfg, "test")
    stats = prompt_set_stats({"train_pairs": [r["prompt"] for r in train], "eval_pairs": [r["prompt"] for r in held_out]})
    assert stats["overlaps"] == {"eval_pairs|train_pairs": 1}


def test_a_run_records_its_prompt_sets_and_composition_scores(make_config):
    record = run(make_config("dataset=verbosity", "seed=2")).record
    assert record["status"] == "completed", record["error"]
    prompt_sets = record["data"]["prompt_sets"]
    assert set(prompt_sets["sets"]) == {"train_pairs", "eval_pairs", "validation", "test", "sft_corpus"} | (
        {COMPOSITION_REGION} if build_task("verbosity").composition_key("largest of 1 2 3") is not None else set())
    assert prompt_sets["sets"]["test"]["size"] == 32 and prompt_sets["sets"]["validation"]["size"] == 32
    assert set(prompt_sets["overlaps"].values()) == {0}
    assert set(REGIONS) >= set(prompt_sets["sets"]) - {"sft_corpus"}
