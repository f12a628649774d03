"""PreferenceTrainer on a tiny workload: the step-callback interface sees every optimizer step."""
from __future__ import annotations

import random
from pathlib import Path

import torch
from accelerate import Accelerator
from omegaconf import OmegaConf

from bench.cost import CostMeter
from bench.data.encoding import encode_pairs
from bench.loggers import NoneLogger
from bench.methods import build_method
from bench.models import build_tiny_model, build_word_tokenizer
from bench.trainer import PairCache, PreferenceTrainer

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
    tokenizer = build_word_tokenizer(WORDS)
    pairs, _, _ = encode_pairs(_records(n_pairs), tokenizer, TINY_MODEL["max_length"], "fixture")
    torch.manual_seed(0)
    model = build_tiny_model(TINY_MODEL, tokenizer).float()
    train_cfg = {"batch_size": 4, "epochs": 1, "max_steps": None, "lr": 1e-3, "weight_decay": 0.0,
                 "warmup_ratio": 0.0, "max_grad_norm": 1.0, "log_every": 2, **(train_overrides or {})}
    return PreferenceTrainer(build_method(OmegaConf.to_container(OmegaConf.load(CONF / "method" / f"{method}.yaml"))), model, pairs, PairCache(), None, train_cfg,
                             Accelerator(cpu=True), CostMeter(), NoneLogger(), seed=0, show_progress=False,
                             callbacks=callbacks)


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
