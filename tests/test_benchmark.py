"""The throughput benchmark (bench.benchmark): a tiny run end to end, and its bookkeeping on hand-computed numbers.

No timing ratio is asserted anywhere: performance is measured by `python -m bench.benchmark` and committed
under results/throughput/, never judged by a timed test on a shared machine.
"""
from __future__ import annotations

import json
import math

import pytest

from bench import benchmark as bm
from bench.benchmark import clock as clock_module
from bench.data.tasks import build_task

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
    assert results["schema_version"] == bm.SCHEMA_VERSION
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
        assert run["model_gflops"] == pytest.approx((6 * run["tokens"] + 2 * run["nograd_tokens"]) * n_params
                                                    / run["seconds"] / 1e9)
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
    methods = {v["method"] for v in bm.VARIANTS.values() if v["side"] == "ours"}
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
    ours = {run["variant"]: run for run in results["runs"] if bm.VARIANTS[run["variant"]]["side"] == "ours"}
    # our variants train on identical batches, which the per-step cost ratios rely on
    assert len({tuple(run["step_tokens"]) for run in ours.values()}) == 1
    assert ours["rmipo"]["nograd_tokens"] > 0
    assert all(run["nograd_tokens"] == 0 for name, run in ours.items() if name != "rmipo")
    # positions: TRL and dpo_padded compute on the padded [2B, L] batches, ours packs them into fewer
    by_name = {run["variant"]: run for run in results["runs"]}
    assert by_name["dpo"]["positions"] < by_name["dpo_padded"]["positions"]
    assert by_name["dpo"]["layout"] == {"kind": "packed", "row_width": 32}
    assert by_name["dpo_padded"]["layout"] == {"kind": "padded", "row_width": None}


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
    # 6·N per trained token + 2·N per no-grad token (bench.cost): (6·10·1000 + 2·10·300) / 2 s
    run = {"tokens": 1000, "nograd_tokens": 300, "seconds": 2.0}
    assert bm.model_gflops(run, non_embedding_parameters=10) == pytest.approx(33_000 / 1e9)


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


def _trl_rows(workload):
    """TRL's tokenised columns, rebuilt from our tensors (what check_same_sequences compares against)."""
    rows = []
    for i in range(len(workload.pairs)):
        row = {}
        for side in ("chosen", "rejected"):
            seqs = getattr(workload.pairs, side)
            n = int(seqs.attention_mask[i].sum())
            n_response = int(seqs.response_mask[i].sum())
            ids = seqs.input_ids[i, :n].tolist()
            row["prompt_ids"], row[f"{side}_ids"] = ids[: n - n_response], ids[n - n_response:]
        rows.append(row)
    return rows


def test_same_sequences_check_catches_a_token_or_a_boundary_difference():
    workload = bm.build_workload(steps=1, warmup=1, batch_size=2)
    rows = _trl_rows(workload)
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


def test_bad_arguments_fail_before_any_compute():
    with pytest.raises(ValueError, match="unknown variant 'ppo'"):
        bm.run_benchmark(steps=1, repeats=1, threads=[1], variants=["ppo"])
    with pytest.raises(ValueError, match="--warmup"):
        bm.run_benchmark(steps=1, repeats=1, threads=[1], warmup=0)
    with pytest.raises(ValueError, match="--threads"):
        bm.run_benchmark(steps=1, repeats=1, threads=[0])
