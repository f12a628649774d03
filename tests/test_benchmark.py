"""The throughput benchmark (bench.benchmark): a tiny run end to end, and its bookkeeping on hand-computed numbers;
(slow) the real-model workload (SmolLM2-135M on the constraints task) built and run for one timed step.

No timing ratio is asserted anywhere: performance is measured by `python -m bench.benchmark` and committed
under results/throughput/, never judged by a timed test on a shared machine.
"""
from __future__ import annotations

import copy
import json
import math
from types import SimpleNamespace

import pytest
import torch
from omegaconf import OmegaConf

from bench import benchmark as bm
from bench.benchmark import clock as clock_module
from bench.data.encoding import encode_pairs
from bench.data.tasks import build_task
from bench.models import build_word_tokenizer, gguf_file_path

# transformers 5 deprecates `gradient_checkpointing`, which TRL's configs still set.
pytestmark = pytest.mark.filterwarnings("ignore:.*gradient_checkpointing.*:FutureWarning")

TINY = {"steps": 2, "warmup": 1, "batch_size": 4}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    # the TRL variants need trl (a test extra); the bookkeeping tests below run without it
    pytest.importorskip("trl", reason="the benchmark's TRL variants need trl 1.16 (pip install -e '.[test]')")
    out = tmp_path_factory.mktemp("throughput")
    argv = ["--steps", str(TINY["steps"]), "--warmup", str(TINY["warmup"]), "--repeats", "1",
            "--batch-size", str(TINY["batch_size"]), "--threads", "1", "--out", str(out), "--no-progress"]
    bm.main(argv)
    return json.loads((out / "throughput.json").read_text()), (out / "throughput.md").read_text()


def test_tiny_run_writes_every_field_with_positive_throughputs(tiny_run):
    results, _ = tiny_run
    assert results["schema_version"] == bm.SCHEMA_VERSION and results["workload"]["name"] == "builtin"
    for key in ("workload", "settings", "variants", "excluded_from_timing", "token_count", "summary", "runs",
                "load", "started_at", "finished_at", "provenance"):
        assert key in results, key
    assert {run["variant"] for run in results["runs"]} == set(bm.VARIANTS)
    for run in results["runs"]:
        assert run["steps_timed"] == TINY["steps"]
        assert len(run["step_seconds"]) == TINY["steps"] and all(s > 0 for s in run["step_seconds"])
        for key in ("seconds", "cpu_seconds", "tokens_per_s", "tokens_per_cpu_s", "median_step_tokens_per_s",
                    "seconds_per_step"):
            assert run[key] > 0 and math.isfinite(run[key]), (run["variant"], key)
        assert 0 < run["tokens"] <= run["positions"]
        assert run["torch_threads_seen"] == [1]
        assert math.isfinite(run["final_loss"])
        n_params = results["workload"]["model"]["non_embedding_parameters"]
        # every parameter of the tiny model trains: bench.cost's formula is 6·N per trained token
        assert run["model_gflops"] == pytest.approx((6 * run["tokens"] + 2 * run["nograd_tokens"]) * n_params
                                                    / run["seconds"] / 1e9)
        assert run["trainable_parameters"] == results["workload"]["model"]["parameters"]
    block = results["summary"]["threads=1"]
    assert set(block["variants"]) == set(bm.VARIANTS)
    assert set(block["ratios"]) == {name for name, *_ in bm.RATIOS}
    for ratio in block["ratios"].values():
        assert len(ratio["per_repeat"]) == 1 and ratio["wall"]["median"] > 0 and ratio["cpu"]["median"] > 0
    speed = block["ratios"]["dpo_vs_trl_precomputed"]
    assert speed["holds_on_median"] == (speed["wall"]["median"] >= 1.5)  # the verdict follows the claim
    peak = block["matmul_peak"]
    assert peak["shape"] == list(bm.representative_shape(bm.build_workload(**TINY))) and peak["peak_gflops"] > 0
    for name, variant in block["variants"].items():
        assert variant["peak_fraction"]["median"] == pytest.approx(
            variant["model_gflops"]["median"] / peak["peak_gflops"]), name
    # loss-only costs are timed for the pair methods (kto trains on examples and has no IMI pair here)
    methods = {v["method"] for v in bm.VARIANTS.values() if v["side"] == "ours" and not v.get("unpaired")}
    assert set(block["loss_only_ms"]) == methods and all(v["median"] > 0 for v in block["loss_only_ms"].values())
    for name in ("imi_dpo_cost_vs_dpo", "imi_simpo_cost_vs_simpo", "noise_dpo_aa_vs_dpo"):
        assert math.isfinite(block["ratios"][name]["loss_only"]["implied_ratio"])
    for name in ("imi_dpo_cost_vs_dpo", "imi_simpo_cost_vs_simpo"):
        entry = block["ratios"][name]
        assert entry["holds_by_loss_only"] == (entry["loss_only"]["implied_ratio"] <= 1.05)
    # rmipo's cost is its extra forward, which the loss-only timing does not see; TRL has no loss-only timing
    assert {n for n, r in block["ratios"].items() if "loss_only" in r} == {
        "imi_dpo_cost_vs_dpo", "imi_simpo_cost_vs_simpo", "noise_dpo_aa_vs_dpo"}
    assert block["ratios"]["noise_dpo_aa_vs_dpo"]["loss_only"]["extra_ms"] == 0.0  # the same method
    assert results["complete"] is True
    provenance = results["provenance"]
    assert provenance["packages"]["trl"].startswith("1.16") and provenance["packages"]["torch"]
    assert provenance["cpu_model"] and "git_commit" in provenance and "--steps" in provenance["command"]
    assert set(results["load"]["before"]) >= {"load_1m", "load_5m", "load_15m", "at"}


def test_both_sides_count_the_same_tokens_over_the_epoch(tiny_run):
    """One epoch of the same pairs: every variant, TRL's included, must count the same tokens in total
    (the timed windows differ only because each trainer shuffles with its own sampler)."""
    results, _ = tiny_run
    workload = bm.build_workload(**TINY)
    expected = int(workload.pairs.both().attention_mask.sum())
    assert {run["variant"]: run["epoch_tokens"] for run in results["runs"]} == {name: expected for name in bm.VARIANTS}
    ours = {run["variant"]: run for run in results["runs"]
            if bm.VARIANTS[run["variant"]]["side"] == "ours" and not bm.VARIANTS[run["variant"]].get("unpaired")}
    # our pair variants train on identical batches, which the per-step cost ratios rely on
    assert len({tuple(run["step_tokens"]) for run in ours.values()}) == 1
    assert ours["rmipo"]["nograd_tokens"] > 0
    assert all(run["nograd_tokens"] == 0 for name, run in ours.items() if name != "rmipo")
    # positions: TRL and dpo_padded compute on the padded [2B, L] batches, ours packs them into fewer
    by_name = {run["variant"]: run for run in results["runs"]}
    assert by_name["dpo"]["positions"] < by_name["dpo_padded"]["positions"]
    assert by_name["dpo"]["layout"] == {"kind": "packed", "row_width": 32}
    assert by_name["dpo_padded"]["layout"] == {"kind": "padded", "row_width": None}


def test_kto_sides_train_the_same_blocks_and_report_their_steps_per_s_ratio(tiny_run):
    """Our KTO and TRL's KTOTrainer: the same number of timed steps, step for step the same completion
    tokens and the same KL-sequence (no-grad) tokens, the same trainable parameters, and the ratio of their
    steps/s within the repeat (the runs raise before timing if the examples differ, and after training if
    a step's batch was not the block the other side trained at that step)."""
    results, markdown = tiny_run
    runs = {run["variant"]: run for run in results["runs"]}
    ours, trl = runs["kto"], runs["trl_kto_precomputed"]
    unpaired = results["workload"]["unpaired"]
    batch_size, steps = TINY["batch_size"], TINY["steps"] + TINY["warmup"]
    assert unpaired["examples_per_step"] == 2 * batch_size and unpaired["n_examples"] == 2 * batch_size * steps
    assert unpaired["n_desirable"] == unpaired["n_undesirable"] == batch_size * steps
    assert sorted(unpaired["block_order"]) == list(range(steps))
    for run in (ours, trl):
        assert run["steps_timed"] == TINY["steps"] and len(run["step_seconds"]) == TINY["steps"]
        assert run["nograd_tokens"] > 0  # the KL sequences' no-grad forward, counted on both sides
    assert ours["step_tokens"] == trl["step_tokens"] and ours["nograd_tokens"] == trl["nograd_tokens"]
    assert ours["trainable_parameters"] == trl["trainable_parameters"] == results["workload"]["model"]["parameters"]
    ratio = results["summary"]["threads=1"]["ratios"]["kto_vs_trl_kto_precomputed"]
    assert ratio["numerator"] == "kto" and ratio["denominator"] == "trl_kto_precomputed"
    assert ratio["quantity"] == "steps_per_s" and "claim" not in ratio
    assert ratio["per_repeat"] == pytest.approx([(trl["seconds"] / trl["steps_timed"])
                                                 / (ours["seconds"] / ours["steps_timed"])])
    # the same tokens per step on both sides: steps/s and tokens/s ratios agree
    assert ratio["wall"]["median"] == pytest.approx(ours["tokens_per_s"] / trl["tokens_per_s"])
    assert "| kto_vs_trl_kto_precomputed (steps_per_s) | report |" in markdown
    assert "vs TRL DPOTrainer and KTOTrainer" in markdown and "KTO variants: the same pairs as" in markdown


def test_markdown_names_every_variant_ratio_and_exclusion(tiny_run):
    _, markdown = tiny_run
    for name in bm.VARIANTS:
        assert f"| {name} |" in markdown and f"**{name}**" in markdown
    for name, *_ in bm.RATIOS:
        assert f"| {name} (" in markdown
    assert "Left out of the clock" in markdown and "trl 1.16" in markdown


def test_step_clock_on_hand_computed_numbers(monkeypatch):
    walls, cpus = iter([1.0, 1.5, 2.5]), iter([0.5, 0.9, 1.7])
    monkeypatch.setattr(clock_module.time, "perf_counter", lambda: next(walls))
    monkeypatch.setattr(clock_module.time, "process_time", lambda: next(cpus))
    started, counted = [], []
    clock = bm.StepClock(warmup=1, on_warmup_end=lambda: started.append(len(clock.step_ends)))
    for tokens, positions, nograd in ((10, 16, 0), (20, 24, 3), (30, 40, 4)):
        clock.end_step(lambda t=tokens, p=positions: counted.append(t) or (t, p), nograd)
    assert counted == []  # nothing is counted inside the timed window
    summary = clock.summary()
    assert started == [1]  # the profiler hook fires once, when the warm-up step ends
    assert summary["steps_timed"] == 2 and summary["nograd_tokens"] == 7
    assert summary["seconds"] == pytest.approx(1.5) and summary["cpu_seconds"] == pytest.approx(1.2)
    assert summary["tokens"] == 50 and summary["positions"] == 64 and summary["epoch_tokens"] == 60
    assert summary["padding_share"] == pytest.approx(1 - 50 / 64)
    assert summary["tokens_per_s"] == pytest.approx(50 / 1.5)
    assert summary["tokens_per_cpu_s"] == pytest.approx(50 / 1.2)
    assert summary["seconds_per_step"] == pytest.approx(0.75)
    assert summary["step_seconds"] == pytest.approx([0.5, 1.0])
    assert summary["median_step_tokens_per_s"] == pytest.approx((20 / 0.5 + 30 / 1.0) / 2)


def test_step_clock_rejects_no_warmup_and_unfinished_steps():
    with pytest.raises(ValueError, match="--warmup"):
        bm.StepClock(warmup=0)
    clock = bm.StepClock(warmup=1)
    clock.end_step(lambda: (5, 8))  # only the warm-up step ended: nothing was timed
    with pytest.raises(RuntimeError, match="1 steps ended, but the warm-up alone is 1"):
        clock.summary()


def _run(variant, repeat, seconds_per_step, tokens_per_s, cpu_factor=1.0, steps=4):
    step_seconds = [seconds_per_step] * steps
    return {
        "threads": 1, "repeat": repeat, "variant": variant, "steps_timed": steps,
        "seconds": seconds_per_step * steps, "cpu_seconds": seconds_per_step * steps * cpu_factor,
        "seconds_per_step": seconds_per_step, "tokens_per_s": tokens_per_s,
        "tokens_per_cpu_s": tokens_per_s / cpu_factor, "median_step_tokens_per_s": tokens_per_s,
        "padding_share": 0.25, "step_seconds": step_seconds, "step_tokens": [10] * steps,
    }


def test_ratios_are_taken_within_each_repeat_and_judged_on_the_median():
    runs = [
        _run("trl_dpo_precomputed", 0, 0.2, 100.0), _run("dpo", 0, 0.1, 160.0),   # 1.6
        _run("trl_dpo_precomputed", 1, 0.2, 200.0), _run("dpo", 1, 0.1, 300.0),   # 1.5 (the threshold itself)
        _run("dpo", 2, 0.1, 140.0), _run("trl_dpo_precomputed", 2, 0.2, 100.0),  # 1.4
    ]
    # imi_dpo costs 1.02, 1.10, 1.10 x dpo per step: median 1.10 misses <= 1.05
    runs += [_run("imi_dpo", 0, 0.102, 1.0), _run("imi_dpo", 1, 0.110, 1.0), _run("imi_dpo", 2, 0.110, 1.0)]
    summary = bm.summarise(runs, [1], ["trl_dpo_precomputed", "dpo", "imi_dpo"])["threads=1"]
    ratios = summary["ratios"]
    assert set(ratios) == {"dpo_vs_trl_precomputed", "imi_dpo_cost_vs_dpo"}  # ratios need both variants run
    speed = ratios["dpo_vs_trl_precomputed"]
    assert speed["per_repeat"] == pytest.approx([1.6, 1.5, 1.4])
    assert speed["wall"] == pytest.approx({"median": 1.5, "min": 1.4, "max": 1.6, "n": 3})
    assert speed["holds_on_median"] is True and speed["holds_in_every_repeat"] is False
    cost = ratios["imi_dpo_cost_vs_dpo"]
    assert cost["per_repeat"] == pytest.approx([1.02, 1.10, 1.10])
    assert cost["median_step"]["median"] == pytest.approx(1.10)  # step-by-step ratios, identical batches
    assert cost["holds_on_median"] is False and cost["holds_in_every_repeat"] is False
    assert summary["variants"]["dpo"]["tokens_per_s"] == pytest.approx({"median": 160.0, "min": 140.0,
                                                                        "max": 300.0, "n": 3})


def test_steps_per_s_ratio_is_the_inverse_cost_on_identical_steps():
    # TRL: 0.3 s per step; ours: 0.2 s, then per step 0.1/0.2/0.3/0.2 against TRL's 0.3 each (median of 3, 1.5, 1, 1.5)
    ours, trl = _run("kto", 0, 0.2, 150.0, cpu_factor=0.5), _run("trl_kto_precomputed", 0, 0.3, 100.0)
    ours["step_seconds"] = [0.1, 0.2, 0.3, 0.2]
    ratio = bm.summarise([ours, trl], [1], ["kto", "trl_kto_precomputed"])["threads=1"]["ratios"][
        "kto_vs_trl_kto_precomputed"]
    assert ratio["per_repeat"] == pytest.approx([1.5]) and ratio["wall"]["median"] == pytest.approx(1.5)
    assert ratio["cpu"]["median"] == pytest.approx(0.3 / 0.1)  # ours used half its wall time in CPU time
    assert ratio["median_step"]["median"] == pytest.approx(1.5)  # median of 3, 1.5, 1, 1.5
    trl["step_tokens"] = [10, 10, 10, 11]
    with pytest.raises(RuntimeError, match="steps per s ratio needs identical batches"):
        bm.summarise([ours, trl], [1], ["kto", "trl_kto_precomputed"])


def test_loss_only_extra_is_the_difference_of_medians_over_the_base_step():
    runs = [_run("dpo", 0, 0.2, 1.0), _run("imi_dpo", 0, 0.2, 1.0)]
    loss_only = {"1": {"dpo": {"median": 0.5}, "imi_dpo": {"median": 0.9}}}
    block = bm.summarise(runs, [1], ["dpo", "imi_dpo"], loss_only)["threads=1"]
    extra = block["ratios"]["imi_dpo_cost_vs_dpo"]["loss_only"]
    assert extra["extra_ms"] == pytest.approx(0.4)
    assert extra["extra_share_of_step"] == pytest.approx(0.4 / 200.0)  # dpo's step: 0.2 s = 200 ms
    assert extra["implied_ratio"] == pytest.approx(1.002)
    assert block["loss_only_ms"] == loss_only["1"]
    assert block["ratios"]["imi_dpo_cost_vs_dpo"]["holds_by_loss_only"] is True  # 1.002 <= 1.05
    big = {"1": {"dpo": {"median": 0.5}, "imi_dpo": {"median": 20.5}}}  # +20 ms on a 200 ms step: 1.10
    block = bm.summarise(runs, [1], ["dpo", "imi_dpo"], big)["threads=1"]
    assert block["ratios"]["imi_dpo_cost_vs_dpo"]["loss_only"]["implied_ratio"] == pytest.approx(1.1)
    assert block["ratios"]["imi_dpo_cost_vs_dpo"]["holds_by_loss_only"] is False


def test_cpu_time_view_uses_process_time():
    runs = [_run("dpo", 0, 0.1, 150.0, cpu_factor=0.5), _run("trl_dpo_precomputed", 0, 0.1, 100.0, cpu_factor=1.0)]
    ratio = bm.summarise(runs, [1], ["dpo", "trl_dpo_precomputed"])["threads=1"]["ratios"]["dpo_vs_trl_precomputed"]
    assert ratio["wall"]["median"] == pytest.approx(1.5) and ratio["cpu"]["median"] == pytest.approx(3.0)


def test_peak_fraction_is_model_flops_over_the_measured_matmul_peak():
    runs = [dict(_run("dpo", r, 0.1, 100.0), model_gflops=g) for r, g in enumerate((20.0, 30.0, 45.0))]
    peaks = {"1": {"peak_gflops": 60.0, "median_gflops": 50.0, "shape": [8, 4, 16], "rounds": 5, "threads": 1}}
    block = bm.summarise(runs, [1], ["dpo"], peaks=peaks)["threads=1"]
    assert block["matmul_peak"] == peaks["1"]
    assert block["variants"]["dpo"]["model_gflops"] == pytest.approx({"median": 30.0, "min": 20.0, "max": 45.0, "n": 3})
    assert block["variants"]["dpo"]["peak_fraction"] == pytest.approx({"median": 0.5, "min": 1 / 3, "max": 0.75, "n": 3})
    assert "peak_fraction" not in bm.summarise(runs, [1], ["dpo"])["threads=1"]["variants"]["dpo"]


def test_model_flops_follow_the_cost_convention():
    run = {"tokens": 1000, "nograd_tokens": 300, "seconds": 2.0}
    # every parameter trains: 6·N per trained token + 2·N per no-grad token: (6·10·1000 + 2·10·300) / 2 s
    full = {"n_params": 10, "n_backprop": 10, "n_trainable": 10}
    assert bm.model_gflops(run, full) == pytest.approx(33_000 / 1e9)
    # top layers only (the real-model workload): 2·N + 2·N_backprop + 2·N_trainable = 20 + 8 + 6 per trained token
    top = {"n_params": 10, "n_backprop": 4, "n_trainable": 3}
    assert bm.model_gflops(run, top) == pytest.approx((34 * 1000 + 20 * 300) / 2.0 / 1e9)


def test_matmul_peak_measures_the_requested_shape():
    result = bm.matmul_gflops((64, 32, 48), seconds=0.02, rounds=3)
    assert result["shape"] == [64, 32, 48] and result["rounds"] == 3 and result["threads"] >= 1
    assert result["peak_gflops"] >= result["median_gflops"] > 0


def test_representative_shape_is_a_steps_tokens_by_the_mlp():
    workload = bm.build_workload(steps=3, warmup=1, batch_size=4)
    tokens = int(workload.pairs.both().attention_mask.sum())
    assert bm.representative_shape(workload) == (tokens // 4, 128, 512)  # conf/model/tiny.yaml: 128 -> 512


def test_cost_ratio_refuses_different_batches():
    top, bottom = _run("imi_dpo", 0, 0.1, 1.0), _run("dpo", 0, 0.1, 1.0)
    bottom["step_tokens"] = [11, 10, 10, 10]
    with pytest.raises(RuntimeError, match="identical batches"):
        bm.summarise([top, bottom], [1], ["dpo", "imi_dpo"])


def test_sampled_pairs_prefer_the_higher_gold_reward_and_are_deterministic():
    task = build_task("sentiment")
    records = bm.sample_records("sentiment", 50, seed=3)
    assert len(records) == 50 and records == bm.sample_records("sentiment", 50, seed=3)
    assert records != bm.sample_records("sentiment", 50, seed=4)
    for r in records:
        assert task.gold_reward(r["prompt"], r["chosen"]) > task.gold_reward(r["prompt"], r["rejected"])


def test_workload_is_one_epoch_of_the_timed_and_warmup_steps():
    workload = bm.build_workload(steps=3, warmup=2, batch_size=5)
    assert len(workload.pairs) == len(workload.records) == 25 and workload.total_steps == 5
    assert workload.train_cfg["lr"] > 0 and next(workload.initial_model.parameters()).dtype.is_floating_point


def _trl_rows(pairs):
    """TRL's tokenised columns, rebuilt from our tensors (what check_same_sequences compares against)."""
    rows = []
    for i in range(len(pairs)):
        row = {}
        for side in ("chosen", "rejected"):
            seqs = getattr(pairs, side)
            n = int(seqs.attention_mask[i].sum())
            n_response = int(seqs.response_mask[i].sum())
            ids = seqs.input_ids[i, :n].tolist()
            row["prompt_ids"], row[f"{side}_ids"] = ids[: n - n_response], ids[n - n_response:]
        rows.append(row)
    return rows


def test_same_sequences_check_catches_a_token_or_a_boundary_difference():
    workload = bm.build_workload(steps=1, warmup=1, batch_size=2)
    rows = _trl_rows(workload.pairs)
    bm.check_same_sequences(workload, rows)  # identical: passes
    changed = [dict(r) for r in rows]
    changed[2]["rejected_ids"] = changed[2]["rejected_ids"][:-1] + [changed[2]["rejected_ids"][-1] + 1]
    with pytest.raises(RuntimeError, match="pair 2 rejected"):
        bm.check_same_sequences(workload, changed)
    moved = [dict(r) for r in rows]
    moved[1]["prompt_ids"], moved[1]["chosen_ids"] = moved[1]["prompt_ids"][:-1], (
        moved[1]["prompt_ids"][-1:] + moved[1]["chosen_ids"])
    with pytest.raises(RuntimeError, match="pair 1 chosen"):
        bm.check_same_sequences(workload, moved)


def test_trl_rows_are_compared_after_the_collators_cut_at_max_length():
    """TRL's dataset keeps untruncated ids and its collator cuts prompt + response at max_length (keep_start),
    as our encoding does: rows that only differ beyond the cut are the same training sequences."""
    task = build_task("sentiment")
    tokenizer = build_word_tokenizer(task.vocabulary)
    records = bm.sample_records("sentiment", 6, seed=0)
    untruncated, _, _ = encode_pairs(records, tokenizer, 64, "test")
    rows = _trl_rows(untruncated)  # what TRL's dataset holds: nothing cut
    # every pair keeps its prompt and enough response tokens to tell its chosen from its rejected (>= 2)
    differ_at = [next((i for i, (a, b) in enumerate(zip(r["chosen_ids"], r["rejected_ids"])) if a != b),
                      min(len(r["chosen_ids"]), len(r["rejected_ids"]))) for r in rows]
    cut = max(len(row["prompt_ids"]) for row in rows) + max(2, max(differ_at) + 1)
    truncated, _, _ = encode_pairs(records, tokenizer, cut, "test")
    assert truncated.chosen.input_ids.shape[1] < untruncated.chosen.input_ids.shape[1]  # the cut did matter
    workload = SimpleNamespace(pairs=truncated, model_cfg={"max_length": cut})
    bm.check_same_sequences(workload, rows)
    changed = [dict(r) for r in rows]
    assert len(changed[3]["prompt_ids"]) < cut  # so the first response token is inside the cut
    changed[3]["rejected_ids"] = [changed[3]["rejected_ids"][0] + 1] + changed[3]["rejected_ids"][1:]
    with pytest.raises(RuntimeError, match="pair 3 rejected"):
        bm.check_same_sequences(workload, changed)


@pytest.fixture(scope="module")
def kto_workload():
    workload = bm.build_workload(steps=2, warmup=1, batch_size=3)
    bm.unpaired_workload(workload)
    return workload


def test_unpaired_workload_is_the_pairs_as_examples_in_training_order(kto_workload):
    workload = kto_workload
    data = bm.unpaired_workload(workload)
    assert data is workload.unpaired  # built once
    examples = data.examples
    assert len(examples) == 2 * len(workload.pairs) and examples.block_size == 2 * workload.batch_size
    assert data.block_order == bm.trainer_block_order(examples.n_blocks, workload.seed)
    assert sorted(data.block_order) == list(range(workload.total_steps)) and data.block_order != [0, 1, 2]
    # one epoch: the pairs' 2P sequences once (the same tokens as a DPO epoch)
    assert int(examples.completions.attention_mask.sum()) == int(workload.pairs.both().attention_mask.sum())
    assert int(examples.labels.sum()) == len(workload.pairs)
    rows = data.rows.tolist()
    assert sorted(rows) == list(range(len(examples)))
    eos = workload.tokenizer.eos_token
    by_text = {}
    for r in workload.records:
        by_text.setdefault((r["chosen"], True), set()).add(f"<bos> {r['prompt']} ")
        by_text.setdefault((r["rejected"], False), set()).add(f"<bos> {r['prompt']} ")
    columns = data.trl_columns
    assert columns["label"] == examples.labels[data.rows].tolist()
    for prompt, completion, label in zip(columns["prompt"], columns["completion"], columns["label"]):
        assert completion.endswith(f" {eos}")  # TRL adds no second EOS, and the word tokenizer splits it off
        assert prompt in by_text[(completion.removesuffix(f" {eos}"), label)]


def _trl_example_rows(workload):
    """TRL KTOTrainer's tokenised columns, rebuilt from our tensors in training order."""
    data = bm.unpaired_workload(workload)
    rows = []
    for r in data.rows.tolist():
        row = {"label": bool(data.examples.labels[r])}
        for seqs, key in ((data.examples.completions, "completion_ids"), (data.examples.kl, "KL_completion_ids")):
            n, n_scored = int(seqs.attention_mask[r].sum()), int(seqs.response_mask[r].sum())
            ids = seqs.input_ids[r, :n].tolist()
            row["prompt_ids"], row[key] = ids[: n - n_scored], ids[n - n_scored:]
        rows.append(row)
    return rows


def test_same_examples_check_catches_a_token_a_kl_partner_a_label_or_the_order(kto_workload):
    rows = _trl_example_rows(kto_workload)
    bm.check_same_examples(kto_workload, rows)  # identical: passes
    changed = [dict(r) for r in rows]
    changed[4]["completion_ids"] = [changed[4]["completion_ids"][0] + 1] + changed[4]["completion_ids"][1:]
    with pytest.raises(RuntimeError, match=r"example 4 \(our row \d+\) completion: TRL tokenised"):
        bm.check_same_examples(kto_workload, changed)
    # a KL sequence built from another example of the batch than the previous one
    changed = [dict(r) for r in rows]
    changed[1]["KL_completion_ids"] = rows[2]["completion_ids"]
    with pytest.raises(RuntimeError, match=r"example 1 \(our row \d+\) KL sequence"):
        bm.check_same_examples(kto_workload, changed)
    changed = [dict(r) for r in rows]
    changed[3]["label"] = not changed[3]["label"]
    with pytest.raises(RuntimeError, match=r"example 3 \(our row \d+\): TRL's label"):
        bm.check_same_examples(kto_workload, changed)
    with pytest.raises(RuntimeError, match="example 0"):  # the blocks in another order than our trainer's
        bm.check_same_examples(kto_workload, rows[6:] + rows[:6])
    with pytest.raises(RuntimeError, match="TRL's KTO dataset has 17 examples, ours 18"):
        bm.check_same_examples(kto_workload, rows[:-1])


def test_trained_blocks_check_catches_another_block_or_label_at_a_step(kto_workload):
    data = bm.unpaired_workload(kto_workload)

    def fed(order, flip_labels=False):
        steps = []
        for block in order:
            rows = data.examples.block_rows(torch.tensor([block]))
            completions, kl = data.examples.completions.select(rows), data.examples.kl.select(rows)
            labels = data.examples.labels[rows]
            steps.append({"completion": (completions.input_ids, completions.attention_mask),
                          "kl": (kl.input_ids, kl.attention_mask), "labels": ~labels if flip_labels else labels})
        return steps

    bm.check_trained_blocks(kto_workload, fed(data.block_order), "trl_kto_precomputed")
    # TRL pads each batch to its own longest row: only the non-pad tokens count
    padded = fed(data.block_order)
    for step in padded:
        ids, mask = step["kl"]
        step["kl"] = (torch.cat([ids, torch.zeros_like(ids[:, :3])], 1),
                      torch.cat([mask, torch.zeros_like(mask[:, :3])], 1))
    bm.check_trained_blocks(kto_workload, padded, "trl_kto_precomputed")
    swapped = data.block_order[1:2] + data.block_order[:1] + data.block_order[2:]
    with pytest.raises(RuntimeError, match=rf"kto step 0: its completion sequences are not those of block "
                                           rf"{data.block_order[0]}"):
        bm.check_trained_blocks(kto_workload, fed(swapped), "kto")
    with pytest.raises(RuntimeError, match="step 0: its labels are not"):
        bm.check_trained_blocks(kto_workload, fed(data.block_order, flip_labels=True), "trl_kto_precomputed")
    with pytest.raises(RuntimeError, match="kto trained 2 steps, the workload is 3 blocks"):
        bm.check_trained_blocks(kto_workload, fed(data.block_order)[:2], "kto")


def test_trainable_check_catches_a_different_parameter_set():
    workload = bm.build_workload(steps=1, warmup=1, batch_size=2)
    names = bm.trainable_names(workload.initial_model)
    assert names == [n for n, _ in workload.initial_model.named_parameters()]  # the tiny model trains everything
    bm.check_same_trainable(workload, copy.deepcopy(workload.initial_model), "trl_dpo_precomputed")
    frozen = copy.deepcopy(workload.initial_model)
    frozen.get_parameter(names[-1]).requires_grad_(False)
    with pytest.raises(RuntimeError, match=rf"trl_dpo_precomputed would train a different .*missing \['{names[-1]}'\]"):
        bm.check_same_trainable(workload, frozen, "trl_dpo_precomputed")
    workload.initial_model.get_parameter(names[0]).requires_grad_(False)  # the workload freezes one, a copy does not
    with pytest.raises(RuntimeError, match=rf"extra \['{names[0]}'\]"):
        bm.check_same_trainable(workload, copy.deepcopy(frozen).requires_grad_(True), "dpo")
    # after training: a change to a trainable parameter is expected, one to a frozen parameter is not
    trained = copy.deepcopy(workload.initial_model)
    with torch.no_grad():
        trained.get_parameter(names[1]).add_(1.0)
    bm.check_frozen_unchanged(workload, trained, "dpo")
    with torch.no_grad():
        trained.get_parameter(names[0]).add_(1.0)
    with pytest.raises(RuntimeError, match=rf"dpo changed the frozen parameter {names[0]}"):
        bm.check_frozen_unchanged(workload, trained, "dpo")


def test_claims_follow_the_workload():
    """The real-model target for ours over TRL is 1.2, the built-in one 1.5; the other claims are shared."""
    assert bm.claims_for("smollm2")["dpo_vs_trl_precomputed"] == (">=", 1.2)
    assert bm.claims_for("builtin")["dpo_vs_trl_precomputed"] == (">=", 1.5)
    assert bm.claims_for("smollm2")["imi_dpo_cost_vs_dpo"] == bm.claims_for("builtin")["imi_dpo_cost_vs_dpo"]
    runs = [_run("trl_dpo_precomputed", r, 0.2, 100.0) for r in range(3)]
    runs += [_run("dpo", r, 0.1, tps) for r, tps in enumerate((130.0, 125.0, 110.0))]  # 1.3, 1.25, 1.1
    for workload, holds in (("builtin", False), ("smollm2", True)):
        ratio = bm.summarise(runs, [1], ["trl_dpo_precomputed", "dpo"], workload=workload)["threads=1"]["ratios"][
            "dpo_vs_trl_precomputed"]
        assert ratio["wall"]["median"] == pytest.approx(1.25)
        assert ratio["holds_on_median"] is holds and ratio["holds_in_every_repeat"] is False, workload


def test_each_workload_writes_its_own_files(tmp_path):
    assert bm.result_paths(tmp_path, "builtin") == {"json": tmp_path / "throughput.json",
                                                     "markdown": tmp_path / "throughput.md",
                                                     "profile": tmp_path / "profile.md"}
    assert bm.result_paths(tmp_path, "smollm2")["markdown"] == tmp_path / "throughput_smollm2.md"
    assert bm.result_paths(tmp_path, "smollm2")["profile"] == tmp_path / "profile_smollm2.md"


def test_bad_arguments_fail_before_any_compute():
    with pytest.raises(ValueError, match="unknown workload 'llama'"):
        bm.run_benchmark(steps=1, repeats=1, threads=[1], workload="llama")
    with pytest.raises(ValueError, match="--workload smollm2 trains on the constraints task, not 'sentiment'"):
        bm.make_workload("smollm2", 1, 1, None, "sentiment", 0)
    with pytest.raises(ValueError, match="unknown variant 'ppo'"):
        bm.run_benchmark(steps=1, repeats=1, threads=[1], variants=["ppo"])
    with pytest.raises(ValueError, match="--warmup"):
        bm.run_benchmark(steps=1, repeats=1, threads=[1], warmup=0)
    with pytest.raises(ValueError, match="--threads"):
        bm.run_benchmark(steps=1, repeats=1, threads=[0])
    with pytest.raises(ValueError, match="loss_costs times pair methods .*not kto"):
        bm.loss_costs(bm.build_workload(steps=1, warmup=1, batch_size=2), ["dpo", "kto"])


# ----------------------------------------------------------------------- the real-model workload (slow)

SMOLLM2_SIZES = {"steps": 1, "warmup": 1, "batch_size": 2}


@pytest.fixture(scope="module")
def smollm2_cache(shared_cache):
    """The session's disk cache, once SmolLM2 can be loaded there (its first use converts the GGUF, ~30 s)."""
    pytest.importorskip("trl", reason="the benchmark's TRL variants need trl 1.16 (pip install -e '.[test]')")
    gguf = OmegaConf.to_container(OmegaConf.load(bm.workload.CONF_DIR / "model" / "smollm2.yaml").gguf)
    try:
        gguf_file_path(gguf)
    except (ModuleNotFoundError, ValueError, FileNotFoundError) as exc:
        pytest.skip(f"the real-model workload needs SmolLM2: {exc}")
    return shared_cache


@pytest.fixture(scope="module")
def smollm2_workload(smollm2_cache):
    return bm.make_workload("smollm2", SMOLLM2_SIZES["steps"], SMOLLM2_SIZES["warmup"], SMOLLM2_SIZES["batch_size"],
                            None, 0, smollm2_cache)


@pytest.mark.slow
def test_smollm2_workload_is_chat_pairs_on_the_top_two_blocks(smollm2_workload):
    from bench.benchmark.real_model import TASK, constraints_records

    workload = smollm2_workload
    assert workload.name == "smollm2" and workload.task == TASK
    assert len(workload.pairs) == SMOLLM2_SIZES["batch_size"] * (SMOLLM2_SIZES["steps"] + SMOLLM2_SIZES["warmup"])
    task = build_task(TASK, **OmegaConf.load(bm.workload.CONF_DIR / "dataset" / f"{TASK}.yaml").task_kwargs)
    task.bind_tokenizer(workload.tokenizer)
    assert constraints_records(task, len(workload.pairs), seed=0) == workload.records  # fixed texts, no sampling
    for r in workload.records:
        assert r["prompt"].startswith("<|im_start|>system") and r["prompt"].endswith("<|im_start|>assistant\n")
        assert task.gold_reward(r["prompt"], r["chosen"]) > task.gold_reward(r["prompt"], r["rejected"])
    # the chat template starts with SmolLM2's BOS (<|im_start|>): TRL's prompt text needs nothing added
    assert workload.trl_columns["prompt"] == [r["prompt"] for r in workload.records]
    assert workload.pairs.chosen.input_ids[:, 0].eq(workload.tokenizer.bos_token_id).all()
    names = bm.trainable_names(workload.initial_model)
    blocks = {name.split(".")[2] for name in names if name.startswith("model.layers.")}
    assert blocks == {"28", "29"} and set(names) - {n for n in names if n.startswith("model.layers.")} == {
        "model.norm.weight"}
    assert str(next(workload.initial_model.parameters()).dtype) == "torch.float32"


@pytest.mark.slow
def test_smollm2_benchmark_runs_one_step_on_both_sides(smollm2_cache, tmp_path):
    """One timed step of every default real-model variant: TRL tokenised the very same sequences (the run
    raises before timing otherwise), both sides trained the same parameters, and the report has its section."""
    bm.main(["--workload", "smollm2", "--steps", str(SMOLLM2_SIZES["steps"]), "--warmup", str(SMOLLM2_SIZES["warmup"]),
             "--batch-size", str(SMOLLM2_SIZES["batch_size"]), "--repeats", "1", "--threads", "1",
             "--cache-root", str(smollm2_cache), "--out", str(tmp_path), "--no-progress"])
    results = json.loads((tmp_path / "throughput_smollm2.json").read_text())
    markdown = (tmp_path / "throughput_smollm2.md").read_text()
    assert not (tmp_path / "throughput.json").exists()  # the built-in workload's results are left alone
    assert results["complete"] and results["workload"]["name"] == "smollm2"
    model = results["workload"]["model"]
    assert model["trainable_layers"] == 2 and 0 < model["trainable_parameters"] < model["non_embedding_parameters"]
    runs = {run["variant"]: run for run in results["runs"]}
    assert set(runs) == set(bm.DEFAULT_VARIANTS["smollm2"])
    assert {run["trainable_parameters"] for run in runs.values()} == {model["trainable_parameters"]}
    assert len({run["epoch_tokens"] for run in runs.values()}) == 1  # the same sequences on both sides
    for run in runs.values():
        assert run["steps_timed"] == 1 and run["tokens"] > 0 and math.isfinite(run["final_loss"])
    assert runs["dpo"]["layout"]["kind"] == "packed"
    block = results["summary"]["threads=1"]
    assert block["ratios"]["dpo_vs_trl_precomputed"]["claim"] == "dpo_vs_trl_precomputed >= 1.2"
    peak = block["matmul_peak"]
    assert peak["shape"][1:] == [576, 1536] and peak["peak_gflops"] > 0  # SmolLM2's MLP up-projection
    assert all(v["peak_fraction"]["median"] > 0 for v in block["variants"].values())
    assert "real model: SmolLM2-135M-Instruct" in markdown and "top 2 of 30 blocks" in markdown
    assert "| noise_dpo_aa_vs_dpo (" in markdown and "| dpo_vs_trl_precomputed (" in markdown


@pytest.mark.slow
def test_smollm2_kto_runs_one_step_on_both_sides(smollm2_cache, tmp_path):
    """KTO on the real model: TRL's KTOTrainer tokenises SmolLM2's chat prompts and completions (EOS text
    appended) to our very sequences and KL sequences, and both sides train the same blocks (the run raises
    otherwise); the ratio is reported."""
    bm.main(["--workload", "smollm2", "--variants", "kto", "trl_kto_precomputed", "--steps", "1", "--warmup", "1",
             "--batch-size", str(SMOLLM2_SIZES["batch_size"]), "--repeats", "1", "--threads", "1",
             "--cache-root", str(smollm2_cache), "--out", str(tmp_path), "--no-progress"])
    results = json.loads((tmp_path / "throughput_smollm2.json").read_text())
    runs = {run["variant"]: run for run in results["runs"]}
    assert runs["kto"]["step_tokens"] == runs["trl_kto_precomputed"]["step_tokens"]
    assert runs["kto"]["nograd_tokens"] == runs["trl_kto_precomputed"]["nograd_tokens"] > 0
    assert results["summary"]["threads=1"]["ratios"]["kto_vs_trl_kto_precomputed"]["wall"]["median"] > 0
