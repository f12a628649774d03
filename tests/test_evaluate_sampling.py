"""The evaluation's sampling (docs/design.md §7, §8): the reference's samples are a shared build, drawn once per
(reference model, prompts, seed, cap) and read back by every method's run of that seed; a reading gives the
metrics a fresh draw gives, the run's own token count leaves them out, and a killed build leaves no entry."""
from __future__ import annotations

import json

import pytest
import torch

from bench.cache import DiskCache
from bench.cost import CostMeter
from bench.data.tasks import build_task
from bench.evaluate import (
    REFERENCE_SAMPLES_FILE,
    cached_reference_samples,
    gold_metrics,
    sampling_seeds,
    shared_reference_samples,
)
from bench.generation import sample_responses
from bench.models import build_tiny_model, build_word_tokenizer, non_embedding_parameters
from bench.pipeline import run
from bench import records

EVAL_CFG = {"collapse_no_eos_rate": 0.5}


@pytest.fixture(scope="module")
def setting():
    task = build_task("verbosity")
    tokenizer = build_word_tokenizer(task.vocabulary)
    torch.manual_seed(0)
    cfg = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64, "max_length": 64}
    reference, policy = build_tiny_model(cfg, tokenizer).eval(), build_tiny_model(cfg, tokenizer).eval()
    import random

    rng = random.Random(0)
    prompts = [task.sample_prompt(rng) for _ in range(6)]
    return task, tokenizer, reference, policy, prompts


def test_reference_samples_are_built_once_and_read_back(setting, tmp_path):
    task, tokenizer, reference, _, prompts = setting
    cache, cap, n = DiskCache(tmp_path), task.max_response_tokens, non_embedding_parameters(reference)
    sets = {"test": (prompts[:4], 1002), "val": (prompts[4:], 1004)}
    built, entry = cached_reference_samples(cache, "ref-a", reference, tokenizer, sets, cap, n, "cpu")
    assert not entry.hit
    assert [s.response_ids for s in built["test"]] == \
        [s.response_ids for s in sample_responses(reference, tokenizer, prompts[:4], cap, seed=1002)]
    tokens = sum(len(s.response_ids) for samples in built.values() for s in samples)
    assert entry.build_cost["tokens"] == tokens and entry.build_cost["flops"] == 2.0 * n * tokens
    again, hit = cached_reference_samples(cache, "ref-a", reference, tokenizer, sets, cap, n, "cpu")
    assert hit.hit and hit.key == entry.key and again == built
    # another seed, prompt list, cap or reference model is another entry
    for other in ({**sets, "val": (prompts[4:], 1005)}, {**sets, "val": (prompts[3:], 1004)}):
        assert cached_reference_samples(cache, "ref-a", reference, tokenizer, other, cap, n, "cpu")[1].key != entry.key
    assert cached_reference_samples(cache, "ref-a", reference, tokenizer, sets, cap - 1, n, "cpu")[1].key != entry.key
    assert cached_reference_samples(cache, "ref-b", reference, tokenizer, sets, cap, n, "cpu")[1].key != entry.key


def test_an_entry_of_other_prompts_is_refused(setting, tmp_path):
    task, tokenizer, reference, _, prompts = setting
    cache, cap = DiskCache(tmp_path), task.max_response_tokens
    sets = {"test": (prompts[:2], 7)}
    _, entry = cached_reference_samples(cache, "ref", reference, tokenizer, sets, cap, 1, "cpu")
    path = entry.path / REFERENCE_SAMPLES_FILE
    stored = json.loads(path.read_text())
    stored["test"][0]["prompt"] = "something else"
    path.write_text(json.dumps(stored))
    with pytest.raises(ValueError, match=f"{REFERENCE_SAMPLES_FILE}.*'test'"):
        cached_reference_samples(cache, "ref", reference, tokenizer, sets, cap, 1, "cpu")


def test_a_killed_build_leaves_no_entry(setting, tmp_path, monkeypatch):
    task, tokenizer, reference, _, prompts = setting
    cache, sets = DiskCache(tmp_path), {"test": (prompts[:2], 7)}

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # what a signal looks like mid-build

    monkeypatch.setattr("bench.evaluate.sample_responses", killed)
    with pytest.raises(KeyboardInterrupt):
        cached_reference_samples(cache, "ref", reference, tokenizer, sets, task.max_response_tokens, 1, "cpu")
    assert not [p for p in (tmp_path / "reference_samples").iterdir() if not p.name.endswith(".lock")]
    monkeypatch.undo()
    _, entry = cached_reference_samples(cache, "ref", reference, tokenizer, sets, task.max_response_tokens, 1, "cpu")
    assert not entry.hit and (entry.path / REFERENCE_SAMPLES_FILE).exists()


def test_gold_metrics_from_cached_reference_samples_equal_a_fresh_draw(setting, tmp_path):
    task, tokenizer, reference, policy, prompts = setting
    seeds = sampling_seeds(3, "test")
    fresh_meter, cached_meter = CostMeter(), CostMeter()
    fresh = gold_metrics(policy, reference, tokenizer, task, prompts, EVAL_CFG, 64, seeds, "cpu", fresh_meter)
    samples = shared_reference_samples(DiskCache(tmp_path), "ref", reference, tokenizer, task, {"test": prompts}, 3,
                                       "cpu", cached_meter)["test"]
    shared = cached_meter.shared["reference_samples"]
    assert shared["hit"] is False and shared["tokens"] > 0
    # time blocked on the entry's lock is eval-phase waiting, not setup's
    assert shared["wait_s"] == round(cached_meter.waits["eval"], 4) and cached_meter.waits["setup"] == 0.0
    cached = gold_metrics(policy, reference, tokenizer, task, prompts, EVAL_CFG, 64, seeds, "cpu", cached_meter,
                          reference_samples=samples)
    assert cached == fresh
    # the reference's tokens are the shared build's, not the run's own
    reference_tokens = sum(len(s.response_ids) for s in samples)
    assert reference_tokens == shared["tokens"]
    assert fresh_meter.nograd_tokens["eval"] - cached_meter.nograd_tokens["eval"] == reference_tokens
    with pytest.raises(ValueError, match="reference_samples"):
        gold_metrics(policy, reference, tokenizer, task, prompts[::-1], EVAL_CFG, 64, seeds, "cpu", CostMeter(),
                     reference_samples=samples)


def test_runs_of_two_methods_share_the_reference_samples(make_config):
    first = records.read_record(run(make_config("method=dpo")).directory)
    second = records.read_record(run(make_config("method=simpo")).directory)
    assert first["status"] == second["status"] == "completed", (first["error"], second["error"])
    a, b = first["cost"]["shared"]["reference_samples"], second["cost"]["shared"]["reference_samples"]
    assert a["key"] == b["key"] and b["hit"] is True and a["tokens"] == b["tokens"] > 0
    for key in ("reference_gold_reward", "val/reference_gold_reward"):
        assert first["metrics"][key] == second["metrics"][key]
