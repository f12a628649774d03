"""PreferenceTrainer on a tiny workload: both batch layouts train the same model, a run is
repeatable, and the step-callback interface sees every optimizer step."""
from __future__ import annotations

import copy
import random
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from omegaconf import OmegaConf

from bench.cost import CostMeter
from bench.data.encoding import encode_pairs
from bench.loggers import NoneLogger
from bench.logps import PACKED_ROW_WIDTH, Layout
from bench.methods import build_method
from bench.models import build_tiny_model, build_word_tokenizer
from bench.reference import ReferenceTerms, needs_reference_terms, score_reference_terms
from bench.trainer import PreferenceTrainer

TINY_MODEL = dict(hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_length=24)
WORDS = ["a", "b", "c", "d", "e", "="]
CONF = Path(__file__).resolve().parents[1] / "conf"


def _records(n: int, seed: int = 0) -> list[dict]:
    """Pairs with varied prompt and response lengths, so batches mix short and long sequences."""
    rng = random.Random(seed)
    words = lambda k: " ".join(rng.choice(WORDS[:-1]) for _ in range(k))  # noqa: E731
    return [{"prompt": words(rng.randint(1, 6)) + " =", "chosen": words(rng.randint(1, 8)),
             "rejected": words(rng.randint(1, 8))} for _ in range(n)]


def _trainer(train_overrides: dict | None = None, callbacks=(), n_pairs: int = 12, method: str = "simpo"):
    """A trainer as bench.pipeline builds one: the method's published config, its cached reference
    terms (from a perturbed copy of the initial weights) and, for rmipo, the response-only sequences."""
    tokenizer = build_word_tokenizer(WORDS)
    pairs, _, _ = encode_pairs(_records(n_pairs), tokenizer, TINY_MODEL["max_length"], "fixture")
    torch.manual_seed(0)
    model = build_tiny_model(TINY_MODEL, tokenizer).float()
    method = build_method(OmegaConf.to_container(OmegaConf.load(CONF / "method" / f"{method}.yaml")))
    needs, terms, marginal_seqs = method.needs, ReferenceTerms(), None
    reference = copy.deepcopy(model)
    with torch.no_grad():  # a reference unlike the policy, so no implicit reward starts at a float-noise 0
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    if needs.marginal is not None:
        marginal_seqs = pairs.marginal(tokenizer, TINY_MODEL["max_length"], needs.marginal_context)
    if needs_reference_terms(needs):
        terms = score_reference_terms(reference, pairs, marginal=marginal_seqs if needs.marginal == "reference" else None)
    if needs.marginal == "reference":
        marginal_seqs = None
    train_cfg = {"batch_size": 4, "epochs": 1, "max_steps": None, "lr": 1e-3, "weight_decay": 0.0,
                 "warmup_ratio": 0.0, "max_grad_norm": 1.0, "log_every": 2, "layout": "auto", "fused_adamw": True,
                 **(train_overrides or {})}
    return PreferenceTrainer(method, model, pairs, terms, marginal_seqs, train_cfg, Accelerator(cpu=True),
                             CostMeter(), NoneLogger(), seed=0, show_progress=False, callbacks=callbacks)


def _untimed(row: dict) -> dict:
    return {k: v for k, v in row.items() if k != "train_tokens_per_s"}  # wall-clock throughput


@pytest.mark.parametrize("method", ["dpo", "imi_dpo", "rmipo"])
def test_packed_and_padded_training_agree(method):
    """Three optimizer steps in each layout: the same losses, metrics and weights within float32
    rounding (policy pass with gradient, cached reference terms, rmipo's no-grad policy marginal)."""
    runs = {}
    for layout in ("padded", "packed"):
        trainer = _trainer({"layout": layout, "log_every": 1}, method=method, n_pairs=12)
        runs[layout] = (trainer.train(), torch.cat([p.detach().flatten() for p in trainer.model.parameters()]))
    (padded_history, padded_weights), (packed_history, packed_weights) = runs["padded"], runs["packed"]
    assert [row["step"] for row in packed_history] == [0, 1, 2]
    for padded_row, packed_row in zip(padded_history, packed_history):
        assert set(packed_row) == set(padded_row)
        for key, value in _untimed(padded_row).items():
            assert packed_row[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    assert ((packed_weights - padded_weights).norm() / padded_weights.norm()).item() < 1e-6
    if method == "rmipo":
        assert trainer.meter.nograd_tokens["marginal"] > 0  # the policy marginal pass ran


def test_layout_option_resolves():
    assert _trainer({"layout": "auto"}).layout == Layout("packed", PACKED_ROW_WIDTH)  # CPU
    assert _trainer({"layout": "padded"}).layout.kind == "padded"
    with pytest.raises(ValueError, match="train.layout must be one of"):
        _trainer({"layout": "packd"})


def test_same_config_and_seed_give_identical_histories():
    first = _trainer({"layout": "packed", "fused_adamw": True}, method="imi_dpo").train()
    again = _trainer({"layout": "packed", "fused_adamw": True}, method="imi_dpo").train()
    assert [_untimed(row) for row in first] == [_untimed(row) for row in again]


def test_fused_adamw_is_the_optimizer_the_option_asks_for():
    assert _trainer({"fused_adamw": True}).optimizer.optimizer.defaults["fused"] is True
    assert not _trainer({"fused_adamw": False}).optimizer.optimizer.defaults["fused"]


class Recorder:
    def __init__(self):
        self.calls = []

    def on_step_end(self, trainer, step, row):
        self.calls.append((step, row, len(trainer.history)))


def test_callbacks_see_every_step_with_the_logged_row_or_none():
    recorder, no_hook = Recorder(), object()  # an object without on_step_end is allowed and skipped
    trainer = _trainer(callbacks=[recorder, no_hook])
    history = trainer.train()
    assert [step for step, _, _ in recorder.calls] == [0, 1, 2]  # 12 pairs / batch 4
    # log_every=2 logs steps 0 and 2 (the last step is always logged); step 1 gets None
    assert [row is None for _, row, _ in recorder.calls] == [False, True, False]
    assert recorder.calls[0][1] is history[0] and recorder.calls[2][1] is history[1]
    # the row is already in the trainer's history when the callback runs
    assert [n for _, _, n in recorder.calls] == [1, 1, 2]
