"""The GPU paths (docs/design.md §14): packed batches with the GPU's attention kernels, fused AdamW, bf16
autocast, RNG isolation on every device, and `hardware=gpu` end to end. Skipped without CUDA; run by
`python -m bench.gpu_check` on a GPU machine (results/gpu/README.md)."""
from __future__ import annotations

import copy
import math

import pytest
import torch

from bench.generation import sample_responses
from bench.logps import PACKED_ROW_WIDTH, PADDED, Layout, sequence_logps
from bench.models import build_tiny_model, build_word_tokenizer

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

MODEL = dict(hidden_size=64, num_layers=2, num_heads=4, intermediate_size=128, max_length=32)


def _model_and_pairs(attention: str):
    from bench.data.encoding import encode_pairs

    tokenizer = build_word_tokenizer(["a", "b", "c", "d", "="])
    torch.manual_seed(0)
    model = build_tiny_model(MODEL, tokenizer).float().cuda()
    model.set_attn_implementation(attention)
    g = torch.Generator().manual_seed(0)
    words = lambda k: " ".join("abcd"[int(i)] for i in torch.randint(4, (k,), generator=g))  # noqa: E731
    records = [{"prompt": words(1 + i % 9) + " =", "chosen": words(1 + i % 13), "rejected": words(2 + i % 7)}
               for i in range(16)]
    pairs, _, _ = encode_pairs(records, tokenizer, MODEL["max_length"], "gpu-fixture")
    return model, tokenizer, pairs


@pytest.mark.parametrize("attention", ["sdpa", "flash_attention_2"])
def test_packed_layout_equals_padded_on_the_gpu(attention):
    if attention == "flash_attention_2":
        pytest.importorskip("flash_attn", reason="flash-attn is not installed")
    model, _, pairs = _model_and_pairs("sdpa")
    if attention == "flash_attention_2":
        model = model.to(torch.bfloat16)
        model.set_attn_implementation(attention)
    seqs = pairs.both()
    padded, counts = sequence_logps(model, seqs, PADDED)
    packed, packed_counts = sequence_logps(model, seqs, Layout("packed", PACKED_ROW_WIDTH))
    tol = dict(atol=1e-3, rtol=1e-4) if attention == "sdpa" else dict(atol=0.5, rtol=2e-2)  # bf16 kernels
    torch.testing.assert_close(packed.float(), padded.float(), **tol)
    assert torch.equal(counts, packed_counts)


def test_fused_adamw_steps_as_the_per_tensor_loop_on_the_gpu():
    """The trainer's optimizer (bench.trainer.build_optimizer) with train.fused_adamw: one step from the same
    weights and gradients lands where the per-tensor loop's does, up to rounding (measured on CPU: 7e-9)."""
    from bench.trainer import build_optimizer

    model, _, _ = _model_and_pairs("sdpa")
    model(torch.randint(5, (2, 8), device="cuda")).logits.float().mean().backward()
    loop_model = copy.deepcopy(model)  # deepcopy leaves gradients behind: copied by hand
    for fused_param, loop_param in zip(model.parameters(), loop_model.parameters()):
        loop_param.grad = fused_param.grad.clone()
    settings = {"lr": 1e-3, "weight_decay": 0.01}
    optimizer = build_optimizer(model, {**settings, "fused_adamw": True})
    loop = build_optimizer(loop_model, {**settings, "fused_adamw": False})
    before = [p.detach().clone() for p in model.parameters()]
    optimizer.step()
    loop.step()
    assert optimizer.defaults["fused"] is True and not loop.defaults["fused"]
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    for fused_param, loop_param in zip(model.parameters(), loop_model.parameters()):
        torch.testing.assert_close(fused_param, loop_param)


def test_sampling_leaves_the_cuda_rng_as_it_found_it():
    model, tokenizer, _ = _model_and_pairs("sdpa")
    torch.manual_seed(7)
    cpu, cuda = torch.get_rng_state().clone(), [s.clone() for s in torch.cuda.get_rng_state_all()]
    first = sample_responses(model, tokenizer, ["a b =", "c ="], 5, seed=3)
    assert torch.equal(torch.get_rng_state(), cpu)
    assert all(torch.equal(a, b) for a, b in zip(torch.cuda.get_rng_state_all(), cuda))
    assert [s.response_ids for s in sample_responses(model, tokenizer, ["a b =", "c ="], 5, seed=3)] == \
        [s.response_ids for s in first]


def test_a_gpu_run_end_to_end_in_bf16(make_config):
    from bench.pipeline import run

    record = run(make_config("hardware=gpu", "method=imi_dpo", "train.max_steps=4")).record
    assert record["status"] == "completed", record["error"]
    assert record["config"]["hardware"]["mixed_precision"] == "bf16"
    assert record["provenance"]["hardware"]["cuda"] is True and record["provenance"]["hardware"]["gpus"]
    assert math.isfinite(record["metrics"]["gold_reward"]) and record["cost"]["device_hours"] > 0
