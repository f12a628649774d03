"""Prompt sets disjoint by construction (bench.data.splits, docs/design.md §5): regions by hash, sets drawn by the run
seed, the composition test set, the measured statistics every record carries, and clear errors."""
from __future__ import annotations

import json
import random

import pytest
from omegaconf import OmegaConf

from bench.data.adapters import load_preference_records
from bench.data.builtin import PROMPT_SETS, draw_prompt_sets
from bench.data.splits import (COMPOSITION_REGION, REGION_SHARES, draw_prompts, prompt_set_stats, region_of,
                               restricted_to, unit_hash)
from bench.data.tasks.sentiment import TOPICS, SentimentTask
from bench.pipeline import run
from bench.sft import corpus_prompts
from helpers import CONF_DIR, dataset_config, default_task, tiny_llama, word_tokenizer

# Built-in dataset configs: the tiny model's tasks (SFT corpus, composition keys) and one for a pretrained model.
BUILTIN_TINY = ("arithmetic", "arithmetic_noisy", "sentiment", "sentiment_noisy", "verbosity")
DATASETS = (*BUILTIN_TINY, "constraints")


class TopicHeldOut(SentimentTask):
    """Sentiment with a composition key (topic × aspect), for the composition split's own tests."""

    name = "sentiment_composition_test"

    def composition_key(self, prompt: str) -> str:
        topic, aspect = self.parse_prompt(prompt)
        return f"{topic}|{aspect}"


def test_unit_hash_is_fixed_and_uniform():
    """The hash places every prompt of the committed study (results/) in its set: its values are pinned, as
    measured, so a change to it, which would move prompts between sets, fails here."""
    assert unit_hash("a", "b") == unit_hash("a", "b") != unit_hash("a", "c")
    assert unit_hash("sentiment", "prompt", "review food taste") == 0.25294262534862305
    assert unit_hash("a", "b") == 0.938672836308991
    regions = {name: region_of(default_task(name), prompt) for name, prompt in
               (("arithmetic", "2 - 1 6 ="), ("sentiment", "judge book author for boss again"),
                ("verbosity", "largest of 6 0 4 8"))}
    assert regions == {"arithmetic": "train_pairs", "sentiment": "validation", "verbosity": COMPOSITION_REGION}
    draws = [unit_hash(str(i)) for i in range(20_000)]
    assert min(draws) >= 0 and max(draws) < 1
    assert abs(sum(u < 0.55 for u in draws) / len(draws) - 0.55) < 0.015  # 3 binomial SEs


def _default_sets(name: str, seed: int) -> tuple[object, dict[str, list[str]]]:
    """The prompt sets of conf/dataset/<name>.yaml at its default sizes, with the SFT corpus at the default
    sft.corpus_size where the task has an SFT model (bench.sft.corpus_prompts)."""
    cfg, task = dataset_config(name), default_task(name)
    sets = draw_prompt_sets(task, cfg, seed)
    if not task.requires_pretrained_model:
        sft = OmegaConf.load(CONF_DIR / "config.yaml").sft
        sets["sft_corpus"] = corpus_prompts(task, sft.corpus_size, sft.seed)
    return task, sets


@pytest.mark.parametrize("name", DATASETS)
def test_default_sets_never_share_a_prompt(name):
    """Measured at the default sizes of conf/dataset/<name>.yaml and the SFT corpus, for two seeds: every
    overlap is 0, every set has its configured size and every prompt lies in its set's region."""
    cfg = dataset_config(name)
    corpus_size = OmegaConf.load(CONF_DIR / "config.yaml").sft.corpus_size
    for seed in (0, 1):
        task, sets = _default_sets(name, seed)
        stats = prompt_set_stats(sets)
        assert stats["overlaps"] and set(stats["overlaps"].values()) == {0}, stats["overlaps"]
        expected = {"train_pairs", "eval_pairs", "validation", "test"} | (
            {"sft_corpus", COMPOSITION_REGION} if name in BUILTIN_TINY else set())
        assert set(sets) == expected
        for region, prompts in sets.items():
            size = corpus_size if region == "sft_corpus" else cfg[PROMPT_SETS[region]]
            assert len(prompts) == size
            assert {region_of(task, p) for p in prompts} == {"train_pairs" if region == "sft_corpus" else region}


@pytest.mark.parametrize("name", ("arithmetic", "sentiment", "verbosity"))
def test_a_held_out_composition_is_in_no_other_set(name):
    """The tasks' own composition keys at the default sizes: no key of the composition test set is the key of
    any prompt of another set, the SFT corpus included (training never sees those combinations)."""
    task, sets = _default_sets(name, 0)
    held = {task.composition_key(p) for p in sets[COMPOSITION_REGION]}
    seen = {task.composition_key(p) for region, prompts in sets.items() if region != COMPOSITION_REGION for p in prompts}
    assert held and seen and not held & seen


def test_a_seed_draws_its_own_sets_from_the_same_regions():
    cfg, task = dataset_config("arithmetic"), default_task("arithmetic")
    first, again, other = (draw_prompt_sets(task, cfg, seed) for seed in (0, 0, 1))
    assert first == again
    assert first["test"] != other["test"] and first["train_pairs"] != other["train_pairs"]
    # sets of different seeds still never cross regions: seed 1's test prompts are no seed-0 training prompt
    assert not set(other["test"]) & set(first["train_pairs"])


def test_asking_for_more_of_one_set_changes_no_other_set():
    cfg, task = dataset_config("verbosity"), default_task("verbosity")
    more = {**cfg, "n_test_prompts": cfg["n_test_prompts"] + 50}
    base, bigger = draw_prompt_sets(task, cfg, 3), draw_prompt_sets(task, more, 3)
    assert bigger["test"][:cfg["n_test_prompts"]] == base["test"]
    assert all(bigger[name] == base[name] for name in base if name != "test")


def test_the_composition_region_holds_exactly_the_held_out_keys():
    task = TopicHeldOut()
    keys = {task.composition_key(p): region_of(task, p) for p in
            (f"review {t} {a}" for t, aspects in TOPICS.items() for a in aspects)}
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


@pytest.mark.parametrize("name", ("arithmetic", "sentiment", "verbosity"))
def test_restricted_view_draws_only_its_region_and_leaves_the_task_alone(name):
    """What the lm-eval items are built from (bench.pipeline: the test region, the run seed)."""
    task = default_task(name)
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
    cfg = dataset_config("local_file")
    cfg["data_files"] = {"train": str(tmp_path / "train.jsonl"), "test": str(tmp_path / "test.jsonl")}
    train, _ = load_preference_records(cfg, "train")
    held_out, _ = load_preference_records(cfg, "test")
    stats = prompt_set_stats({"train_pairs": [r["prompt"] for r in train], "eval_pairs": [r["prompt"] for r in held_out]})
    assert stats["overlaps"] == {"eval_pairs|train_pairs": 1}


def test_a_real_dataset_run_records_its_measured_overlap(make_config, tmp_path):
    """The whole pipeline on a local_file dataset whose test split repeats one training prompt: the record says
    so (1), on the prompts as loaded; real datasets have no validation, test or composition sets."""
    tokenizer = word_tokenizer(["a", "b", "c", "d", "e"])
    model_dir = tmp_path / "model"
    tiny_llama(tokenizer).save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    # ten pairs (a fast-budget batch is 8) on nine distinct prompts, "a b" twice
    prompts = ["a b", "b a", "a a", "b b", "a b", "a c", "c a", "b c", "c b", "c c"]
    train = [{"prompt": p, "chosen": "d", "rejected": "e"} for p in prompts]
    held_out = [{"prompt": "a b", "chosen": "e", "rejected": "d"}, {"prompt": "d d", "chosen": "d", "rejected": "e"}]
    for name, rows in (("train", train), ("test", held_out)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    record = run(make_config("dataset=local_file", "model=hf", f"model.pretrained={model_dir}", "sft.steps=0",
                             f"dataset.data_files.train={tmp_path / 'train.jsonl'}",
                             f"dataset.data_files.test={tmp_path / 'test.jsonl'}")).record
    assert record["status"] == "completed", record["error"]
    assert record["data"]["prompt_sets"] == {
        "sets": {"train_pairs": {"size": 10, "distinct": 9}, "eval_pairs": {"size": 2, "distinct": 2}},
        "overlaps": {"eval_pairs|train_pairs": 1}}


def test_a_run_records_its_prompt_sets_and_composition_scores(make_config):
    record = run(make_config("dataset=verbosity", "seed=2")).record
    assert record["status"] == "completed", record["error"]
    prompt_sets = record["data"]["prompt_sets"]
    assert set(prompt_sets["sets"]) == {"train_pairs", "eval_pairs", "validation", "test", COMPOSITION_REGION, "sft_corpus"}
    sizes = {name: s["size"] for name, s in prompt_sets["sets"].items()}
    config = record["config"]
    assert sizes["test"] == config["dataset"]["n_test_prompts"] and sizes["validation"] == config["dataset"]["n_val_prompts"]
    assert sizes[COMPOSITION_REGION] == config["dataset"]["n_composition_prompts"] == 16
    assert sizes["sft_corpus"] == config["sft"]["corpus_size"]
    # train/eval pairs count the kept pairs' prompts: at most one pair per prompt drawn
    assert 0 < sizes["train_pairs"] <= config["dataset"]["n_train_prompts"]
    assert all(0 < s["distinct"] <= s["size"] for s in prompt_sets["sets"].values())
    # every pair of sets but the two training ones (sft_corpus|train_pairs share their region by design)
    assert len(prompt_sets["overlaps"]) == 6 * 5 // 2 - 1 and set(prompt_sets["overlaps"].values()) == {0}
    metrics = record["metrics"]
    for name in ("gold_reward", "win_rate", "kl", "length", "no_eos_rate", "collapsed"):
        assert {name, f"val/{name}", f"composition/{name}"} <= set(metrics), name
    # its own prompts and sampling stream: not a copy of the test score
    assert metrics["composition/gold_reward"] != metrics["gold_reward"]


def test_each_seed_draws_its_own_data_from_one_shared_sft_model(make_config):
    """The run seed draws the prompt sets and the pairs (dataset and reference caches per seed); the SFT model,
    which plays the pretrained model, is one for all seeds."""
    runs = [run(make_config("dataset=verbosity", "method=dpo", f"seed={seed}")).record for seed in (3, 4)]
    shared = [r["cost"]["shared"] for r in runs]
    assert shared[0]["sft"]["key"] == shared[1]["sft"]["key"]
    assert shared[0]["dataset"]["key"] != shared[1]["dataset"]["key"]
    assert shared[0]["reference"]["key"] != shared[1]["reference"]["key"]
    sets = [r["data"]["prompt_sets"]["sets"] for r in runs]
    assert sets[0]["sft_corpus"] == sets[1]["sft_corpus"]  # the same corpus: the same SFT model
    assert runs[0]["metrics"]["gold_reward"] != runs[1]["metrics"]["gold_reward"]
    # the same seed again reuses its own data (every configuration at seed s shares seed s's data)
    again = run(make_config("dataset=verbosity", "method=ipo", "seed=3")).record
    reused = again["cost"]["shared"]["dataset"]
    assert reused["key"] == shared[0]["dataset"]["key"] and reused["hit"]
