"""The training side of the selection-honest protocol (docs/design.md §11a): what every record carries so the
analysis can select on validation and score on test, replay early-stopping tuners, and keep waiting
out of compute."""
from __future__ import annotations

import math
import threading
import time

import pytest

from bench import records
from bench.cache import DiskCache
from bench.cost import CostMeter
from bench.evaluate import SAMPLING_STREAMS, sampling_seeds
from bench.pipeline import run


def test_record_has_val_and_test_metrics_and_a_cumulative_validation_curve(make_config):
    cfg = make_config("method=dpo", "dataset=arithmetic", "train.max_steps=8")
    record = records.read_record(run(cfg).directory)
    assert record["status"] == "completed", record["error"]
    metrics = record["metrics"]
    for name in ("gold_reward", "reference_gold_reward", "win_rate", "kl", "no_eos_rate", "collapsed"):
        assert math.isfinite(metrics[name]) and math.isfinite(metrics[f"val/{name}"]), name
    assert record["config"]["budget"] == "fast" and record["config"]["dataset"]["trap"] is None
    curve = record["val_curve"]
    # 8 steps at fractions 0.25/0.5/0.75/1.0 -> after steps 2, 4, 6, 8, in that order
    assert [p["step"] for p in curve] == [2, 4, 6, 8]
    assert [p["fraction"] for p in curve] == [0.25, 0.5, 0.75, 1.0]
    assert all(p["n_prompts"] == cfg.eval.curve.n_prompts for p in curve)
    for key in ("flops", "train_s", "device_hours"):
        values = [p[key] for p in curve]
        assert all(b > a for a, b in zip(values, values[1:])), f"{key} must be cumulative: {values}"
    # the curve's cost is part of the run's: its last point is within what the run reports overall
    assert curve[-1]["flops"] <= record["cost"]["flops"]
    assert record["cost"]["nograd_tokens/curve"] > 0


def test_sampling_streams_never_share_a_seed_across_runs_or_streams():
    seeds = [s for run_seed in range(20) for stream in SAMPLING_STREAMS for s in sampling_seeds(run_seed, stream)]
    assert len(seeds) == len(set(seeds))


def test_waiting_on_a_cache_lock_is_recorded_and_not_compute(tmp_path):
    cache = DiskCache(tmp_path)
    started = threading.Event()

    def build(directory):
        started.set()
        time.sleep(0.6)
        (directory / "x").write_text("1")
        return {}

    builder = threading.Thread(target=cache.get_or_build, args=("thing", {"a": 1}, build))
    builder.start()
    started.wait()
    entry = cache.get_or_build("thing", {"a": 1}, build)  # blocks on the lock until the builder is done
    builder.join()
    assert entry.hit and entry.wait_s >= 0.4

    meter = CostMeter(n_params=10)
    with meter.phase("setup"):
        time.sleep(0.3)
        meter.add_shared("thing", entry.key, entry.hit, entry.build_cost, wait_s=0.25)
    summary = meter.summary()
    assert summary["wait_s"] == pytest.approx(0.25)
    assert summary["setup_s"] == pytest.approx(meter.seconds["setup"] - 0.25, abs=1e-3)
    assert summary["total_s"] == pytest.approx(summary["setup_s"], abs=1e-3)
    assert summary["device_hours"] == pytest.approx(summary["total_s"] / 3600, rel=1e-3)
    assert summary["shared"]["thing"]["wait_s"] == 0.25


def test_flops_of_partial_training_follow_the_backward_pass_by_hand():
    """6·N when everything trains; 2·N + 2·N_backprop + 2·N_trainable when only the top block does."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from bench.models import flop_parameters

    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=8, intermediate_size=16, num_hidden_layers=2,
                                         num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=False))
    per_block = 4 * 8 * 8 + 3 * 8 * 16 + 2 * 8  # q, k, v, o; gate, up, down; two RMSNorm weights
    final_norm = 8
    full = flop_parameters(model)
    assert full == {"n_params": 2 * per_block + final_norm, "n_backprop": 2 * per_block + final_norm,
                    "n_trainable": 2 * per_block + final_norm}
    for p in model.model.layers[0].parameters():
        p.requires_grad_(False)
    model.model.embed_tokens.weight.requires_grad_(False)
    top = flop_parameters(model)
    assert top == {"n_params": 2 * per_block + final_norm, "n_backprop": per_block + final_norm,
                   "n_trainable": per_block + final_norm + 0}
    meter = CostMeter(n_params=top["n_params"])
    assert meter.flops(10, 0) == 6 * top["n_params"] * 10  # not told: the whole model trains
    meter.set_parameter_counts(top)
    n, k = top["n_params"], top["n_backprop"]
    assert meter.flops(10, 3) == (2 * n + 2 * k + 2 * k) * 10 + 2 * n * 3
